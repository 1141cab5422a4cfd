"""Errors of the pure domain. Each carries structured attributes for callers to act on."""

from __future__ import annotations

from collections.abc import Sequence

from carepath.errors import Category, Error, Problem

__all__ = [
    "DefinitionError",
    "EventNotAllowed",
    "InvalidInput",
    "InvalidPayload",
    "MigrationFailed",
    "NaiveTime",
    "NoMigration",
    "Problem",
    "RetiredDefinition",
    "StatesError",
    "UnapprovedDefinition",
    "UnknownDefinition",
    "UnknownEvent",
]


class StatesError(Error):
    """Root of every error raised by `states`."""

    code = "states_error"


class InvalidInput(StatesError):
    """Raised when a command's input is malformed; nothing is applied."""

    code = "invalid_input"
    category = Category.INVALID_INPUT


class UnknownEvent(InvalidInput):
    """Raised when an event name is not one the definition knows."""

    code = "unknown_event"

    def __init__(self, event: str, known: Sequence[str]) -> None:
        self.event = event
        self.known = tuple(known)
        super().__init__(f"unknown event {event!r}; expected one of: {', '.join(self.known)}")


class InvalidPayload(InvalidInput):
    """Raised when an event's data fails its schema: missing, extra, unknown or out of range.

    `problems` says what is wrong, each with its `location` (pydantic's `loc`), `type` and `message`.
    """

    code = "invalid_payload"

    def __init__(self, event: str, problems: Sequence[Problem]) -> None:
        self.event = event
        self.problems = tuple(problems)
        super().__init__(f"invalid {event} data: " + "; ".join(map(str, self.problems)))


class NaiveTime(InvalidInput):
    """Raised when a clinical time has no zone (it would be ambiguous)."""

    code = "naive_time"

    def __init__(self, field: str, value: object) -> None:
        self.field = field
        self.value = value
        super().__init__(f"{field} must carry a time zone (e.g. 2026-01-05T09:00:00+00:00), got {value!r}")


class UnknownDefinition(InvalidInput):
    """Raised when a pathway name or version is not registered in this process."""

    code = "unknown_definition"

    def __init__(
        self,
        name: str,
        version: int | None = None,
        versions: Sequence[int] = (),
        names: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.version = version
        self.versions = tuple(versions)
        self.names = tuple(names)
        what = name if version is None else f"{name} version {version}"
        known = ""
        if self.versions:
            known = f" (known versions: {', '.join(map(str, self.versions))})"
        elif self.names:
            known = f" (known pathways: {', '.join(self.names)})"
        super().__init__(
            f"unknown pathway definition {what}{known}; register it with --pathways FILE or CAREPATH_PATHWAYS"
        )


class UnapprovedDefinition(InvalidInput):
    """Raised when a new enrolment would use a draft or a version under review without consent."""

    code = "unapproved_definition"

    def __init__(self, name: str, version: int, status: str) -> None:
        self.name = name
        self.version = version
        self.status = status
        super().__init__(
            f"pathway {name} version {version} is {status.replace('_', ' ')}, not approved; "
            "enrol on it only with --allow-unapproved"
        )


class RetiredDefinition(InvalidInput):
    """Raised when a new enrolment names a retired version."""

    code = "retired_definition"

    def __init__(self, name: str, version: int) -> None:
        self.name = name
        self.version = version
        super().__init__(f"pathway {name} version {version} is retired and takes no new enrolments")


class EventNotAllowed(StatesError):
    """Raised when a valid event has no transition from the patient's current configuration."""

    code = "event_not_allowed"
    category = Category.NOT_ALLOWED

    def __init__(self, event: str, configuration: Sequence[str]) -> None:
        self.event = event
        self.configuration = tuple(configuration)
        super().__init__(f"event {event!r} is not allowed in state {', '.join(self.configuration)}")


class DefinitionError(StatesError):
    """Raised when a pathway definition fails its build-time checks."""

    code = "invalid_definition"
    category = Category.INVALID_INPUT

    def __init__(self, name: str, version: int, problems: Sequence[str]) -> None:
        self.name = name
        self.version = version
        self.problems = tuple(problems)
        super().__init__(f"pathway definition {name} version {version} is invalid: " + "; ".join(self.problems))


class NoMigration(InvalidInput):
    """Raised when a version declares no migration from the version a patient is on."""

    code = "no_migration"

    def __init__(self, name: str, from_version: int, to_version: int) -> None:
        self.name = name
        self.from_version = from_version
        self.to_version = to_version
        super().__init__(f"{name} version {to_version} declares no migration from version {from_version}")


class MigrationFailed(InvalidInput):
    """Raised when a patient's state has no place in the newer version (the mapping misses it)."""

    code = "migration_failed"

    def __init__(self, name: str, to_version: int, states: Sequence[str]) -> None:
        self.name = name
        self.to_version = to_version
        self.states = tuple(states)
        super().__init__(
            f"{name} version {to_version} has no state {', '.join(map(repr, self.states))}; "
            "map it under migrations[].states"
        )
