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

# Loaded on first use, by the module defining each name: most commands never replay, draw or
# import, and start-up time counts for the CLI. (`replay` itself stays in pathway.replay:
# exporting it here would shadow the module of that name.)
_LAZY = {
    **dict.fromkeys(
        ("InvalidPolicy", "NotEnrolledAt", "ReplayDiverged", "ReplayResult", "VerifyReport", "WhatIfReport"), "replay"
    ),
    **dict.fromkeys(("verify", "whatif"), "replay"),
    **dict.fromkeys(("DiagramError", "GraphvizMissing", "UnknownFormat"), "diagram"),
    "EmptyCohort": "cohort_plot",
    "ImportStopped": "ingest",
    "SimulationError": "simulate",
    "TimelineError": "timeline",
}

if TYPE_CHECKING:
    from .cohort_plot import EmptyCohort
    from .diagram import DiagramError, GraphvizMissing, UnknownFormat
    from .ingest import ImportStopped
    from .replay import (
        InvalidPolicy,
        NotEnrolledAt,
        ReplayDiverged,
        ReplayResult,
        VerifyReport,
        WhatIfReport,
        verify,
        whatif,
    )
    from .simulate import SimulationError
    from .timeline import TimelineError


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AmbiguousEnrolment",
    "BeforeBarrier",
    "CarepathError",
    "Clock",
    "DiagramError",
    "EmptyCohort",
    "Engine",
    "EventInFuture",
    "FakeClock",
    "GraphvizMissing",
    "ImportStopped",
    "InvalidCommand",
    "InvalidPatientId",
    "InvalidPolicy",
    "LateEvent",
    "NotEnrolledAt",
    "Rederivation",
    "ReplayDiverged",
    "ReplayResult",
    "SendResult",
    "SimulationError",
    "Status",
    "SweepReport",
    "TimeWentBackwards",
    "TimelineError",
    "UnknownFormat",
    "VerifyReport",
    "WhatIfReport",
    "exit_code",
    "system_clock",
    "verify",
    "whatif",
]
