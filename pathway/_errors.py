"""Errors of the application layer. Each error's `category` gives its exit status on the CLI
(`exit_code`) and its HTTP status; see `carepath.errors`."""

from __future__ import annotations

from datetime import datetime

from carepath.errors import Category, Error, exit_code

__all__ = [
    "AmbiguousEnrolment",
    "BeforeBarrier",
    "CarepathError",
    "EventInFuture",
    "InvalidCommand",
    "InvalidPatientId",
    "LateEvent",
    "TimeWentBackwards",
    "exit_code",
]


class CarepathError(Error):
    """Root of every error raised by `pathway`."""

    code = "carepath_error"


class InvalidCommand(CarepathError):
    """Raised when a command's arguments are malformed (bad JSON, bad time text, ...)."""

    code = "invalid_command"
    category = Category.INVALID_INPUT


class InvalidPatientId(CarepathError):
    """Raised when a patient id is empty, longer than 200 characters, or holds control characters."""

    code = "invalid_patient_id"
    category = Category.INVALID_INPUT

    def __init__(self, patient_id: str, why: str) -> None:
        self.patient_id = patient_id
        self.why = why
        super().__init__(f"invalid patient id {patient_id[:40]!r}: {why}")


class AmbiguousEnrolment(CarepathError):
    """Raised when a patient is enrolled on several pathways and the command names none."""

    code = "ambiguous_enrolment"
    category = Category.INVALID_INPUT

    def __init__(self, patient_id: str, pathways: list[str]) -> None:
        self.patient_id = patient_id
        self.pathways = list(pathways)
        super().__init__(
            f"patient {patient_id!r} is enrolled on several pathways ({', '.join(self.pathways)}): "
            "pass --pathway to choose one"
        )


class TimeWentBackwards(CarepathError):
    """Raised when an event is earlier than the patient's last event."""

    code = "time_went_backwards"
    category = Category.INVALID_INPUT

    def __init__(self, patient_id: str, at: datetime, last: datetime) -> None:
        self.patient_id = patient_id
        self.at = at
        self.last = last
        super().__init__(f"at {at.isoformat()} is before patient {patient_id!r}'s last event at {last.isoformat()}")


class LateEvent(TimeWentBackwards):
    """Raised when a clinical event is dated before the enrolment's last clinical event and the
    caller did not say it is a late entry (`late=True`, `--late`)."""

    code = "late_event"

    def __init__(self, patient_id: str, at: datetime, last: datetime) -> None:
        super().__init__(patient_id, at, last)
        self.args = (
            f"at {at.isoformat()} is before patient {patient_id!r}'s last clinical event at {last.isoformat()}: "
            "pass --late (library: late=True) to record it as a late entry",
        )


class BeforeBarrier(TimeWentBackwards):
    """Raised when a clinical event is dated before the enrolment began or moved to its current version."""

    code = "before_barrier"

    def __init__(self, patient_id: str, at: datetime, barrier: datetime, what: str) -> None:
        super().__init__(patient_id, at, barrier)
        self.args = (f"at {at.isoformat()} is before patient {patient_id!r}'s {what} at {barrier.isoformat()}",)


class EventInFuture(CarepathError):
    """Raised when an event is more than the allowed skew ahead of the engine's clock."""

    code = "event_in_future"
    category = Category.INVALID_INPUT

    def __init__(self, at: datetime, now: datetime) -> None:
        self.at = at
        self.now = now
        super().__init__(f"at {at.isoformat()} is in the future (clock reads {now.isoformat()})")
