"""Driver-level statements and value codecs for the hot paths (loads, sweeps, replays, appends).

SQLAlchemy Core's per-value type processing dominated these paths, so they speak to the DBAPI
driver directly, with values encoded exactly as the SQLAlchemy types store them: the two can
read each other's rows (the contract tests run both on SQLite and PostgreSQL).
SQLite: datetimes as naive UTC text 'YYYY-MM-DD HH:MM:SS.ffffff', JSON as text.
PostgreSQL (psycopg 3): timestamptz and json; the driver parses json results itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, fields
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import orjson

from ._columns import AUDIT, PATIENTS, TableDecl
from ._records import AUDIT_COLUMNS, SNAPSHOT_COLUMNS, AuditEntry, Snapshot

if TYPE_CHECKING:
    from ._crypto import DataCipher

__all__ = ["AUDIT_TABLE", "PATIENTS_TABLE", "RowCodec"]

PATIENTS_TABLE = PATIENTS.name
AUDIT_TABLE = AUDIT.name

_UPDATED = PATIENTS.updated
_KEY = PATIENTS.key


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
    if value is None:
        return None
    try:  # parsing an offset costs a tenth of `replace(tzinfo=UTC)`; +00:00 parses as UTC itself
        parsed = datetime.fromisoformat(value + "+00:00")
        if parsed.tzinfo is UTC:
            return parsed
    except (TypeError, ValueError):  # a value with an offset of its own, or not text
        pass
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


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
            f"WHERE {' AND '.join(f'{c} = {mark}' for c in (*_KEY, 'revision'))}"
        )
        # Each JSON and time column through its codec, every other value as it is.
        decode_patient = _converters(PATIENTS, _json_in, self._time_in)
        decode_audit = _converters(AUDIT, _json_in, self._time_in)
        encode_patient = _converters(PATIENTS, _json_out, self._time_out)
        encode_audit = _converters(AUDIT, _json_out, self._time_out)
        self._snapshot_in = _compile_decoder(Snapshot, SNAPSHOT_COLUMNS, decode_patient)
        self._entry_in = _compile_decoder(AuditEntry, AUDIT_COLUMNS, decode_audit)
        # With a data key the context is stored sealed, under associated data naming its row.
        sealed: dict[str, Callable[[Any], Any]] = {}
        if cipher is not None:
            sealed["context"] = lambda snap: _json_out(cipher.seal_context(snap))
        self._entry_out = _compile_encoder("row", AUDIT_COLUMNS, encode_audit, by_key=True)
        self._snapshot_out = _compile_encoder("snap", SNAPSHOT_COLUMNS, encode_patient, from_record=sealed)
        # The UPDATE's values: the changed columns, the row's key, then the revision it was read at.
        self._update_out = _compile_encoder(
            "snap", (*_UPDATED, *_KEY), encode_patient, from_record=sealed, extra="revision"
        )

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

    def snapshot(self, row: Sequence[Any]) -> Snapshot:
        """The snapshot of a row selected with `select_snapshots` (columns SNAPSHOT_COLUMNS)."""
        snap: Snapshot = self._snapshot_in(row)
        if self.cipher is not None and type(snap.context) is dict and "$enc" in snap.context:
            return self.cipher.open_snapshot(snap)
        return snap

    def entry(self, row: Sequence[Any]) -> AuditEntry:
        """The entry of a row selected with `select_entries` (columns AUDIT_COLUMNS)."""
        entry: AuditEntry = self._entry_in(row)
        if self.cipher is not None and type(entry.payload) is dict and "$enc" in entry.payload:
            return self.cipher.open_entry(entry)
        return entry

    # -- encoding ---------------------------------------------------------------------

    def entry_params(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        """The INSERT values of an audit row (a mapping of every column of AUDIT_COLUMNS)."""
        params: tuple[Any, ...] = self._entry_out(row)
        return params

    def snapshot_params(self, snap: Snapshot) -> tuple[Any, ...]:
        """The INSERT values of a snapshot (context sealed when a data key is configured)."""
        params: tuple[Any, ...] = self._snapshot_out(snap)
        return params

    def update_params(self, original_revision: int, snap: Snapshot) -> tuple[Any, ...]:
        """The UPDATE's values: the changed columns, then the row's key and the revision read."""
        params: tuple[Any, ...] = self._update_out(snap, original_revision)
        return params


def _converters(
    table: TableDecl, json: Callable[[Any], Any], time: Callable[[Any], Any]
) -> dict[str, Callable[[Any], Any]]:
    return {f.name: json if f.kind == "json" else time for f in table.fields if f.kind in ("json", "time")}


# The codecs run for every row of every send, sweep and replay, so each converts a row with one
# generated function that names every column once (as `collections.namedtuple` and `dataclasses`
# generate theirs): no per-value loop, no intermediate dict, and nothing tied to a position by hand.


def _compile_decoder(
    record: type[Any], columns: Sequence[str], converters: Mapping[str, Callable[[Any], Any]]
) -> Callable[[Sequence[Any]], Any]:
    """`record(name=value, ...)` from a row of `columns` in that order, converting where `converters` say.

    The record is a `quick_init` frozen dataclass, whose `__init__` only fills the instance's
    `__dict__` with every field in order: the decoder fills it the same way without the call
    and its keyword arguments (a replay decodes every row of the log). Fields that are no column
    take their defaults.
    """
    position = {name: i for i, name in enumerate(columns)}
    unknown = set(columns) - {f.name for f in fields(record)}
    if unknown:
        raise TypeError(f"{record.__name__} has no field for the columns {sorted(unknown)}")
    namespace: dict[str, Any] = {"_new": object.__new__, "_record": record}
    items = []
    for f in fields(record):
        if f.name not in position:
            if f.default is MISSING:
                raise TypeError(f"{record.__name__}.{f.name}: no column and no default")
            namespace[f"_default_{f.name}"] = f.default
            items.append(f"{f.name!r}: _default_{f.name}")
        elif f.name in converters:
            namespace[f"_{f.name}"] = converters[f.name]
            items.append(f"{f.name!r}: _{f.name}(row[{position[f.name]}])")
        else:
            items.append(f"{f.name!r}: row[{position[f.name]}]")
    source = (
        "def decode(row):\n"
        "    made = _new(_record)\n"
        f"    made.__dict__.update({{{', '.join(items)}}})\n"
        "    return made\n"
    )
    exec(source, namespace)
    decode: Callable[[Sequence[Any]], Any] = namespace["decode"]
    return decode


def _compile_encoder(
    source: str,
    columns: Sequence[str],
    converters: Mapping[str, Callable[[Any], Any]],
    *,
    by_key: bool = False,
    from_record: Mapping[str, Callable[[Any], Any]] | None = None,
    extra: str | None = None,
) -> Callable[..., tuple[Any, ...]]:
    """A function giving the tuple of the values of `columns` of a record (`by_key`: of a mapping),
    converted where `converters` say; `from_record` computes a column from the whole record instead.
    `extra` names one more argument, appended to the tuple."""
    from_record = from_record or {}
    namespace: dict[str, Any] = {"_dumps": orjson.dumps}
    values = []
    for name in columns:
        read = f"{source}[{name!r}]" if by_key else f"{source}.{name}"
        if name in from_record:
            namespace[f"_{name}"] = from_record[name]
            values.append(f"_{name}({source})")
        elif converters.get(name) is _json_out:  # inlined: a send encodes seven JSON values
            values.append(f"(None if (_v := {read}) is None else _dumps(_v).decode())")
        elif name in converters:
            namespace[f"_{name}"] = converters[name]
            values.append(f"_{name}({read})")
        else:
            values.append(read)
    params = source if extra is None else f"{source}, {extra}"
    if extra is not None:
        values.append(extra)
    exec(f"def encode({params}):\n    return ({', '.join(values)},)\n", namespace)
    encode: Callable[..., tuple[Any, ...]] = namespace["encode"]
    return encode
