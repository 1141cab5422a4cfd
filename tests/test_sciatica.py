"""The sciatica pathway, written in YAML alone: its rules at their boundaries and every command on it."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pathway import Engine, FakeClock, verify
from pathway.cli import main
from states import UnapprovedDefinition, get_pathway
from tests.conftest import T0

WEEK = timedelta(weeks=1)


def assess(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "leg_pain": 8,
        "back_pain": 4,
        "odi": 50,
        "start_back": 5,
        "start_back_psychosocial": 2,
        "onset_weeks": 2,
        "side": "left",
        "findings": ["dermatomal_pain", "straight_leg_raise"],
        "red_flags": [],
    }
    data.update(overrides)
    return data


def reassess(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"leg_pain": 7, "odi": 45, "red_flags": []}
    data.update(overrides)
    return data


def enrol(engine: Engine, patient: str = "s1", **assess_overrides: Any) -> None:
    engine.enroll(patient, T0, pathway="sciatica", allow_unapproved=True)
    engine.send(patient, "assess", T0, assess(**assess_overrides))


def test_the_definition_is_data_only_and_under_review() -> None:
    """Sciatica has no Python of its own: its model names no function, and it ships under review."""
    definition = get_pathway("sciatica", 1)
    assert definition.review.status == "under_review"
    assert all(i.function is None for e in definition.model.events.values() for i in e.inputs.values())


def test_enrolling_needs_consent_while_under_review(engine: Engine) -> None:
    """An unapproved pathway refuses enrolment unless it is allowed explicitly, and writes nothing."""
    with pytest.raises(UnapprovedDefinition, match="under review"):
        engine.enroll("s1", T0, pathway="sciatica")
    assert list(engine.patients()) == []
    engine.enroll("s1", T0, pathway="sciatica", allow_unapproved=True)
    assert engine.status("s1").state == "assessment"


@pytest.mark.parametrize(
    ("flags", "urgency"), [(["cauda_equina"], "emergency"), (["cancer"], "urgent"), (["trauma", "infection"], "urgent")]
)
def test_red_flags_refer_at_assessment(engine: Engine, flags: list[str], urgency: str) -> None:
    """Any red flag refers at once; cauda equina is an emergency."""
    enrol(engine, red_flags=flags)
    status = engine.status("s1")
    assert status.state == "urgent_referral"
    assert status.outcome == {"reason": "red_flag", "urgency": urgency, "red_flags": flags}


def test_no_radicular_finding_is_rediagnosed(engine: Engine) -> None:
    """Without any radicular finding the patient leaves to re-diagnosis (not_radicular)."""
    enrol(engine, findings=[])
    status = engine.status("s1")
    assert status.state == "rediagnose" and status.outcome == {"reason": "not_radicular"}
    assert [i.id for i in status.plan] == ["rediagnose.other_causes"]


@pytest.mark.parametrize(
    ("total", "psychosocial", "risk"),
    [(3, 3, "low"), (4, 3, "medium"), (9, 3, "medium"), (4, 4, "high"), (9, 5, "high")],
)
def test_start_back_stratifies_risk(engine: Engine, total: int, psychosocial: int, risk: str) -> None:
    """STarT Back: total <= 3 low, psychosocial >= 4 high, otherwise medium; high risk adds the combined programme."""
    enrol(engine, start_back=total, start_back_psychosocial=psychosocial)
    status = engine.status("s1")
    assert status.state == "package" and status.context["risk"] == risk
    assert ("package.combined_programme" in {i.id for i in status.plan}) == (risk == "high")


def test_the_package_plan_follows_ng59(engine: Engine) -> None:
    """The package recommends NICE's measures and says which to never offer."""
    enrol(engine)
    plan = {item.id: item for item in engine.status("s1").plan}
    assert plan["package.group_exercise"].status == "recommended"
    for item in ("package.no_neuropathic_agents", "package.no_opioids_chronic", "package.no_passive_devices"):
        assert plan[item].status == "do_not"
    assert plan["package.weak_opioids"].status == "caution"
    assert "monitoring.reassess" in plan


def test_nsaids_carry_the_factor_rules(engine: Engine) -> None:
    """Gastric protection over 45 and the piriformis NSAID factor rules apply; the most severe wins."""
    engine.enroll("s1", T0, pathway="sciatica", allow_unapproved=True, factors={"age": 50, "heart_failure": True})
    engine.send("s1", "assess", T0, assess())
    nsaids = next(i for i in engine.status("s1").plan if i.id == "package.nsaids")
    assert nsaids.status == "contraindicated"
    assert nsaids.reasons == ["age 45 or over: add gastric protection (NICE NG59)", "heart failure"]


@pytest.mark.parametrize(
    ("leg_pain", "odi", "state"), [(2, 20, "improved"), (2.5, 20, "package"), (2, 21, "package"), (0, 0, "improved")]
)
def test_improved_needs_low_leg_pain_and_disability(engine: Engine, leg_pain: float, odi: int, state: str) -> None:
    """Improved at leg pain <= 2 and ODI <= 20, at any time."""
    enrol(engine)
    engine.send("s1", "reassess", T0 + WEEK, reassess(leg_pain=leg_pain, odi=odi))
    assert engine.status("s1").state == state


@pytest.mark.parametrize(
    ("weeks", "onset", "leg_pain", "state"),
    [
        (6, 2, 7, "injection_considered"),  # acute (2 + 6 < 12), severe, 12.5 % improvement
        (5.9, 2, 7, "package"),  # too early
        (6, 6, 7, "package"),  # 6 + 6 = 12 weeks since onset: no longer acute
        (6, 2, 6.9, "package"),  # not severe
        (6, 2, 5.6, "package"),  # 30 % improvement on a baseline of 8
    ],
)
def test_injection_is_considered_for_acute_severe_sciatica(
    engine: Engine, weeks: float, onset: float, leg_pain: float, state: str
) -> None:
    """After 6 weeks in the package, acute and severe sciatica improving < 30 % moves to an injection."""
    enrol(engine, onset_weeks=onset)
    engine.send("s1", "reassess", T0 + weeks * WEEK, reassess(leg_pain=leg_pain))
    assert engine.status("s1").state == state


def test_surgical_opinion_needs_concordant_imaging(engine: Engine) -> None:
    """At 12 weeks without improvement: an alert asks for imaging; concordant imaging, even recorded earlier, refers."""
    enrol(engine, onset_weeks=20)
    engine.send("s1", "reassess", T0 + 4 * WEEK, reassess(imaging="concordant"))
    engine.send("s1", "reassess", T0 + 12 * WEEK, reassess())
    assert engine.status("s1").state == "surgical_opinion"

    enrol(engine, "s2", onset_weeks=20)
    engine.send("s2", "reassess", T0 + 12 * WEEK, reassess(imaging="not_concordant"))
    status = engine.status("s2")
    assert status.state == "package"
    alert = next(i for i in status.plan if i.id == "monitoring.imaging_needed")
    assert alert.status == "alert"
    engine.send("s2", "reassess", T0 + 13 * WEEK, reassess(imaging="concordant"))
    status = engine.status("s2")
    assert status.state == "surgical_opinion"
    assert "monitoring.imaging_needed" not in {i.id for i in status.plan}


def test_disability_that_does_not_fall_counts_too(engine: Engine) -> None:
    """At 12 weeks, leg pain improved but ODI fell by fewer than 10 points: a surgical opinion with imaging."""
    enrol(engine, onset_weeks=20)
    engine.send("s1", "reassess", T0 + 12 * WEEK, reassess(leg_pain=3, odi=41, imaging="concordant"))
    assert engine.status("s1").state == "surgical_opinion"
    enrol(engine, "s2", onset_weeks=20)
    engine.send("s2", "reassess", T0 + 12 * WEEK, reassess(leg_pain=3, odi=40, imaging="concordant"))
    assert engine.status("s2").state == "package"


def test_improvement_is_undefined_below_a_baseline_of_4(engine: Engine) -> None:
    """A stage entered at leg pain 3 never escalates on relative improvement."""
    enrol(engine, leg_pain=3, onset_weeks=1)
    engine.send("s1", "reassess", T0 + 12 * WEEK, reassess(leg_pain=3, odi=10, imaging="concordant"))
    status = engine.status("s1")
    assert status.state == "package"
    assert engine.history("s1")[-1].decision["inputs"]["improvement"] is None  # type: ignore[index]


def test_injection_then_surgical_opinion_then_refractory(engine: Engine, clock: FakeClock) -> None:
    """Each stage starts its own clock and baseline; no improvement 12 weeks after a surgical opinion re-diagnoses."""
    clock.set(T0 + 30 * WEEK)
    enrol(engine, onset_weeks=1)
    engine.send("s1", "reassess", T0 + 6 * WEEK, reassess(leg_pain=8))
    assert engine.status("s1").state == "injection_considered"
    engine.send("s1", "reassess", T0 + 11 * WEEK, reassess(leg_pain=8, imaging="concordant"))
    assert engine.status("s1").state == "injection_considered"  # 5 weeks in the stage
    engine.send("s1", "reassess", T0 + 12 * WEEK, reassess(leg_pain=8))
    assert engine.status("s1").state == "surgical_opinion"
    engine.send("s1", "reassess", T0 + 23 * WEEK, reassess(leg_pain=8))
    assert engine.status("s1").state == "surgical_opinion"
    engine.send("s1", "reassess", T0 + 24 * WEEK, reassess(leg_pain=8))
    status = engine.status("s1")
    assert status.state == "rediagnose" and status.outcome == {"reason": "refractory_to_treatment"}


def test_monitoring_ticks_and_relapse(engine: Engine) -> None:
    """Monitoring is due at 2 weeks and overdue at 4; a relapse returns to assessment or refers on a red flag."""
    enrol(engine)
    assert engine.status("s1").next_due_at == T0 + 2 * WEEK
    engine.tick(T0 + 2 * WEEK)
    assert "due" in engine.status("s1").configuration
    engine.tick(T0 + 4 * WEEK)
    assert "overdue" in engine.status("s1").configuration
    engine.send("s1", "reassess", T0 + 5 * WEEK, reassess(leg_pain=1, odi=10))
    assert engine.status("s1").state == "improved"
    engine.send("s1", "relapse", T0 + 10 * WEEK, {"leg_pain": 6, "red_flags": []})
    assert engine.status("s1").state == "assessment"
    enrol(engine, "s2")
    engine.send("s2", "reassess", T0 + WEEK, reassess(leg_pain=1, odi=10))
    engine.send("s2", "relapse", T0 + 3 * WEEK, {"leg_pain": 6, "red_flags": ["progressive_motor_deficit"]})
    assert engine.status("s2").outcome == {
        "reason": "red_flag",
        "urgency": "urgent",
        "red_flags": ["progressive_motor_deficit"],
    }
    assert verify(engine.store).ok


def test_sciatica_vocabulary_is_strict(engine: Engine) -> None:
    """Terms of the piriformis pathway are not sciatica's: a piriformis finding is refused."""
    engine.enroll("s1", T0, pathway="sciatica", allow_unapproved=True)
    with pytest.raises(Exception, match="findings"):
        engine.send("s1", "assess", T0, assess(findings=["fair_test"]))
    with pytest.raises(Exception, match="odi"):
        engine.send("s1", "assess", T0, assess(odi=101))


def run(db: str, *args: str) -> tuple[int, Any]:
    """Run the CLI; parse stdout as JSON when it is JSON."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--db", db, *args])
    text = out.getvalue()
    try:
        return code, json.loads(text)
    except json.JSONDecodeError:
        return code, text


def test_every_command_runs_on_sciatica(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every command on the YAML pathway: enrol, send, tick, status, history, explain, replay, verify, due,
    list, diagram, FHIR export, timeline and worker."""
    at = T0.isoformat()
    assert run(db_url, "enroll", "s1", "--pathway", "sciatica", "--at", at)[0] == 2
    assert "--allow-unapproved" in capsys.readouterr().err
    code, status = run(db_url, "enroll", "s1", "--pathway", "sciatica", "--allow-unapproved", "--at", at, "--json")
    assert code == 0 and status["pathway"] == "sciatica" and status["state"] == "assessment"
    assert run(db_url, "send", "s1", "assess", "--at", at, "--data", json.dumps(assess()))[0] == 0
    later = (T0 + 3 * WEEK).isoformat()
    code, _ = run(db_url, "tick", "--at", later)
    assert code == 0
    code, status = run(db_url, "status", "s1", "--json")
    assert status["state"] == "package" and "due" in status["configuration"]
    code, history = run(db_url, "history", "s1", "--json")
    assert [e["event"] for e in history] == ["enroll", "assess", "tick"]
    code, explained = run(db_url, "explain", "s1", "--json")
    assert code == 0 and "reassess.injection_considered" in json.dumps(explained)
    code, replayed = run(db_url, "replay", "s1", "--until", (T0 + WEEK).isoformat(), "--json")
    assert code == 0 and replayed["configuration"][-1] == "scheduled"
    code, verified = run(db_url, "verify", "--json")
    assert code == 0 and verified["ok"] is True
    code, due = run(db_url, "due", "--at", (T0 + 5 * WEEK).isoformat(), "--json")
    assert code == 0 and [d["patient_id"] for d in due["patients"]] == ["s1"]
    code, listed = run(db_url, "list", "--state", "package", "--json")
    assert code == 0 and [row["patient_id"] for row in listed["patients"]] == ["s1"]
    code, mermaid = run(db_url, "diagram", "--patient", "s1", "--format", "mermaid")
    assert code == 0 and "class conservative,care,package,monitoring,due active" in mermaid
    code, bundle = run(db_url, "export-fhir", "s1")
    assert code == 0 and bundle["resourceType"] == "Bundle"
    codes = {c["code"] for e in bundle["entry"] for c in e["resource"].get("code", {}).get("coding", [])}
    assert {"M54.10", "72514-3"} <= codes  # radiculopathy and the leg pain observation
    assert run(db_url, "timeline", "s1", "-o", str(tmp_path / "s1.png"))[0] == 0
    assert (tmp_path / "s1.png").stat().st_size > 10_000
    code, _ = run(db_url, "worker", "--once", "--at", (T0 + 5 * WEEK).isoformat())
    assert code == 0
    code, status = run(db_url, "status", "s1", "--json")
    assert "overdue" in status["configuration"]


def test_a_piriformis_patient_is_handed_over(engine: Engine) -> None:
    """Re-diagnosed with suspected radiculopathy, the patient is offered and enrolled on sciatica, keeping both."""
    engine.enroll("p1", T0, version=1, factors={"age": 70, "anticoagulant": True, "glaucoma": True})
    engine.send(
        "p1",
        "assess",
        T0,
        {"findings": ["buttock_pain", "straight_leg_raise"], "pain": 7, "fasciculations": "absent", "red_flags": []},
    )
    piriformis = engine.status("p1", "piriformis")
    assert piriformis.outcome == {"reason": "suspected_lumbar_radiculopathy"}
    assert "rediagnose.sciatica_pathway" in {i.id for i in piriformis.plan}
    status = engine.enroll("p1", T0 + WEEK, pathway="sciatica", handover_from="piriformis", allow_unapproved=True)
    assert status.pathway == "sciatica" and status.state == "assessment"
    first = engine.history("p1", "sciatica")[0]
    assert first.payload["handover"] == {
        "pathway": "piriformis",
        "version": 1,
        "state": "rediagnose",
        "reason": "suspected_lumbar_radiculopathy",
    }
    carried = first.payload["factors"]
    assert carried["age"] == 70 and carried["anticoagulant"] is True
    assert "glaucoma" not in carried  # not a sciatica factor
    assert [e.event for e in engine.history("p1", "piriformis")] == ["enroll", "assess"]
    assert verify(engine.store).ok


def test_a_hand_over_needs_the_enrolment_and_a_declared_source(engine: Engine) -> None:
    """Handing over from a pathway the patient is not on, or that the target does not accept, is refused."""
    from pathway import InvalidCommand
    from persistence import UnknownPatient

    with pytest.raises(UnknownPatient):
        engine.enroll("p9", T0, pathway="sciatica", handover_from="piriformis", allow_unapproved=True)
    engine.enroll("p9", T0, pathway="sciatica", allow_unapproved=True)
    with pytest.raises(InvalidCommand, match="takes no hand-over from sciatica"):
        engine.enroll("p9", T0, pathway="piriformis", handover_from="sciatica")
