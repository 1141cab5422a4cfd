"""carepath: a statechart-driven care pathway engine with a hash-chained audit log."""

from .clock import Clock, FakeClock, system_clock
from .engine import Engine, SendResult, Status, SweepReport
from .errors import CarepathError, EventInFuture, InvalidCommand, TimeWentBackwards, exit_code

# `replay` itself stays in pathway.replay: exporting it here would shadow the module of that name.
from .replay import ReplayDiverged, ReplayResult, VerifyReport, WhatIfReport, verify, whatif

__all__ = [
    "CarepathError",
    "Clock",
    "Engine",
    "EventInFuture",
    "FakeClock",
    "InvalidCommand",
    "ReplayDiverged",
    "ReplayResult",
    "SendResult",
    "Status",
    "SweepReport",
    "TimeWentBackwards",
    "VerifyReport",
    "WhatIfReport",
    "exit_code",
    "system_clock",
    "verify",
    "whatif",
]
