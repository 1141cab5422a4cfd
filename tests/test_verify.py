"""verify catches every kind of tampering with the audit log or the snapshots, on every backend."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, update

from pathway import Engine, VerifyReport, verify
from pathway.cli import main
from persistence import UnknownPatient, entry_hash
from persistence._store import audit, patients
from states import get_pathway
from tests.conftest import T0
from tests.helpers import assess_data, reassess_data
from tests.test_replay import random_history


def _course(engine: Engine, patient_id: str) -> None:
    """Six entries: enrol, assess (first line), tick (due), reassess (second line), two reassessments."""
    engine.enroll(patient_id, T0, version=1)
    engine.send(patient_id, "assess", T0, assess_data(pain=8))
    engine.send(patient_id, "tick", T0 + timedelta(weeks=2, hours=1))
    engine.send(patient_id, "reassess", T0 + timedelta(weeks=4), reassess_data(pain=7))
    engine.send(patient_id, "reassess", T0 + timedelta(weeks=7), reassess_data(pain=6))
    engine.send(patient_id, "reassess", T0 + timedelta(weeks=10), reassess_data(pain=6))


@pytest.fixture
def cohort(engine: Engine) -> Engine:
    """Three patients a, b, c with the same six-entry course."""
    for patient_id in ("a", "b", "c"):
        _course(engine, patient_id)
    return engine


def _execute(engine: Engine, statement: Any) -> None:
    with engine.store.engine.begin() as conn:
        conn.execute(statement)


def _row(patient_id: str, seq: int) -> Any:
    return (audit.c.patient_id == patient_id) & (audit.c.seq == seq)


def _problem(report: VerifyReport) -> tuple[str, int, str]:
    assert not report.ok
    first = report.problems[0]
    return first.patient_id, first.first_bad_seq, first.reason


def _rehash(engine: Engine, patient_id: str, seq: int) -> str:
    """Recompute and store one row's hash, as a forger who knows the algorithm would."""
    entry = engine.history(patient_id)[seq - 1]
    digest = entry_hash(entry.as_row())
    _execute(engine, update(audit).where(_row(patient_id, seq)).values(hash=digest))
    return digest


def test_untouched_log_verifies_with_counts(cohort: Engine) -> None:
    """An untampered cohort verifies ok and counts its patients and events."""
    report = verify(cohort.store)
    assert report.ok
    assert report.to_json() == {"ok": True, "patients": 3, "enrolments": 3, "events": 18, "keyed": False}


def test_random_histories_verify(engine: Engine) -> None:
    """Random valid histories replay step for step and match their snapshots."""
    rng = random.Random(3)
    for n in range(8):
        random_history(engine, f"r{n}", rng)
    report = verify(engine.store)
    assert report.ok, report.problems
    assert report.patients == 8


def test_edited_payload_is_a_hash_mismatch(cohort: Engine) -> None:
    """Changing a recorded pain score breaks that row's hash."""
    _execute(cohort, update(audit).where(_row("b", 4)).values(payload=reassess_data(pain=2)))
    assert _problem(verify(cohort.store)) == ("b", 4, "hash mismatch")


def test_edited_hash_is_a_hash_mismatch(cohort: Engine) -> None:
    """Overwriting a row's stored hash is caught at that row."""
    _execute(cohort, update(audit).where(_row("b", 3)).values(hash="f" * 64))
    assert _problem(verify(cohort.store)) == ("b", 3, "hash mismatch")


def test_rehashed_edit_breaks_the_link_of_the_next_row(cohort: Engine) -> None:
    """An edit whose hash was recomputed still breaks the next row's link to it."""
    _execute(cohort, update(audit).where(_row("b", 3)).values(actor="someone-else"))
    _rehash(cohort, "b", 3)
    assert _problem(verify(cohort.store)) == ("b", 4, "broken link to previous entry")


def test_rehashed_edit_of_the_decision_input_is_a_replay_divergence(cohort: Engine) -> None:
    """A pain score edited with a recomputed hash no longer reproduces the recorded escalation."""
    _execute(cohort, update(audit).where(_row("b", 4)).values(payload=reassess_data(pain=3)))
    _rehash(cohort, "b", 4)
    patient, seq, reason = _problem(verify(cohort.store))
    assert (patient, seq) == ("b", 4)
    assert reason.startswith("replay diverged: configuration after recorded")


def test_deleted_row_is_a_sequence_gap(cohort: Engine) -> None:
    """Deleting a row from the middle of the chain leaves a gap at its seq."""
    _execute(cohort, delete(audit).where(_row("c", 3)))
    report = verify(cohort.store)
    assert _problem(report) == ("c", 3, "sequence gap")
    assert report.problems[0].detail == "expected seq 3, found 4"


def test_deleted_last_row_is_a_snapshot_difference(cohort: Engine) -> None:
    """Deleting the newest row leaves the snapshot ahead of the log."""
    _execute(cohort, delete(audit).where(_row("a", 6)))
    patient, seq, reason = _problem(verify(cohort.store))
    assert (patient, seq) == ("a", 6)
    assert reason == "snapshot differs: last_seq stored 6, replayed 5"


def test_inserted_row_with_a_valid_chain_is_a_replay_divergence(cohort: Engine) -> None:
    """A forged row appended with a correct hash is caught because replay does not reproduce it."""
    last = cohort.history("a")[-1]
    forged = replace(
        last,
        seq=7,
        prev_hash=last.hash,
        at=last.at + timedelta(days=1),
        payload=reassess_data(pain=6),
        config_before=last.config_after,
        config_after=["resolved"],
    )
    row = forged.as_row()
    row["hash"] = entry_hash(row)
    _execute(cohort, audit.insert().values(**row))
    patient, seq, reason = _problem(verify(cohort.store))
    assert (patient, seq) == ("a", 7)
    assert reason.startswith("replay diverged: configuration after recorded ['resolved']")


def test_inserted_consistent_row_is_a_snapshot_difference(cohort: Engine) -> None:
    """A forged row that replays cleanly is still caught: the snapshot does not know it."""
    last = cohort.history("a")[-1]
    at, data = last.at + timedelta(days=1), reassess_data(pain=6)
    definition = get_pathway("piriformis", 1)
    payload = definition.validate("reassess", data)
    step = definition.apply(last.config_after, cohort.status("a").context, "reassess", payload, at)
    forged = replace(
        last,
        seq=7,
        prev_hash=last.hash,
        at=at,
        payload=payload.model_dump(mode="json"),
        config_before=list(step.configuration_before),
        config_after=list(step.configuration_after),
        transitions=[dict(t) for t in step.transitions],
        decision=step.decision_record(),
    )
    row = forged.as_row()
    row["hash"] = entry_hash(row)
    _execute(cohort, audit.insert().values(**row))
    patient, seq, reason = _problem(verify(cohort.store))
    assert (patient, seq) == ("a", 7)
    assert reason == "snapshot differs: last_seq stored 6, replayed 7"


def test_swapped_rows_are_a_hash_mismatch(cohort: Engine) -> None:
    """Swapping two rows' sequence numbers is caught at the earlier one."""
    _execute(cohort, update(audit).where(_row("b", 4)).values(seq=-4))
    _execute(cohort, update(audit).where(_row("b", 5)).values(seq=4))
    _execute(cohort, update(audit).where(_row("b", -4)).values(seq=5))
    assert _problem(verify(cohort.store)) == ("b", 4, "hash mismatch")


def test_edited_snapshot_state_is_a_snapshot_difference(cohort: Engine) -> None:
    """A snapshot moved to another state than its log produces is caught at the last seq."""
    _execute(
        cohort,
        update(patients).where(patients.c.patient_id == "c").values(state="resolved", configuration=["resolved"]),
    )
    patient, seq, reason = _problem(verify(cohort.store))
    assert (patient, seq) == ("c", 6)
    assert reason.startswith("snapshot differs: configuration stored ['resolved']")


def test_edited_snapshot_context_names_the_field(cohort: Engine) -> None:
    """A changed baseline in the stored context is reported with the field that differs."""
    context = cohort.status("a").context | {"line_baseline": 3.0}
    _execute(cohort, update(patients).where(patients.c.patient_id == "a").values(context=context))
    patient, seq, reason = _problem(verify(cohort.store))
    assert (patient, seq) == ("a", 6)
    assert reason == "snapshot differs: context line_baseline stored 3.0, replayed 6.0"


def test_entries_without_a_snapshot_are_reported(cohort: Engine) -> None:
    """Audit rows whose patient snapshot was deleted are reported for that patient."""
    _execute(cohort, delete(patients).where(patients.c.patient_id == "b"))
    report = verify(cohort.store)
    assert _problem(report) == ("b", 1, "snapshot differs: audit entries without a patient snapshot")
    assert report.patients == 3


def test_snapshot_without_entries_is_reported(cohort: Engine) -> None:
    """A snapshot whose whole log was deleted is reported, and the other patients still checked."""
    _execute(cohort, delete(audit).where(audit.c.patient_id == "a"))
    report = verify(cohort.store)
    assert _problem(report) == ("a", 1, "snapshot differs: the patient has no audit entries")
    assert (report.patients, report.events, report.problem_count) == (3, 12, 1)


def test_every_bad_patient_is_listed_in_patient_order(cohort: Engine) -> None:
    """Problems of several patients are all listed; the first in patient order is the headline."""
    _execute(cohort, update(audit).where(_row("c", 2)).values(actor="x"))
    _execute(cohort, update(audit).where(_row("a", 5)).values(actor="x"))
    report = verify(cohort.store)
    assert [(p.patient_id, p.first_bad_seq) for p in report.problems] == [("a", 5), ("c", 2)]
    document = report.to_json()
    assert (document["ok"], document["patient_id"], document["first_bad_seq"]) == (False, "a", 5)
    assert document["problem_count"] == 2


def test_one_patient_is_verified_alone(cohort: Engine) -> None:
    """Verifying one named patient checks only that patient."""
    _execute(cohort, update(audit).where(_row("a", 2)).values(actor="x"))
    expected = {"ok": True, "patients": 1, "enrolments": 1, "events": 6, "keyed": False}
    assert verify(cohort.store, "b").to_json() == expected
    assert _problem(verify(cohort.store, "a")) == ("a", 2, "hash mismatch")


def test_verifying_an_unknown_patient_raises(cohort: Engine) -> None:
    """Naming a patient that was never enrolled raises UnknownPatient."""
    with pytest.raises(UnknownPatient):
        verify(cohort.store, "nobody")


def test_progress_is_reported_per_patient(cohort: Engine) -> None:
    """The progress callback hears each patient's number of entries."""
    seen: list[int] = []
    verify(cohort.store, progress=seen.append)
    assert seen == [6, 6, 6]


# -- command line -------------------------------------------------------------------------------


def _cli(engine: Engine, *args: str) -> int:
    return main(["--db", engine.store.url, *args])


def test_cli_verify_ok_exits_0_with_counts(cohort: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    """`verify --json` on a sound log prints ok with counts and exits 0."""
    assert _cli(cohort, "verify", "--json") == 0
    expected = {"ok": True, "patients": 3, "enrolments": 3, "events": 18, "keyed": False}
    assert json.loads(capsys.readouterr().out) == expected


def test_cli_verify_problem_exits_1_naming_patient_and_seq(cohort: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    """`verify --json` on a tampered log prints ok false, patient, seq and reason, and exits 1."""
    _execute(cohort, update(audit).where(_row("b", 4)).values(payload=reassess_data(pain=2)))
    assert _cli(cohort, "verify", "--json") == 1
    document = json.loads(capsys.readouterr().out)
    assert {k: document[k] for k in ("ok", "patient_id", "first_bad_seq", "reason")} == {
        "ok": False,
        "patient_id": "b",
        "first_bad_seq": 4,
        "reason": "hash mismatch",
    }


def test_cli_verify_one_patient_and_unknown_patient(cohort: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    """`verify PATIENT` checks one patient; an unknown one exits 4 with one line on stderr."""
    assert _cli(cohort, "verify", "a", "--json") == 0
    assert json.loads(capsys.readouterr().out)["patients"] == 1
    assert _cli(cohort, "verify", "nobody") == 4
    assert capsys.readouterr().err.strip() == "carepath: error: unknown patient 'nobody'"


def test_cli_verify_human_output_and_progress(cohort: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json verify prints a summary line, and the problem list when there is one."""
    assert _cli(cohort, "verify") == 0
    assert "ok: 3 patients, 18 events verified" in capsys.readouterr().out
    _execute(cohort, delete(audit).where(_row("c", 3)))
    assert _cli(cohort, "verify") == 1
    assert "c (piriformis) seq 3: sequence gap (expected seq 3, found 4)" in capsys.readouterr().out


def test_cli_replay_json_has_the_status_keys(cohort: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    """`replay --json` has the keys of `status --json`, with the same values, plus the seq replayed."""
    assert _cli(cohort, "status", "a", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert _cli(cohort, "replay", "a", "--json") == 0
    replayed = json.loads(capsys.readouterr().out)
    assert replayed.pop("seq") == 6
    assert replayed.pop("until") is None
    assert replayed.pop("as_of") is None
    assert replayed == status


def test_cli_replay_until_and_bad_input(cohort: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    """`replay --until` time-travels; a bad time exits 2, an unknown patient 4, a divergence 1."""
    until = (T0 + timedelta(weeks=3)).isoformat()
    assert _cli(cohort, "replay", "a", "--until", until, "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["state"], document["seq"], document["until"]) == ("first_line", 3, until)
    assert _cli(cohort, "replay", "a", "--until", "yesterday") == 2
    assert _cli(cohort, "replay", "a", "--until", "2026-02-01T00:00:00") == 2
    assert _cli(cohort, "replay", "nobody") == 4
    _execute(cohort, update(audit).where(_row("a", 4)).values(config_after=["resolved"]))
    assert _cli(cohort, "replay", "a", "--json") == 1
    assert json.loads(capsys.readouterr().out)["first_bad_seq"] == 4


def test_cli_whatif(cohort: Engine, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`whatif --policy FILE --json` lists who moves differently; a bad file exits 2."""
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"first_line_early_weeks": 8, "first_line_late_weeks": 8}))
    assert _cli(cohort, "whatif", "--policy", str(policy), "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["patients"], document["changed"]) == (3, 3)
    assert document["patients_changed"][0] == {
        "patient_id": "a",
        "pathway": "piriformis",
        "recorded_state": "third_line",
        "whatif_state": "second_line",
        "first_diverging_seq": 4,
        "stopped_at_seq": None,
        "stopped_because": None,
    }
    policy.write_text("[1, 2]")
    assert _cli(cohort, "whatif", "--policy", str(policy)) == 2
    assert _cli(cohort, "whatif", "--policy", str(tmp_path / "missing.json")) == 2


@pytest.mark.parametrize("command", ["replay", "verify", "whatif"])
def test_cli_help_has_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Each audit command's --help shows an example invocation."""
    assert main([command, "--help"]) == 0
    assert f"Example: carepath {command}" in capsys.readouterr().out
