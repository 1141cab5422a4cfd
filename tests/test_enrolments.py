"""Several pathways per patient: each enrolment (patient and pathway) has its own snapshot,
sequence, hash chain, idempotency keys and due date; commands name the enrolment or resolve it."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from pathway import AmbiguousEnrolment, Engine, verify, whatif
from pathway.cli import main
from persistence import GENESIS, DuplicateEnrolment, DuplicatePatient, UnknownPatient
from persistence._store import audit
from tests.conftest import T0
from tests.helpers import assess_data, reassess_data
from tests.second_pathway import SECOND

FIRST = "piriformis"
WEEK = timedelta(weeks=1)


def _two_enrolments(engine: Engine, patient: str = "p") -> None:
    """The patient on both pathways: assessed on the first at T0, on the second a week later."""
    engine.enroll(patient, T0, version=1)
    engine.enroll(patient, T0 + WEEK, pathway=SECOND)
    engine.send(patient, "assess", T0, assess_data(pain=8), pathway=FIRST)
    engine.send(patient, "assess", T0 + WEEK, assess_data(pain=6), pathway=SECOND)


def _cli(engine: Engine, *args: str) -> int:
    return main(["--db", engine.store.url, *args])


# -- the engine ----------------------------------------------------------------------------------


def test_a_second_enrolment_has_its_own_chain_snapshot_and_due_date(engine: Engine) -> None:
    """Enrolling on another pathway starts a new chain at seq 1; the two move independently."""
    _two_enrolments(engine)
    first, second = engine.history("p", FIRST), engine.history("p", SECOND)
    assert [e.seq for e in first] == [1, 2] and [e.seq for e in second] == [1, 2]
    assert first[0].prev_hash == GENESIS and second[0].prev_hash == GENESIS
    assert {e.pathway for e in first} == {FIRST} and {e.pathway for e in second} == {SECOND}
    assert first[0].hash != second[0].hash
    engine.send("p", "reassess", T0 + 2 * WEEK, reassess_data(pain=4), pathway=FIRST)
    assert engine.status("p", FIRST).revision == 3 and engine.status("p", SECOND).revision == 2
    assert engine.status("p", FIRST).next_due_at != engine.status("p", SECOND).next_due_at
    assert [s.pathway for s in engine.enrolments("p")] == [FIRST, SECOND]
    report = verify(engine.store)
    assert report.to_json() == {"ok": True, "patients": 1, "enrolments": 2, "events": 5, "keyed": False}


def test_the_same_pathway_twice_is_a_duplicate_enrolment(engine: Engine) -> None:
    """Same patient and pathway again: DuplicateEnrolment (a DuplicatePatient) naming both; nothing written."""
    _two_enrolments(engine)
    with pytest.raises(DuplicateEnrolment, match=f"already enrolled on pathway '{SECOND}'") as raised:
        engine.enroll("p", T0 + 2 * WEEK, pathway=SECOND)
    assert isinstance(raised.value, DuplicatePatient) and raised.value.pathway == SECOND
    assert engine.store.count_entries() == 4 and engine.store.count_patients() == 2


def test_no_pathway_named_for_a_patient_on_two_is_ambiguous(engine: Engine) -> None:
    """Every per-patient call without a pathway refuses to guess, naming both pathways."""
    _two_enrolments(engine)
    later = T0 + 2 * WEEK
    calls = [
        lambda: engine.send("p", "reassess", later, reassess_data()),
        lambda: engine.status("p"),
        lambda: engine.plan("p"),
        lambda: engine.history("p"),
        lambda: engine.replay("p"),
        lambda: verify(engine.store, "p"),
        lambda: engine.explain("p", later),
        lambda: engine.export_fhir("p"),
    ]
    for call in calls:
        with pytest.raises(AmbiguousEnrolment) as raised:
            call()
        assert raised.value.pathways == [FIRST, SECOND]
        assert "--pathway" in str(raised.value)
    assert engine.store.count_entries() == 4


def test_a_named_pathway_selects_the_enrolment_everywhere(engine: Engine) -> None:
    """With the pathway named, each call reads or writes that enrolment only."""
    _two_enrolments(engine)
    later = T0 + 2 * WEEK
    result = engine.send("p", "reassess", later, reassess_data(pain=5), pathway=SECOND)
    assert result.entry is not None and (result.entry.pathway, result.entry.seq) == (SECOND, 3)
    assert engine.status("p", SECOND).pathway == SECOND
    assert engine.plan("p", SECOND) == engine.status("p", SECOND).plan
    assert engine.replay("p", pathway=SECOND).seq == 3
    assert engine.replay("p", pathway=FIRST).seq == 2
    assert verify(engine.store, "p", pathway=SECOND).to_json()["events"] == 3
    assert engine.explain("p", later, pathway=FIRST).pathway == FIRST
    bundle = engine.export_fhir("p", SECOND)
    assert any(SECOND in str(e["resource"].get("title", "")) for e in bundle["entry"])


def test_an_unknown_pathway_of_an_enrolled_patient_is_an_unknown_enrolment(engine: Engine) -> None:
    """A pathway the patient is not on: UnknownPatient naming patient and pathway (exit 4)."""
    engine.enroll("p", T0, version=1)
    for call in (
        lambda: engine.send("p", "assess", T0, assess_data(), pathway=SECOND),
        lambda: engine.status("p", SECOND),
        lambda: engine.history("p", SECOND),
        lambda: engine.replay("p", pathway=SECOND),
        lambda: verify(engine.store, "p", pathway=SECOND),
    ):
        with pytest.raises(UnknownPatient, match=f"patient 'p' is not enrolled on pathway '{SECOND}'"):
            call()
    fresh = Engine(engine.url)  # status through the light SQLite reader, before the store opens
    try:
        for patient in ("p", "ghost"):
            with pytest.raises(UnknownPatient, match=f"patient '{patient}' is not enrolled on pathway '{SECOND}'"):
                fresh.status(patient, SECOND)
        with pytest.raises(UnknownPatient, match="unknown patient 'ghost'"):
            fresh.status("ghost")
    finally:
        fresh.close()
    # one enrolment: the pathway may be left out
    assert engine.status("p").pathway == FIRST
    assert engine.send("p", "assess", T0, assess_data()).changed


def test_idempotency_keys_belong_to_one_enrolment(engine: Engine) -> None:
    """The same key on the two enrolments records two events; repeated on one, it is a duplicate."""
    engine.enroll("p", T0, version=1)
    engine.enroll("p", T0, pathway=SECOND)
    first = engine.send("p", "assess", T0, assess_data(pain=8), pathway=FIRST, idempotency_key="visit-1")
    second = engine.send("p", "assess", T0, assess_data(pain=5), pathway=SECOND, idempotency_key="visit-1")
    assert first.changed and second.changed
    again = engine.send("p", "assess", T0, assess_data(pain=5), pathway=SECOND, idempotency_key="visit-1")
    assert again.duplicate and again.entry == second.entry
    assert engine.store.count_entries() == 4


def test_ticks_sweep_each_due_enrolment_once(engine: Engine) -> None:
    """Due dates are per enrolment: a sweep advances the due one and leaves the other."""
    _two_enrolments(engine)
    sweep = T0 + 15 * timedelta(days=1)  # the first is due (assessed at T0), the second not yet
    assert engine.store.due_ids(sweep) == [("p", FIRST)]
    report = engine.tick(sweep)
    assert (report.advanced, report.unchanged) == (1, 0)
    assert [e.event for e in engine.history("p", FIRST)][-1] == "tick"
    assert [e.event for e in engine.history("p", SECOND)][-1] == "assess"
    report = engine.tick(T0 + 22 * timedelta(days=1))
    assert report.advanced == 1
    assert [e.event for e in engine.history("p", SECOND)][-1] == "tick"
    assert verify(engine.store).ok


def test_parallel_sweep_and_verify_count_each_enrolment_once(engine: Engine) -> None:
    """Patient-id ranges hold all of a patient's enrolments: each is swept and verified once."""
    for i in range(12):
        _two_enrolments(engine, f"p{i:02d}")
    sweep = T0 + 30 * timedelta(days=1)
    report = engine.tick(sweep, batch=5, workers=2)
    assert (report.advanced, report.unchanged, report.skipped) == (24, 0, {})
    for i in range(12):
        for pathway in (FIRST, SECOND):
            assert [e.event for e in engine.history(f"p{i:02d}", pathway)].count("tick") == 1
    one = verify(engine.store, workers=1)
    assert one.to_json() == {"ok": True, "patients": 12, "enrolments": 24, "events": 72, "keyed": False}
    assert verify(engine.store, workers=3).to_json() == one.to_json()


def test_verify_names_the_enrolment_whose_chain_was_tampered_with(engine: Engine) -> None:
    """A forged entry on one enrolment is reported with its pathway; the other chain is untouched."""
    _two_enrolments(engine)
    with engine.store.engine.begin() as conn:
        conn.execute(
            audit.update()
            .where((audit.c.patient_id == "p") & (audit.c.pathway == SECOND) & (audit.c.seq == 2))
            .values(actor="forger")
        )
    report = verify(engine.store)
    assert report.problem_count == 1
    problem = report.problems[0]
    assert (problem.patient_id, problem.pathway, problem.first_bad_seq) == ("p", SECOND, 2)
    assert verify(engine.store, "p", pathway=FIRST).ok


def test_whatif_runs_each_enrolment_separately(sqlite_engine: Engine) -> None:
    """What-if counts the patient once and each of its enrolments, and names changes by pathway."""
    _two_enrolments(sqlite_engine)
    report = whatif(sqlite_engine.store, {"moderate_improvement": 0.4})
    assert (report.patients, report.enrolments, report.events) == (1, 2, 4)


# -- the command line -------------------------------------------------------------------------------


def test_cli_without_pathway_for_two_enrolments_exits_2_with_one_line(
    engine: Engine, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Each per-patient command refuses to guess: exit 2, one line naming the pathways and --pathway."""
    _two_enrolments(engine)
    at = (T0 + 2 * WEEK).isoformat()
    commands = [
        ["send", "p", "reassess", "--at", at, "--data", json.dumps(reassess_data())],
        ["status", "p"],
        ["history", "p"],
        ["explain", "p", "--at", at],
        ["replay", "p"],
        ["verify", "p"],
        ["export-fhir", "p"],
        ["timeline", "p", "-o", str(tmp_path / "p.png")],
        ["diagram", "--patient", "p"],
    ]
    for command in commands:
        assert _cli(engine, *command) == 2, command
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert f"({FIRST}, {SECOND})" in err and "--pathway" in err, err


def test_cli_with_pathway_uses_that_enrolment(
    engine: Engine, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--pathway picks the enrolment for every per-patient command."""
    _two_enrolments(engine)
    at = (T0 + 2 * WEEK).isoformat()
    data = json.dumps(reassess_data(pain=5))
    assert _cli(engine, "send", "p", "reassess", "--pathway", SECOND, "--at", at, "--data", data, "--json") == 0
    assert json.loads(capsys.readouterr().out)["entry"]["pathway"] == SECOND
    assert _cli(engine, "status", "p", "--pathway", SECOND, "--json") == 0
    assert json.loads(capsys.readouterr().out)["revision"] == 3
    assert _cli(engine, "history", "p", "--pathway", FIRST, "--json") == 0
    assert [e["seq"] for e in json.loads(capsys.readouterr().out)] == [1, 2]
    assert _cli(engine, "explain", "p", "--pathway", SECOND, "--at", at, "--json") == 0
    assert json.loads(capsys.readouterr().out)["pathway"] == SECOND
    assert _cli(engine, "replay", "p", "--pathway", SECOND, "--json") == 0
    assert json.loads(capsys.readouterr().out)["seq"] == 3
    assert _cli(engine, "verify", "p", "--pathway", FIRST, "--json") == 0
    assert json.loads(capsys.readouterr().out)["events"] == 2
    assert _cli(engine, "export-fhir", "p", "--pathway", SECOND) == 0
    assert json.loads(capsys.readouterr().out)["resourceType"] == "Bundle"
    assert _cli(engine, "diagram", "--patient", "p", "--pathway", FIRST) == 0
    assert "stateDiagram" in capsys.readouterr().out
    assert _cli(engine, "timeline", "p", "--pathway", SECOND, "-o", str(tmp_path / "p.png")) == 0
    assert (tmp_path / "p.png").stat().st_size > 0


def test_cli_unknown_pathway_of_a_patient_exits_4(engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    """A pathway the patient is not on: exit 4 naming patient and pathway."""
    engine.enroll("p", T0, version=1)
    for command in (["status", "p", "--pathway", SECOND], ["history", "p", "--pathway", "nope"]):
        assert _cli(engine, *command) == 4
        assert "patient 'p' is not enrolled on pathway" in capsys.readouterr().err
    assert _cli(engine, "verify", "--pathway", FIRST) == 2  # a pathway without a patient


def test_cli_list_and_due_show_the_pathway(engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    """`list` and `due` have a pathway column and a pathway per JSON row."""
    _two_enrolments(engine)
    at = (T0 + 30 * timedelta(days=1)).isoformat()
    assert _cli(engine, "list", "--at", at, "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert [(r["patient_id"], r["pathway"]) for r in document["patients"]] == [("p", FIRST), ("p", SECOND)]
    assert document["total"] == 2
    assert _cli(engine, "due", "--at", at, "--json") == 0
    assert sorted(r["pathway"] for r in json.loads(capsys.readouterr().out)["patients"]) == [FIRST, SECOND]
    assert _cli(engine, "list", "--at", at) == 0
    out = capsys.readouterr().out
    assert "pathw" in out and "piriform" in out  # the 80-column table may shorten both


# -- import -------------------------------------------------------------------------------------------


def _line(patient: str, event: str, at: object, **fields: object) -> str:
    return orjson.dumps({"patient": patient, "event": event, "at": str(at), **fields}).decode()


@pytest.mark.parametrize("workers", [1, 2])
def test_import_lines_name_the_enrolment(engine: Engine, workers: int) -> None:
    """Import enrols on a named pathway, sends by "pathway", and rejects an ambiguous line (exit 2)."""
    at = T0.isoformat()
    lines = [
        _line("p", "enroll", at, version=1),
        _line("p", "assess", at, data=assess_data()),  # one enrolment yet: resolved
        _line("p", "enroll", at, pathway=SECOND),
        _line("p", "assess", at, data=assess_data(pain=5), pathway=SECOND),
        _line("p", "reassess", (T0 + WEEK).isoformat(), data=reassess_data()),  # ambiguous now
        _line("p", "reassess", (T0 + WEEK).isoformat(), data=reassess_data(), pathway="nope"),
        _line("p", "reassess", (T0 + WEEK).isoformat(), data=reassess_data(), pathway=7),
        _line("q", "enroll", at, pathway=SECOND),
        _line("q", "assess", at, data=assess_data()),  # q's only enrolment is on the second pathway
    ]
    report = engine.ingest(lines, batch=3, workers=workers)
    assert (report.accepted, report.duplicates) == (6, 0)
    assert [(r.line, r.exit_code) for r in report.rejected] == [(5, 2), (6, 4), (7, 2)]
    assert "--pathway" in report.rejected[0].error
    assert [e.event for e in engine.history("p", SECOND)] == ["enroll", "assess"]
    assert [e.event for e in engine.history("p", FIRST)] == ["enroll", "assess"]
    assert engine.status("q").pathway == SECOND
    assert verify(engine.store).to_json() == {"ok": True, "patients": 2, "enrolments": 3, "events": 6, "keyed": False}
