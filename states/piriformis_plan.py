"""The plan of each piriformis state: the seed's recommendations, coded, with patient cautions.

Source of every item: seed/piriformis-management.md ("seed") unless it names another reference.
Patient-factor cautions are DESIGN.md section 2's minimum set. Codes: RxNorm ingredient codes,
CPT procedure codes, ICD-10-CM and LOINC as listed in DESIGN.md section 2.
"""

from __future__ import annotations

from typing import Any

from .payloads import PatientFactors
from .plan import Code, ItemStatus, PlanItem, PlanTemplate, StatusRule, build_plan

__all__ = ["CONDITION_CODES", "PLAN_TEMPLATES", "plan_for"]

SEED = "seed"
DESIGN = "DESIGN.md section 2"

CONDITION_CODES = (
    Code(system="ICD-10-CM", code="G57.00", display="Lesion of sciatic nerve, unspecified lower limb"),
    Code(system="ICD-10-CM", code="G57.01", display="Lesion of sciatic nerve, right lower limb"),
    Code(system="ICD-10-CM", code="G57.02", display="Lesion of sciatic nerve, left lower limb"),
    Code(system="ICD-10-CM", code="G57.03", display="Lesion of sciatic nerve, bilateral lower limbs"),
    Code(system="ICD-10-CM", code="R25.3", display="Fasciculation"),
)
PAIN_CODE = Code(
    system="LOINC", code="72514-3", display="Pain severity - 0-10 verbal numeric rating [Score] - Reported"
)
IBUPROFEN = Code(system="RxNorm", code="5640", display="ibuprofen")
NAPROXEN = Code(system="RxNorm", code="7258", display="naproxen")
AMITRIPTYLINE = Code(system="RxNorm", code="704", display="amitriptyline")
PIRIFORMIS_INJECTION = Code(
    system="CPT", code="20552", display="Injection(s); single or multiple trigger point(s), 1 or 2 muscle(s)"
)
ULTRASOUND_GUIDANCE = Code(system="CPT", code="76942", display="Ultrasonic guidance for needle placement")


def _when(status: ItemStatus, reason: str, test: Any) -> StatusRule:
    return StatusRule(status, reason, test)


def _factor(status: ItemStatus, name: str, reason: str) -> StatusRule:
    return StatusRule(status, reason, lambda facts: bool(facts.get(name)))


CONTRA = ItemStatus.CONTRAINDICATED
CAUTION = ItemStatus.CAUTION

NSAID_RULES = (
    _when(
        CONTRA,
        "pregnancy at 20 weeks or more",
        lambda f: f.get("pregnancy_weeks") is not None and f["pregnancy_weeks"] >= 20,
    ),
    _factor(CONTRA, "peptic_ulcer", "active peptic ulcer"),
    _factor(CONTRA, "severe_renal_impairment", "severe renal impairment"),
    _factor(CONTRA, "heart_failure", "heart failure"),
    _factor(CAUTION, "anticoagulant", "on an anticoagulant: bleeding risk"),
    _when(CAUTION, "age 65 or over", lambda f: f.get("age") is not None and f["age"] >= 65),
)
AMITRIPTYLINE_RULES = (
    _factor(CONTRA, "recent_myocardial_infarction", "recent myocardial infarction"),
    _factor(CONTRA, "cardiac_conduction_disease", "cardiac conduction disease"),
    _factor(CONTRA, "maoi", "taking a monoamine oxidase inhibitor"),
    _when(CAUTION, "age 65 or over: avoid (anticholinergic)", lambda f: f.get("age") is not None and f["age"] >= 65),
    _factor(CAUTION, "glaucoma", "glaucoma: avoid"),
    _factor(CAUTION, "urinary_retention", "urinary retention: avoid"),
)
INJECTION_RULES = (
    _factor(CONTRA, "infection_at_injection_site", "infection at the injection site"),
    _factor(CAUTION, "anticoagulant", "on an anticoagulant: bleeding risk"),
    _factor(CAUTION, "uncontrolled_diabetes", "uncontrolled diabetes: corticosteroid raises glucose"),
)
BOTULINUM_RULES = (
    _factor(CONTRA, "neuromuscular_disease", "neuromuscular disease"),
    _factor(CONTRA, "infection_at_injection_site", "infection at the injection site"),
    _when(CAUTION, "pregnancy", lambda f: f.get("pregnancy_weeks") is not None),
    _factor(CAUTION, "breastfeeding", "breastfeeding"),
)


def _item(
    id: str,
    text: str,
    category: str,
    source: str = SEED,
    codes: tuple[Code, ...] = (),
    rules: tuple[StatusRule, ...] = (),
) -> PlanTemplate:
    return PlanTemplate(id, text, category, source, codes, rules)


ALWAYS_CAUTION = (_when(CAUTION, "can worsen symptoms", lambda f: True),)

PLAN_TEMPLATES: dict[str, tuple[PlanTemplate, ...]] = {
    "assessment": (
        _item(
            "assessment.confirm_diagnosis",
            "Confirm the diagnosis: buttock pain that increases with sitting, tenderness over the "
            "greater sciatic notch, pain radiating down the posterior thigh, positive FAIR test, "
            "Pace sign, mid-gluteal tenderness",
            "diagnosis",
            codes=CONDITION_CODES,
        ),
        _item(
            "assessment.screen_red_flags",
            "Screen for red flags: cauda equina, progressive motor deficit, infection, cancer, "
            "trauma, fasciculations with weakness",
            "safety",
            source=DESIGN,
        ),
    ),
    "first_line": (
        _item(
            "first_line.manual_therapy",
            "Manual physical therapy: target pelvic floor muscular trigger points, lengthen muscle "
            "contractures, release painful scars and connective tissue restrictions",
            "physical_therapy",
        ),
        _item(
            "first_line.avoid_kegel",
            "Avoid pelvic floor strengthening (Kegel) exercises: they can worsen symptoms",
            "physical_therapy",
            rules=ALWAYS_CAUTION,
        ),
        _item("first_line.avoid_prolonged_sitting", "Avoid prolonged sitting", "behavioural"),
        _item("first_line.remove_wallet", "Remove the wallet from the back pocket (wallet neuritis)", "behavioural"),
        _item("first_line.heat_or_cold", "Apply local heat or cold to the affected area", "behavioural"),
        _item("first_line.modify_activities", "Modify activities that worsen symptoms", "behavioural"),
        _item(
            "first_line.nsaids",
            "NSAIDs for pain and inflammation (ibuprofen or naproxen)",
            "medication",
            codes=(IBUPROFEN, NAPROXEN),
            rules=NSAID_RULES,
        ),
        _item(
            "first_line.amitriptyline",
            "Consider amitriptyline for a neuropathic pain component",
            "medication",
            codes=(AMITRIPTYLINE,),
            rules=AMITRIPTYLINE_RULES,
        ),
    ),
    "second_line": (
        _item(
            "second_line.corticosteroid_injection",
            "Ultrasound-guided corticosteroid and local anaesthetic injection into the piriformis muscle",
            "injection",
            codes=(PIRIFORMIS_INJECTION, ULTRASOUND_GUIDANCE),
            rules=INJECTION_RULES,
        ),
        _item(
            "second_line.botulinum_toxin",
            "Consider botulinum toxin A injection for persistent cases (after an injection without response)",
            "injection",
            rules=BOTULINUM_RULES,
        ),
        _item(
            "second_line.advanced_physical_therapy",
            "Advanced physical therapy: focused piriformis stretching, progressive strengthening of "
            "surrounding musculature, gait training if mechanics are altered",
            "physical_therapy",
        ),
    ),
    "third_line": (
        _item(
            "third_line.pain_management_referral",
            "Refer to a pain management specialist: advanced interventional procedures, evaluation "
            "for peripheral nerve stimulation",
            "referral",
        ),
        _item(
            "third_line.surgical_consultation",
            "Surgical consultation (piriformis tenotomy, sciatic neurolysis) for documented "
            "compression after failure of all conservative measures",
            "referral",
            rules=(
                _when(
                    ItemStatus.NOT_INDICATED,
                    "no documented sciatic compression (imaging or EMG)",
                    lambda f: not f.get("documented_compression"),
                ),
            ),
        ),
    ),
    "treatment": (
        _item("monitoring.reassess", "Reassess treatment efficacy every 2-4 weeks", "monitoring"),
        _item(
            "monitoring.pain_score",
            "Document pain on a 0-10 numeric rating or visual analogue scale",
            "monitoring",
            codes=(PAIN_CODE,),
        ),
        _item(
            "monitoring.function",
            "Evaluate function in activities of daily living (Lower Extremity Functional Scale)",
            "monitoring",
        ),
        _item(
            "monitoring.discontinue_ineffective",
            "Discontinue ineffective treatments and adjust the management plan",
            "monitoring",
        ),
    ),
    "rediagnose": tuple(
        _item(f"rediagnose.{key}", f"Investigate an alternative diagnosis: {label}", "diagnosis", source=DESIGN)
        for key, label in (
            ("lumbar_radiculopathy", "lumbar radiculopathy"),
            ("sacroiliac_joint_pain", "sacroiliac joint pain"),
            ("ischiofemoral_impingement", "ischiofemoral impingement"),
            ("proximal_hamstring_tendinopathy", "proximal hamstring tendinopathy"),
            ("pudendal_neuralgia", "pudendal neuralgia"),
            ("benign_fasciculation_syndrome", "benign fasciculation syndrome"),
        )
    ),
    "resolved": (
        _item(
            "resolved.self_management",
            "Self-management advice: keep up the measures that helped",
            "self_management",
            source=DESIGN,
        ),
        _item(
            "resolved.watch_for_relapse",
            "Reassess if symptoms return and record a relapse",
            "monitoring",
            source=DESIGN,
        ),
    ),
    "withdrawn": (),
}

FASCICULATION_REVIEW = _item(
    "monitoring.fasciculation_review",
    "Fasciculations present or stable at two consecutive reassessments: review, consider EMG / "
    "nerve conduction studies and reconsider the diagnosis",
    "alert",
    source=SEED + "; " + DESIGN,
    codes=(CONDITION_CODES[-1],),
    rules=(_when(CAUTION, "persistent fasciculations", lambda f: True),),
)
URGENT = {
    "emergency": _item(
        "urgent_referral.emergency",
        "Emergency referral the same day (suspected cauda equina)",
        "referral",
        source=DESIGN,
    ),
    "urgent": _item("urgent_referral.urgent", "Urgent specialist referral for a red flag", "referral", source=DESIGN),
}


def plan_for(
    state: str,
    in_treatment: bool,
    factors: PatientFactors,
    documented_compression: bool,
    persistent_fasciculations: int,
    urgency: str | None,
) -> list[PlanItem]:
    """The plan of `state` for a patient with these factors and findings."""
    facts: dict[str, Any] = factors.model_dump()
    facts["documented_compression"] = documented_compression
    templates = list(PLAN_TEMPLATES.get(state, ()))
    if in_treatment:
        templates += PLAN_TEMPLATES["treatment"]
        if persistent_fasciculations >= 2:
            templates.append(FASCICULATION_REVIEW)
    if state == "urgent_referral":
        templates.append(URGENT.get(urgency or "urgent", URGENT["urgent"]))
    return build_plan(templates, facts)
