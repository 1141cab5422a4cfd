"""Bulk ingestion: many events per transaction, each checked exactly as `send` checks it."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from pathway import Batch, Engine
from pathway.cli import main
from tests.conftest import T0
from tests.helpers import assess_data, reassess_data


def _line(patient: str, event: str, at: object, **fields: object) -> str:
    return json.dumps({"patient": patient, "event": event, "at": str(at), **fields})


def _course(patient: str) -> list[str]:
    return [
        _line(patient, "enroll", T0.isoformat(), version=1, factors={"age": 40}),
        _line(patient, "assess", T0.isoformat(), data=assess_data(pain=8)),
        _line(patient, "reassess", (T0 + timedelta(weeks=4)).isoformat(), data=reassess_data(pain=7)),
    ]


def test_import_applies_each_line_like_send(engine: Engine) -> None:
    """Imported events produce the same states and hash chain as sending them one by one."""
    report = engine.ingest(_course("a") + _course("b"), batch=2)
    assert (report.accepted, report.rejected) == (6, [])
    assert engine.status("a").state == "second_line"
    assert [e.seq for e in engine.history("b")] == [1, 2, 3]
    assert engine.history("b")[1].hash == engine.history("b")[2].prev_hash


def test_rejected_lines_are_reported_and_write_nothing(sqlite_engine: Engine) -> None:
    """Bad lines are listed with line number and reason; the good lines of the batch still commit."""
    lines = [
        *_course("a"),
        _line("a", "relapse", (T0 + timedelta(weeks=5)).isoformat(), data={"pain": 1, "fasciculations": "absent"}),
        _line("ghost", "tick", (T0 + timedelta(weeks=5)).isoformat()),
        _line("a", "reassess", "2026-02-01T09:00:00", data=reassess_data()),
        "{not json",
        json.dumps({"patient": "a", "event": "tick", "at": T0.isoformat(), "colour": "red"}),
        _line("a", "enroll", T0.isoformat(), version=1),
    ]
    report = sqlite_engine.ingest(lines, batch=100)
    assert report.accepted == 3
    assert [(r.line, r.exit_code) for r in report.rejected] == [(4, 3), (5, 4), (6, 2), (7, 2), (8, 2), (9, 2)]
    assert "time zone" in report.rejected[2].error
    assert len(sqlite_engine.history("a")) == 3


def test_repeated_idempotency_key_in_one_import_writes_once(sqlite_engine: Engine) -> None:
    """The same key and payload twice in a file counts as a duplicate, not a second event."""
    visit = _line("a", "reassess", (T0 + timedelta(weeks=1)).isoformat(), data=reassess_data(), idempotency_key="v1")
    report = sqlite_engine.ingest([*_course("a")[:2], visit, visit])
    assert (report.accepted, report.duplicates) == (3, 1)
    assert len(sqlite_engine.history("a")) == 3


def test_import_command_exits_2_when_a_line_is_rejected(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`carepath import --json` prints the report and exits 2 if any line was rejected, 0 otherwise."""
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(_course("a")) + "\n")
    assert main(["--db", sqlite_url, "import", str(good), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accepted"] == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text(_line("a", "assess", (T0 + timedelta(weeks=5)).isoformat(), data=assess_data()) + "\n")
    assert main(["--db", sqlite_url, "import", str(bad), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["rejected"][0]["exit_code"] == 3


def test_parallel_import_gives_the_same_states_chains_and_rejections(engine: Engine, tmp_path: Path) -> None:
    """Two worker processes produce the same audit hashes, states and rejected lines as one process."""
    from pathway import verify

    lines = [line for i in range(40) for line in _course(f"p{i:02d}")]
    lines.insert(5, "{broken")
    lines.insert(
        9, _line("p00", "relapse", (T0 + timedelta(weeks=9)).isoformat(), data={"pain": 1, "fasciculations": "absent"})
    )
    report = engine.ingest(lines, batch=7, workers=2)
    assert report.accepted == 120
    assert [(r.line, r.exit_code) for r in report.rejected] == [(6, 2), (10, 3)]
    sequential = Engine(f"sqlite:///{tmp_path / 'one.db'}", engine.clock)
    assert sequential.ingest(lines, batch=7).to_json() == report.to_json()
    for pid in ("p00", "p17", "p39"):
        assert engine.status(pid).state == sequential.status(pid).state == "second_line"
        assert [e.hash for e in engine.history(pid)] == [e.hash for e in sequential.history(pid)]
    assert verify(engine.store, workers=1).ok


def test_optimistic_batch_retries_when_a_patient_changed_underneath(sqlite_engine: Engine) -> None:
    """A bulk batch whose patient another writer changed between read and write is retried, losing nothing."""
    sqlite_engine.enroll("a", T0, version=1)
    sqlite_engine.send("a", "assess", T0, assess_data(pain=8))
    attempts = []

    def work(batch: Batch) -> None:
        attempts.append(1)
        staged = batch.send("a", "reassess", T0 + timedelta(days=2), reassess_data(pain=6))
        if len(attempts) == 1:  # another writer sneaks in between this batch's read and its write
            sqlite_engine.send("a", "reassess", T0 + timedelta(days=1), reassess_data(pain=7))
        assert staged.status.patient_id == "a"

    sqlite_engine.run_batch(work, optimistic=True)
    assert len(attempts) == 2
    assert [e.seq for e in sqlite_engine.history("a")] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("patient_id", "why"),
    [("", "empty"), ("   ", "empty"), ("x" * 201, "longer than 200"), ("p\n1", "control characters")],
)
def test_bad_patient_ids_are_refused_at_enrolment(engine: Engine, patient_id: str, why: str) -> None:
    """Empty, over-long or control-character ids are refused on every backend and nothing is written."""
    from pathway import InvalidPatientId

    with pytest.raises(InvalidPatientId, match=why):
        engine.enroll(patient_id, T0, version=1)
    assert engine.store.count_patients() == 0


def test_lines_with_badly_typed_fields_are_rejected_alone(sqlite_engine: Engine) -> None:
    """Factors not an object, data as pairs, an over-long or non-text actor: those lines alone are rejected."""
    lines = [
        _line("ok", "enroll", T0.isoformat(), version=1),
        _line("bad-factors", "enroll", T0.isoformat(), version=1, factors="abc"),
        _line("ok", "withdraw", T0.isoformat(), data=[["reason", "moved"]]),
        _line("ok", "assess", T0.isoformat(), data=assess_data(), actor="x" * 201),
        _line("ok", "assess", T0.isoformat(), data=assess_data(), actor={"name": "dr"}),
        _line("ok", "assess", T0.isoformat(), data=assess_data()),
    ]
    report = sqlite_engine.ingest(lines)
    assert report.accepted == 2
    assert [(r.line, r.exit_code) for r in report.rejected] == [(2, 2), (3, 2), (4, 2), (5, 2)]
    assert sqlite_engine.status("ok").state == "first_line"


def test_parallel_import_stops_with_an_error_when_the_database_fails(tmp_path: Path) -> None:
    """A worker that cannot write ends the import with a storage error instead of hanging."""
    from persistence import StorageUnavailable

    target = tmp_path / "gone" / "carepath.db"  # the directory does not exist: every write fails
    engine = Engine(f"sqlite:///{target}")
    lines = [line for i in range(30) for line in _course(f"p{i:02d}")]
    with pytest.raises(StorageUnavailable):
        engine.ingest(lines, batch=1, workers=2)


def test_enrolment_lines_on_an_unapproved_version_need_allow_unapproved(engine: Engine) -> None:
    """An enrolment line on a version under review is rejected and writes nothing unless the import allows it."""
    lines = [_line("s1", "enroll", T0.isoformat(), pathway="sciatica"), _line("s2", "enroll", T0.isoformat())]
    refused = engine.ingest(lines)
    assert [(r.line, r.code, r.exit_code) for r in refused.rejected] == [(1, "unapproved_definition", 2)]
    assert "under review" in refused.rejected[0].error
    assert [s.patient_id for s in engine.patients()] == ["s2"]
    allowed = engine.ingest(lines, allow_unapproved=True)
    assert (allowed.accepted, allowed.already_applied, allowed.rejected) == (1, 1, [])
    assert engine.status("s1", pathway="sciatica").version == 1
    again = engine.ingest(lines, allow_unapproved=True)
    assert (again.accepted, again.already_applied) == (0, 2)


def test_parallel_import_workers_apply_allow_unapproved(engine: Engine) -> None:
    """Worker processes enrol on an unapproved version when the import allows it, and refuse it otherwise."""
    lines = [_line(f"s{i}", "enroll", T0.isoformat(), pathway="sciatica") for i in range(6)]
    assert len(engine.ingest(lines, workers=2).rejected) == 6
    report = engine.ingest(lines, workers=2, allow_unapproved=True)
    assert (report.accepted, report.rejected) == (6, [])
    assert sorted(s.patient_id for s in engine.patients()) == [f"s{i}" for i in range(6)]


def test_import_command_takes_allow_unapproved(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`carepath import` exits 2 on an unapproved enrolment line and applies it with --allow-unapproved."""
    source = tmp_path / "draft.jsonl"
    source.write_text(_line("s1", "enroll", T0.isoformat(), pathway="sciatica") + "\n")
    assert main(["--db", sqlite_url, "import", str(source), "--json", "--workers", "1"]) == 2
    assert json.loads(capsys.readouterr().out)["rejected"][0]["code"] == "unapproved_definition"
    assert main(["--db", sqlite_url, "import", str(source), "--json", "--workers", "1", "--allow-unapproved"]) == 0
    assert json.loads(capsys.readouterr().out)["accepted"] == 1
