"""Plain records the store takes and returns; the layers above never see a row object.

Their fields are the columns declared in persistence/_columns.py, in the same order and with the
same types (the test suite checks it); the store's codecs build them by column name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from carepath._records import quick_init

from ._columns import AUDIT, PATIENTS

__all__ = [
    "AUDIT_COLUMNS",
    "SNAPSHOT_COLUMNS",
    "AuditEntry",
    "EnrolmentKey",
    "IdRange",
    "NewEntry",
    "Snapshot",
    "SnapshotUpdate",
]

# Patients with low <= patient_id < high; None leaves that side open.
IdRange = tuple[str | None, str | None]
# One enrolment: a patient on one pathway (patient_id, pathway). A patient may have several.
EnrolmentKey = tuple[str, str]


@quick_init
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


@quick_init
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
    # When the state was entered, for a state re-derived from the history (None: the entry's time
    # if the state changed, else unchanged).
    state_since: datetime | None = None


@quick_init
@dataclass(frozen=True)
class NewEntry:
    """An accepted event as the application hands it over; the store adds seq, time and hashes.

    Each field is the audit column of the same name.
    """

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


@quick_init
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
    # The audit key the hash is an HMAC under (persistence/_keys.py); None: a plain SHA-256 chain.
    key_id: str | None = None
    # The stored (encrypted) values of columns decrypted on read, which the hash covers.
    sealed: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> EnrolmentKey:
        return (self.patient_id, self.pathway)

    def as_row(self) -> dict[str, Any]:
        """The entry's columns as read (decrypted values, when they were encrypted)."""
        return {name: getattr(self, name) for name in AUDIT_COLUMNS}

    def stored_row(self) -> dict[str, Any]:
        """The entry's columns as stored: what its hash was computed over."""
        row = self.as_row()
        if self.sealed:
            row.update(self.sealed)
        return row


SNAPSHOT_COLUMNS = PATIENTS.names
"""The snapshot table's columns, each a field of Snapshot."""
AUDIT_COLUMNS = AUDIT.names
"""The audit table's columns but its surrogate id, each a field of AuditEntry."""
