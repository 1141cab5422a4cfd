"""carepath: a statechart-driven care pathway engine with a hash-chained audit log."""

from .clock import Clock, FakeClock, system_clock
from .engine import Engine, SendResult, Status, SweepReport
from .errors import CarepathError, EventInFuture, InvalidCommand, TimeWentBackwards, exit_code

__all__ = [
    "CarepathError",
    "Clock",
    "Engine",
    "EventInFuture",
    "FakeClock",
    "InvalidCommand",
    "SendResult",
    "Status",
    "SweepReport",
    "TimeWentBackwards",
    "exit_code",
    "system_clock",
]
