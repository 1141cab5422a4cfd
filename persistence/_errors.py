"""Errors of the persistence adapter. Nothing above `persistence` sees a driver exception."""

from __future__ import annotations

from carepath.errors import Category, Error

__all__ = [
    "ConcurrentUpdate",
    "DuplicateEnrolment",
    "DuplicatePatient",
    "IdempotencyConflict",
    "NoDatabase",
    "PersistenceError",
    "StorageUnavailable",
    "UnknownPatient",
]


class PersistenceError(Error):
    """Root of every error raised by `persistence`."""

    code = "persistence_error"


def _on(pathway: str | None) -> str:
    return f" on pathway {pathway!r}" if pathway is not None else ""


class UnknownPatient(PersistenceError):
    """Raised when a patient has no enrolment (at all, or on the named pathway)."""

    code = "unknown_patient"
    category = Category.NOT_FOUND

    def __init__(self, patient_id: str, pathway: str | None = None) -> None:
        self.patient_id = patient_id
        self.pathway = pathway
        if pathway is None:
            super().__init__(f"unknown patient {patient_id!r}")
        else:
            super().__init__(f"patient {patient_id!r} is not enrolled on pathway {pathway!r}")


class DuplicatePatient(PersistenceError):
    """Raised when enrolling a patient on a pathway it is already enrolled on."""

    code = "duplicate_patient"
    category = Category.CONFLICT

    def __init__(self, patient_id: str, pathway: str | None = None) -> None:
        self.patient_id = patient_id
        self.pathway = pathway
        super().__init__(f"patient {patient_id!r} is already enrolled{_on(pathway)}")


class DuplicateEnrolment(DuplicatePatient):
    """Raised when an enrolment (patient id and pathway) already exists."""

    code = "duplicate_enrolment"

    def __init__(self, patient_id: str, pathway: str) -> None:
        super().__init__(patient_id, pathway)


class ConcurrentUpdate(PersistenceError):
    """Raised when another writer changed the enrolment since it was read (revision mismatch).

    Commands retry it; it reaches the caller once the retries are spent, so, like an unreachable
    database, it asks to try again later (exit 5, HTTP 503)."""

    code = "concurrent_update"
    category = Category.UNAVAILABLE

    def __init__(self, patient_id: str, expected_revision: int, pathway: str | None = None) -> None:
        self.patient_id = patient_id
        self.pathway = pathway
        self.expected_revision = expected_revision
        super().__init__(
            f"patient {patient_id!r}{_on(pathway)} was changed by another writer "
            f"(expected revision {expected_revision})"
        )


class IdempotencyConflict(PersistenceError):
    """Raised when an idempotency key is reused for the enrolment with a different event."""

    code = "idempotency_conflict"
    category = Category.CONFLICT

    def __init__(self, patient_id: str, key: str, pathway: str | None = None) -> None:
        self.patient_id = patient_id
        self.pathway = pathway
        self.key = key
        super().__init__(
            f"idempotency key {key!r} was already used for patient {patient_id!r}{_on(pathway)} with a different event"
        )


class StorageUnavailable(PersistenceError):
    """Raised when the database cannot be reached or answered with a driver error."""

    code = "storage_unavailable"
    category = Category.UNAVAILABLE

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"database error: {detail}")


class NoDatabase(StorageUnavailable):
    """Raised when a command that only reads finds no carepath database: no such file, a folder,
    an in-memory database, or a database without carepath's tables. Reading never creates one."""

    code = "no_database"

    def __init__(self, url: str, why: str | None = None) -> None:
        self.url = url
        self.why = why
        self.detail = f"no carepath database at {url}" + (f" ({why})" if why else "")
        PersistenceError.__init__(self, self.detail)
