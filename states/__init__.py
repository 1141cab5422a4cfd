"""Pure domain of carepath: pathway definitions as data, compiled into statecharts that decide
each event by rules, with the plan of each state.

No clock and no database: every function takes the clinical time it needs as an argument. The
only input read is a definition file a caller names (or the package's own definitions).
"""

from . import _gestation  # noqa: F401  # registers the named functions
from ._checks import check_model, model_problems
from ._definition import MIGRATE_EVENT, Pathway, Step
from ._errors import (
    DefinitionError,
    EventNotAllowed,
    InvalidInput,
    InvalidPayload,
    MigrationFailed,
    NaiveTime,
    NoMigration,
    Problem,
    RetiredDefinition,
    StatesError,
    UnapprovedDefinition,
    UnknownDefinition,
    UnknownEvent,
)
from ._functions import UnknownFunction, input_function
from ._guards import Condition, Decision, Guard, Rule
from ._load import definition_files, json_schema, load_file, parse_definition, write_cache
from ._model import PathwayModel
from ._payloads import Payload, require_aware
from ._plan import ItemStatus, PlanItem
from ._registry import (
    definition_for_enrolment,
    get_pathway,
    known_events,
    latest_pathway,
    load_pathways,
    pathways,
    register,
    write_builtin_caches,
)
from ._upcast import UnknownPayloadSchema

__all__ = [
    "MIGRATE_EVENT",
    "Condition",
    "Decision",
    "DefinitionError",
    "EventNotAllowed",
    "Guard",
    "InvalidInput",
    "InvalidPayload",
    "ItemStatus",
    "MigrationFailed",
    "NaiveTime",
    "NoMigration",
    "Pathway",
    "PathwayModel",
    "Payload",
    "PlanItem",
    "Problem",
    "RetiredDefinition",
    "Rule",
    "StatesError",
    "Step",
    "UnapprovedDefinition",
    "UnknownDefinition",
    "UnknownEvent",
    "UnknownFunction",
    "UnknownPayloadSchema",
    "check_model",
    "definition_for_enrolment",
    "definition_files",
    "get_pathway",
    "input_function",
    "json_schema",
    "known_events",
    "latest_pathway",
    "load_file",
    "load_pathways",
    "model_problems",
    "parse_definition",
    "pathways",
    "register",
    "write_builtin_caches",
    "write_cache",
    "require_aware",
]
