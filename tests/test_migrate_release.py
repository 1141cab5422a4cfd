"""Upgrading a database made by release 0.1.0 (one pathway per patient) to enrolment keys.

tests/fixtures/release-0.1.0.db was written by that release (tests/fixtures/make_release_0_1_0.py
says how): six patients covering assess, reassess with escalation, tick, override, withdraw, a
red flag and idempotency keys. On PostgreSQL the same rows are copied into tables made by that
release's DDL (kept below as text). After `migrate` every old chain verifies, replays and reads as
before, no row is changed or re-hashed, and migrating again does nothing.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect

from pathway import Engine, FakeClock, verify
from pathway.cli import main
from persistence import AuditEntry, Snapshot, Store
from persistence._records import AUDIT_COLUMNS
from persistence._rows import AUDIT_TABLE, PATIENTS_TABLE, RowCodec
from persistence._tables import DUE_INDEX, IDEMPOTENCY_INDEX, SEQ_CONSTRAINT
from tests.conftest import NOW
from tests.helpers import reassess_data
from tests.second_pathway import SECOND

FIXTURE = Path(__file__).parent / "fixtures" / "release-0.1.0.db"

# The PostgreSQL schema release 0.1.0 created (SQLAlchemy's DDL for its tables, verbatim).
RELEASE_0_1_0_POSTGRES_DDL = """
CREATE TABLE carepath_patients (
    patient_id VARCHAR(200) NOT NULL,
    pathway VARCHAR(100) NOT NULL,
    version INTEGER NOT NULL,
    configuration JSON NOT NULL,
    context JSON NOT NULL,
    state VARCHAR(100) NOT NULL,
    state_since TIMESTAMP WITH TIME ZONE NOT NULL,
    revision INTEGER NOT NULL,
    next_due_at TIMESTAMP WITH TIME ZONE,
    last_event_at TIMESTAMP WITH TIME ZONE NOT NULL,
    last_seq INTEGER NOT NULL,
    last_hash VARCHAR(64) NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (patient_id)
);
CREATE INDEX ix_carepath_patients_due ON carepath_patients (next_due_at, patient_id);
CREATE INDEX ix_carepath_patients_state ON carepath_patients (state);
CREATE TABLE carepath_audit (
    id SERIAL NOT NULL,
    patient_id VARCHAR(200) NOT NULL,
    seq INTEGER NOT NULL,
    event VARCHAR(100) NOT NULL,
    payload JSON NOT NULL,
    payload_schema INTEGER NOT NULL,
    at TIMESTAMP WITH TIME ZONE NOT NULL,
    recorded_at TIMESTAMP WITH TIME ZONE NOT NULL,
    actor VARCHAR(200),
    pathway VARCHAR(100) NOT NULL,
    version INTEGER NOT NULL,
    config_before JSON NOT NULL,
    config_after JSON NOT NULL,
    transitions JSON NOT NULL,
    decision JSON,
    idempotency_key VARCHAR(200),
    prev_hash VARCHAR(64) NOT NULL,
    hash VARCHAR(64) NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT uq_carepath_audit_seq UNIQUE (patient_id, seq)
);
CREATE UNIQUE INDEX uq_carepath_audit_idempotency ON carepath_audit (patient_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
"""


@dataclass(frozen=True)
class Recorded:
    """What the release 0.1.0 file holds, read without the current store."""

    entries: list[AuditEntry]
    snapshots: list[Snapshot]


# The audit columns of release 0.1.0: all of today's but the audit key id (added since, last).
OLD_AUDIT_COLUMNS = tuple(name for name in AUDIT_COLUMNS if name != "key_id")
assert (*OLD_AUDIT_COLUMNS, "key_id") == AUDIT_COLUMNS
SELECT_OLD_ENTRIES = f"SELECT {', '.join(OLD_AUDIT_COLUMNS)}, NULL AS key_id FROM {AUDIT_TABLE}"


def _read_fixture() -> Recorded:
    codec = RowCodec("sqlite", PATIENTS_TABLE, AUDIT_TABLE)
    with sqlite3.connect(f"file:{FIXTURE}?mode=ro", uri=True) as conn:
        entries = [codec.entry(row) for row in conn.execute(f"{SELECT_OLD_ENTRIES} ORDER BY id")]
        snapshots = [codec.snapshot(row) for row in conn.execute(f"{codec.select_snapshots} ORDER BY patient_id")]
    return Recorded(entries, snapshots)


RECORDED = _read_fixture()


def _copy_to_old_postgres(url: str) -> None:
    """Build the 0.1.0 tables in the test schema and copy the fixture's rows into them."""
    store = Store(url)  # only its engine: the schema is not touched until first use
    codec = RowCodec("postgresql", PATIENTS_TABLE, AUDIT_TABLE)
    try:
        with store.engine.begin() as conn:
            for statement in RELEASE_0_1_0_POSTGRES_DDL.split(";"):
                if statement.strip():
                    conn.exec_driver_sql(statement)
            cursor: Any = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            insert = (
                f"INSERT INTO {AUDIT_TABLE} ({', '.join(OLD_AUDIT_COLUMNS)}) "
                f"VALUES ({', '.join(['%s'] * len(OLD_AUDIT_COLUMNS))})"
            )
            cursor.executemany(insert, [codec.entry_params(e.as_row())[:-1] for e in RECORDED.entries])
            cursor.executemany(codec.insert_patient, [codec.snapshot_params(s) for s in RECORDED.snapshots])
    finally:
        store.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def old_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database in the release 0.1.0 layout holding the fixture's patients, on each backend."""
    if request.param == "sqlite":
        copy = tmp_path / "release-0.1.0.db"
        shutil.copyfile(FIXTURE, copy)
        return f"sqlite:///{copy}"
    url: str = request.getfixturevalue("pg_schema_url")
    _copy_to_old_postgres(url)
    return url


@pytest.fixture
def store(old_url: str) -> Iterator[Store]:
    s = Store(old_url)
    yield s
    s.dispose()


def _layout(store: Store) -> dict[str, list[str]]:
    with store.engine.connect() as conn:
        inspector = inspect(conn)
        unique = {c["name"]: c["column_names"] for c in inspector.get_unique_constraints(AUDIT_TABLE)}
        indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes(PATIENTS_TABLE)}
        indexes.update({i["name"]: i["column_names"] for i in inspector.get_indexes(AUDIT_TABLE)})
        return {
            "patients key": list(inspector.get_pk_constraint(PATIENTS_TABLE)["constrained_columns"]),
            "audit seq": list(unique[SEQ_CONSTRAINT]),
            "idempotency": list(indexes[IDEMPOTENCY_INDEX]),
            "due": list(indexes[DUE_INDEX]),
        }


def test_the_fixture_is_in_the_old_layout() -> None:
    """The committed file really has 0.1.0's single-column keys (so the upgrade is exercised)."""
    with sqlite3.connect(f"file:{FIXTURE}?mode=ro", uri=True) as conn:
        keys = [row[1] for row in conn.execute(f"PRAGMA table_info({PATIENTS_TABLE})") if row[5]]
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (AUDIT_TABLE,)).fetchone()[0]
    assert keys == ["patient_id"]
    assert "UNIQUE (patient_id, seq)" in sql
    assert len(RECORDED.snapshots) == 6 and len(RECORDED.entries) == 19
    assert {e.event for e in RECORDED.entries} >= {"enroll", "assess", "reassess", "tick", "override", "withdraw"}
    assert any(e.idempotency_key for e in RECORDED.entries)


def test_migrate_rekeys_by_enrolment_and_changes_no_row(store: Store) -> None:
    """After migrate: new keys and indexes; every audit row and snapshot as it was; nothing re-hashed."""
    done = store.migrate()
    # SQLite rebuilds the tables with their new indexes; PostgreSQL also replaces the two indexes.
    assert done[:3] == [
        "carepath_audit: column key_id (audit key id, NULL for unkeyed entries)",
        "carepath_patients: primary key (patient_id, pathway)",
        "carepath_audit: unique (patient_id, pathway, seq)",
    ]
    assert _layout(store) == {
        "patients key": ["patient_id", "pathway"],
        "audit seq": ["patient_id", "pathway", "seq"],
        "idempotency": ["patient_id", "pathway", "idempotency_key"],
        "due": ["next_due_at", "patient_id", "pathway"],
    }
    assert sorted(store.iter_entries(), key=lambda e: (e.patient_id, e.seq)) == sorted(
        RECORDED.entries, key=lambda e: (e.patient_id, e.seq)
    )
    assert list(store.iter_snapshots()) == RECORDED.snapshots


def test_old_chains_verify_and_replay_unchanged_after_migrate(store: Store) -> None:
    """Every old chain verifies; each patient replays to its stored snapshot."""
    store.migrate()
    report = verify(store, workers=1)
    assert report.to_json() == {"ok": True, "patients": 6, "enrolments": 6, "events": 19, "keyed": False}
    for snapshot in RECORDED.snapshots:
        result = Engine(store).replay(snapshot.patient_id)
        assert result.snapshot == snapshot


def test_migrating_twice_is_a_no_op(store: Store, old_url: str) -> None:
    """A second migrate (another process, say) finds the new layout and changes nothing."""
    assert store.migrate()
    again = Store(old_url)
    try:
        assert again.migrate() == []
        assert again.migrate() == []
        assert verify(again, workers=1).ok and again.count_entries() == 19
    finally:
        again.dispose()


def test_first_use_upgrades_and_old_patients_carry_on(old_url: str) -> None:
    """Without an explicit migrate the engine upgrades on first use; old chains continue, and an
    old patient can join a second pathway with its own chain."""
    engine = Engine(old_url, FakeClock(NOW))
    try:
        before = engine.status("p-escalated")  # read through the light reader: old layout is fine
        result = engine.send("p-escalated", "reassess", NOW - timedelta(days=1), reassess_data(pain=3))
        assert result.entry is not None and result.entry.seq == before.snapshot.last_seq + 1
        assert result.entry.prev_hash == before.snapshot.last_hash
        engine.enroll("p-escalated", NOW, pathway=SECOND)
        assert [e.seq for e in engine.history("p-escalated", SECOND)] == [1]
        # idempotency keys recorded by 0.1.0 still deduplicate
        earlier = next(e for e in RECORDED.entries if e.idempotency_key == "ovr-1")
        repeat = engine.send(
            "p-override", earlier.event, earlier.at, earlier.payload, idempotency_key="ovr-1", actor="dr-b"
        )
        assert repeat.duplicate and repeat.entry == earlier
        assert verify(engine.store, workers=1).to_json() == {
            "ok": True,
            "patients": 6,
            "enrolments": 7,
            "events": 21,
            "keyed": False,
        }
    finally:
        engine.close()


def test_cli_migrate_reports_the_upgrade_once(old_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`carepath migrate` says what it upgraded; run again it only says the schema is ready."""
    assert main(["--db", old_url, "migrate"]) == 0
    out = capsys.readouterr().out
    assert "upgraded carepath_patients: primary key (patient_id, pathway)" in out
    assert main(["--db", old_url, "migrate"]) == 0
    out = capsys.readouterr().out
    assert "upgraded" not in out and "schema ready" in out
    assert main(["--db", old_url, "verify", "--json"]) == 0


def _upgrade_at_once(barrier: Any, index: int, url: str) -> list[str]:
    store = Store(url)
    barrier.wait()
    try:
        if index % 2 == 0:
            return store.migrate()
        store.count_patients()  # first use upgrades too
        return []
    finally:
        store.dispose()


@pytest.mark.slow
def test_processes_upgrading_at_once_upgrade_once(old_url: str) -> None:
    """Processes migrating and first-using an old database together: one upgrades, all succeed."""
    from tests.test_concurrency import in_processes

    outcomes = in_processes(_upgrade_at_once, old_url)
    store = Store(old_url)
    try:
        assert store.migrate() == []
        assert verify(store, workers=1).to_json()["enrolments"] == 6
    finally:
        store.dispose()
    # count_patients processes do not report; whoever upgraded did it once, or a first use did.
    assert sum(bool(done) for done in outcomes) <= 1
