"""carepath: a statechart-driven care pathway engine with a hash-chained audit log."""

from typing import TYPE_CHECKING, Any

from .clock import Clock, FakeClock, system_clock
from .engine import Engine, Rederivation, SendResult, Status, SweepReport
from .errors import (
    AmbiguousEnrolment,
    BeforeBarrier,
    CarepathError,
    EventInFuture,
    InvalidCommand,
    InvalidPatientId,
    LateEvent,
    TimeWentBackwards,
    exit_code,
)

# `replay` itself stays in pathway.replay: exporting it here would shadow the module of that name.
_FROM_REPLAY = ("ReplayDiverged", "ReplayResult", "VerifyReport", "WhatIfReport", "verify", "whatif")

if TYPE_CHECKING:
    from .replay import ReplayDiverged, ReplayResult, VerifyReport, WhatIfReport, verify, whatif


def __getattr__(name: str) -> Any:
    # Loaded on first use: most commands never replay, and start-up time counts for the CLI.
    if name in _FROM_REPLAY:
        from . import replay

        return getattr(replay, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AmbiguousEnrolment",
    "BeforeBarrier",
    "CarepathError",
    "Clock",
    "Engine",
    "EventInFuture",
    "FakeClock",
    "InvalidCommand",
    "InvalidPatientId",
    "LateEvent",
    "Rederivation",
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
