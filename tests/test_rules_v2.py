"""Every rule of piriformis version 2 (piriformis-v2.md) at its boundaries, through the pure definition."""

from __future__ import annotations

from datetime import timedelta

import pytest

from states import EventNotAllowed, InvalidPayload, ItemStatus
from tests.v2_helpers import DAY, V2, WEEK, Patient, assess_v2, in_line

NON_EMERGENCY = ["progressive_motor_deficit", "cancer", "trauma", "fasciculations_with_weakness"]
LINES = ["first_line", "second_line", "third_line"]


# -- assess ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["cauda_equina", "infection"])
def test_assess_red_flag_emergency(flag: str) -> None:
    patient = Patient()
    assert patient.assess(red_flags=["trauma", flag]) == "assess.red_flag_emergency"
    assert patient.outcome == {"reason": "red_flag", "urgency": "emergency", "red_flags": ["trauma", flag]}


@pytest.mark.parametrize("flag", NON_EMERGENCY)
def test_assess_red_flag_urgent(flag: str) -> None:
    patient = Patient()
    assert patient.assess(red_flags=[flag]) == "assess.red_flag"
    assert patient.outcome == {"reason": "red_flag", "urgency": "urgent", "red_flags": [flag]}


@pytest.mark.parametrize(
    "signs",
    [
        ["dermatomal_deficit"],
        ["straight_leg_raise", "crossed_straight_leg_raise"],
        ["straight_leg_raise", "pain_below_knee"],
    ],
)
def test_assess_radiculopathy(signs: list[str]) -> None:
    patient = Patient()
    assert (
        patient.assess(findings=["buttock_pain", "sitting_aggravation", "fair_test", *signs]) == "assess.radiculopathy"
    )
    assert patient.outcome == {"reason": "suspected_lumbar_radiculopathy"}


@pytest.mark.parametrize("sign", ["crossed_straight_leg_raise", "pain_below_knee"])
def test_assess_companion_sign_without_straight_leg_raise_does_not_exclude(sign: str) -> None:
    patient = Patient()
    assert patient.assess(findings=["buttock_pain", "sitting_aggravation", "fair_test", sign]) == "assess.criteria_met"


def test_assess_straight_leg_raise_alone_is_a_caution_not_an_exclusion() -> None:
    patient = Patient()
    assert patient.assess(findings=["buttock_pain", "sitting_aggravation", "fair_test", "straight_leg_raise"]) == (
        "assess.criteria_met"
    )
    assert patient.item("treatment.straight_leg_raise").status == ItemStatus.CAUTION
    assert not in_line("first_line").has("treatment.straight_leg_raise")


@pytest.mark.parametrize(
    ("findings", "met"),
    [
        (["buttock_pain", "sitting_aggravation", "sciatic_notch_tenderness"], True),
        (["buttock_pain", "sitting_aggravation", "pace_sign"], True),
        (["buttock_pain", "midgluteal_tenderness", "fair_test"], True),
        (["buttock_pain", "sciatic_notch_tenderness", "midgluteal_tenderness"], False),  # one class, counted once
        (["buttock_pain", "fair_test", "pace_sign"], False),  # one class, counted once
        (["buttock_pain", "sitting_aggravation", "posterior_thigh_radiation"], False),  # supports, does not count
        (["sitting_aggravation", "sciatic_notch_tenderness", "fair_test"], False),  # no buttock pain
    ],
)
def test_assess_criteria_two_of_three_classes(findings: list[str], met: bool) -> None:
    patient = Patient()
    rule = patient.assess(findings=findings)
    assert rule == ("assess.criteria_met" if met else "assess.criteria_not_met")
    assert patient.state == ("first_line" if met else "rediagnose")


@pytest.mark.parametrize(("pain", "met"), [(1, True), (0.9, False), (0, False)])
def test_assess_criteria_pain_at_least_1(pain: float, met: bool) -> None:
    patient = Patient()
    assert patient.assess(pain=pain) == ("assess.criteria_met" if met else "assess.criteria_not_met")


def test_assess_side_is_required_and_coded() -> None:
    data = assess_v2()
    del data["side"]
    with pytest.raises(InvalidPayload, match="side"):
        V2.validate("assess", data)
    with pytest.raises(InvalidPayload):
        V2.validate("assess", assess_v2(side="both"))


@pytest.mark.parametrize(("side", "alert"), [("bilateral", True), ("left", False), ("right", False)])
def test_assess_bilateral_adds_a_lumbar_screen_alert(side: str, alert: bool) -> None:
    patient = in_line("first_line", side=side)
    assert patient.context["side"] == side
    assert patient.has("treatment.bilateral") is alert
    if alert:
        assert patient.item("treatment.bilateral").status == ItemStatus.ALERT


def test_assess_worsening_fasciculations_treats_with_an_emg_alert_until_an_emg_is_recorded() -> None:
    patient = Patient()
    assert patient.assess(fasciculations="worsening") == "assess.criteria_met"
    assert patient.state == "first_line"
    assert patient.item("treatment.emg_before_injections").status == ItemStatus.ALERT
    patient.send("investigation_result", WEEK, {"test": "emg_ncs", "result": "normal"})
    assert not patient.has("treatment.emg_before_injections")
    assert not in_line("first_line").has("treatment.emg_before_injections")


# -- reassess: red flags and worsening --------------------------------------------------------------


@pytest.mark.parametrize("line", LINES)
def test_reassess_red_flag_emergency_and_urgent_from_every_line(line: str) -> None:
    patient = in_line(line)
    assert patient.reassess(WEEK, red_flags=["infection"]) == "reassess.red_flag_emergency"
    other = in_line(line)
    assert other.reassess(WEEK, red_flags=["cancer"]) == "reassess.red_flag"
    assert other.outcome == {"reason": "red_flag", "urgency": "urgent", "red_flags": ["cancer"]}


@pytest.mark.parametrize("line", LINES)
def test_reassess_worsening_fasciculations_goes_to_neuro_review(line: str) -> None:
    patient = in_line(line)
    assert patient.reassess(3 * WEEK, pain=1, fasciculations="worsening") == "reassess.worsening_fasciculations"
    assert patient.state == "neuro_review"
    assert patient.configuration == ("neuro_review", "review_pending")
    assert V2.outcome(patient.configuration, patient.context) is None  # not final


# -- reassess: resolved ----------------------------------------------------------------------------


@pytest.mark.parametrize(("after", "resolved"), [(2 * WEEK, True), (2 * WEEK - DAY, False)])
def test_resolved_with_fasciculations_absent_two_weeks_after_the_line_was_entered(
    after: timedelta, resolved: bool
) -> None:
    patient = in_line("first_line")
    patient.reassess(after, pain=2, fasciculations="absent")
    assert patient.state == ("resolved" if resolved else "first_line")


def test_resolved_counts_weeks_from_the_line_entered_not_from_diagnosis() -> None:
    patient = in_line("first_line")
    patient.override(3 * WEEK, "second_line", 5)
    assert patient.reassess(4 * WEEK, pain=2, fasciculations="absent") != "reassess.resolved"
    assert patient.reassess(5 * WEEK, pain=2, fasciculations="absent") == "reassess.resolved"


@pytest.mark.parametrize(("pain", "resolved"), [(2, True), (2.5, False)])
def test_resolved_pain_at_most_2(pain: float, resolved: bool) -> None:
    patient = in_line("first_line")
    patient.reassess(3 * WEEK, pain=pain, fasciculations="absent")
    assert patient.state == ("resolved" if resolved else "first_line")


@pytest.mark.parametrize(("gap", "resolved"), [(2 * WEEK, True), (2 * WEEK - DAY, False)])
def test_resolved_improving_at_two_consecutive_reassessments_two_weeks_apart(gap: timedelta, resolved: bool) -> None:
    patient = in_line("first_line")
    assert patient.reassess(WEEK, pain=2, fasciculations="improving") == "reassess.stay"
    patient.reassess(WEEK + gap, pain=1, fasciculations="improving")
    assert patient.state == ("resolved" if resolved else "first_line")


def test_resolved_improving_run_is_broken_by_a_reassessment_with_more_pain() -> None:
    patient = in_line("first_line")
    patient.reassess(WEEK, pain=2, fasciculations="improving")
    patient.reassess(2 * WEEK, pain=5, fasciculations="improving")
    assert patient.reassess(4 * WEEK, pain=2, fasciculations="improving") == "reassess.stay"


@pytest.mark.parametrize("fasciculations", ["present", "stable"])
def test_not_resolved_with_fasciculations_present_or_stable(fasciculations: str) -> None:
    patient = in_line("first_line")
    assert patient.reassess(3 * WEEK, pain=0, fasciculations=fasciculations) == "reassess.stay"


# -- reassess: episode cap ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("after", "pain", "capped"),
    [(24 * WEEK, 5.7, True), (24 * WEEK, 5.6, False), (24 * WEEK - DAY, 8, False)],
    ids=["29-percent", "30-percent", "before-24-weeks"],
)
def test_episode_cap_against_the_diagnosis_baseline(after: timedelta, pain: float, capped: bool) -> None:
    patient = in_line("first_line")  # baseline 8
    patient.override(20 * WEEK, "first_line", pain)  # a new line baseline does not reset the episode
    rule = patient.reassess(after, pain=pain)
    assert (rule == "reassess.episode_cap") is capped
    if capped:
        assert patient.outcome == {"reason": "refractory_to_treatment"}


def test_episode_cap_undefined_below_a_diagnosis_baseline_of_4() -> None:
    patient = in_line("first_line", pain=3)
    assert patient.reassess(30 * WEEK, pain=3) == "reassess.stay"


# -- reassess: escalation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("after", "pain", "escalates"),
    [
        (4 * WEEK, 5.7, True),  # 29 % at 4 weeks
        (4 * WEEK, 5.6, False),  # 30 % at 4 weeks
        (4 * WEEK - DAY, 8, False),
        (6 * WEEK, 4.1, True),  # 49 % at 6 weeks
        (6 * WEEK, 4.0, False),  # 50 %: only a plateau after 8 weeks escalates
    ],
)
def test_first_line_escalation_windows(after: timedelta, pain: float, escalates: bool) -> None:
    patient = in_line("first_line")  # baseline 8
    patient.reassess(after - DAY, pain=pain + 0.5)  # a previous reassessment (no plateau before 8 weeks)
    rule = patient.reassess(after, pain=pain)
    assert (rule == "reassess.escalate_to_second_line") is escalates


@pytest.mark.parametrize(("pain", "escalates"), [(4, True), (3.9, False)])
def test_escalation_needs_pain_at_least_4(pain: float, escalates: bool) -> None:
    patient = in_line("first_line", pain=5)  # 20-22 % improvement
    assert (patient.reassess(4 * WEEK, pain=pain) == "reassess.escalate_to_second_line") is escalates


@pytest.mark.parametrize(
    ("after", "previous", "escalates"),
    [(8 * WEEK, 5.9, True), (8 * WEEK, 6.0, False), (8 * WEEK - DAY, 5.5, False), (8 * WEEK, 4.0, True)],
    ids=["fell-0.9", "fell-1", "before-8-weeks", "rose"],
)
def test_first_line_plateau_after_8_weeks(after: timedelta, previous: float, escalates: bool) -> None:
    patient = in_line("first_line", pain=10)  # 50 % improvement at pain 5: no percentage rule fires
    patient.reassess(after - 3 * WEEK, pain=previous)  # before the 6-week window
    rule = patient.reassess(after, pain=5)
    assert (rule == "reassess.escalate_to_second_line") is escalates


def test_no_percentage_rule_below_a_line_baseline_of_4() -> None:
    """A baseline of 3: improvement is undefined, so neither percentage window escalates a rise to 4 or 5."""
    patient = in_line("first_line", pain=3)
    assert patient.reassess(4 * WEEK, pain=4) == "reassess.stay"
    assert patient.reassess(6 * WEEK, pain=5) == "reassess.deteriorating"
    assert patient.state == "first_line"


@pytest.mark.parametrize(
    ("after", "pain", "escalates"),
    [
        (6 * WEEK, 5.7, True),
        (6 * WEEK, 5.6, False),
        (12 * WEEK, 4.1, True),
        (12 * WEEK, 4.0, False),
        (12 * WEEK, 3, False),
    ],
)
def test_second_to_third_line(after: timedelta, pain: float, escalates: bool) -> None:
    patient = in_line("second_line")
    assert (patient.reassess(after, pain=pain) == "reassess.escalate_to_third_line") is escalates


@pytest.mark.parametrize(
    ("after", "pain", "refractory"),
    [(12 * WEEK, 5.7, True), (12 * WEEK, 5.6, False), (12 * WEEK - DAY, 8, False)],
)
def test_third_line_refractory(after: timedelta, pain: float, refractory: bool) -> None:
    patient = in_line("third_line")
    assert (patient.reassess(after, pain=pain) == "reassess.refractory") is refractory


def test_third_line_refractory_needs_pain_at_least_4() -> None:
    patient = in_line("third_line", pain=5)
    assert patient.reassess(12 * WEEK, pain=3.9) != "reassess.refractory"


# -- reassess: persistent fasciculations and deterioration ------------------------------------------


@pytest.mark.parametrize(
    ("times", "rediagnosed"),
    [((2, 4, 8), True), ((2, 4, 7.9), False), ((2, 8), False), ((2, 5, 6, 8), True)],
)
def test_persistent_fasciculations_with_little_pain(times: tuple[float, ...], rediagnosed: bool) -> None:
    patient = in_line("first_line", pain=3)
    for weeks in times:
        patient.reassess(weeks * WEEK, pain=3, fasciculations="stable")
    assert (patient.rule == "reassess.persistent_fasciculations") is rediagnosed
    if rediagnosed:
        assert patient.outcome == {"reason": "persistent_fasciculations"}
    else:
        assert patient.state == "first_line"
        assert patient.item("treatment.emg_persistent_fasciculations").status == ItemStatus.ALERT


def test_persistent_fasciculations_run_is_broken_by_pain_above_3() -> None:
    patient = in_line("first_line", pain=3)
    patient.reassess(2 * WEEK, pain=3, fasciculations="present")
    patient.reassess(4 * WEEK, pain=3.5, fasciculations="present")
    patient.reassess(6 * WEEK, pain=3, fasciculations="present")
    assert patient.reassess(9 * WEEK, pain=3, fasciculations="present") == "reassess.stay"
    assert patient.reassess(12 * WEEK, pain=3, fasciculations="present") == "reassess.persistent_fasciculations"


@pytest.mark.parametrize(("pain", "alert"), [(6, True), (5.9, False)])
def test_deterioration_alert_at_line_baseline_plus_2(pain: float, alert: bool) -> None:
    patient = in_line("first_line", pain=4)
    assert (patient.reassess(WEEK, pain=pain) == "reassess.deteriorating") is alert
    assert patient.state == "first_line"
    assert patient.has("treatment.deteriorating") is alert
    patient.reassess(2 * WEEK, pain=4)
    assert not patient.has("treatment.deteriorating")


# -- neurological review -------------------------------------------------------------------------------


@pytest.mark.parametrize("line", LINES)
def test_resume_returns_to_the_line_left_with_its_start_and_baseline(line: str) -> None:
    patient = in_line(line, pain=8)
    started, baseline = patient.context["line_started_at"], patient.context["line_baseline"]
    patient.reassess(3 * WEEK, pain=6, fasciculations="worsening")
    patient.reassess(5 * WEEK, pain=6, fasciculations="stable")
    assert patient.send("resume", 6 * WEEK, {"clinician": "dr"}) == f"resume.{line}"
    assert patient.state == line
    assert patient.configuration == ("treatment", "line", line, "monitoring", "scheduled")
    assert (patient.context["line_started_at"], patient.context["line_baseline"]) == (started, baseline)
    # Monitoring restarts from the last reassessment (5 weeks): due at 7 weeks.
    assert V2.next_due_at(patient.configuration, patient.context) == patient_time(7 * WEEK)


def patient_time(after: timedelta) -> object:
    from tests.conftest import T0

    return T0 + after


def test_neuro_review_schedule_due_at_2_overdue_at_4_weeks_after_entry() -> None:
    patient = in_line("first_line")
    patient.reassess(3 * WEEK, fasciculations="worsening")
    assert V2.next_due_at(patient.configuration, patient.context) == patient_time(5 * WEEK)
    with pytest.raises(EventNotAllowed):
        patient.send("injection", 3 * WEEK, {"type": "botulinum_toxin", "side": "left"})
    assert patient.send("tick", 5 * WEEK - DAY) is None
    assert patient.send("tick", 5 * WEEK) == "tick.review_due"
    assert patient.send("tick", 7 * WEEK) == "tick.review_overdue"
    assert patient.reassess(7 * WEEK, pain=5, fasciculations="stable") == "reassess.review_stay"
    assert patient.configuration == ("neuro_review", "review_pending")
    assert patient.reassess(8 * WEEK, red_flags=["cancer"]) == "reassess.red_flag"


def test_neuro_review_plan_names_emg_and_neurology_with_time_frames() -> None:
    patient = in_line("first_line")
    patient.reassess(3 * WEEK, fasciculations="worsening")
    neurology = patient.item("neuro_review.neurology")
    assert neurology.status == ItemStatus.ALERT and "motor neurone disease" in neurology.text
    assert neurology.referral is not None and neurology.referral.within == "within 2-4 weeks"
    assert patient.item("neuro_review.emg_ncs").referral is not None
    assert patient.item("first_line.nsaids").status == ItemStatus.CONTINUE


@pytest.mark.parametrize("reason", ["persistent_fasciculations", "neuromuscular_disorder", "other_diagnosis"])
def test_rediagnosis_from_neuro_review_with_a_reason(reason: str) -> None:
    patient = in_line("first_line")
    patient.reassess(3 * WEEK, fasciculations="worsening")
    assert patient.send("rediagnosis", 6 * WEEK, {"reason": reason, "detail": "EMG"}) == "rediagnosis"
    assert patient.outcome == {"reason": reason, "detail": "EMG"}
    with pytest.raises(EventNotAllowed):
        in_line("first_line").send("rediagnosis", WEEK, {"reason": reason})


def test_withdraw_from_every_non_final_state() -> None:
    for setup in ("assessment", "first_line", "neuro_review", "resolved"):
        patient = Patient()
        if setup != "assessment":
            patient.assess()
        if setup == "neuro_review":
            patient.reassess(WEEK, fasciculations="worsening")
        if setup == "resolved":
            patient.reassess(3 * WEEK, pain=0, fasciculations="absent")
        assert patient.send("withdraw", 4 * WEEK, {"reason": "moved"}) == "withdraw"
        assert patient.state == "withdrawn"


# -- investigations ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("test", "result"),
    [
        ("emg_ncs", "piriformis_sciatic_compression"),
        ("mri_lumbar", "sciatic_neuropathy"),
        ("mri_pelvis", "radiculopathy"),
    ],
)
def test_investigation_results_belong_to_their_test(test: str, result: str) -> None:
    with pytest.raises(InvalidPayload, match="is not a result of test"):
        V2.validate("investigation_result", {"test": test, "result": result})


@pytest.mark.parametrize(
    ("test", "result", "state", "reason"),
    [
        ("emg_ncs", "widespread_denervation", "neuro_review", None),
        ("mri_lumbar", "concordant_disc_herniation", "rediagnose", "suspected_lumbar_radiculopathy"),
        ("emg_ncs", "radiculopathy", "rediagnose", "suspected_lumbar_radiculopathy"),
        ("emg_ncs", "normal", "first_line", None),
        ("mri_pelvis", "other", "first_line", None),
    ],
)
def test_investigation_result_rules(test: str, result: str, state: str, reason: str | None) -> None:
    patient = in_line("first_line")
    patient.send("investigation_result", 2 * WEEK, {"test": test, "result": result})
    assert patient.state == state
    assert patient.context[test] == result
    if reason:
        assert patient.outcome == {"reason": reason}
    if result == "other":
        assert patient.item("treatment.investigation_other").status == ItemStatus.ALERT


@pytest.mark.parametrize(
    ("test", "result"), [("emg_ncs", "sciatic_neuropathy"), ("mri_pelvis", "piriformis_sciatic_compression")]
)
def test_documented_compression_from_emg_or_pelvic_mri(test: str, result: str) -> None:
    patient = in_line("third_line")
    assert patient.context["documented_compression"] is False
    patient.send("investigation_result", WEEK, {"test": test, "result": result})
    assert (patient.context["documented_compression"], patient.context["compression_evidence"]) == (True, test)


# -- override ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["pain", "reason_code", "reason", "clinician"])
def test_override_requires_pain_and_a_reason_code(missing: str) -> None:
    data = {"to": "second_line", "pain": 5, "reason_code": "transfer_in", "reason": "x", "clinician": "dr"}
    del data[missing]
    with pytest.raises(InvalidPayload, match=missing):
        V2.validate("override", data)


def test_override_pain_is_the_new_line_baseline_and_the_override_is_recorded() -> None:
    patient = in_line("first_line", pain=8)
    patient.send(
        "override",
        3 * WEEK,
        {"to": "second_line", "pain": 6, "reason_code": "adverse_effect", "reason": "NSAID", "clinician": "dr"},
    )
    assert patient.state == "second_line"
    assert patient.context["line_baseline"] == 6
    assert patient.context["diagnosis_baseline"] == 8
    assert patient.context["last_override"]["reason_code"] == "adverse_effect"


# -- injections ----------------------------------------------------------------------------------------


def test_injection_only_in_second_or_third_line() -> None:
    with pytest.raises(EventNotAllowed):
        in_line("first_line").send("injection", WEEK, {"type": "corticosteroid_local_anaesthetic", "side": "left"})
    for line in ("second_line", "third_line"):
        patient = in_line(line)
        assert (
            patient.send("injection", WEEK, {"type": "corticosteroid_local_anaesthetic", "side": "left"}) == "injection"
        )
        assert patient.state == line


def test_injection_response_needs_an_injection() -> None:
    with pytest.raises(EventNotAllowed):
        in_line("second_line").send("injection_response", WEEK, {"relief": "good"})


@pytest.mark.parametrize(("relief", "indicated"), [("none", True), ("partial", True), ("good", False)])
def test_botulinum_toxin_after_a_corticosteroid_injection_without_adequate_relief(relief: str, indicated: bool) -> None:
    patient = in_line("second_line")
    assert patient.item("second_line.botulinum_toxin").status == ItemStatus.NOT_INDICATED
    patient.send("injection", WEEK, {"type": "corticosteroid_local_anaesthetic", "side": "left"})
    assert patient.item("second_line.botulinum_toxin").status == ItemStatus.NOT_INDICATED
    patient.send("injection_response", 5 * WEEK, {"relief": relief})
    status = patient.item("second_line.botulinum_toxin").status
    assert (status == ItemStatus.RECOMMENDED) is indicated


@pytest.mark.parametrize(("after", "indicated"), [(12 * WEEK, True), (12 * WEEK - DAY, False)])
def test_botulinum_toxin_needs_12_weeks_between_doses(after: timedelta, indicated: bool) -> None:
    patient = in_line("second_line")
    patient.send("injection", WEEK, {"type": "corticosteroid_local_anaesthetic", "side": "left"})
    patient.send("injection_response", 5 * WEEK, {"relief": "partial"})
    patient.send("injection", 6 * WEEK, {"type": "botulinum_toxin", "side": "left"})
    assert patient.item("second_line.botulinum_toxin").status == ItemStatus.NOT_INDICATED
    patient.send("update_factors", 6 * WEEK + after, {"set": {"age": 50}})
    assert (patient.item("second_line.botulinum_toxin").status == ItemStatus.RECOMMENDED) is indicated


def test_no_relief_at_the_immediate_check_is_a_diagnostic_alert() -> None:
    patient = in_line("second_line")
    patient.send("injection", WEEK, {"type": "corticosteroid_local_anaesthetic", "side": "left"})
    patient.send("injection_response", WEEK, {"relief": "partial", "timing": "immediate"})
    assert not patient.has("treatment.block_failed")
    assert patient.item("second_line.botulinum_toxin").status == ItemStatus.NOT_INDICATED  # immediate check only
    patient.send("injection_response", WEEK, {"relief": "none", "timing": "immediate"})
    assert patient.item("treatment.block_failed").status == ItemStatus.ALERT


@pytest.mark.parametrize(("count", "caution"), [(3, True), (2, False)])
def test_three_corticosteroid_injections_in_12_months_is_a_caution(count: int, caution: bool) -> None:
    patient = in_line("second_line")
    for n in range(count):
        patient.send("injection", (1 + 6 * n) * WEEK, {"type": "corticosteroid_local_anaesthetic", "side": "left"})
    reasons = patient.item("second_line.corticosteroid_injection").reasons
    assert any("3 or more" in r for r in reasons) is caution
    patient.send("update_factors", 60 * WEEK, {"set": {"age": 50}})  # the first has left the 52-week window
    assert not any("3 or more" in r for r in patient.item("second_line.corticosteroid_injection").reasons)


# -- surgery -------------------------------------------------------------------------------------------


def test_surgical_consultation_needs_compression_12_weeks_and_an_injection() -> None:
    patient = in_line("third_line")
    surgery = patient.item("third_line.surgical_consultation")
    assert surgery.status == ItemStatus.NOT_INDICATED and len(surgery.reasons) == 3
    patient.send("investigation_result", WEEK, {"test": "mri_pelvis", "result": "piriformis_sciatic_compression"})
    patient.send("injection", 2 * WEEK, {"type": "corticosteroid_local_anaesthetic", "side": "left"})
    patient.reassess(12 * WEEK - DAY, pain=5)
    assert patient.item("third_line.surgical_consultation").reasons == [
        "less than 12 weeks of conservative care since diagnosis"
    ]
    patient.reassess(12 * WEEK, pain=5)
    assert patient.item("third_line.surgical_consultation").status == ItemStatus.RECOMMENDED


def test_surgical_consultation_without_injection_when_injections_are_contraindicated() -> None:
    patient = in_line("third_line", factors={"infection_at_injection_site": True})
    patient.send("investigation_result", WEEK, {"test": "emg_ncs", "result": "sciatic_neuropathy"})
    patient.reassess(13 * WEEK, pain=5)
    assert patient.item("third_line.surgical_consultation").status == ItemStatus.RECOMMENDED


# -- tick: schedules and lost to follow-up ------------------------------------------------------------


@pytest.mark.parametrize(
    ("after", "rule"),
    [(WEEK - DAY, None), (WEEK, "tick.assessment_due"), (2 * WEEK, "tick.assessment_overdue")],
)
def test_assessment_due_at_1_week_overdue_at_2(after: timedelta, rule: str | None) -> None:
    patient = Patient()
    assert V2.next_due_at(patient.configuration, patient.context) == patient_time(WEEK)
    assert patient.send("tick", after) == rule
    assert patient.state == "assessment"


def test_due_assessment_becomes_overdue_and_then_waits_for_lost_to_follow_up() -> None:
    patient = Patient()
    patient.send("tick", WEEK)
    assert V2.next_due_at(patient.configuration, patient.context) == patient_time(2 * WEEK)
    patient.send("tick", 2 * WEEK)
    assert V2.next_due_at(patient.configuration, patient.context) == patient_time(8 * WEEK)


@pytest.mark.parametrize("setup", ["assessment", "first_line", "neuro_review", "resolved"])
def test_lost_to_follow_up_after_8_weeks_without_contact_in_every_non_final_state(setup: str) -> None:
    patient = Patient()
    if setup != "assessment":
        patient.assess()
    if setup == "neuro_review":
        patient.reassess(WEEK, fasciculations="worsening")
    if setup == "resolved":
        patient.reassess(3 * WEEK, pain=0, fasciculations="absent")
    contact = {"assessment": 0, "first_line": 0, "neuro_review": 1, "resolved": 3}[setup] * WEEK
    for weeks in (2, 4, 6):  # the schedules move on first
        patient.send("tick", contact + weeks * WEEK)
    assert V2.next_due_at(patient.configuration, patient.context) == patient_time(contact + 8 * WEEK)
    assert patient.send("tick", contact + 8 * WEEK - DAY) is None
    assert patient.send("tick", contact + 8 * WEEK) is not None
    while not patient.context["lost_to_follow_up"]:
        patient.send("tick", contact + 8 * WEEK)
    assert V2.flags(patient.context) == ["lost_to_follow_up"]
    assert patient.state == setup
    assert V2.next_due_at(patient.configuration, patient.context) is None
    patient.send("withdraw", contact + 9 * WEEK, {"reason": "no answer"})  # no automatic withdrawal
    assert patient.state == "withdrawn"


def test_contact_clears_lost_to_follow_up_and_restarts_its_clock() -> None:
    patient = in_line("first_line")
    for weeks in (2, 4, 8):
        patient.send("tick", weeks * WEEK)
    assert patient.context["lost_to_follow_up"] is True
    patient.send("update_factors", 9 * WEEK, {"set": {"age": 40}})  # not contact
    assert patient.context["lost_to_follow_up"] is True
    patient.reassess(10 * WEEK)
    assert patient.context["lost_to_follow_up"] is False
    assert V2.flags(patient.context) == []


# -- relapse ---------------------------------------------------------------------------------------------


def resolved_patient() -> Patient:
    patient = in_line("first_line")
    patient.reassess(3 * WEEK, pain=0, fasciculations="absent")
    assert patient.state == "resolved"
    return patient


def test_relapse_requires_the_red_flag_screen() -> None:
    with pytest.raises(InvalidPayload, match="red_flags"):
        V2.validate("relapse", {"pain": 5, "fasciculations": "present"})


@pytest.mark.parametrize(
    ("flags", "rule", "urgency"),
    [(["cauda_equina"], "relapse.red_flag_emergency", "emergency"), (["trauma"], "relapse.red_flag", "urgent")],
)
def test_relapse_with_a_red_flag_refers_at_once(flags: list[str], rule: str, urgency: str) -> None:
    patient = resolved_patient()
    assert patient.send("relapse", 10 * WEEK, {"pain": 5, "fasciculations": "present", "red_flags": flags}) == rule
    assert patient.outcome == {"reason": "red_flag", "urgency": urgency, "red_flags": flags}


def test_relapse_returns_to_assessment_with_a_due_date_and_a_new_episode() -> None:
    patient = resolved_patient()
    assert patient.send("relapse", 10 * WEEK, {"pain": 5, "fasciculations": "present", "red_flags": []}) == "relapse"
    assert patient.configuration == ("assessment", "assessment_pending")
    assert V2.next_due_at(patient.configuration, patient.context) == patient_time(11 * WEEK)
    assert patient.context["diagnosed_at"] is None
    patient.assess(11 * WEEK, pain=6)
    assert patient.context["diagnosed_at"] == patient_time(11 * WEEK).isoformat()  # type: ignore[attr-defined]


# -- urgent referral plan ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "within", "priority"),
    [
        ("cauda_equina", "same day", "stat"),
        ("infection", "same day", "stat"),
        ("cancer", "within 2 weeks", "urgent"),
        ("progressive_motor_deficit", "within 24-48 hours", "urgent"),
        ("fasciculations_with_weakness", "within 2 weeks", "urgent"),
        ("trauma", "within 24 hours", "urgent"),
    ],
)
def test_each_red_flag_has_its_own_referral(flag: str, within: str, priority: str) -> None:
    patient = Patient()
    patient.assess(red_flags=[flag])
    (item,) = patient.plan()
    assert item.id == f"urgent_referral.{flag}" and item.status == ItemStatus.ALERT
    assert item.referral is not None
    assert (item.referral.within, item.referral.priority) == (within, priority)


def test_several_red_flags_list_every_referral_and_the_most_urgent_urgency() -> None:
    patient = Patient()
    patient.assess(red_flags=["fasciculations_with_weakness", "infection", "cancer"])
    assert patient.outcome is not None and patient.outcome["urgency"] == "emergency"
    assert [i.id for i in patient.plan()] == [
        "urgent_referral.infection",
        "urgent_referral.cancer",
        "urgent_referral.fasciculations_with_weakness",
    ]
    neurology = patient.item("urgent_referral.fasciculations_with_weakness")
    assert neurology.referral is not None and neurology.referral.specialty == "neurology with EMG"


# -- rediagnose plans --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "items"),
    [
        ("suspected_lumbar_radiculopathy", ["rediagnose.lumbar_workup", "rediagnose.sciatica_pathway"]),
        ("refractory_to_treatment", ["rediagnose.pain_service", "rediagnose.diagnostic_review"]),
        ("persistent_fasciculations", ["rediagnose.emg_neurology"]),
        ("criteria_not_met", ["rediagnose.diagnostic_review"]),
    ],
)
def test_rediagnose_plan_depends_on_the_reason(reason: str, items: list[str]) -> None:
    plan = V2.plan(("rediagnose",), {"outcome": {"reason": reason}, "factors": {}})
    assert [i.id for i in plan] == items
