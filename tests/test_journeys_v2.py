"""The journeys of the clinical review of version 1, each on version 2; v1 and v2 patients side by side."""

from __future__ import annotations

from pathway import Engine, verify
from states import ItemStatus, get_pathway
from tests.conftest import T0
from tests.helpers import assess_data, reassess_data
from tests.v2_helpers import DAY, V2, WEEK, Patient, assess_v2, in_line, override_v2, reassess_v2

# -- the journeys of the review -------------------------------------------------------------------


def test_journey_little_pain_with_stable_fasciculations_is_never_escalated() -> None:
    """Pain 1/10 with stable fasciculations: no injections, no pain clinic, no "refractory"."""
    patient = in_line("first_line", pain=1, fasciculations="stable")
    for weeks in (4, 6, 10, 16, 24, 30):
        patient.reassess(weeks * WEEK, pain=1, fasciculations="stable")
        if patient.state != "first_line":
            break
    assert patient.state == "rediagnose"
    assert patient.outcome == {"reason": "persistent_fasciculations"}  # 3 reassessments over >= 6 weeks: EMG


def test_journey_override_at_pain_0_is_not_refractory() -> None:
    patient = in_line("first_line", pain=1, fasciculations="stable")
    patient.override(WEEK, "second_line", 0)
    for weeks in (7, 13, 19, 25):
        patient.reassess(weeks * WEEK, pain=0, fasciculations="improving")
        if patient.state != "second_line":
            break
    assert patient.state == "resolved"


def test_journey_pregnancy_advances_to_contraindicate_nsaids() -> None:
    """Enrolled 16 weeks pregnant: NSAIDs are a caution, then contraindicated from 20 weeks."""
    patient = Patient({"pregnancy_weeks": 16})
    patient.assess()
    assert patient.item("first_line.nsaids").status == ItemStatus.CAUTION
    patient.reassess(3 * WEEK + 6 * DAY, pain=7)
    assert patient.item("first_line.nsaids").status == ItemStatus.CAUTION  # 19 weeks 6 days
    patient.reassess(7 * WEEK, pain=7)  # 23 weeks
    assert patient.item("first_line.nsaids").status == ItemStatus.CONTRAINDICATED
    assert patient.context["gestation_weeks"] == 23


def test_journey_due_date_gives_the_gestation_and_delivery_ends_it() -> None:
    due = (T0 + 20 * WEEK).date().isoformat()  # 20 weeks pregnant at T0
    patient = Patient({"due_date": due})
    assert patient.context["gestation_weeks"] == 20
    patient.assess()
    assert patient.item("first_line.nsaids").status == ItemStatus.CONTRAINDICATED
    patient.send("update_factors", 23 * WEEK, {"clear": ["due_date"], "set": {"breastfeeding": True}})
    assert patient.item("first_line.nsaids").status == ItemStatus.RECOMMENDED


def test_journey_new_anticoagulant_and_myocardial_infarction_are_recorded() -> None:
    patient = in_line("second_line")
    assert patient.item("first_line.nsaids").status == ItemStatus.CONTINUE
    patient.send("update_factors", 2 * WEEK, {"set": {"anticoagulant": True}})
    assert patient.item("first_line.nsaids").status == ItemStatus.CONTRAINDICATED
    assert patient.item("second_line.corticosteroid_injection").status == ItemStatus.CAUTION
    patient.send("update_factors", 3 * WEEK, {"set": {"recent_myocardial_infarction": True}})
    assert patient.item("first_line.amitriptyline").status == ItemStatus.CONTRAINDICATED
    patient.send("update_factors", 30 * WEEK, {"clear": ["recent_myocardial_infarction", "anticoagulant"]})
    assert patient.item("first_line.amitriptyline").status == ItemStatus.CONTINUE
    assert set(patient.context["factors_at"]) == {"anticoagulant", "recent_myocardial_infarction"}


def test_journey_older_patient_avoids_amitriptyline() -> None:
    patient = in_line("first_line", factors={"age": 70, "egfr": 45})
    assert patient.item("first_line.amitriptyline").status == ItemStatus.AVOID
    nsaids = patient.item("first_line.nsaids")
    assert nsaids.status == ItemStatus.CAUTION and len(nsaids.reasons) == 2


def test_journey_worsening_fasciculations_get_a_work_up_and_a_way_back() -> None:
    patient = in_line("second_line", pain=7)
    patient.reassess(3 * WEEK, pain=6, fasciculations="worsening")
    assert patient.state == "neuro_review"
    assert patient.has("neuro_review.emg_ncs") and patient.has("neuro_review.neurology")
    patient.send("investigation_result", 5 * WEEK, {"test": "emg_ncs", "result": "normal"})
    patient.send("resume", 5 * WEEK, {"clinician": "dr", "note": "EMG normal"})
    assert patient.state == "second_line"
    assert patient.context["line_baseline"] == 7


def test_journey_fasciculations_with_weakness_name_neurology_and_a_time_frame() -> None:
    patient = in_line("first_line")
    patient.reassess(2 * WEEK, red_flags=["fasciculations_with_weakness"])
    (item,) = patient.plan()
    assert item.referral is not None
    assert (item.referral.specialty, item.referral.within) == ("neurology with EMG", "within 2 weeks")


def test_journey_surgery_is_not_recommended_on_day_8() -> None:
    patient = in_line("first_line")
    patient.send("investigation_result", DAY, {"test": "mri_pelvis", "result": "piriformis_sciatic_compression"})
    patient.override(8 * DAY, "third_line", 8)
    surgery = patient.item("third_line.surgical_consultation")
    assert surgery.status == ItemStatus.NOT_INDICATED
    assert "less than 12 weeks of conservative care since diagnosis" in surgery.reasons


def test_journey_botulinum_toxin_is_not_recommended_beside_the_first_steroid_injection() -> None:
    patient = in_line("first_line")
    patient.reassess(4 * WEEK, pain=7)
    assert patient.state == "second_line"
    assert patient.item("second_line.corticosteroid_injection").status == ItemStatus.RECOMMENDED
    assert patient.item("second_line.botulinum_toxin").status == ItemStatus.NOT_INDICATED


def test_journey_plateau_at_50_percent_with_pain_5_escalates() -> None:
    patient = in_line("first_line", pain=10)
    for weeks in (2, 4, 6):
        patient.reassess(weeks * WEEK, pain=5)
        assert patient.state == "first_line"
    assert patient.reassess(8 * WEEK, pain=5) == "reassess.escalate_to_second_line"


def test_journey_deterioration_from_4_to_10_alerts() -> None:
    patient = in_line("first_line", pain=4)
    assert patient.reassess(WEEK, pain=10) == "reassess.deteriorating"
    assert patient.item("treatment.deteriorating").status == ItemStatus.ALERT


def test_journey_a_patient_never_assessed_is_due_and_then_lost_to_follow_up() -> None:
    patient = Patient()
    assert V2.next_due_at(patient.configuration, patient.context) == T0 + WEEK
    patient.send("tick", WEEK)
    patient.send("tick", 2 * WEEK)
    assert patient.configuration == ("assessment", "assessment_overdue")
    patient.send("tick", 8 * WEEK)
    assert V2.flags(patient.context) == ["lost_to_follow_up"]


def test_journey_a_relapse_is_due_for_assessment() -> None:
    patient = in_line("first_line")
    patient.reassess(3 * WEEK, pain=1, fasciculations="absent")
    patient.send("relapse", 20 * WEEK, {"pain": 6, "fasciculations": "present", "red_flags": []})
    assert V2.next_due_at(patient.configuration, patient.context) == T0 + 21 * WEEK


# -- engine: v2 by default, v1 on request, both verify -----------------------------------------------


def test_new_enrolments_get_version_2_and_version_1_on_request(engine: Engine) -> None:
    assert engine.enroll("new", T0).version == 2
    assert engine.enroll("old", T0, version=1).version == 1
    assert engine.status("new").to_json()["flags"] == []


def test_v1_and_v2_patients_in_one_database_verify(engine: Engine) -> None:
    engine.enroll("v1", T0, version=1)
    engine.send("v1", "assess", T0, assess_data())
    engine.send("v1", "reassess", T0 + 4 * WEEK, reassess_data(pain=7, documented_compression=True))
    engine.enroll("v2", T0, factors={"pregnancy_weeks": 10})
    engine.send("v2", "assess", T0, assess_v2())
    engine.send("v2", "reassess", T0 + 4 * WEEK, reassess_v2(pain=7))
    engine.send("v2", "update_factors", T0 + 5 * WEEK, {"set": {"anticoagulant": True}, "clear": ["pregnancy_weeks"]})
    engine.send("v2", "injection", T0 + 5 * WEEK, {"type": "corticosteroid_local_anaesthetic", "side": "left"})
    engine.send("v2", "reassess", T0 + 6 * WEEK, reassess_v2(pain=5, fasciculations="worsening"))
    engine.send("v2", "resume", T0 + 7 * WEEK, {"clinician": "dr"})
    engine.send("v2", "override", T0 + 8 * WEEK, override_v2("third_line", 6))
    engine.enroll("idle", T0)
    report = engine.tick(T0 + 9 * WEEK)
    assert report.advanced >= 1
    assert engine.status("idle").state == "assessment"
    assert engine.status("idle").configuration == ["assessment", "assessment_overdue"]
    assert (engine.status("v1").version, engine.status("v2").version) == (1, 2)
    assert engine.status("v2").state == "third_line"
    result = verify(engine.store)
    assert result.ok, result.problems
    assert result.patients == 3


def test_lost_to_follow_up_shows_in_status_and_due(engine: Engine) -> None:
    engine.enroll("quiet", T0)
    for weeks in (1, 2, 8):
        engine.tick(T0 + weeks * WEEK)
    status = engine.status("quiet")
    assert status.flags == ["lost_to_follow_up"]
    assert status.to_json()["flags"] == ["lost_to_follow_up"]
    assert status.next_due_at is None
    engine.send("quiet", "assess", T0 + 9 * WEEK, assess_v2())
    assert engine.status("quiet").flags == []


# -- migration from version 1 ---------------------------------------------------------------------------


def test_migration_from_version_1_keeps_the_line_and_turns_compression_into_a_fact() -> None:
    v1 = get_pathway("piriformis", 1)
    configuration, context = v1.start(v1.validate_enrollment({"factors": {"age": 50}}), T0)
    for event, at, data in [
        ("assess", T0, assess_data(pain=8)),
        ("reassess", T0 + 4 * WEEK, reassess_data(pain=7, documented_compression=True)),
    ]:
        step = v1.apply(configuration, context, event, v1.validate(event, data), at)
        configuration, context = step.configuration_after, step.context
    assert v1.state_name(configuration) == "second_line"
    new_configuration, new_context = V2.migrate(1, configuration, context, T0 + 5 * WEEK)
    assert new_configuration == ("treatment", "line", "second_line", "monitoring", "scheduled")
    assert new_context["line_started_at"] == context["line_started_at"]
    assert new_context["line_baseline"] == context["line_baseline"] == 7
    assert new_context["current_line"] == "second_line"
    assert (new_context["documented_compression"], new_context["compression_evidence"]) == (
        True,
        "version_1_reassessment",
    )
    assert new_context["factors"] == {"age": 50}
    # The migrated patient goes on under version 2's rules.
    step = V2.apply(
        new_configuration, new_context, "reassess", V2.validate("reassess", reassess_v2(pain=5)), T0 + 6 * WEEK
    )
    assert step.decision is not None and step.decision.rule is not None


def test_migration_of_a_patient_awaiting_assessment_schedules_the_assessment() -> None:
    v1 = get_pathway("piriformis", 1)
    configuration, context = v1.start(v1.validate_enrollment({}), T0)
    new_configuration, new_context = V2.migrate(1, configuration, context, T0 + WEEK)
    assert new_configuration == ("assessment", "assessment_pending")
    assert V2.next_due_at(new_configuration, new_context) == T0 + 2 * WEEK
