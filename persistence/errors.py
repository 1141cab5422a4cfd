"""Errors of the persistence adapter. Nothing above `persistence` sees a driver exception."""

from __future__ import annotations

__all__ = [
    "ConcurrentUpdate",
    "DuplicatePatient",
    "IdempotencyConflict",
    "PersistenceError",
    "StorageUnavailable",
    "UnknownPatient",
]


class PersistenceError(Exception):
    """Root of every error raised by `persistence`."""


class UnknownPatient(PersistenceError):
    """Raised when no patient with this id is enrolled."""

    def __init__(self, patient_id: str) -> None:
        self.patient_id = patient_id
        super().__init__(f"unknown patient {patient_id!r}")


class DuplicatePatient(PersistenceError):
    """Raised when enrolling a patient id that is already enrolled."""

    def __init__(self, patient_id: str) -> None:
        self.patient_id = patient_id
        super().__init__(f"patient {patient_id!r} is already enrolled")


class ConcurrentUpdate(PersistenceError):
    """Raised when another writer changed the patient since it was read (revision mismatch)."""

    def __init__(self, patient_id: str, expected_revision: int) -> None:
        self.patient_id = patient_id
        self.expected_revision = expected_revision
        super().__init__(
            f"patient {patient_id!r} was changed by another writer (expected revision {expected_revision})"
        )


class IdempotencyConflict(PersistenceError):
    """Raised when an idempotency key is reused for the patient with a different event."""

    def __init__(self, patient_id: str, key: str) -> None:
        self.patient_id = patient_id
        self.key = key
        super().__init__(f"idempotency key {key!r} was already used for patient {patient_id!r} with a different event")


class StorageUnavailable(PersistenceError):
    """Raised when the database cannot be reached or answered with a driver error."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"database error: {detail}")
