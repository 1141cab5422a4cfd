"""Errors as RFC 9457 problem details: one function, `problem_for`, maps any exception to its
code, HTTP status and details.

Errors that carry the shared error contract (`code`, `http_status`, `details()`) are used as
they are; the others are read from their class and the CLI exit status they map to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import exit_code

__all__ = ["PROBLEM_TYPE", "Problem", "problem_for"]

# Problem types are relative URIs naming the stable code: "/problems/unknown_patient".
PROBLEM_TYPE = "/problems/"
MEDIA_TYPE = "application/problem+json"

# Codes of the classes that have no `code` of their own, by class name (the most specific wins:
# the class's method resolution order is walked from the class itself up).
_CODES: dict[str, tuple[str, int]] = {
    "InvalidPayload": ("invalid_payload", 422),
    "UnknownEvent": ("unknown_event", 422),
    "NaiveTime": ("invalid_payload", 422),
    "UnknownDefinition": ("unknown_definition", 422),
    "UnapprovedDefinition": ("unapproved_definition", 422),
    "RetiredDefinition": ("retired_definition", 422),
    "NoMigration": ("no_migration", 422),
    "MigrationFailed": ("migration_failed", 422),
    "EventNotAllowed": ("event_not_allowed", 409),
    "UnknownPatient": ("unknown_patient", 404),
    "NotEnrolledAt": ("not_enrolled_at", 404),
    "DuplicateEnrolment": ("duplicate_enrolment", 409),
    "DuplicatePatient": ("duplicate_enrolment", 409),
    "IdempotencyConflict": ("idempotency_conflict", 409),
    "ConcurrentUpdate": ("concurrent_update", 409),
    "LateEvent": ("late_event", 409),
    "BeforeBarrier": ("time_went_backwards", 409),
    "TimeWentBackwards": ("time_went_backwards", 409),
    "EventInFuture": ("event_in_future", 422),
    "AmbiguousEnrolment": ("ambiguous_enrolment", 422),
    "InvalidPatientId": ("invalid_patient_id", 422),
    "InvalidCommand": ("invalid_command", 422),
    "NoDatabase": ("storage_unavailable", 503),
    "StorageUnavailable": ("storage_unavailable", 503),
    "ReplayDiverged": ("replay_diverged", 409),
    "InvalidPolicy": ("invalid_policy", 422),
    "GraphvizMissing": ("renderer_missing", 503),
    "TimelineError": ("nothing_to_draw", 422),
}
# By CLI exit status, for any other error of the package.
_BY_EXIT = {2: ("invalid_input", 422), 3: ("not_allowed", 409), 4: ("unknown_patient", 404), 5: ("unavailable", 503)}
# Attributes worth returning as details (never the message again, never a payload value).
_DETAIL_FIELDS = (
    "patient_id",
    "pathway",
    "event",
    "known",
    "problems",
    "configuration",
    "pathways",
    "key",
    "name",
    "version",
    "versions",
    "field",
    "why",
    "seq",
    "reason",
)


@dataclass(frozen=True)
class Problem:
    """One problem document: RFC 9457's members plus the stable `code` and structured details."""

    status: int
    code: str
    title: str
    detail: str
    details: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "type": PROBLEM_TYPE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if self.details:
            document["details"] = self.details
        return document


def problem_for(exc: BaseException) -> Problem:
    """The problem document of an error: its code, status, a title from the code and the message as detail.

    Errors of the shared contract (a `code` and `http_status`, `details()`) speak for themselves;
    the others are mapped by class name, then by CLI exit status; anything else is a 500 that
    says nothing of the internals.
    """
    code = getattr(exc, "code", None)
    status = getattr(exc, "http_status", None)
    if isinstance(code, str) and isinstance(status, int):
        details_of = getattr(exc, "details", None)
        details = details_of() if callable(details_of) else {}
        return Problem(status, code, _title(code), str(exc), dict(details or {}))
    for kind in type(exc).__mro__:
        known = _CODES.get(kind.__name__)
        if known is not None:
            return Problem(known[1], known[0], _title(known[0]), str(exc), _details(exc))
    module = type(exc).__module__.split(".")[0]
    if module in ("pathway", "persistence", "states"):
        code, status = _BY_EXIT.get(exit_code(exc if isinstance(exc, Exception) else Exception()), _BY_EXIT[2])
        return Problem(status, code, _title(code), str(exc), _details(exc))
    return Problem(500, "internal_error", "Internal error", "the server could not complete the request")


def _title(code: str) -> str:
    return re.sub(r"_+", " ", code).capitalize()


def _details(exc: BaseException) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in _DETAIL_FIELDS:
        value = getattr(exc, name, None)
        if value is None or callable(value):
            continue
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, (str, int, float, bool, list, dict)):
            found[name] = value
    return found
