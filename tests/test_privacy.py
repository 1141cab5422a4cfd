"""Privacy at rest: private SQLite files, clinical values encrypted under a data key, and a
PostgreSQL service role that cannot rewrite the audit log."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import update

from pathway import Engine, FakeClock, verify
from pathway.cli import main
from persistence import StorageUnavailable, Store
from persistence._anchors import check_anchor, make_anchor
from persistence._crypto import EncryptedData, is_sealed
from persistence._keys import AuditKeys, KeyRing
from persistence._store import audit
from tests.conftest import NOW, PG_URL, T0, libpq
from tests.helpers import TYPICAL_FINDINGS, assess_data, reassess_data

DATA = KeyRing((("d1", bytes.fromhex("33" * 32)),), "test")
ROTATED = KeyRing((("d1", bytes.fromhex("33" * 32)), ("d2", bytes.fromhex("44" * 32))), "test")
WRONG = KeyRing((("d1", bytes.fromhex("55" * 32)),), "test")
AUDIT = AuditKeys(KeyRing((("k1", bytes.fromhex("11" * 32)),), "test"))


def _course(engine: Engine, patient_id: str) -> None:
    engine.enroll(patient_id, T0, version=1, factors={"peptic_ulcer": True, "age": 71})
    engine.send(patient_id, "assess", T0, assess_data(pain=8))
    engine.send(patient_id, "tick", T0 + timedelta(weeks=2, hours=1))
    engine.send(patient_id, "reassess", T0 + timedelta(weeks=4), reassess_data(pain=7))


def _store(url: str, data: KeyRing | None, keys: AuditKeys | None = AUDIT) -> Store:
    return Store(url, audit_keys=keys, data_keys=data)


@pytest.fixture
def encrypted(db_url: str) -> Iterator[Engine]:
    """Patients a and b written with the data key d1 and the audit key k1."""
    engine = Engine(_store(db_url, DATA), FakeClock(NOW))
    for patient_id in ("a", "b"):
        _course(engine, patient_id)
    yield engine
    engine.store.dispose()


# -- files ---------------------------------------------------------------------------------------------


def test_sqlite_database_wal_and_shm_are_created_0600(tmp_path: Path) -> None:
    """Whatever the umask, the database and its -wal and -shm files are readable by the owner only."""
    previous = os.umask(0o002)
    try:
        path = tmp_path / "clinic.db"
        engine = Engine(f"sqlite:///{path}", FakeClock(NOW))
        _course(engine, "a")
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert name.exists(), name
            assert os.stat(name).st_mode & 0o777 == 0o600, name
        engine.store.dispose()
    finally:
        os.umask(previous)


# -- encryption ------------------------------------------------------------------------------------------


def test_encrypted_values_round_trip(encrypted: Engine) -> None:
    """With the data key, history, status and replay read the values that were sent."""
    entries = encrypted.history("a")
    assert entries[1].payload["findings"] == TYPICAL_FINDINGS and entries[1].payload["pain"] == 8
    assert entries[3].decision is not None and entries[3].decision["rule"]
    assert all(e.sealed is not None and is_sealed(e.sealed["payload"]) for e in entries)
    status = encrypted.status("a")
    assert status.context["factors"]["peptic_ulcer"] is True
    assert encrypted.replay("a").snapshot == status.snapshot


def test_without_the_data_key_only_ids_states_and_times_show(encrypted: Engine) -> None:
    """A leaked database: payloads, decisions and contexts are envelopes; ids, states and times in clear."""
    leaked = _store(encrypted.store.url, None, None)
    for entry in leaked.iter_entries():
        assert is_sealed(entry.payload)
        assert entry.decision is None or is_sealed(entry.decision)
        assert entry.config_after and entry.at and entry.patient_id in ("a", "b")
    snapshot = leaked.snapshot("a", "piriformis")
    assert is_sealed(snapshot.context) and snapshot.state == encrypted.status("a").state
    text = json.dumps([e.stored_row() for e in leaked.iter_entries()], default=str)
    assert "sitting_aggravation" not in text and "peptic_ulcer" not in text and '"pain"' not in text
    leaked.dispose()


def test_sqlite_file_holds_no_clinical_value(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'clinic.db'}"
    engine = Engine(_store(url, DATA), FakeClock(NOW))
    _course(engine, "a")
    engine.store.dispose()
    raw = b"".join(path.read_bytes() for path in tmp_path.iterdir())
    assert b"sitting_aggravation" not in raw and b"peptic_ulcer" not in raw and b"fair_test" not in raw
    assert b"piriformis" in raw  # the pathway, a state name: in clear


def test_encrypted_database_verifies_with_and_without_the_data_key(encrypted: Engine) -> None:
    """With the data key: chain, replay and snapshots. Without: chain, keys, heads and anchors; no replay."""
    assert verify(encrypted.store).to_json() == {
        "ok": True,
        "patients": 2,
        "enrolments": 2,
        "events": 8,
        "keyed": True,
    }
    without = _store(encrypted.store.url, None)
    report = verify(without)
    assert report.ok and report.unreplayed == 2 and report.to_json()["unreplayed"] == 2
    anchor = make_anchor(without, NOW)
    assert check_anchor(without, anchor) == []
    with pytest.raises(EncryptedData, match="CAREPATH_DATA_KEY"):
        Engine(without).replay("a")
    without.dispose()


def test_without_the_data_key_nothing_is_written(encrypted: Engine) -> None:
    """A writer without the data key refuses rather than store a context it could not read."""
    engine = Engine(_store(encrypted.store.url, None), FakeClock(NOW))
    with pytest.raises(EncryptedData):
        engine.send("a", "reassess", T0 + timedelta(weeks=7), reassess_data(pain=6))
    engine.store.dispose()


def test_wrong_or_rotated_data_keys(encrypted: Engine) -> None:
    """A wrong key cannot decrypt (verify says so); a rotated ring still opens the old entries."""
    wrong = _store(encrypted.store.url, WRONG)
    report = verify(wrong)
    assert (report.problems[0].first_bad_seq, report.problems[0].reason) == (1, "cannot decrypt")
    wrong.dispose()
    rotated = Engine(_store(encrypted.store.url, ROTATED), FakeClock(NOW))
    rotated.send("a", "reassess", T0 + timedelta(weeks=7), reassess_data(pain=6))
    kids = [e.sealed["payload"]["kid"] for e in rotated.history("a") if e.sealed]
    assert kids == ["d1"] * 4 + ["d2"]
    assert verify(rotated.store).ok
    rotated.store.dispose()


def test_moved_ciphertext_does_not_decrypt(encrypted: Engine) -> None:
    """A payload ciphertext copied onto another entry fails its HMAC, and would not decrypt there either."""
    source = encrypted.history("a")[1].sealed
    assert source is not None
    with encrypted.store.engine.begin() as conn:
        row = (audit.c.patient_id == "b") & (audit.c.seq == 2)
        conn.execute(update(audit).where(row).values(payload=source["payload"]))
    report = verify(encrypted.store)
    assert (report.problems[0].patient_id, report.problems[0].reason) == ("b", "hash mismatch")
    unkeyed = _store(encrypted.store.url, DATA, None)
    assert unkeyed.history("b", "piriformis")[1].sealed is None  # left as stored: the AAD names a's row
    unkeyed.dispose()


def test_cli_status_decrypts_with_the_data_key(sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("CAREPATH_DATA_KEY", "d1:" + "33" * 32)
    engine = Engine(sqlite_url, FakeClock(NOW))
    _course(engine, "a")
    engine.store.dispose()
    assert main(["--db", sqlite_url, "status", "a", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["context"]["factors"]["age"] == 71


# -- a service role that cannot rewrite the audit log (PostgreSQL) ----------------------------------------

# The statements README "Guarantees" gives, for a schema whose tables the owner created (`migrate`).
SERVICE_ROLE_SQL = """
GRANT USAGE ON SCHEMA {schema} TO {role};
GRANT SELECT, INSERT ON carepath_audit TO {role};
GRANT USAGE ON SEQUENCE carepath_audit_id_seq TO {role};
GRANT SELECT, INSERT, UPDATE ON carepath_patients TO {role};
GRANT SELECT, INSERT, UPDATE ON carepath_outbox TO {role};
GRANT USAGE ON SEQUENCE carepath_outbox_id_seq TO {role};
REVOKE UPDATE, DELETE, TRUNCATE ON carepath_audit FROM {role};
"""


@pytest.mark.postgres
def test_service_role_works_and_cannot_update_or_delete_audit_rows(pg_schema_url: str) -> None:
    import psycopg

    owner = Store(pg_schema_url)
    owner.migrate()
    owner.dispose()
    schema = pg_schema_url.rsplit("search_path%3D", 1)[1]
    role = f"carepath_svc_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq(PG_URL), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} NOLOGIN")
        conn.execute(f"SET search_path = {schema}")
        for statement in SERVICE_ROLE_SQL.format(schema=schema, role=role).split(";"):
            if statement.strip():
                conn.execute(statement)
    # Connections of the service: the session takes the role (a real deployment logs in as it).
    url = pg_schema_url + quote(f" -crole={role}")
    try:
        engine = Engine(Store(url, audit_keys=AUDIT), FakeClock(NOW))
        for patient_id in ("a", "b"):
            _course(engine, patient_id)
        assert engine.tick(T0 + timedelta(weeks=9)).advanced >= 1
        assert verify(engine.store).ok
        assert check_anchor(engine.store, make_anchor(engine.store, NOW)) == []
        for statement in ("UPDATE carepath_audit SET actor = 'x'", "DELETE FROM carepath_audit"):
            with pytest.raises(StorageUnavailable, match="permission denied"):
                engine.store.execute_raw(statement)
        engine.store.dispose()
    finally:
        with psycopg.connect(libpq(PG_URL), autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")
