"""The store: SQLite (embedded default) or PostgreSQL (scale-out), behind one interface.

The unit is the enrolment: a patient on one pathway (patient_id, pathway), with its own
snapshot, audit sequence, hash chain and due date; a patient may have several enrolments.

Writes go through `Store.transaction()`: an enrolment's audit append and snapshot update commit
together or not at all. SQLite write transactions start with BEGIN IMMEDIATE (writers queue
on the busy timeout instead of failing on a lock upgrade); PostgreSQL rows are locked with
FOR UPDATE, and due patients are claimed with FOR UPDATE SKIP LOCKED so several workers share
the sweep. Every snapshot update also checks the revision it read, so a lost update is
impossible even for a caller that skipped the lock. Hot paths use SQLAlchemy Core with
executemany, not per-object ORM sessions.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar, cast

import orjson
from sqlalchemy import Connection, Dialect, Engine, create_engine, event, func, inspect, make_url, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import QueuePool

from . import _outbox as outbox
from ._chain import GENESIS, Sealer
from ._crypto import DataCipher, EncryptedData, is_sealed
from ._errors import (
    ConcurrentUpdate,
    DuplicateEnrolment,
    IdempotencyConflict,
    NoDatabase,
    PersistenceError,
    StorageUnavailable,
    UnknownPatient,
)
from ._keys import AuditKeys, KeyRing, load_audit_keys, load_data_keys
from ._migrations import upgrade
from ._readonly import ReadOnlyFile
from ._records import AuditEntry, EnrolmentKey, IdRange, NewEntry, Snapshot, SnapshotUpdate
from ._rows import RowCodec
from ._tables import audit, metadata, patients
from ._urls import DEFAULT_URL, is_private_memory, normalise_url, split_synchronous

__all__ = ["DEFAULT_URL", "Store", "Transaction", "normalise_url"]

SQLITE_BUSY_TIMEOUT_MS = 30_000
# FULL: every commit reaches the disk before `send` returns (WAL + NORMAL could lose the last
# commits on power loss). The default; a URL chooses another level with `?synchronous=normal`.
SQLITE_SYNCHRONOUS = "FULL"


T = TypeVar("T")

# Makes a `quick_init` record (persistence/_records.py) whose `__dict__` is then filled directly.
_new: Any = object.__new__

# "Read the keys from the environment" (persistence/_keys.py), the default of `Store`.
FROM_ENVIRONMENT: Any = object()

# JSON columns are encoded with orjson: several times faster than the standard library on the
# hot path, and the same text for the same value.
_JSON_CODEC: dict[str, Any] = {
    "json_serializer": lambda value: orjson.dumps(value).decode(),
    "json_deserializer": orjson.loads,
}


class Store:
    """Persistence of snapshots and the audit log; the schema is created on first use."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        echo: bool = False,
        audit_keys: AuditKeys | None = FROM_ENVIRONMENT,
        data_keys: KeyRing | None = FROM_ENVIRONMENT,
        create: bool = True,
        pool_size: int | None = None,
        pool_timeout: float | None = None,
    ) -> None:
        """`audit_keys` key the hash chain, `data_keys` encrypt clinical values at rest; by default
        both come from the environment (CAREPATH_AUDIT_KEY[_FILE], CAREPATH_DATA_KEY[_FILE]), None: none.

        `create=False` opens an existing carepath database for reading only: nothing is ever created
        (no file, schema, table or SQLite -wal/-shm), connections are read-only, and a missing file,
        a folder, an in-memory database or one without carepath's tables raises NoDatabase.

        Worker processes (parallel tick, verify and import) open their own stores from the
        environment: give keys explicitly only to single-process work, or configure them there.

        `pool_size` / `pool_timeout` (seconds) size the connection pool (SQLAlchemy's defaults when None).
        """
        self.url = normalise_url(url)
        if audit_keys is FROM_ENVIRONMENT:
            audit_keys = load_audit_keys()
        if data_keys is FROM_ENVIRONMENT:
            data_keys = load_data_keys()
        self.sealer = Sealer(audit_keys)
        self.cipher = DataCipher(data_keys) if data_keys is not None else None
        self.create = create
        pool = {"pool_size": pool_size, "pool_timeout": pool_timeout}
        self._pool = {k: v for k, v in pool.items() if v is not None and not is_private_memory(self.url)}
        self._reading: ReadOnlyFile | None = None
        self.engine: Engine = (
            self._create_engine(self.url, echo, self._pool) if create else self._open_engine(self.url, echo)
        )
        self.codec = RowCodec(self.engine.dialect.name, patients.name, audit.name, self.cipher)
        # Writable SQLite: write transactions are run on the driver's connection directly.
        self._direct = create and self.engine.dialect.name == "sqlite"
        self._kept: list[Any] = []
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        # Classifies appended entries into outbox notices (persistence/_outbox.py); None: no outbox rows.
        self.notify: outbox.Notify | None = None

    # -- setup ------------------------------------------------------------------------

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @staticmethod
    def _create_engine(url: str, echo: bool, pool: dict[str, Any] | None = None) -> Engine:
        pool = pool or {}
        try:
            if not url.startswith("sqlite"):
                return create_engine(url, echo=echo, pool_pre_ping=True, **pool, **_JSON_CODEC)
            url, synchronous = split_synchronous(url, SQLITE_SYNCHRONOUS)
            engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False}, **pool, **_JSON_CODEC)
        except (SQLAlchemyError, ImportError, ValueError) as err:
            shown = _without_password(url)
            if isinstance(err, ImportError) and url.startswith("postgresql"):
                raise StorageUnavailable(
                    f"cannot use {shown!r}: PostgreSQL needs the psycopg package: pip install 'carepath[postgres]'"
                ) from None
            raise StorageUnavailable(f"cannot use {shown!r}: {_one_line(err)}") from None
        _create_private(make_url(url).database)

        def on_connect(dbapi_connection: Any, record: Any) -> None:
            _sqlite_on_connect(dbapi_connection, record, synchronous)

        event.listen(engine, "connect", on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine

    def _open_engine(self, url: str, echo: bool) -> Engine:
        """An engine on an existing database that reads only and creates nothing."""
        shown = make_url(url).render_as_string(hide_password=True)
        if not url.startswith("sqlite"):
            engine = self._create_engine(url, echo, self._pool)
            event.listen(engine, "connect", _postgres_read_only)
            return engine
        if is_private_memory(url):
            raise NoDatabase(shown, "an in-memory database holds nothing")
        url = split_synchronous(url, SQLITE_SYNCHRONOUS)[0]  # reading writes nothing: durability is moot
        path = make_url(url).database or ""
        if path.startswith("file:") or make_url(url).query:
            raise NoDatabase(shown, "read-only commands take a plain sqlite:///PATH")
        self._reading = ReadOnlyFile(path, shown)
        engine = create_engine(
            "sqlite://", echo=echo, creator=self._reading.connect, poolclass=QueuePool, **self._pool, **_JSON_CODEC
        )
        event.listen(engine, "connect", _sqlite_read_only)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine

    def _require_schema(self) -> None:
        """Raise NoDatabase unless carepath's tables are there (in their current layout)."""
        shown = self.engine.url.render_as_string(hide_password=True)
        if self._reading is not None:
            shown = self._reading.url
        with self._guard(), self.engine.connect() as conn:
            inspector = inspect(conn)
            for table in (patients, audit):
                if not inspector.has_table(table.name):
                    raise NoDatabase(shown, f"no table {table.name}")
            columns = {c["name"] for c in inspector.get_columns(audit.name)}
        if "key_id" not in columns or "pathway" not in columns:
            raise StorageUnavailable(f"{shown} was made by an earlier release: run `carepath migrate` first")

    def migrate(self) -> list[str]:
        """Create any missing table or index and upgrade an earlier release's keys (persistence/_migrations.py).

        Safe to run again and from several processes; returns what it upgraded (usually nothing).
        """
        with self._guard(), self.engine.connect().execution_options(carepath_write=True) as conn, conn.begin():
            if self.dialect == "postgresql":
                # One creator at a time: concurrent CREATE TABLE would race on the catalog.
                conn.execute(text("SELECT pg_advisory_xact_lock(72514003)"))
            metadata.create_all(conn, tables=[patients, audit], checkfirst=True)
            outbox.create(conn)
            upgraded = upgrade(conn)
            for index in (*patients.indexes, *audit.indexes):
                index.create(conn, checkfirst=True)  # indexes added since a table was created
        self._schema_ready = True
        return upgraded

    def ensure_schema(self) -> None:
        if not self._schema_ready:
            with self._schema_lock:
                if not self._schema_ready:
                    if self.create:
                        self.migrate()
                    else:
                        self._require_schema()
                        self._schema_ready = True

    def schema_known(self) -> None:
        """Take the schema as current without checking: for the workers of a command that has just
        ensured it, which would otherwise each queue for the write lock behind live writers."""
        self._schema_ready = True

    def dispose(self) -> None:
        while self._kept:
            self._kept.pop().close()
        self.engine.dispose()
        if self._reading is not None:
            self._reading.close()

    # -- transactions ----------------------------------------------------------------

    @contextmanager
    def transaction(self, *, optimistic: bool = False) -> Iterator[Transaction]:
        """One write transaction; appended entries are flushed and committed on exit.

        By default the patients read are locked (SQLite: the write lock is taken up front;
        PostgreSQL: FOR UPDATE), so concurrent writers queue. `optimistic` reads without locks
        and takes the write lock only to flush, where every update checks the revision it read
        and raises ConcurrentUpdate on a mismatch: several bulk writers on different patients
        then compute in parallel instead of queueing, and a transaction that staged nothing
        (a rejected or idle event) never takes the write lock.
        """
        self.ensure_schema()
        if self._direct:
            with self._guard():
                yield from self._sqlite_transaction(optimistic)
            return
        if not optimistic:
            with self._guard(), self.engine.connect().execution_options(carepath_write=True) as conn, conn.begin():
                tx = Transaction(
                    conn.connection.dbapi_connection, conn.dialect, self.codec, self.sealer, notify=self.notify
                )
                yield tx
                tx.flush()
            return
        with self._guard(), self.engine.connect() as conn:
            tx = Transaction(
                conn.connection.dbapi_connection, conn.dialect, self.codec, self.sealer, lock=False, notify=self.notify
            )
            with conn.begin():
                yield tx
            if not tx.staged:
                return
            conn.execution_options(carepath_write=True)
            with conn.begin():
                tx.flush()

    def _sqlite_transaction(self, optimistic: bool) -> Iterator[Transaction]:
        """A SQLite write transaction run on the driver's connection: BEGIN IMMEDIATE (or, optimistic,
        a read transaction, then BEGIN IMMEDIATE only when something was staged), flush, COMMIT."""
        fairy = self._checkout()
        tx = Transaction(
            fairy.dbapi_connection,
            self.engine.dialect,
            self.codec,
            self.sealer,
            lock=not optimistic,
            notify=self.notify,
        )
        try:
            if optimistic:
                tx.control("BEGIN")
                yield tx
                tx.control("ROLLBACK")  # the reads end here; nothing was written in them
                if not tx.staged:
                    return
            tx.control("BEGIN IMMEDIATE")
            if not optimistic:
                yield tx
            tx.flush()
            tx.control("COMMIT")
        finally:
            tx.end()
            self._checkin(fairy)

    def _sqlite_read_first(self, work: Callable[[Transaction], T]) -> T:
        """`work` reading without a transaction (each statement sees the latest commit), then what
        it staged written under BEGIN IMMEDIATE; every write is checked against what was read
        (snapshot revision, unique sequence and enrolment keys), so a writer in between means
        ConcurrentUpdate, never a lost update."""
        fairy = self._checkout()
        tx = Transaction(
            fairy.dbapi_connection, self.engine.dialect, self.codec, self.sealer, lock=False, notify=self.notify
        )
        try:
            result = work(tx)
            if tx.staged:
                tx.control("BEGIN IMMEDIATE")
                tx.flush()
                tx.control("COMMIT")
            return result
        finally:
            tx.end()
            self._checkin(fairy)

    def _checkout(self) -> Any:
        """A pooled driver connection for a write transaction (a kept one when there is one)."""
        try:
            return self._kept.pop()
        except IndexError:
            return self.engine.raw_connection()

    def _checkin(self, fairy: Any) -> None:
        # Two connections stay with the store (a pool round trip costs as much as a small read);
        # the others go back to the pool.
        if len(self._kept) < 2:
            self._kept.append(fairy)
        else:
            fairy.close()

    def run(self, work: Callable[[Transaction], T], *, retries: int = 5, optimistic: bool = False) -> T:
        """Run `work` in a transaction, retrying it (bounded) when another writer got there first."""
        for attempt in range(retries + 1):
            try:
                with self.transaction(optimistic=optimistic) as tx:
                    return work(tx)
            except ConcurrentUpdate:
                if attempt == retries:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def run_read_first(self, work: Callable[[Transaction], T], *, retries: int = 5) -> T:
        """`run` for one command: on SQLite `work` first reads and decides without the write lock,
        which is taken only to write what it staged (revision-checked), so a rejected event takes
        none; after a conflict it runs again with the lock taken up front, queueing as `run` does.
        On PostgreSQL, where row locks cost no extra round trip, it is `run`."""
        if self._direct:
            self.ensure_schema()
            try:
                try:  # `_guard`, spelled out: its context manager cost a command a microsecond
                    return self._sqlite_read_first(work)
                except SQLAlchemyError as err:
                    raise _persistence_error(err) from None
            except ConcurrentUpdate:
                if retries == 0:
                    raise
                retries -= 1
        return self.run(work, retries=retries)

    # -- reads -----------------------------------------------------------------------

    def snapshot(self, patient_id: str, pathway: str) -> Snapshot:
        """One enrolment's snapshot (raises UnknownPatient naming the patient and pathway)."""
        with self._read() as conn:
            row = conn.exec_driver_sql(self.codec.select_enrolment, (patient_id, pathway)).first()
        if row is None:
            raise UnknownPatient(patient_id, pathway)
        return self.codec.snapshot(row)

    def snapshots(self, patient_id: str) -> list[Snapshot]:
        """Every enrolment of a patient, by pathway (empty when the patient is not enrolled)."""
        with self._read() as conn:
            return [self.codec.snapshot(row) for row in conn.exec_driver_sql(self.codec.select_patient, (patient_id,))]

    def pathways(self, patient_id: str) -> list[str]:
        """The pathways a patient is enrolled on, sorted (empty when none)."""
        with self._read() as conn:
            return list(conn.exec_driver_sql(self.codec.select_pathways, (patient_id,)).scalars())

    def exists(self, patient_id: str, pathway: str | None = None) -> bool:
        """Whether the enrolment exists (with `pathway`), or the patient has any enrolment."""
        with self._read() as conn:
            if pathway is None:
                return conn.exec_driver_sql(self.codec.patient_exists, (patient_id,)).first() is not None
            return conn.exec_driver_sql(self.codec.enrolment_exists, (patient_id, pathway)).first() is not None

    def history(self, patient_id: str, pathway: str, until: datetime | None = None) -> list[AuditEntry]:
        """An enrolment's audit entries in sequence order (up to clinical time `until`)."""
        codec = self.codec
        sql = f"{codec.select_entries} WHERE patient_id = {codec.mark} AND pathway = {codec.mark}"
        params: tuple[Any, ...] = (patient_id, pathway)
        if until is not None:
            sql += f" AND at <= {codec.mark}"
            params += (codec.time(until),)
        with self._read() as conn:
            rows = conn.exec_driver_sql(sql + " ORDER BY seq", params).all()
        if not rows and not self.exists(patient_id, pathway):
            raise UnknownPatient(patient_id, pathway)
        return [codec.entry(row) for row in rows]

    def enrolment_log(self, patient_id: str, pathway: str) -> tuple[Snapshot | None, list[AuditEntry]]:
        """An enrolment's snapshot and audit entries read in one consistent read (one transaction;
        PostgreSQL: REPEATABLE READ), so a writer committing meanwhile is seen in both or neither."""
        codec = self.codec
        sql = f"{codec.select_entries} WHERE patient_id = {codec.mark} AND pathway = {codec.mark} ORDER BY seq"
        with self._read() as conn, conn.begin():
            if self.dialect == "postgresql":
                conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            row = conn.exec_driver_sql(codec.select_enrolment, (patient_id, pathway)).first()
            rows = conn.exec_driver_sql(sql, (patient_id, pathway)).all()
        return (codec.snapshot(row) if row is not None else None), [codec.entry(r) for r in rows]

    def iter_entries(
        self,
        patient_id: str | None = None,
        batch: int = 5_000,
        *,
        pathway: str | None = None,
        id_range: IdRange | None = None,
    ) -> Iterator[AuditEntry]:
        """Stream audit entries ordered by patient, pathway, then sequence, without loading them all.

        With `patient_id` only that patient's entries (and with `pathway`, only that enrolment's);
        `id_range` (low, high) keeps patients with low <= patient_id < high (None: unbounded).
        """
        where: tuple[tuple[str, str], ...] = ()
        if patient_id is not None:
            where = (("patient_id", patient_id),) + ((("pathway", pathway),) if pathway is not None else ())
        for row in self._stream(self.codec.select_entries, where, id_range, "patient_id, pathway, seq", batch):
            yield self.codec.entry(row)

    def iter_links(self, batch: int = 20_000) -> Iterator[tuple[str, str, int, str, datetime | None]]:
        """Every entry's (patient_id, pathway, seq, hash, recorded_at of seq 1 else None), in chain order.

        The few columns anchors need, streamed in one read (one consistent view of the log).
        """
        sql = f"SELECT patient_id, pathway, seq, hash, CASE WHEN seq = 1 THEN recorded_at END FROM {audit.name}"
        decode = self.codec.time_in
        for patient_id, pathway, seq, digest, first in self._stream(sql, (), None, "patient_id, pathway, seq", batch):
            yield patient_id, pathway, seq, digest, decode(first) if first is not None else None

    def iter_snapshots(
        self, state: str | None = None, batch: int = 5_000, *, id_range: IdRange | None = None
    ) -> Iterator[Snapshot]:
        """Stream snapshots ordered by patient id then pathway (only those in `state`, or in `id_range`)."""
        where = (("state", state),) if state is not None else ()
        for row in self._stream(self.codec.select_snapshots, where, id_range, "patient_id, pathway", batch):
            yield self.codec.snapshot(row)

    def _stream(
        self,
        select_sql: str,
        where: tuple[tuple[str, str], ...],
        id_range: IdRange | None,
        order: str,
        batch: int,
    ) -> Iterator[Any]:
        """Rows of `select_sql` filtered on columns or a patient-id range, fetched `batch` at a time."""
        mark = self.codec.mark
        sql, params = select_sql, cast(tuple[str, ...], ())
        if where:
            sql = f"{sql} WHERE " + " AND ".join(f"{column} = {mark}" for column, _ in where)
            params = tuple(value for _, value in where)
        elif id_range is not None:
            sql, params = _range_clause(sql, mark, id_range)
        with self._read() as conn:
            yield from conn.execution_options(stream_results=True, yield_per=batch).exec_driver_sql(
                f"{sql} ORDER BY {order}", params
            )

    def id_boundaries(self, parts: int, *, due_at: datetime | None = None) -> list[str]:
        """Patient ids that cut the enrolments into `parts` ranges of about equal size.

        A range holds every enrolment of its patients (low <= patient_id < high). With `due_at`
        the ranges share out the enrolments due by then (a sweep's work), read through the due
        index rather than by counting and walking every enrolment.
        """
        where: str = ""
        params: tuple[Any, ...] = ()
        if due_at is not None:
            where, params = f" WHERE next_due_at <= {self.codec.mark}", (self.codec.time(due_at),)
        with self._read() as conn:
            total = int(conn.exec_driver_sql(f"SELECT count(*) FROM {patients.name}{where}", params).scalar_one())
            # Offsets as literals: given as parameters, SQLite's planner walks every enrolment in
            # primary-key order rather than sorting the few the due index finds.
            cuts = [
                conn.exec_driver_sql(
                    f"SELECT patient_id FROM {patients.name}{where} ORDER BY patient_id "
                    f"LIMIT 1 OFFSET {int(total * k // parts)}",
                    params,
                ).scalar()
                for k in range(1, parts)
            ]
        return sorted({cut for cut in cuts if cut is not None})

    def count_by_state(self) -> dict[str, int]:
        with self._read() as conn:
            rows = conn.execute(select(patients.c.state, func.count()).group_by(patients.c.state)).all()
        return {state: count for state, count in rows}

    def count_patients(self) -> int:
        """The number of enrolments (snapshot rows); a patient on two pathways counts twice."""
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(patients)).scalar_one())

    def count_entries(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(audit)).scalar_one())

    def due_ids(self, at: datetime, limit: int | None = None) -> list[EnrolmentKey]:
        """Enrolments (patient_id, pathway) whose next_due_at <= at, earliest first (from the index alone)."""
        mark = self.codec.mark
        sql = (
            f"SELECT patient_id, pathway FROM {patients.name} WHERE next_due_at <= {mark} "
            "ORDER BY next_due_at, patient_id, pathway"
        )
        params: tuple[Any, ...] = (self.codec.time(at),)
        if limit is not None:
            sql, params = f"{sql} LIMIT {mark}", (*params, limit)
        with self._read() as conn:
            return [(row[0], row[1]) for row in conn.exec_driver_sql(sql, params)]

    def due_snapshots(self, at: datetime) -> list[Snapshot]:
        codec = self.codec
        sql = f"{codec.select_snapshots} WHERE next_due_at <= {codec.mark} ORDER BY next_due_at, patient_id, pathway"
        with self._read() as conn:
            return [codec.snapshot(row) for row in conn.exec_driver_sql(sql, (codec.time(at),))]

    def patient_ids(self) -> list[str]:
        """Every enrolled patient's id once, sorted."""
        query = select(patients.c.patient_id).distinct().order_by(patients.c.patient_id)
        with self._read() as conn:
            return list(conn.execute(query).scalars())

    # -- test and audit support ------------------------------------------------------------

    def execute_raw(self, sql: str, params: dict[str, Any] | None = None) -> None:
        """Run one raw statement in its own transaction (operators' repairs, tamper tests)."""
        self.ensure_schema()
        with self._guard(), self.engine.connect().execution_options(carepath_write=True) as conn, conn.begin():
            conn.execute(text(sql), params or {})

    # -- internals -------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        self.ensure_schema()
        with self._guard(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as err:
            raise _persistence_error(err) from None


class Transaction:
    """A write transaction on one connection; appends are buffered and written in bulk."""

    def __init__(
        self,
        dbapi_connection: Any,
        dialect: Dialect,
        codec: RowCodec,
        sealer: Sealer,
        *,
        lock: bool = True,
        notify: outbox.Notify | None = None,
    ) -> None:
        self._dbapi_connection = dbapi_connection
        self._dialect = dialect
        self._notify = notify
        self._outbox: list[dict[str, Any]] = []
        self._codec = codec
        self._sealer = sealer
        self._lock = lock
        # The statements go straight to a DBAPI cursor of this transaction's connection.
        self._cursor: Any = None
        self._dbapi_error: type[Exception] = dialect.loaded_dbapi.Error
        # Keyed by enrolment (patient_id, pathway): the revision first read and the staged snapshot.
        self._pending: dict[EnrolmentKey, tuple[int, Snapshot]] = {}
        self._entries: list[dict[str, Any]] = []
        self._keys: dict[tuple[str, str, str], AuditEntry] = {}
        # The entries staged so far by enrolment, as written (decrypted), for `history` and `entries_at`.
        self._written: dict[EnrolmentKey, list[AuditEntry]] = {}
        self._enrolled: list[EnrolmentKey] = []
        # Snapshots read in bulk (`prefetch`, `enrolments`), and the patients whose every
        # enrolment is among them (so a missing one needs no query).
        self._loaded: dict[EnrolmentKey, Snapshot] = {}
        self._complete: set[str] = set()
        # The pathways of each patient among the loaded and staged enrolments (an index of both).
        self._pathways: dict[str, set[str]] = {}

    # -- the driver -----------------------------------------------------------------------

    def _execute(self, sql: str, params: Sequence[Any]) -> Any:
        """Run one statement on the DBAPI cursor; driver errors become SQLAlchemy's (see _guard)."""
        if self._cursor is None:
            self._cursor = self._dbapi_connection.cursor()
        try:
            self._cursor.execute(sql, params)
        except self._dbapi_error as err:
            raise DBAPIError.instance(sql, params, err, self._dbapi_error, dialect=self._dialect) from err
        return self._cursor

    def _execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run one statement for many rows; returns the number of rows it changed."""
        if self._cursor is None:
            self._cursor = self._dbapi_connection.cursor()
        try:
            if len(rows) == 1:  # psycopg runs executemany in pipeline mode: one more round trip
                self._cursor.execute(sql, rows[0])
            else:
                self._cursor.executemany(sql, rows)
        except self._dbapi_error as err:
            raise DBAPIError.instance(sql, rows, err, self._dbapi_error, dialect=self._dialect) from err
        return int(self._cursor.rowcount)

    def control(self, sql: str) -> None:
        """BEGIN [IMMEDIATE], COMMIT or ROLLBACK on the connection (SQLite, run by the store)."""
        self._execute(sql, ())

    def end(self) -> None:
        """Roll back whatever is still open (after an error) and release the cursor."""
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None
        if self._dbapi_connection.in_transaction:
            self._dbapi_connection.rollback()

    @property
    def staged(self) -> bool:
        """Whether anything waits to be written."""
        return bool(self._entries or self._enrolled or self._pending)

    def _snapshot(self, row: Sequence[Any]) -> Snapshot:
        """A snapshot to write from: its context must be in clear (never re-stored undecrypted)."""
        snap = self._codec.snapshot(row)
        if is_sealed(snap.context):
            raise EncryptedData(
                f"the context of patient {snap.patient_id!r} on {snap.pathway!r}", snap.context.get("kid")
            )
        return snap

    # -- reads within the transaction -------------------------------------------------

    def prefetch(self, patient_ids: Sequence[str]) -> None:
        """Read (and lock) every enrolment of many patients in a few queries, so later loads need no round trip."""
        wanted = list(dict.fromkeys(pid for pid in patient_ids if pid not in self._complete))
        self._read_patients(wanted)

    def _read_patients(self, patient_ids: Sequence[str]) -> None:
        for start in range(0, len(patient_ids), 500):
            chunk = tuple(patient_ids[start : start + 500])
            for row in self._execute(self._codec.in_clause(len(chunk), lock=self._lock), chunk).fetchall():
                snap = self._snapshot(row)
                self._loaded.setdefault(snap.key, snap)
                self._pathways.setdefault(snap.patient_id, set()).add(snap.pathway)
            self._complete.update(chunk)

    def enrolments(self, patient_id: str) -> list[Snapshot]:
        """Every enrolment of the patient as this transaction sees it, by pathway, locked (may be empty)."""
        if patient_id not in self._complete:
            rows = self._execute(self._codec.lock_patient if self._lock else self._codec.select_patient, (patient_id,))
            for row in rows.fetchall():
                snap = self._snapshot(row)
                self._loaded.setdefault(snap.key, snap)
                self._pathways.setdefault(patient_id, set()).add(snap.pathway)
            self._complete.add(patient_id)
        return [self._current((patient_id, pathway)) for pathway in sorted(self._pathways.get(patient_id, ()))]

    def _current(self, key: EnrolmentKey) -> Snapshot:
        """A loaded or staged enrolment as this transaction sees it."""
        pending = self._pending.get(key)
        return pending[1] if pending is not None else self._loaded[key]

    def load(self, patient_id: str, pathway: str) -> Snapshot:
        """The enrolment's snapshot, locked for this transaction (raises UnknownPatient)."""
        key = (patient_id, pathway)
        pending = self._pending.get(key)
        if pending is not None:
            return pending[1]
        if key in self._loaded:
            return self._loaded[key]
        if patient_id in self._complete:
            raise UnknownPatient(patient_id, pathway)
        query = self._codec.lock_enrolment if self._lock else self._codec.select_enrolment
        row = self._execute(query, key).fetchone()
        if row is None:
            raise UnknownPatient(patient_id, pathway)
        return self._snapshot(row)

    def load_many(self, patient_ids: Sequence[str]) -> dict[EnrolmentKey, Snapshot]:
        """Snapshots of every enrolment of the patients among `patient_ids` that are enrolled, locked."""
        self._read_patients([pid for pid in dict.fromkeys(patient_ids) if pid not in self._complete])
        return {
            (pid, pathway): self._current((pid, pathway))
            for pid in dict.fromkeys(patient_ids)
            for pathway in self._pathways.get(pid, ())
        }

    def claim_due(self, at: datetime, limit: int, *, id_range: IdRange | None = None) -> list[Snapshot]:
        """Up to `limit` due enrolments (within `id_range`), locked; rows another worker holds are skipped."""
        low, high = id_range if id_range is not None else (None, None)
        sql = self._codec.claim_due(low=low is not None, high=high is not None, lock=self._lock)
        params = (self._codec.time(at), *(bound for bound in (low, high) if bound is not None), limit)
        rows = self._execute(sql, params).fetchall()
        return [self._snapshot(row) for row in rows]

    def entries_at(self, patient_id: str, pathway: str, at: datetime) -> list[AuditEntry]:
        """The enrolment's entries recorded at exactly clinical time `at` (written or staged)."""
        codec = self._codec
        sql = (
            f"{codec.select_entries} WHERE patient_id = {codec.mark} AND pathway = {codec.mark} "
            f"AND at = {codec.mark} ORDER BY seq"
        )
        rows = self._execute(sql, (patient_id, pathway, codec.time(at))).fetchall()
        found = [codec.entry(row) for row in rows]
        return found + [entry for entry in self._written.get((patient_id, pathway), ()) if entry.at == at]

    def history(self, patient_id: str, pathway: str) -> list[AuditEntry]:
        """The enrolment's entries in seq order, written or staged (read only to re-derive a state)."""
        codec = self._codec
        sql = f"{codec.select_entries} WHERE patient_id = {codec.mark} AND pathway = {codec.mark} ORDER BY seq"
        found = [codec.entry(row) for row in self._execute(sql, (patient_id, pathway)).fetchall()]
        return found + self._written.get((patient_id, pathway), [])

    def find_entry(self, patient_id: str, pathway: str, idempotency_key: str) -> AuditEntry | None:
        """The enrolment's entry recorded earlier under this idempotency key, if any."""
        buffered = self._keys.get((patient_id, pathway, idempotency_key))
        if buffered is not None:
            return buffered
        row = self._execute(self._codec.select_keyed_entry, (patient_id, pathway, idempotency_key)).fetchone()
        return self._codec.entry(row) if row is not None else None

    # -- writes -------------------------------------------------------------------------

    def enroll(
        self,
        patient_id: str,
        pathway: str,
        version: int,
        update: SnapshotUpdate,
        entry: NewEntry,
        recorded_at: datetime,
    ) -> AuditEntry:
        """Create the enrolment's snapshot and its first audit entry (seq 1 of its own chain)."""
        key = (patient_id, pathway)
        if key in self._pending or key in self._loaded:
            raise DuplicateEnrolment(patient_id, pathway)
        if patient_id not in self._complete and self._execute(self._codec.enrolment_exists, key).fetchone():
            raise DuplicateEnrolment(patient_id, pathway)
        seed = Snapshot(
            patient_id=patient_id,
            pathway=pathway,
            version=version,
            configuration=[],
            context={},
            state="",
            state_since=entry.at,
            revision=0,
            next_due_at=None,
            last_event_at=entry.at,
            last_seq=0,
            last_hash=GENESIS,
            created_at=recorded_at,
            updated_at=recorded_at,
        )
        self._enrolled.append(key)
        self._pending[key] = (0, seed)
        self._pathways.setdefault(patient_id, set()).add(pathway)
        return self.append(seed, entry, update, recorded_at)

    def append(self, snapshot: Snapshot, entry: NewEntry, update: SnapshotUpdate, recorded_at: datetime) -> AuditEntry:
        """Chain a new audit entry onto the enrolment and stage the snapshot update."""
        if (
            entry.idempotency_key is not None
            and (snapshot.patient_id, snapshot.pathway, entry.idempotency_key) in self._keys
        ):
            raise IdempotencyConflict(snapshot.patient_id, entry.idempotency_key, snapshot.pathway)
        version = update.version if update.version is not None else snapshot.version
        patient_id, pathway = snapshot.patient_id, snapshot.pathway
        # The row in AuditEntry's field order, so it can become the entry's own `__dict__` (what
        # AuditEntry(**row) would build, without a second dict and the keyword call).
        row: dict[str, Any] = {
            "patient_id": patient_id,
            "seq": snapshot.last_seq + 1,
            "event": entry.event,
            "payload": entry.payload,
            "payload_schema": entry.payload_schema,
            "at": entry.at,
            "recorded_at": recorded_at,
            "actor": entry.actor,
            "pathway": pathway,
            "version": version,
            "config_before": entry.config_before,
            "config_after": entry.config_after,
            "transitions": entry.transitions,
            "decision": entry.decision,
            "idempotency_key": entry.idempotency_key,
            "prev_hash": snapshot.last_hash,
        }
        cipher = self._codec.cipher
        if cipher is None:
            key_id, row["hash"] = self._sealer.seal(row)
            row["key_id"] = key_id
            self._entries.append(row)
            written: AuditEntry = _new(AuditEntry)
            written.__dict__.update(row, sealed=None)
        else:  # hashed as stored: the chain covers the ciphertext, verifiable without the data key
            stored = cipher.seal_entry(row)
            stored["key_id"], stored["hash"] = self._sealer.seal(stored)
            sealed = {"payload": stored["payload"], "decision": stored["decision"]}
            written = AuditEntry(**row, key_id=stored["key_id"], hash=stored["hash"], sealed=sealed)
            self._entries.append(stored)
        key = (patient_id, pathway)
        if entry.idempotency_key is not None:
            self._keys[(patient_id, pathway, entry.idempotency_key)] = written
        staged = self._written.get(key)
        if staged is None:
            self._written[key] = [written]
        else:
            staged.append(written)
        if update.state_since is not None:
            since = update.state_since
        else:
            since = entry.at if update.state != snapshot.state else snapshot.state_since
        after: Snapshot = _new(Snapshot)
        after.__dict__.update(  # Snapshot(...) without the keyword call (its fields, in order)
            patient_id=patient_id,
            pathway=pathway,
            version=version,
            configuration=update.configuration,
            context=update.context,
            state=update.state,
            state_since=since,
            revision=snapshot.revision + 1,
            next_due_at=update.next_due_at,
            last_event_at=update.last_event_at,
            last_seq=written.seq,
            last_hash=written.hash,
            created_at=snapshot.created_at,
            updated_at=recorded_at,
        )
        pending = self._pending.get(key)
        self._pending[key] = (snapshot.revision if pending is None else pending[0], after)
        if self._notify is not None:
            self._outbox += outbox.rows_for(snapshot, written, after, self._notify)
        pathways = self._pathways.get(patient_id)
        if pathways is None:
            self._pathways[patient_id] = {pathway}
        else:
            pathways.add(pathway)
        return written

    def flush(self) -> None:
        """Write the staged entries and snapshot updates; a stale revision aborts everything."""
        codec = self._codec
        pending = self._pending
        enrolled: set[EnrolmentKey] | tuple[()] = ()
        if self._enrolled:
            enrolled = set(self._enrolled)
            rows = [codec.snapshot_params(pending[key][1]) for key in enrolled]
            self._execute_many(codec.insert_patient, rows)
        if self._entries:
            encode = codec.entry_params
            self._execute_many(codec.insert_entry, [encode(row) for row in self._entries])
        if self._outbox:
            outbox.insert(self._execute, self._execute_many, codec, self._outbox)
        changed = [
            (original, snap)
            for key, (original, snap) in pending.items()
            if snap.revision != original and key not in enrolled
        ]
        if changed:
            updates = [codec.update_params(original, snap) for original, snap in changed]
            if self._execute_many(codec.update_patient, updates) != len(updates):
                original, snap = changed[0]
                raise ConcurrentUpdate(snap.patient_id, original, snap.pathway)
        loaded = self._loaded
        for key, (_, snap) in pending.items():
            loaded[key] = snap
        self._entries = []
        self._enrolled = []
        self._pending = {}
        self._keys = {}
        self._written = {}
        self._outbox = []


def _create_private(path: str | None) -> None:
    """Create a new SQLite file readable by its owner only (0600, whatever the umask).

    SQLite gives the -wal and -shm files it creates the mode of the database file.
    """
    if not path or path == ":memory:" or path.startswith("file:") or os.path.exists(path):
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process created it first (with this same function)
    except OSError:
        return  # a missing folder and the like: SQLite reports it on connect
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _range_clause(sql: str, mark: str, id_range: IdRange) -> tuple[str, tuple[str, ...]]:
    low, high = id_range
    conditions, params = [], []
    if low is not None:
        conditions.append(f"patient_id >= {mark}")
        params.append(low)
    if high is not None:
        conditions.append(f"patient_id < {mark}")
        params.append(high)
    if not conditions:
        return sql, ()
    return f"{sql} WHERE {' AND '.join(conditions)}", tuple(params)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any, synchronous: str = SQLITE_SYNCHRONOUS) -> None:
    # The driver must not open transactions itself; `_sqlite_on_begin` does, explicitly.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # Busy timeout first: switching a fresh file to WAL takes a lock other starting processes may hold.
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    _switch_to_wal(cursor)
    cursor.execute(f"PRAGMA synchronous={synchronous}")
    cursor.execute("PRAGMA foreign_keys=ON")
    # A 64 MiB page cache and memory-mapped reads: sweeps and replays touch many pages.
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.execute("PRAGMA mmap_size=268435456")
    # Checkpoint the WAL every ~16 MB rather than every 4 MB: a sweep's or import's batches touch
    # pages all over the file, and copying them back after every batch halved their speed. Not
    # more: a WAL that keeps growing makes every synchronous=FULL commit's sync dearer (measured:
    # ~80 MB cost a send ~23 us more CPU and a quarter of its throughput; a sweep gains ~13 %).
    cursor.execute("PRAGMA wal_autocheckpoint=4000")
    cursor.close()


def _sqlite_read_only(dbapi_connection: Any, _record: Any) -> None:
    # As `_sqlite_on_connect`, minus everything that writes: the journal mode stays the file's.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA query_only=ON")
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.execute("PRAGMA mmap_size=268435456")
    cursor.close()


def _postgres_read_only(dbapi_connection: Any, _record: Any) -> None:
    # Every transaction of a reading command is READ ONLY: the server refuses any write it tries.
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    dbapi_connection.commit()


def _switch_to_wal(cursor: Any) -> None:
    # Switching a fresh file to WAL needs an exclusive lock, and SQLite answers "database is
    # locked" at once (without the busy handler) while processes starting together hold shared
    # locks; so wait here, as the busy timeout would, until it goes through.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _sqlite_on_begin(conn: Connection) -> None:
    # Writers take the write lock up front and queue on busy_timeout; a deferred transaction
    # that upgrades later would fail with SQLITE_BUSY instead of waiting.
    if conn.get_execution_options().get("carepath_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


def _persistence_error(err: SQLAlchemyError) -> PersistenceError:
    """The error a driver or SQLAlchemy error surfaces as above the store."""
    if isinstance(err, (IntegrityError, OperationalError)):
        # A unique key (patient, seq / idempotency key / id) taken by another writer, a
        # serialization failure or a deadlock: the caller retries. Anything else is a fault.
        if _is_conflict(err):
            return ConcurrentUpdate(_patient_from(err), -1)
        return StorageUnavailable(_one_line(err.orig) or _one_line(err))
    return StorageUnavailable(_one_line(getattr(err, "orig", err)))


def _is_conflict(err: DBAPIError) -> bool:
    code = getattr(err.orig, "sqlstate", None)
    if code is not None:
        # 23505 unique violation, 40001 serialization failure, 40P01 deadlock: another writer won.
        return code in ("23505", "40001", "40P01")
    # sqlite3 reports a taken key as "UNIQUE constraint failed: ..." (and no SQLSTATE); "database is
    # locked" where a WAL reader's snapshot went stale before it could write (SQLITE_BUSY_SNAPSHOT,
    # which skips the busy handler): both mean another writer got there first.
    if isinstance(err, IntegrityError):
        return "UNIQUE constraint failed" in str(err.orig)
    return "database is locked" in str(err.orig)


def _without_password(url: str) -> str:
    """The URL as errors show it: a password never reaches a message, a log or an HTTP problem."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):  # not parseable: mask whatever stands between ':' and '@'
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _one_line(err: object) -> str:
    """Driver messages span lines (libpq adds hints); errors above persistence are one line."""
    return "; ".join(line.strip() for line in str(err).splitlines() if line.strip())


def _patient_from(err: DBAPIError) -> str:
    params = err.params
    if isinstance(params, dict):
        return str(params.get("patient_id", params.get("b_patient_id", "?")))
    if isinstance(params, (list, tuple)) and params and isinstance(params[0], dict):
        return str(params[0].get("patient_id", params[0].get("b_patient_id", "?")))
    return "?"
