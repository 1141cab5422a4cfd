"""Driver-level statements and value codecs for the hot paths (loads, sweeps, replays, appends).

SQLAlchemy Core's per-value type processing dominated these paths, so they speak to the DBAPI
driver directly, with values encoded exactly as the SQLAlchemy types store them: the two can
read each other's rows (the contract tests run both on SQLite and PostgreSQL).
SQLite: datetimes as naive UTC text 'YYYY-MM-DD HH:MM:SS.ffffff', JSON as text.
PostgreSQL (psycopg 3): timestamptz and json; the driver parses json results itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import orjson

from .records import AUDIT_COLUMNS, AuditEntry, Snapshot

if TYPE_CHECKING:
    from .crypto import DataCipher

__all__ = ["AUDIT_TABLE", "PATIENTS_TABLE", "RowCodec"]

PATIENTS_TABLE = "carepath_patients"
AUDIT_TABLE = "carepath_audit"

SNAPSHOT_COLUMNS = tuple(Snapshot.__dataclass_fields__)
_JSON = frozenset({"configuration", "context", "payload", "config_before", "config_after", "transitions", "decision"})
_TIMES = frozenset({"state_since", "next_due_at", "last_event_at", "created_at", "updated_at", "at", "recorded_at"})
_UPDATED = (
    "version",
    "configuration",
    "context",
    "state",
    "state_since",
    "revision",
    "next_due_at",
    "last_event_at",
    "last_seq",
    "last_hash",
    "updated_at",
)
_UPDATED_AT = tuple(SNAPSHOT_COLUMNS.index(name) for name in _UPDATED)


def _json_out(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _json_in(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, (str, bytes)) else value


@lru_cache(maxsize=4096)  # a command stamps many rows with the same `at` and `recorded_at`
def _sqlite_time_out(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _sqlite_time_in(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def _pg_time_out(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _pg_time_in(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


class RowCodec:
    """SQL text and value conversions of one dialect ("sqlite" or "postgresql")."""

    def __init__(self, dialect: str, patients: str, audit: str, cipher: DataCipher | None = None) -> None:
        # Encrypts payloads, decisions and contexts on write and decrypts them on read (None: clear).
        self.cipher = cipher
        self.postgres = dialect == "postgresql"
        mark = "%s" if self.postgres else "?"
        self._time_out = _pg_time_out if self.postgres else _sqlite_time_out
        self._time_in = _pg_time_in if self.postgres else _sqlite_time_in
        snapshot_cols = ", ".join(SNAPSHOT_COLUMNS)
        audit_cols = ", ".join(AUDIT_COLUMNS)
        lock = " FOR UPDATE" if self.postgres else ""
        self.select_snapshots = f"SELECT {snapshot_cols} FROM {patients}"
        # A patient's enrolments (every pathway), and one enrolment by its key.
        self.select_patient = f"{self.select_snapshots} WHERE patient_id = {mark} ORDER BY pathway"
        self.lock_patient = self.select_patient + lock
        self.select_enrolment = f"{self.select_snapshots} WHERE patient_id = {mark} AND pathway = {mark}"
        self.lock_enrolment = self.select_enrolment + lock
        self.select_pathways = f"SELECT pathway FROM {patients} WHERE patient_id = {mark} ORDER BY pathway"
        self.patient_exists = f"SELECT 1 FROM {patients} WHERE patient_id = {mark} LIMIT 1"
        self.enrolment_exists = f"SELECT 1 FROM {patients} WHERE patient_id = {mark} AND pathway = {mark}"
        self.select_patients_in = f"SELECT {snapshot_cols} FROM {patients} WHERE patient_id IN ({{marks}})"
        self._lock_suffix = lock
        self.mark = mark
        self._select_due = f"SELECT {snapshot_cols} FROM {patients} WHERE next_due_at <= {mark}"
        self.select_entries = f"SELECT {audit_cols} FROM {audit}"
        self.select_keyed_entry = (
            f"{self.select_entries} WHERE patient_id = {mark} AND pathway = {mark} AND idempotency_key = {mark}"
        )
        self.insert_entry = f"INSERT INTO {audit} ({audit_cols}) VALUES ({', '.join([mark] * len(AUDIT_COLUMNS))})"
        self.insert_patient = (
            f"INSERT INTO {patients} ({snapshot_cols}) VALUES ({', '.join([mark] * len(SNAPSHOT_COLUMNS))})"
        )
        self.update_patient = (
            f"UPDATE {patients} SET {', '.join(f'{c} = {mark}' for c in _UPDATED)} "
            f"WHERE patient_id = {mark} AND pathway = {mark} AND revision = {mark}"
        )
        self._snapshot_in = self._decoders(SNAPSHOT_COLUMNS)
        self._entry_in = self._decoders(AUDIT_COLUMNS)

    def claim_due(self, *, low: bool, high: bool, lock: bool) -> str:
        """Due enrolments, earliest first, optionally within a patient-id range; locked rows skipped."""
        sql = self._select_due
        if low:
            sql += f" AND patient_id >= {self.mark}"
        if high:
            sql += f" AND patient_id < {self.mark}"
        sql += f" ORDER BY next_due_at LIMIT {self.mark}"
        return sql + (" FOR UPDATE SKIP LOCKED" if self.postgres and lock else "")

    def in_clause(self, count: int, *, lock: bool = True) -> str:
        sql = self.select_patients_in.format(marks=", ".join([self.mark] * count))
        return sql + self._lock_suffix if lock else sql

    def time(self, value: datetime | None) -> Any:
        return self._time_out(value)

    def time_in(self, value: Any) -> datetime | None:
        return self._time_in(value)

    # -- decoding ---------------------------------------------------------------------

    def _decoders(self, columns: Sequence[str]) -> list[tuple[int, Any]]:
        decoders: list[tuple[int, Any]] = []
        for i, name in enumerate(columns):
            if name in _JSON:
                decoders.append((i, _json_in))
            elif name in _TIMES:
                decoders.append((i, self._time_in))
        return decoders

    def snapshot(self, row: Sequence[Any]) -> Snapshot:
        values = list(row)
        for i, decode in self._snapshot_in:
            values[i] = decode(values[i])
        snap = Snapshot(*values)
        if self.cipher is not None and type(snap.context) is dict and "$enc" in snap.context:
            return self.cipher.open_snapshot(snap)
        return snap

    def entry(self, row: Sequence[Any]) -> AuditEntry:
        values = list(row)
        for i, decode in self._entry_in:
            values[i] = decode(values[i])
        entry = AuditEntry(*values)
        if self.cipher is not None and type(entry.payload) is dict and "$enc" in entry.payload:
            return self.cipher.open_entry(entry)
        return entry

    # -- encoding ---------------------------------------------------------------------

    def entry_params(self, row: dict[str, Any]) -> tuple[Any, ...]:
        t, j = self._time_out, _json_out
        return (
            row["patient_id"],
            row["seq"],
            row["event"],
            j(row["payload"]),
            row["payload_schema"],
            t(row["at"]),
            t(row["recorded_at"]),
            row["actor"],
            row["pathway"],
            row["version"],
            j(row["config_before"]),
            j(row["config_after"]),
            j(row["transitions"]),
            j(row["decision"]),
            row["idempotency_key"],
            row["prev_hash"],
            row["hash"],
            row["key_id"],
        )

    def snapshot_params(self, snap: Snapshot) -> tuple[Any, ...]:
        t, j = self._time_out, _json_out
        return (
            snap.patient_id,
            snap.pathway,
            snap.version,
            j(snap.configuration),
            j(snap.context if self.cipher is None else self.cipher.seal_context(snap)),
            snap.state,
            t(snap.state_since),
            snap.revision,
            t(snap.next_due_at),
            t(snap.last_event_at),
            snap.last_seq,
            snap.last_hash,
            t(snap.created_at),
            t(snap.updated_at),
        )

    def update_params(self, original_revision: int, snap: Snapshot) -> tuple[Any, ...]:
        """The UPDATE's values: the changed columns, then the row's key and the revision read."""
        encoded = self.snapshot_params(snap)
        return (*(encoded[i] for i in _UPDATED_AT), snap.patient_id, snap.pathway, original_revision)
