"""Versions of a definition: pinned patients, migration to a newer version, and what-if on a version."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import pytest
import yaml

from pathway import Engine, verify
from pathway.cli import main
from states import NoMigration, get_pathway, parse_definition, register
from states._registry import BUILTIN_DIR
from tests.conftest import T0
from tests.helpers import assess_data, reassess_data

WEEK = timedelta(weeks=1)
DRAFT = 90  # a draft version of piriformis, registered for these tests only (never the default)


def _register_draft() -> None:
    data: dict[str, Any] = yaml.safe_load((BUILTIN_DIR / "piriformis-v1.yaml").read_text())
    data["version"] = DRAFT
    data["review"] = {"status": "draft", "notes": "test version: escalates a week earlier"}
    data["policy"]["first_line_early_weeks"]["default"] = 3.0
    data["context"]["escalations"] = 0
    data["migrations"] = [{"from_version": 1, "states": {"overdue": "due"}, "rename_context": {}}]
    register(parse_definition(data))


_register_draft()


def cohort(engine: Engine) -> None:
    """Four version 1 patients: first line and overdue, second line, resolved, and re-diagnosed (final)."""
    for patient in ("p1", "p2", "p3", "p4"):
        engine.enroll(patient, T0, version=1)
        engine.send(patient, "assess", T0, assess_data())
    engine.tick(T0 + 5 * WEEK)  # p1..p3 overdue
    engine.send("p2", "reassess", T0 + 6 * WEEK, reassess_data(pain=7))  # 12.5 % at 6 weeks: second line
    engine.send("p3", "reassess", T0 + 6 * WEEK, reassess_data(pain=1, fasciculations="absent"))
    engine.send("p4", "reassess", T0 + 6 * WEEK, reassess_data(fasciculations="worsening"))


def test_a_draft_is_never_the_default_but_can_be_pinned(engine: Engine) -> None:
    """New enrolments get the latest approved version; a draft needs consent and stays pinned."""
    assert engine.enroll("a", T0).version == get_pathway("piriformis").version != DRAFT
    engine.enroll("b", T0, version=DRAFT, allow_unapproved=True)
    assert engine.status("b").version == DRAFT


def test_dry_run_lists_exactly_what_would_change_and_writes_nothing(engine: Engine) -> None:
    """Live patients are listed with their state and context changes; finals stay; nothing is written."""
    cohort(engine)
    before = {p: len(engine.history(p)) for p in ("p1", "p2", "p3", "p4")}
    changes = {c.patient_id: c for c in engine.migrate_patients("piriformis", 1, DRAFT, dry_run=True)}
    assert set(changes) == {"p1", "p2", "p3"}
    assert "overdue" in changes["p1"].configuration_before and "due" in changes["p1"].configuration_after
    assert changes["p1"].context_changes == {"escalations": {"before": None, "after": 0}}
    assert changes["p3"].state_before == changes["p3"].state_after == "resolved"
    assert {p: len(engine.history(p)) for p in before} == before
    assert engine.status("p1").version == 1


def test_migration_appends_one_entry_per_patient_and_verifies(engine: Engine) -> None:
    """Each live patient gets one `migrate` entry with both versions; line start and baseline are kept."""
    cohort(engine)
    kept = engine.status("p2").context
    moved = engine.migrate_patients("piriformis", 1, DRAFT, actor="informatics")
    assert sorted(c.patient_id for c in moved) == ["p1", "p2", "p3"]
    last = engine.history("p2")[-1]
    assert (last.event, last.version, last.payload, last.actor) == (
        "migrate",
        DRAFT,
        {"from_version": 1, "to_version": DRAFT},
        "informatics",
    )
    status = engine.status("p2")
    assert status.version == DRAFT and status.state == "second_line"
    assert status.context["line_started_at"] == kept["line_started_at"]
    assert status.context["line_baseline"] == kept["line_baseline"]
    assert engine.status("p1").configuration[-1] == "due"
    assert engine.status("p4").version == 1  # a final state stays where it is
    report = verify(engine.store)
    assert report.ok, report.to_json()
    assert engine.migrate_patients("piriformis", 1, DRAFT) == []  # nobody left to move


def test_a_migration_logs_one_record_with_what_it_moved(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    """A dry run and a migration each log one record naming the pathway and how many enrolments they moved."""
    cohort(engine)
    caplog.set_level(logging.INFO, logger="carepath")
    engine.migrate_patients("piriformis", 1, DRAFT, dry_run=True)
    engine.migrate_patients("piriformis", 1, DRAFT)
    records = [r for r in caplog.records if r.name == "carepath.engine"]
    assert [(r.command, r.event, r.pathway, r.moved, r.outcome) for r in records] == [  # type: ignore[attr-defined]
        ("migrate_patients", "dry_run", "piriformis", 3, "accepted"),
        ("migrate_patients", "migrate", "piriformis", 3, "accepted"),
    ]


def test_migrated_patients_follow_the_new_version(engine: Engine) -> None:
    """After the move, events are decided by the newer version's rules and replay across the move."""
    engine.enroll("p1", T0, version=1)
    engine.send("p1", "assess", T0, assess_data(pain=8))
    engine.migrate_patients("piriformis", 1, DRAFT)
    engine.send("p1", "reassess", T0 + 3 * WEEK, reassess_data(pain=7))  # 3 weeks, 12.5 %: escalates on v90
    assert engine.status("p1").state == "second_line"
    assert engine.history("p1")[-1].version == DRAFT

    assert engine.replay("p1").state == "second_line"
    assert verify(engine.store).ok


def test_a_version_without_a_migration_refuses(engine: Engine) -> None:
    """Moving to a version that declares no migration from the patient's is refused before any write."""
    cohort(engine)
    with pytest.raises(NoMigration):
        engine.migrate_patients("piriformis", DRAFT, 1)


def test_whatif_on_another_version_reports_who_moves_differently(engine: Engine) -> None:
    """Re-running the cohort on the draft shows the earlier escalation; nothing is written."""
    engine.enroll("p1", T0, version=1)
    engine.send("p1", "assess", T0, assess_data(pain=8))
    engine.send("p1", "reassess", T0 + 3 * WEEK, reassess_data(pain=7))
    engine.enroll("p2", T0, version=1)
    engine.send("p2", "assess", T0, assess_data(pain=8))
    from pathway import whatif

    report = whatif(engine.store, version=("piriformis", DRAFT))
    assert [(c.patient_id, c.recorded_state, c.whatif_state) for c in report.changes] == [
        ("p1", "first_line", "second_line")
    ]
    assert report.to_json()["version"] == {"pathway": "piriformis", "version": DRAFT}


def test_cli_migrate_patients_and_whatif_version(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`migrate-patients --dry-run --json` lists, the real run moves, `whatif --version` compares."""
    engine = Engine(db_url, lambda: T0 + 30 * WEEK)
    cohort(engine)
    engine.close()
    base = ["--db", db_url]
    args = ["migrate-patients", "--pathway", "piriformis", "--from", "1", "--to", str(DRAFT), "--json"]
    assert main([*base, *args, "--dry-run"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["dry_run"] is True and dry["migrated"] == 3
    assert main([*base, *args]) == 0
    assert json.loads(capsys.readouterr().out)["migrated"] == 3
    assert main([*base, "verify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert main([*base, "whatif", "--version", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == {"pathway": "piriformis", "version": 1}
    assert main([*base, "whatif"]) == 2
    assert "exactly one of --policy" in capsys.readouterr().err
    assert main([*base, "migrate-patients", "--pathway", "piriformis", "--from", str(DRAFT), "--to", "1"]) == 2
    assert "declares no migration" in capsys.readouterr().err


def test_version_1_patients_move_to_version_2_and_verify(engine: Engine) -> None:
    """The declared 1 -> 2 migration moves live patients; both versions' history verifies, new events follow v2."""
    cohort(engine)
    moved = engine.migrate_patients("piriformis", 1, 2)
    assert sorted(c.patient_id for c in moved) == ["p1", "p2", "p3"]
    assert {engine.status(p).version for p in ("p1", "p2", "p3")} == {2}
    assert engine.status("p2").state == "second_line"
    report = verify(engine.store)
    assert report.ok, report.to_json()
