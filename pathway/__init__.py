"""carepath: a statechart-driven care pathway engine with a hash-chained audit log.

`Engine` is the door: commands, queries, replay, verify, what-if, explain, import, export and
pictures are its methods. The other names here are what those methods take and return.
"""

from typing import TYPE_CHECKING, Any

from ._clock import Clock, FakeClock, system_clock
from ._documents import cohort_document, definitions_document, due_actions, due_document
from ._engine import (
    DATABASE_ENV,
    DEFAULT_PATHWAY,
    PAYLOAD_SCHEMA,
    Batch,
    Engine,
    HistoryEntry,
    MigrationChange,
    Rederivation,
    SendResult,
    Status,
    SweepReport,
    clinical_time,
    entry_json,
)
from ._errors import (
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
from ._extras import MissingExtra
from ._observe import (
    COMMANDS_COUNTER,
    DURATION_HISTOGRAM,
    JsonFormatter,
    Metrics,
    NoMetrics,
    OpenTelemetryMetrics,
    default_metrics,
)
from ._tuning import bulk_allocation

# Loaded on first use (most commands need none of them, and start-up time counts for the CLI).
# Keyed by module (`_replay` holds `verify`...); `replay`, `explain`, `ingest`, `simulate` are Engine methods.
_LAZY = {
    "_replay": (
        "InvalidPolicy",
        "NotEnrolledAt",
        "Problem",
        "ReplayDiverged",
        "ReplayResult",
        "VerifyReport",
        "WhatIfReport",
        "describe_decision",
        "verify",
        "whatif",
    ),
    "_explain": ("CohortRow", "Explanation", "TransitionView"),
    "_ingest": ("ImportStopped", "IngestReport"),
    "_diagram": ("TEXT_FORMATS", "DiagramError", "GraphvizMissing", "UnknownFormat"),
    "_timeline": ("TimelineError",),
    "_cohort_plot": ("CohortHistory", "EmptyCohort", "plot_cohort"),
    "_simulate": (
        "DEFAULT_WEEKS",
        "Scenario",
        "SimulationError",
        "SimulationResult",
        "cohort_start",
        "load_scenario",
        "pathway_scenarios",
    ),
    "_hints": ("NEUTRAL_COLOUR", "Monitoring", "known_colours", "monitoring"),
    "_words": ("number_text", "outcome_text", "term_text", "why_here"),
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}

if TYPE_CHECKING:
    from ._cohort_plot import CohortHistory, EmptyCohort, plot_cohort
    from ._diagram import TEXT_FORMATS, DiagramError, GraphvizMissing, UnknownFormat
    from ._explain import CohortRow, Explanation, TransitionView
    from ._hints import NEUTRAL_COLOUR, Monitoring, known_colours, monitoring
    from ._ingest import ImportStopped, IngestReport
    from ._replay import (
        InvalidPolicy,
        NotEnrolledAt,
        Problem,
        ReplayDiverged,
        ReplayResult,
        VerifyReport,
        WhatIfReport,
        describe_decision,
        verify,
        whatif,
    )
    from ._simulate import (
        DEFAULT_WEEKS,
        Scenario,
        SimulationError,
        SimulationResult,
        cohort_start,
        load_scenario,
        pathway_scenarios,
    )
    from ._timeline import TimelineError
    from ._words import number_text, outcome_text, term_text, why_here


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{module}", __name__), name)


__all__ = [
    "cohort_document",
    "definitions_document",
    "due_actions",
    "due_document",
    "COMMANDS_COUNTER",
    "DATABASE_ENV",
    "DEFAULT_PATHWAY",
    "DEFAULT_WEEKS",
    "DURATION_HISTOGRAM",
    "NEUTRAL_COLOUR",
    "PAYLOAD_SCHEMA",
    "TEXT_FORMATS",
    "AmbiguousEnrolment",
    "Batch",
    "BeforeBarrier",
    "CarepathError",
    "Clock",
    "CohortHistory",
    "CohortRow",
    "DiagramError",
    "EmptyCohort",
    "Engine",
    "EventInFuture",
    "Explanation",
    "FakeClock",
    "GraphvizMissing",
    "MissingExtra",
    "HistoryEntry",
    "ImportStopped",
    "IngestReport",
    "InvalidPolicy",
    "InvalidCommand",
    "InvalidPatientId",
    "JsonFormatter",
    "LateEvent",
    "Metrics",
    "MigrationChange",
    "Monitoring",
    "NoMetrics",
    "NotEnrolledAt",
    "OpenTelemetryMetrics",
    "Problem",
    "Rederivation",
    "ReplayDiverged",
    "ReplayResult",
    "Scenario",
    "SendResult",
    "SimulationError",
    "SimulationResult",
    "Status",
    "SweepReport",
    "TimeWentBackwards",
    "TimelineError",
    "TransitionView",
    "UnknownFormat",
    "VerifyReport",
    "WhatIfReport",
    "bulk_allocation",
    "clinical_time",
    "cohort_start",
    "default_metrics",
    "describe_decision",
    "entry_json",
    "exit_code",
    "known_colours",
    "load_scenario",
    "monitoring",
    "number_text",
    "outcome_text",
    "pathway_scenarios",
    "plot_cohort",
    "system_clock",
    "term_text",
    "why_here",
    "verify",
    "whatif",
]
