"""Plain records the store takes and returns; the layers above never see a row object."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["AuditEntry", "EnrolmentKey", "IdRange", "NewEntry", "Snapshot", "SnapshotUpdate"]

# Patients with low <= patient_id < high; None leaves that side open.
IdRange = tuple[str | None, str | None]
# One enrolment: a patient on one pathway (patient_id, pathway). A patient may have several.
EnrolmentKey = tuple[str, str]


@dataclass(frozen=True)
class Snapshot:
    """An enrolment's current state as stored (one per patient and pathway)."""

    patient_id: str
    pathway: str
    version: int
    configuration: list[str]
    context: dict[str, Any]
    state: str
    state_since: datetime
    revision: int
    next_due_at: datetime | None
    last_event_at: datetime
    last_seq: int
    last_hash: str
    created_at: datetime
    updated_at: datetime

    @property
    def key(self) -> EnrolmentKey:
        return (self.patient_id, self.pathway)


@dataclass(frozen=True)
class SnapshotUpdate:
    """The new snapshot values an accepted event produces."""

    configuration: list[str]
    context: dict[str, Any]
    state: str
    next_due_at: datetime | None
    last_event_at: datetime
    # A new definition version (a patient migrated to it); None keeps the snapshot's version.
    version: int | None = None


@dataclass(frozen=True)
class NewEntry:
    """An accepted event as the application hands it over; the store adds seq, time and hashes."""

    event: str
    payload: dict[str, Any]
    payload_schema: int
    at: datetime
    actor: str | None
    config_before: list[str]
    config_after: list[str]
    transitions: list[dict[str, Any]]
    decision: dict[str, Any] | None
    idempotency_key: str | None


@dataclass(frozen=True)
class AuditEntry:
    """One row of the append-only audit log."""

    patient_id: str
    seq: int
    event: str
    payload: dict[str, Any]
    payload_schema: int
    at: datetime
    recorded_at: datetime
    actor: str | None
    pathway: str
    version: int
    config_before: list[str]
    config_after: list[str]
    transitions: list[dict[str, Any]]
    decision: dict[str, Any] | None
    idempotency_key: str | None
    prev_hash: str
    hash: str

    @property
    def key(self) -> EnrolmentKey:
        return (self.patient_id, self.pathway)

    def as_row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}
