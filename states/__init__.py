"""Pure domain of carepath: pathway statecharts, payloads, vocabulary, policy and plans.

No I/O and no clock: every function takes the clinical time it needs as an argument.
"""

from . import piriformis  # noqa: F401  # registers the piriformis definition
from .definition import Pathway, Step, get_pathway, known_events, latest_pathway, pathways, register
from .errors import (
    DefinitionError,
    EventNotAllowed,
    InvalidInput,
    InvalidPayload,
    NaiveTime,
    StatesError,
    UnknownDefinition,
    UnknownEvent,
)
from .guards import Condition, Decision, Guard, Rule
from .payloads import require_aware
from .plan import ItemStatus, PlanItem

__all__ = [
    "Condition",
    "Decision",
    "DefinitionError",
    "EventNotAllowed",
    "Guard",
    "InvalidInput",
    "InvalidPayload",
    "ItemStatus",
    "NaiveTime",
    "Pathway",
    "PlanItem",
    "Rule",
    "StatesError",
    "Step",
    "UnknownDefinition",
    "UnknownEvent",
    "get_pathway",
    "known_events",
    "latest_pathway",
    "pathways",
    "register",
    "require_aware",
]
