"""The plan of every piriformis state, and how patient factors and findings adjust its items."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from pathway import Engine
from states import ItemStatus, PlanItem, get_pathway
from tests.conftest import T0
from tests.helpers import assess_data, reassess_data

WEEK = timedelta(weeks=1)
MONITORING_ITEMS = [
    "monitoring.reassess",
    "monitoring.pain_score",
    "monitoring.function",
    "monitoring.discontinue_ineffective",
]
PLAN_IDS: dict[str, list[str]] = {
    "assessment": ["assessment.confirm_diagnosis", "assessment.screen_red_flags"],
    "first_line": [
        "first_line.manual_therapy",
        "first_line.avoid_kegel",
        "first_line.avoid_prolonged_sitting",
        "first_line.remove_wallet",
        "first_line.heat_or_cold",
        "first_line.modify_activities",
        "first_line.nsaids",
        "first_line.amitriptyline",
        *MONITORING_ITEMS,
    ],
    "second_line": [
        "second_line.corticosteroid_injection",
        "second_line.botulinum_toxin",
        "second_line.advanced_physical_therapy",
        *MONITORING_ITEMS,
    ],
    "third_line": ["third_line.pain_management_referral", "third_line.surgical_consultation", *MONITORING_ITEMS],
    "resolved": ["resolved.self_management", "resolved.watch_for_relapse"],
    "rediagnose": [
        "rediagnose.lumbar_radiculopathy",
        "rediagnose.sacroiliac_joint_pain",
        "rediagnose.ischiofemoral_impingement",
        "rediagnose.proximal_hamstring_tendinopathy",
        "rediagnose.pudendal_neuralgia",
        "rediagnose.benign_fasciculation_syndrome",
    ],
    "withdrawn": [],
}
CONFIGURATIONS = {
    "assessment": ["assessment"],
    "first_line": ["treatment", "line", "first_line", "monitoring", "scheduled"],
    "second_line": ["treatment", "line", "second_line", "monitoring", "due"],
    "third_line": ["treatment", "line", "third_line", "monitoring", "overdue"],
    "resolved": ["resolved"],
    "rediagnose": ["rediagnose"],
    "urgent_referral": ["urgent_referral"],
    "withdrawn": ["withdrawn"],
}


def plan(state: str, factors: dict[str, Any] | None = None, **context: Any) -> list[PlanItem]:
    """The plan of `state` for a patient enrolled with `factors`, through the pure definition."""
    definition = get_pathway("piriformis", 1)
    _, start = definition.start(definition.validate_enrollment({"factors": factors or {}}), T0)
    return definition.plan(CONFIGURATIONS[state], {**start, **context})


def item(state: str, item_id: str, factors: dict[str, Any] | None = None, **context: Any) -> PlanItem:
    (found,) = [i for i in plan(state, factors, **context) if i.id == item_id]
    return found


# -- the plan of every state ----------------------------------------------------------------------


@pytest.mark.parametrize("state", sorted(PLAN_IDS))
def test_plan_of_every_state_lists_its_items(state: str) -> None:
    """Each state's plan has the items of DESIGN.md section 2, in order, recommended by default."""
    items = plan(state)
    assert [i.id for i in items] == PLAN_IDS[state]
    for i in items:
        assert i.text and i.category and i.source
        if i.id not in ("first_line.avoid_kegel", "third_line.surgical_consultation"):  # adjusted by rule
            assert (i.status, i.reasons) == (ItemStatus.RECOMMENDED, [])


@pytest.mark.parametrize(
    ("urgency", "item_id"), [("emergency", "urgent_referral.emergency"), ("urgent", "urgent_referral.urgent")]
)
def test_plan_of_urgent_referral_follows_urgency(urgency: str, item_id: str) -> None:
    """Urgent referral recommends a same-day emergency referral for cauda equina, else an urgent one."""
    items = plan("urgent_referral", outcome={"reason": "red_flag", "urgency": urgency, "red_flags": []})
    assert [i.id for i in items] == [item_id]


def test_plan_item_ids_are_unique_within_every_state() -> None:
    """Item ids are stable keys: never repeated within one plan."""
    for state in CONFIGURATIONS:
        ids = [i.id for i in plan(state, persistent_fasciculations=2)]
        assert len(ids) == len(set(ids)), state


def test_plan_codes() -> None:
    """NSAIDs name ibuprofen and naproxen (RxNorm 5640, 7258); amitriptyline 704; injection CPT 20552 + 76942."""
    items = [*plan("first_line"), *plan("second_line")]
    codes = {i.id: [(c.system, c.code) for c in i.codes] for i in items}
    assert codes["first_line.nsaids"] == [("RxNorm", "5640"), ("RxNorm", "7258")]
    assert "ibuprofen" in item("first_line", "first_line.nsaids").text
    assert "naproxen" in item("first_line", "first_line.nsaids").text
    assert codes["first_line.amitriptyline"] == [("RxNorm", "704")]
    assert codes["second_line.corticosteroid_injection"] == [("CPT", "20552"), ("CPT", "76942")]
    assert codes["monitoring.pain_score"] == [("LOINC", "72514-3")]
    diagnosis = item("assessment", "assessment.confirm_diagnosis").codes
    assert {c.code for c in diagnosis} >= {"G57.00", "G57.01", "G57.02", "G57.03", "R25.3"}


def test_plan_kegel_exercises_carry_a_caution() -> None:
    """First line cautions against pelvic floor strengthening (Kegel) exercises for everyone."""
    kegel = item("first_line", "first_line.avoid_kegel")
    assert kegel.status == ItemStatus.CAUTION
    assert "Kegel" in kegel.text and kegel.reasons == ["can worsen symptoms"]


def test_plan_through_status_json(sqlite_engine: Engine) -> None:
    """The engine's status reports the same plan, and its JSON lists every item field."""
    sqlite_engine.enroll("p", T0, factors={"heart_failure": True}, version=1)
    status = sqlite_engine.send("p", "assess", T0, assess_data()).status
    assert [i.id for i in status.plan] == PLAN_IDS["first_line"]
    nsaids = next(i for i in status.to_json()["plan"] if i["id"] == "first_line.nsaids")
    assert set(nsaids) == {"id", "text", "category", "codes", "source", "status", "reasons"}
    assert nsaids["status"] == "contraindicated"


# -- patient factors ----------------------------------------------------------------------------------

FACTOR_CASES = [
    # (state, item id, factors, expected status)
    ("first_line", "first_line.nsaids", {"pregnancy_weeks": 19}, "recommended"),
    ("first_line", "first_line.nsaids", {"pregnancy_weeks": 20}, "contraindicated"),
    ("first_line", "first_line.nsaids", {"peptic_ulcer": True}, "contraindicated"),
    ("first_line", "first_line.nsaids", {"severe_renal_impairment": True}, "contraindicated"),
    ("first_line", "first_line.nsaids", {"heart_failure": True}, "contraindicated"),
    ("first_line", "first_line.nsaids", {"anticoagulant": True}, "caution"),
    ("first_line", "first_line.nsaids", {"age": 64}, "recommended"),
    ("first_line", "first_line.nsaids", {"age": 65}, "caution"),
    ("first_line", "first_line.amitriptyline", {"recent_myocardial_infarction": True}, "contraindicated"),
    ("first_line", "first_line.amitriptyline", {"cardiac_conduction_disease": True}, "contraindicated"),
    ("first_line", "first_line.amitriptyline", {"maoi": True}, "contraindicated"),
    ("first_line", "first_line.amitriptyline", {"age": 64}, "recommended"),
    ("first_line", "first_line.amitriptyline", {"age": 65}, "caution"),
    ("first_line", "first_line.amitriptyline", {"glaucoma": True}, "caution"),
    ("first_line", "first_line.amitriptyline", {"urinary_retention": True}, "caution"),
    ("second_line", "second_line.corticosteroid_injection", {"infection_at_injection_site": True}, "contraindicated"),
    ("second_line", "second_line.corticosteroid_injection", {"anticoagulant": True}, "caution"),
    ("second_line", "second_line.corticosteroid_injection", {"uncontrolled_diabetes": True}, "caution"),
    ("second_line", "second_line.botulinum_toxin", {"neuromuscular_disease": True}, "contraindicated"),
    ("second_line", "second_line.botulinum_toxin", {"infection_at_injection_site": True}, "contraindicated"),
    ("second_line", "second_line.botulinum_toxin", {"pregnancy_weeks": 0}, "caution"),
    ("second_line", "second_line.botulinum_toxin", {"pregnancy_weeks": 30}, "caution"),
    ("second_line", "second_line.botulinum_toxin", {"breastfeeding": True}, "caution"),
]


@pytest.mark.parametrize(("state", "item_id", "factors", "expected"), FACTOR_CASES)
def test_plan_patient_factor(state: str, item_id: str, factors: dict[str, Any], expected: str) -> None:
    """Each patient factor of DESIGN.md gives its item the documented status, with one reason."""
    found = item(state, item_id, factors)
    assert found.status == expected
    assert len(found.reasons) == (0 if expected == "recommended" else 1)


@pytest.mark.parametrize(("state", "item_id", "factors", "expected"), FACTOR_CASES)
def test_plan_patient_factor_touches_only_its_items(
    state: str, item_id: str, factors: dict[str, Any], expected: str
) -> None:
    """A factor leaves the state's other items as they are without it."""
    with_factor = {i.id: i for i in plan(state, factors)}
    without = {i.id: i for i in plan(state)}
    changed = {i for i in with_factor if with_factor[i] != without[i]}
    assert changed <= {item_id for _, item_id, _, _ in FACTOR_CASES}
    if expected != "recommended":
        assert item_id in changed


def test_plan_most_severe_status_wins_and_every_reason_is_listed() -> None:
    """Contraindicated beats caution, and the reasons of every factor that applies are kept."""
    nsaids = item("first_line", "first_line.nsaids", {"age": 70, "anticoagulant": True, "peptic_ulcer": True})
    assert nsaids.status == ItemStatus.CONTRAINDICATED
    assert len(nsaids.reasons) == 3
    assert any("peptic ulcer" in r for r in nsaids.reasons)
    assert any("anticoagulant" in r for r in nsaids.reasons)
    assert any("65" in r for r in nsaids.reasons)


def test_plan_two_cautions_stay_a_caution_with_both_reasons() -> None:
    """Several cautions do not add up to a contraindication; both reasons are listed."""
    botox = item("second_line", "second_line.botulinum_toxin", {"pregnancy_weeks": 12, "breastfeeding": True})
    assert botox.status == ItemStatus.CAUTION
    assert len(botox.reasons) == 2


def test_plan_one_factor_adjusts_every_item_it_concerns() -> None:
    """An anticoagulant cautions NSAIDs and the injection alike."""
    factors = {"anticoagulant": True}
    assert item("first_line", "first_line.nsaids", factors).status == ItemStatus.CAUTION
    assert item("second_line", "second_line.corticosteroid_injection", factors).status == ItemStatus.CAUTION
    assert item("second_line", "second_line.botulinum_toxin", factors).status == ItemStatus.RECOMMENDED


# -- findings: surgery and the fasciculation review ------------------------------------------------------


def _third_line(engine: Engine) -> None:
    engine.enroll("p", T0, version=1)
    engine.send("p", "assess", T0, assess_data())
    engine.send("p", "override", T0, {"to": "third_line", "reason": "refractory elsewhere", "clinician": "dr"})


def test_plan_surgery_not_indicated_without_documented_compression(sqlite_engine: Engine) -> None:
    """Surgical consultation is not indicated until imaging or EMG documents sciatic compression."""
    _third_line(sqlite_engine)
    sqlite_engine.send("p", "reassess", T0 + WEEK, reassess_data(documented_compression=False))
    surgery = next(i for i in sqlite_engine.plan("p") if i.id == "third_line.surgical_consultation")
    assert surgery.status == ItemStatus.NOT_INDICATED
    assert surgery.reasons == ["no documented sciatic compression (imaging or EMG)"]


def test_plan_surgery_recommended_with_documented_compression(sqlite_engine: Engine) -> None:
    """Once compression is documented, surgical consultation is recommended and stays so."""
    _third_line(sqlite_engine)
    sqlite_engine.send("p", "reassess", T0 + WEEK, reassess_data(documented_compression=True))
    sqlite_engine.send("p", "reassess", T0 + 2 * WEEK, reassess_data())  # not re-reported: still documented
    surgery = next(i for i in sqlite_engine.plan("p") if i.id == "third_line.surgical_consultation")
    assert (surgery.status, surgery.reasons) == (ItemStatus.RECOMMENDED, [])


def _alerted(engine: Engine) -> bool:
    return any(i.id == "monitoring.fasciculation_review" for i in engine.plan("p"))


@pytest.mark.parametrize(("first", "second"), [("present", "present"), ("present", "stable"), ("stable", "stable")])
def test_plan_fasciculation_review_after_two_consecutive_reassessments(
    sqlite_engine: Engine, first: str, second: str
) -> None:
    """Fasciculations present or stable at two reassessments in a row raise the review alert."""
    sqlite_engine.enroll("p", T0, version=1)
    sqlite_engine.send("p", "assess", T0, assess_data(fasciculations="present"))
    sqlite_engine.send("p", "reassess", T0 + WEEK, reassess_data(fasciculations=first))
    assert not _alerted(sqlite_engine)  # the assessment is not a reassessment
    sqlite_engine.send("p", "reassess", T0 + 2 * WEEK, reassess_data(fasciculations=second))
    review = next(i for i in sqlite_engine.plan("p") if i.id == "monitoring.fasciculation_review")
    assert review.category == "alert" and "EMG" in review.text
    assert [(c.system, c.code) for c in review.codes] == [("ICD-10-CM", "R25.3")]


@pytest.mark.parametrize("settled", ["absent", "improving"])
def test_plan_fasciculation_review_reset_by_settled_fasciculations(sqlite_engine: Engine, settled: str) -> None:
    """An absent or improving reassessment clears the alert; it needs two in a row again."""
    sqlite_engine.enroll("p", T0, version=1)
    sqlite_engine.send("p", "assess", T0, assess_data())
    for week, fasciculations in enumerate(["present", "stable"], start=1):
        sqlite_engine.send("p", "reassess", T0 + week * WEEK, reassess_data(fasciculations=fasciculations, pain=7))
    assert _alerted(sqlite_engine)
    sqlite_engine.send("p", "reassess", T0 + 3 * WEEK, reassess_data(fasciculations=settled, pain=7))
    assert not _alerted(sqlite_engine)
    sqlite_engine.send("p", "reassess", T0 + 4 * WEEK, reassess_data(fasciculations="present", pain=7))
    assert not _alerted(sqlite_engine)


def test_plan_fasciculation_review_only_in_treatment() -> None:
    """The review alert belongs to the treatment plan, not to states outside it."""
    for state in ("assessment", "resolved", "rediagnose", "withdrawn"):
        assert all(i.id != "monitoring.fasciculation_review" for i in plan(state, persistent_fasciculations=3))
    assert any(i.id == "monitoring.fasciculation_review" for i in plan("second_line", persistent_fasciculations=2))
