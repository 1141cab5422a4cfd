"""Tamper evidence beyond the plain chain: audit keys (HMAC) and anchors, on every backend.

A forger here has write access to the database and this library, and uses its own
`persistence.entry_hash` to recompute every hash it touches and `replay` to make the
snapshot agree. Each of the seven edits a plain SHA-256 chain lets through is first shown to pass
`verify` without a key, then to be caught: per-entry edits by the keyed chain, truncation,
deletion and fabrication by `verify --anchor`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from pathway import Engine, FakeClock, VerifyReport, verify
from pathway.cli import main
from persistence import GENESIS, AuditEntry, Snapshot, Store, entry_hash
from persistence._anchors import (
    ANCHOR_NOT_AUTHENTIC,
    ANCHORED_ENROLMENT_MISSING,
    ANCHORED_ENTRY_CHANGED,
    CHAIN_SHORTER,
    NOT_IN_ANCHOR,
    check_anchor,
    make_anchor,
    merkle_root,
)
from persistence._chain import HASH_MISMATCH, KEYED_WITHOUT_KEY, UNKEYED_ENTRY, UNKNOWN_KEY
from persistence._keys import AuditKeys, KeyConfigError, KeyRing, add_key, load_audit_keys
from persistence._store import audit, patients
from tests.conftest import NOW, T0
from tests.helpers import assess_data, reassess_data

SECRET = "11" * 32
OTHER_SECRET = "22" * 32


def _keys(*pairs: tuple[str, str]) -> AuditKeys:
    return AuditKeys(KeyRing(tuple((key_id, bytes.fromhex(secret)) for key_id, secret in pairs), "test"))


CLINIC = _keys(("k1", SECRET))


def _course(engine: Engine, patient_id: str) -> None:
    """Six entries: enrol, assess, tick, three reassessments (one with an actor and an idempotency key)."""
    engine.enroll(patient_id, T0, version=1)
    engine.send(patient_id, "assess", T0, assess_data(pain=8))
    engine.send(patient_id, "tick", T0 + timedelta(weeks=2, hours=1))
    engine.send(
        patient_id, "reassess", T0 + timedelta(weeks=4), reassess_data(pain=7), actor="dr-a", idempotency_key="v4"
    )
    engine.send(patient_id, "reassess", T0 + timedelta(weeks=7), reassess_data(pain=6))
    engine.send(patient_id, "reassess", T0 + timedelta(weeks=10), reassess_data(pain=6))


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The clinic's audit key file (key k1), configured through the environment."""
    path = tmp_path / "audit.keys"
    path.write_text(f"# the clinic's audit keys\nk1 {SECRET}\n")
    monkeypatch.delenv("CAREPATH_AUDIT_KEY", raising=False)
    monkeypatch.setenv("CAREPATH_AUDIT_KEY_FILE", str(path))
    return path


def _cohort(url: str, keys: AuditKeys | None) -> Engine:
    engine = Engine(Store(url, audit_keys=keys), FakeClock(NOW))
    for patient_id in ("a", "b", "c"):
        _course(engine, patient_id)
    return engine


@pytest.fixture
def keyed(db_url: str) -> Iterator[Engine]:
    """Patients a, b, c written under the clinic's audit key."""
    engine = _cohort(db_url, CLINIC)
    yield engine
    engine.store.dispose()


@pytest.fixture
def unkeyed(db_url: str) -> Iterator[Engine]:
    """The same patients written without any audit key."""
    engine = _cohort(db_url, None)
    yield engine
    engine.store.dispose()


def _execute(engine: Engine, statement: Any) -> None:
    with engine.store.engine.begin() as conn:
        conn.execute(statement)


def _enrolment(patient_id: str, table: Any = audit) -> Any:
    return (table.c.patient_id == patient_id) & (table.c.pathway == "piriformis")


def _rewrite(engine: Engine, patient_id: str, entries: list[AuditEntry], *, keep_key_id: bool = False) -> None:
    """Replace an enrolment's log by `entries`, renumbered and re-hashed with `entry_hash`, and its
    snapshot by the one carepath's own replay computes from the forged log."""
    rows, previous = [], GENESIS
    for seq, entry in enumerate(entries, start=1):
        row = entry.stored_row()
        row.update(patient_id=patient_id, seq=seq, prev_hash=previous)
        if not keep_key_id:
            row["key_id"] = None
        row["hash"] = previous = entry_hash(row)
        rows.append(row)
    _execute(engine, delete(audit).where(_enrolment(patient_id)))
    for row in rows:
        _execute(engine, audit.insert().values(**row))
    _write_snapshot(engine, engine.replay(patient_id).snapshot)


def _write_snapshot(engine: Engine, snapshot: Snapshot) -> None:
    values = {f.name: getattr(snapshot, f.name) for f in fields(Snapshot)}
    _execute(engine, delete(patients).where(_enrolment(snapshot.patient_id, patients)))
    _execute(engine, patients.insert().values(**values))


def _problem(report: VerifyReport) -> tuple[str, int, str]:
    assert not report.ok
    first = report.problems[0]
    return first.patient_id, first.first_bad_seq, first.reason


def _verify(engine: Engine, keys: AuditKeys | None) -> VerifyReport:
    store = Store(engine.store.url, audit_keys=keys)
    try:
        return verify(store, workers=1)
    finally:
        store.dispose()


# -- the seven edits a plain chain lets through ------------------------------------------------------


def _edit_actor(engine: Engine) -> None:
    entries = engine.history("b")
    entries[3] = replace(entries[3], actor="dr-forger")
    _rewrite(engine, "b", entries)


def _backdate_recorded_at(engine: Engine) -> None:
    entries = engine.history("b")
    entries[3] = replace(entries[3], recorded_at=entries[3].recorded_at - timedelta(days=30))
    _rewrite(engine, "b", entries)


def _edit_idempotency_key(engine: Engine) -> None:
    entries = engine.history("b")
    entries[3] = replace(entries[3], idempotency_key="v4-forged")
    _rewrite(engine, "b", entries)


def _truncate_last_two(engine: Engine) -> None:
    """The newest two entries deleted (the rest left as they are), the snapshot rewound by replay."""
    _execute(engine, delete(audit).where(_enrolment("b") & (audit.c.seq > 4)))
    _write_snapshot(engine, engine.replay("b").snapshot)


def _delete_middle_entry(engine: Engine) -> None:
    entries = engine.history("b")
    _rewrite(engine, "b", entries[:4] + entries[5:])  # the first of two equal reassessments


def _delete_patient(engine: Engine) -> None:
    _execute(engine, delete(audit).where(_enrolment("b")))
    _execute(engine, delete(patients).where(_enrolment("b", patients)))


def _fabricate_patient(engine: Engine) -> None:
    """A plausible course copied from patient a, backdated like its model."""
    _write_snapshot(engine, replace(engine.store.snapshot("a", "piriformis"), patient_id="f"))
    _rewrite(engine, "f", engine.history("a"))


PER_ENTRY_EDITS = {
    "actor": _edit_actor,
    "recorded_at": _backdate_recorded_at,
    "idempotency_key": _edit_idempotency_key,
    "middle deletion": _delete_middle_entry,
    "fabricated patient": _fabricate_patient,
}
SEVEN_EDITS = {**PER_ENTRY_EDITS, "truncation": _truncate_last_two, "patient deletion": _delete_patient}


@pytest.mark.parametrize("edit", sorted(SEVEN_EDITS))
def test_the_seven_edits_pass_a_plain_chain(unkeyed: Engine, edit: str) -> None:
    """The baseline: without a key, each forged database verifies ok (the gap keys and anchors close)."""
    SEVEN_EDITS[edit](unkeyed)
    report = _verify(unkeyed, None)
    assert report.ok, report.problems
    assert report.to_json()["keyed"] is False


@pytest.mark.parametrize("edit", sorted(PER_ENTRY_EDITS))
def test_keyed_chain_catches_each_rehashed_entry_edit(keyed: Engine, edit: str) -> None:
    """Under the clinic's key an entry re-hashed with the library's SHA-256 is an unkeyed entry."""
    PER_ENTRY_EDITS[edit](keyed)
    patient, seq, reason = _problem(_verify(keyed, CLINIC))
    assert reason == UNKEYED_ENTRY
    assert (patient, seq) == ("f", 1) if edit == "fabricated patient" else ("b", 1)


def test_keyed_chain_catches_a_rehash_that_keeps_the_key_id(keyed: Engine) -> None:
    """Keeping the key id does not help the forger: the SHA-256 is not the HMAC."""
    entries = keyed.history("b")
    entries[3] = replace(entries[3], actor="dr-forger")
    _rewrite(keyed, "b", entries, keep_key_id=True)
    assert _problem(_verify(keyed, CLINIC)) == ("b", 1, HASH_MISMATCH)


def test_keyed_chain_reason_says_no_downgrade(keyed: Engine) -> None:
    _edit_actor(keyed)
    detail = _verify(keyed, CLINIC).problems[0].detail
    assert "plain SHA-256" in detail and "no downgrade" in detail


def test_truncation_with_replayed_snapshot_passes_the_keyed_chain_but_not_the_anchor(keyed: Engine) -> None:
    """Dropping the newest entries leaves valid HMACs: only an anchor taken before shows it."""
    anchor = make_anchor(keyed.store, NOW + timedelta(hours=1), CLINIC)
    _truncate_last_two(keyed)
    assert _verify(keyed, CLINIC).ok
    problems = check_anchor(keyed.store, anchor, CLINIC)
    assert [(p.patient_id, p.seq, p.reason) for p in problems] == [("b", 5, CHAIN_SHORTER)]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ("middle deletion", ("b", 6, CHAIN_SHORTER)),
        ("patient deletion", ("b", 1, ANCHORED_ENROLMENT_MISSING)),
        ("fabricated patient", ("f", 1, NOT_IN_ANCHOR)),
        ("actor", ("b", 6, ANCHORED_ENTRY_CHANGED)),
    ],
)
def test_anchor_catches_deletion_and_fabrication(keyed: Engine, edit: str, expected: tuple[str, int, str]) -> None:
    """An anchor taken before the edit names the enrolment that lost, changed or gained entries."""
    anchor = make_anchor(keyed.store, NOW + timedelta(hours=1), CLINIC)
    SEVEN_EDITS[edit](keyed)
    problems = check_anchor(keyed.store, anchor, CLINIC)
    assert [(p.patient_id, p.seq, p.reason) for p in problems] == [expected]


def test_anchor_of_an_untouched_database_checks_out_and_new_work_is_fine(keyed: Engine) -> None:
    """Entries and enrolments added after the anchor are not problems."""
    anchor = make_anchor(keyed.store, NOW, CLINIC)
    assert anchor["enrolments"] == 3 and len(anchor["heads"]) == 3
    assert anchor["merkle_root"] == merkle_root(tuple(head) for head in anchor["heads"])
    assert check_anchor(keyed.store, anchor, CLINIC) == []
    keyed.send("a", "reassess", T0 + timedelta(weeks=13), reassess_data(pain=5))
    keyed.clock = FakeClock(NOW + timedelta(days=1))
    _course(keyed, "d")
    assert check_anchor(keyed.store, anchor, CLINIC) == []


def test_edited_or_foreign_anchor_is_not_authentic(keyed: Engine) -> None:
    anchor = make_anchor(keyed.store, NOW, CLINIC)
    edited = json.loads(json.dumps(anchor))
    edited["heads"][1][2] = 4  # claim b's head was seq 4, to hide a truncation
    assert [p.reason for p in check_anchor(keyed.store, edited, CLINIC)] == [ANCHOR_NOT_AUTHENTIC]
    foreign = make_anchor(keyed.store, NOW, _keys(("k1", OTHER_SECRET)))
    assert [p.reason for p in check_anchor(keyed.store, foreign, CLINIC)] == [ANCHOR_NOT_AUTHENTIC]


# -- another key, or none ------------------------------------------------------------------------------


def test_database_written_under_another_key_fails_under_the_clinics(db_url: str) -> None:
    """Same key id, other secret: hash mismatch; another key id: unknown key."""
    same_id = _cohort(db_url, _keys(("k1", OTHER_SECRET)))
    assert _problem(_verify(same_id, CLINIC)) == ("a", 1, HASH_MISMATCH)
    other_id = _verify(same_id, _keys(("k9", SECRET)))
    assert _problem(other_id) == ("a", 1, UNKNOWN_KEY)
    assert "'k1'" in other_id.problems[0].detail
    same_id.store.dispose()


def test_database_written_without_a_key_fails_under_the_clinics(unkeyed: Engine) -> None:
    report = _verify(unkeyed, CLINIC)
    assert _problem(report) == ("a", 1, UNKEYED_ENTRY)
    assert report.problem_count == 3 and report.to_json()["keyed"] is True


def test_keyed_database_without_a_key_is_not_verified(keyed: Engine) -> None:
    """Verify without the key cannot check HMACs: it says so rather than passing."""
    report = _verify(keyed, None)
    assert _problem(report) == ("a", 1, KEYED_WITHOUT_KEY)


def test_keyed_database_verifies_under_its_key(keyed: Engine) -> None:
    report = _verify(keyed, CLINIC)
    assert report.to_json() == {"ok": True, "patients": 3, "enrolments": 3, "events": 18, "keyed": True}
    assert {entry.key_id for entry in keyed.store.iter_entries()} == {"k1"}


# -- configuration and rotation ------------------------------------------------------------------------


def test_keys_come_from_the_environment(key_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = load_audit_keys()
    assert keys is not None and keys.current == "k1"
    monkeypatch.setenv("CAREPATH_AUDIT_KEY", f"clinic-2026:{OTHER_SECRET}")
    keys = load_audit_keys()
    assert keys is not None and keys.ids == ["clinic-2026"]
    monkeypatch.setenv("CAREPATH_AUDIT_KEY", OTHER_SECRET)  # no id: named by a fingerprint
    keys = load_audit_keys()
    assert keys is not None and keys.current.startswith("fp-") and OTHER_SECRET[:12] not in keys.current
    monkeypatch.setenv("CAREPATH_AUDIT_KEY", "short")
    with pytest.raises(KeyConfigError, match="64 hex digits"):
        load_audit_keys()


def test_rotation_keeps_old_entries_verifiable(db_url: str, key_file: Path) -> None:
    """After rotate-key new entries are written under k2; k1 entries still verify; both under the file."""
    engine = Engine(db_url, FakeClock(NOW))
    _course(engine, "a")
    engine.store.dispose()
    assert main(["rotate-key", "--json"]) == 0
    assert key_file.read_text().splitlines()[-1].startswith("k2 ")
    engine = Engine(db_url, FakeClock(NOW))
    engine.send("a", "reassess", T0 + timedelta(weeks=13), reassess_data(pain=5))
    _course(engine, "b")
    assert [e.key_id for e in engine.history("a")] == ["k1"] * 6 + ["k2"]
    assert {e.key_id for e in engine.history("b")} == {"k2"}
    assert verify(engine.store).ok
    only_new = _keys(("k2", key_file.read_text().splitlines()[-1].split()[1]))
    assert _problem(_verify(engine, only_new)) == ("a", 1, UNKNOWN_KEY)
    engine.store.dispose()


def test_rotate_key_creates_a_private_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "new.keys"
    assert main(["rotate-key", "--key-file", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["key_id"] == "k1"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert add_key(path, "clinic-b") == "clinic-b"
    assert [line.split()[0] for line in path.read_text().splitlines()] == ["k1", "clinic-b"]


def test_rotate_key_without_a_file_says_how(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CAREPATH_AUDIT_KEY_FILE", raising=False)
    monkeypatch.setenv("CAREPATH_AUDIT_KEY", SECRET)
    assert main(["rotate-key"]) == 2
    assert "needs a key file" in capsys.readouterr().err


# -- the command line ----------------------------------------------------------------------------------


def test_cli_anchor_and_verify_anchor(
    db_url: str, key_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`anchor --out` then `verify --anchor`: ok, then exit 1 naming the truncated enrolment."""
    engine = Engine(db_url, FakeClock(NOW))
    for patient_id in ("a", "b"):
        _course(engine, patient_id)
    anchor = tmp_path / "anchors" / "a.json"
    assert main(["--db", db_url, "anchor", "--out", str(anchor)]) == 0
    assert os.stat(anchor).st_mode & 0o777 == 0o600
    capsys.readouterr()
    assert main(["--db", db_url, "verify", "--anchor", str(anchor), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["keyed"] is True and document["anchor"]["ok"] is True
    _truncate_last_two(engine)
    assert main(["--db", db_url, "verify", "--anchor", str(anchor), "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert (document["patient_id"], document["first_bad_seq"], document["reason"]) == ("b", 5, CHAIN_SHORTER)
    assert document["anchor"]["ok"] is False
    engine.store.dispose()


def test_cli_verify_says_the_chain_is_unkeyed(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    engine = Engine(sqlite_url, FakeClock(NOW))
    _course(engine, "a")
    assert main(["--db", sqlite_url, "verify"]) == 0
    assert "unkeyed chain" in capsys.readouterr().out
    assert main(["--db", sqlite_url, "verify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["keyed"] is False
    engine.store.dispose()


def test_anchor_needs_an_audit_key(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CAREPATH_AUDIT_KEY", raising=False)
    monkeypatch.delenv("CAREPATH_AUDIT_KEY_FILE", raising=False)
    assert main(["--db", sqlite_url, "migrate"]) == 0
    assert main(["--db", sqlite_url, "anchor"]) == 2
    assert "audit key" in capsys.readouterr().err


def test_worker_writes_anchors_to_a_folder(sqlite_url: str, key_file: Path, tmp_path: Path) -> None:
    engine = Engine(sqlite_url, FakeClock(NOW))
    _course(engine, "a")
    folder = tmp_path / "anchors"
    args = ["--db", sqlite_url, "worker", "--at", NOW.isoformat(), "--interval", "0", "--max-sweeps", "2"]
    args += ["--anchor-dir", str(folder)]
    assert main([*args, "--anchor-every", "0", "--json"]) == 0
    written = sorted(folder.glob("carepath-anchor-*.json"))
    assert len(written) == 2
    assert check_anchor(engine.store, json.loads(written[-1].read_text())) == []
    engine.store.dispose()
