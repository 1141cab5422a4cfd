"""Imports judge every line on its own, never hang, report every line, and can be run again."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pathway import Engine, ImportStopped, verify
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
        _line(patient, "tick", (T0 + timedelta(weeks=6)).isoformat()),
    ]


def _cohort(size: int) -> list[str]:
    return [line for i in range(size) for line in _course(f"p{i:03d}")]


BAD_LINES = [
    _line("p000", "assess", "0001-01-01T00:00:00+14:00", data=assess_data()),
    _line("p001\u0000x", "assess", T0.isoformat(), data=assess_data()),
    _line("p002", "assess", T0.isoformat(), data=assess_data(), actor="dr\u0000who"),
    _line("p003", "assess", T0.isoformat(), data=assess_data(), idempotency_key="k\u0000"),
    json.dumps({"patient": 7, "event": "assess", "at": T0.isoformat()}),
    "{broken",
]


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_lines_anywhere_never_stop_the_rest(engine: Engine, workers: int) -> None:
    """Lines no database could store are rejected alone, with their line number; every other line lands."""
    lines = _cohort(20)
    middle = len(lines) // 2
    lines[middle:middle] = BAD_LINES
    started = time.monotonic()
    report = engine.ingest(lines, batch=5, workers=workers)
    assert time.monotonic() - started < 60
    assert report.accepted == 80
    assert [r.line for r in report.rejected] == list(range(middle + 1, middle + 1 + len(BAD_LINES)))
    assert "plausible" in report.rejected[0].error
    assert engine.store.count_entries() == 80
    assert verify(engine.store, workers=1).ok


@pytest.mark.parametrize("workers", [1, 2])
def test_running_a_file_again_applies_nothing_twice(engine: Engine, workers: int) -> None:
    """A second run reports every line as already applied (keys: duplicates) and writes nothing."""
    lines = _cohort(10)
    lines.append(
        _line("p000", "reassess", (T0 + timedelta(weeks=7)).isoformat(), data=reassess_data(), idempotency_key="v")
    )
    first = engine.ingest(lines, batch=3, workers=workers)
    assert (first.accepted, first.rejected) == (41, [])
    entries = engine.store.count_entries()
    again = engine.ingest(lines, batch=3, workers=workers)
    assert (again.accepted, again.rejected, again.duplicates, again.already_applied) == (0, [], 1, 40)
    assert engine.store.count_entries() == entries
    assert verify(engine.store, workers=1).ok


def test_a_partly_applied_file_is_completed_by_running_it_again(engine: Engine) -> None:
    """Only the lines not yet applied are applied; the result is the same as one clean run."""
    lines = _cohort(6)
    engine.ingest(lines[::2], batch=4)  # every other line: the later ones of each patient refused or applied
    engine.ingest(lines, batch=4)
    report = engine.ingest(lines, batch=4)
    assert (report.accepted, report.rejected) == (0, [])
    for i in range(6):
        assert [e.event for e in engine.history(f"p{i:03d}")] == ["enroll", "assess", "reassess", "tick"]


def test_a_different_enrolment_is_still_a_duplicate(sqlite_engine: Engine) -> None:
    """An enrolment line that differs from the recorded one (other factors) is rejected, not 'already applied'."""
    sqlite_engine.ingest(_course("a")[:1])
    report = sqlite_engine.ingest([_line("a", "enroll", T0.isoformat(), version=1, factors={"age": 41})])
    assert [(r.exit_code, r.code) for r in report.rejected] == [(2, "duplicate_enrolment")]


def test_import_report_file_and_exit_status(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--report writes a JSON line per input line; exit 2 with rejections, 0 on a clean re-run of the good lines."""
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join([*_course("a"), BAD_LINES[0], *_course("b")]) + "\n")
    report_path = tmp_path / "report.jsonl"
    assert main(["--db", sqlite_url, "import", str(source), "--workers", "2", "--report", str(report_path)]) == 2
    rows = [json.loads(line) for line in report_path.read_text().splitlines()]
    assert [row["line"] for row in rows] == list(range(1, 10))
    assert [row["outcome"] for row in rows].count("applied") == 8
    assert rows[4]["outcome"] == "rejected" and "plausible" in rows[4]["reason"]
    assert rows[4]["code"] == "invalid_command" and "code" not in rows[0]
    assert "1 rejected" in capsys.readouterr().out
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join([*_course("a"), *_course("b")]) + "\n")
    assert main(["--db", sqlite_url, "import", str(good), "--report", str(report_path)]) == 0
    assert {json.loads(line)["outcome"] for line in report_path.read_text().splitlines()} == {"already applied"}


def test_a_database_that_fails_stops_the_import_with_what_was_done(tmp_path: Path) -> None:
    """A worker that cannot write ends a parallel import promptly with ImportStopped, never a hang."""
    target = tmp_path / "gone" / "carepath.db"
    engine = Engine(f"sqlite:///{target}")
    started = time.monotonic()
    with pytest.raises(ImportStopped) as stopped:
        engine.ingest(_cohort(30), batch=1, workers=2)
    assert time.monotonic() - started < 30
    assert stopped.value.report.accepted == 0


def test_a_full_disk_stops_the_import_and_a_rerun_finishes_it(sqlite_url: str, tmp_path: Path) -> None:
    """With SQLite's page limit reached mid-import the import stops, reporting a prefix per patient;
    once there is room again, running the file again applies exactly the rest."""
    from pathway import FakeClock
    from tests.conftest import NOW

    engine = Engine(sqlite_url, FakeClock(NOW))
    engine.store.ensure_schema()
    lines = _cohort(300)
    limited: dict[str, Any] = {}

    def limit_pages(dbapi_connection: Any, _record: Any) -> None:
        if limited.get("on"):
            pages = dbapi_connection.execute("PRAGMA page_count").fetchone()[0]
            dbapi_connection.execute(f"PRAGMA max_page_count={pages + 60}")

    from sqlalchemy import event

    engine.store.dispose()
    event.listen(engine.store.engine, "connect", limit_pages)
    limited["on"] = True
    with pytest.raises(ImportStopped) as stopped:
        engine.ingest(lines, batch=20)
    done = stopped.value.report
    assert 0 < done.accepted < len(lines)
    limited["on"] = False
    engine.store.dispose()
    again = engine.ingest(lines, batch=20)
    assert again.rejected == []
    assert again.accepted + again.already_applied == len(lines)
    assert again.already_applied == done.accepted
    assert verify(engine.store, workers=1).ok
