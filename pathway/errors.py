"""Errors of the application layer, and the exit status each error maps to on the CLI."""

from __future__ import annotations

from datetime import datetime

from persistence import (
    DuplicatePatient,
    IdempotencyConflict,
    PersistenceError,
    StorageUnavailable,
    UnknownPatient,
)
from states import EventNotAllowed, InvalidInput, StatesError

__all__ = [
    "AmbiguousEnrolment",
    "CarepathError",
    "EventInFuture",
    "InvalidCommand",
    "InvalidPatientId",
    "LateEvent",
    "TimeWentBackwards",
    "exit_code",
]


class CarepathError(Exception):
    """Root of every error raised by `pathway`."""

    def __reduce__(self) -> tuple[object, ...]:
        # Errors cross process boundaries (parallel import, tick, verify); their __init__ takes
        # structured arguments, not the message pickle would pass back, so rebuild them directly.
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class InvalidCommand(CarepathError):
    """Raised when a command's arguments are malformed (bad JSON, bad time text, ...)."""


class InvalidPatientId(CarepathError):
    """Raised when a patient id is empty, longer than 200 characters, or holds control characters."""

    def __init__(self, patient_id: str, why: str) -> None:
        self.patient_id = patient_id
        self.why = why
        super().__init__(f"invalid patient id {patient_id[:40]!r}: {why}")


class AmbiguousEnrolment(CarepathError):
    """Raised when a patient is enrolled on several pathways and the command names none."""

    def __init__(self, patient_id: str, pathways: list[str]) -> None:
        self.patient_id = patient_id
        self.pathways = list(pathways)
        super().__init__(
            f"patient {patient_id!r} is enrolled on several pathways ({', '.join(self.pathways)}): "
            "pass --pathway to choose one"
        )


class TimeWentBackwards(CarepathError):
    """Raised when an event is earlier than the patient's last event."""

    def __init__(self, patient_id: str, at: datetime, last: datetime) -> None:
        self.patient_id = patient_id
        self.at = at
        self.last = last
        super().__init__(f"at {at.isoformat()} is before patient {patient_id!r}'s last event at {last.isoformat()}")


class LateEvent(TimeWentBackwards):
    """Raised when a clinical event is dated before the enrolment's last clinical event and the
    caller did not say it is a late entry (`late=True`, `--late`)."""

    def __init__(self, patient_id: str, at: datetime, last: datetime) -> None:
        super().__init__(patient_id, at, last)
        self.args = (
            f"at {at.isoformat()} is before patient {patient_id!r}'s last clinical event at {last.isoformat()}: "
            "pass --late (library: late=True) to record it as a late entry",
        )


class BeforeBarrier(TimeWentBackwards):
    """Raised when a clinical event is dated before the enrolment began or moved to its current version."""

    def __init__(self, patient_id: str, at: datetime, barrier: datetime, what: str) -> None:
        super().__init__(patient_id, at, barrier)
        self.args = (f"at {at.isoformat()} is before patient {patient_id!r}'s {what} at {barrier.isoformat()}",)


class EventInFuture(CarepathError):
    """Raised when an event is more than the allowed skew ahead of the engine's clock."""

    def __init__(self, at: datetime, now: datetime) -> None:
        self.at = at
        self.now = now
        super().__init__(f"at {at.isoformat()} is in the future (clock reads {now.isoformat()})")


_EXIT_CODES: tuple[tuple[type[Exception], int], ...] = (
    (EventNotAllowed, 3),
    (UnknownPatient, 4),
    (InvalidInput, 2),
    (AmbiguousEnrolment, 2),
    (DuplicatePatient, 2),
    (IdempotencyConflict, 2),
    (TimeWentBackwards, 2),
    (EventInFuture, 2),
    (InvalidCommand, 2),
    (StatesError, 2),
    (StorageUnavailable, 5),  # also NoDatabase: a reading command found no carepath database
    (PersistenceError, 2),
    (CarepathError, 2),
)


def exit_code(error: Exception) -> int:
    """The CLI exit status of an error: 2 input, 3 not allowed, 4 unknown patient, 5 no carepath
    database or storage unavailable (README, "Command line")."""
    for kind, code in _EXIT_CODES:
        if isinstance(error, kind):
            return code
    return 2


def _restore(cls: type[BaseException], args: tuple[object, ...], state: dict[str, object]) -> BaseException:
    """Rebuild an error from its message and attributes, without calling its __init__ (see __reduce__)."""
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error
