"""The outbox: transitions a backend may act on, written in the same transaction as the audit
entry that made them, and read back in order for webhooks and polling.

Which transitions count is not decided here: the store calls the classifier it is given
(`Store.notify`) for each appended entry, with the snapshot before and after; each notice it
returns becomes one row. Row ids are the stream's cursor. On PostgreSQL a transaction takes a
transaction-level advisory lock before inserting its rows, so ids are handed out in commit
order and a reader polling "after cursor N" never skips a row committed late.

Delivered rows may be pruned (`prune_outbox`); the audit log is untouched, the outbox being no
part of its hash chain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import JSON, BigInteger, Column, Connection, Index, Integer, MetaData, String, Table, func, select
from sqlalchemy.exc import SQLAlchemyError

from ._errors import StorageUnavailable
from ._records import AuditEntry, Snapshot
from ._rows import RowCodec

if TYPE_CHECKING:
    from ._store import Store
from ._tables import UTCDateTime

__all__ = [
    "OUTBOX_TABLE",
    "OutboxMessage",
    "Notify",
    "count_outbox_pending",
    "create",
    "insert",
    "mark_outbox_delivered",
    "pending_outbox",
    "prune_outbox",
    "read_outbox",
    "rows_for",
]

OUTBOX_TABLE = "carepath_outbox"
# Serialises outbox writers between their insert and commit (PostgreSQL), see the module docstring.
_OUTBOX_LOCK = 72514004

# Rows `prune_outbox` deletes per transaction, so a large prune never holds the write lock for long.
PRUNE_BATCH = 1000

# (kind, details) for each notice an appended entry gives rise to.
Notify = Callable[[Snapshot, AuditEntry, Snapshot], list[tuple[str, dict[str, Any]]]]

metadata = MetaData()
outbox = Table(
    OUTBOX_TABLE,
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("patient_id", String(200), nullable=False),
    Column("pathway", String(100), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("kind", String(40), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("recorded_at", UTCDateTime(), nullable=False),
    Column("body", JSON, nullable=False),
    Column("delivered_at", UTCDateTime(), nullable=True),
    Index("ix_carepath_outbox_delivered", "delivered_at", "id"),
)


@dataclass(frozen=True)
class OutboxMessage:
    """One outbox row: `id` is its place in the stream, `event_id` its identity on every delivery."""

    id: int
    event_id: str
    patient_id: str
    pathway: str
    seq: int
    kind: str
    at: datetime
    recorded_at: datetime
    body: dict[str, Any]
    delivered_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        """The document webhooks and `GET /events` carry."""
        return {"id": self.event_id, "cursor": self.id, **self.body}


def create(conn: Connection) -> None:
    """Create the table and its index where missing (idempotent)."""
    metadata.create_all(conn, checkfirst=True)


def rows_for(before: Snapshot, entry: AuditEntry, after: Snapshot, notify: Notify) -> list[dict[str, Any]]:
    """The outbox rows of one appended entry (none when the classifier finds nothing to tell)."""
    found = notify(before, entry, after)
    if not found:
        return []
    common = {
        "patient_id": entry.patient_id,
        "pathway": entry.pathway,
        "version": after.version,
        "seq": entry.seq,
        "event": entry.event,
        "at": entry.at.isoformat(),
        "recorded_at": entry.recorded_at.isoformat(),
        "state_before": before.state or None,
        "state_after": after.state,
    }
    return [
        {
            # The same entry and kind always get the same id, so a redelivery is recognisable.
            "event_id": hashlib.sha256(f"{entry.hash}:{kind}".encode()).hexdigest()[:32],
            "patient_id": entry.patient_id,
            "pathway": entry.pathway,
            "seq": entry.seq,
            "kind": kind,
            "at": entry.at,
            "recorded_at": entry.recorded_at,
            "body": {"kind": kind, **common, **details},
            "delivered_at": None,
        }
        for kind, details in found
    ]


_COLUMNS = ("event_id", "patient_id", "pathway", "seq", "kind", "at", "recorded_at", "body")


def insert(
    execute: Callable[[str, Sequence[Any]], Any],
    execute_many: Callable[[str, Sequence[Sequence[Any]]], int],
    codec: RowCodec,
    rows: Sequence[dict[str, Any]],
) -> None:
    """Insert rows within the caller's transaction (the one writing their audit entries), on the
    caller's driver cursor (`execute`, `execute_many`), encoded as `codec` encodes the audit rows."""
    if codec.postgres:
        execute(f"SELECT pg_advisory_xact_lock({_OUTBOX_LOCK})", ())
    sql = _insert_sql(codec.mark)
    encode_time = codec.time
    params = [
        (
            row["event_id"],
            row["patient_id"],
            row["pathway"],
            row["seq"],
            row["kind"],
            encode_time(row["at"]),
            encode_time(row["recorded_at"]),
            orjson.dumps(row["body"]).decode(),
        )
        for row in rows
    ]
    execute_many(sql, params)


@cache
def _insert_sql(mark: str) -> str:
    """The insert statement with the driver's parameter mark (spelled once per mark)."""
    marks = ", ".join([mark] * len(_COLUMNS))
    return f"INSERT INTO {OUTBOX_TABLE} ({', '.join(_COLUMNS)}) VALUES ({marks})"


def read_outbox(store: Store, cursor: int, limit: int = 100) -> list[OutboxMessage]:
    """Up to `limit` messages with an id above `cursor`, in stream order (delivered or not)."""
    query = select(outbox).where(outbox.c.id > cursor).order_by(outbox.c.id).limit(limit)
    with _connect(store) as conn:
        return [_message(row) for row in conn.execute(query)]


def pending_outbox(store: Store, limit: int = 100) -> list[OutboxMessage]:
    """Up to `limit` undelivered messages, in stream order."""
    query = select(outbox).where(outbox.c.delivered_at.is_(None)).order_by(outbox.c.id).limit(limit)
    with _connect(store) as conn:
        return [_message(row) for row in conn.execute(query)]


def count_outbox_pending(store: Store) -> int:
    query = select(func.count()).select_from(outbox).where(outbox.c.delivered_at.is_(None))
    with _connect(store) as conn:
        return int(conn.execute(query).scalar_one())


def mark_outbox_delivered(store: Store, ids: Sequence[int], at: datetime) -> None:
    """Record that these messages were delivered (a redelivery after a crash is still possible)."""
    if not ids:
        return
    with _connect(store) as conn, conn.begin():
        conn.execute(outbox.update().where(outbox.c.id.in_(list(ids))).values(delivered_at=at))


def prune_outbox(store: Store, delivered_before: datetime, batch: int = PRUNE_BATCH) -> int:
    """Delete the messages delivered strictly before `delivered_before`, `batch` rows per
    transaction; returns how many. Undelivered messages stay whatever their age, and so does the
    newest message: SQLite numbers a new row after the highest id present, so keeping it means no
    id (a poller's cursor) is ever handed out twice."""
    with _connect(store) as conn:
        with conn.begin():
            newest = conn.execute(select(func.max(outbox.c.id))).scalar_one()
        if newest is None:
            return 0
        doomed = (
            select(outbox.c.id)
            .where(outbox.c.delivered_at < delivered_before, outbox.c.id < newest)
            .order_by(outbox.c.delivered_at, outbox.c.id)
            .limit(batch)
        )
        pruned = 0
        while True:
            with conn.begin():
                deleted = conn.execute(outbox.delete().where(outbox.c.id.in_(doomed))).rowcount
            pruned += deleted
            if deleted < batch:
                return pruned


@contextmanager
def _connect(store: Store) -> Iterator[Connection]:
    """A connection of the store (its schema made first); driver errors become StorageUnavailable."""
    store.ensure_schema()
    try:
        with store.engine.connect() as conn:
            yield conn
    except SQLAlchemyError as err:
        detail = "; ".join(line.strip() for line in str(getattr(err, "orig", err)).splitlines() if line.strip())
        raise StorageUnavailable(detail) from None


def _message(row: Any) -> OutboxMessage:
    return OutboxMessage(
        id=int(row.id),
        event_id=row.event_id,
        patient_id=row.patient_id,
        pathway=row.pathway,
        seq=int(row.seq),
        kind=row.kind,
        at=row.at,
        recorded_at=row.recorded_at,
        body=dict(row.body),
        delivered_at=row.delivered_at,
    )
