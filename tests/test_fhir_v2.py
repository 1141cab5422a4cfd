"""FHIR export of version 2 patients: laterality, verification by evidence, referrals as
ServiceRequests, doNotPerform for every status the hints name; validated against R4B."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from pathway import Engine
from tests.conftest import T0
from tests.helpers import assess_data
from tests.v2_helpers import assess_v2, reassess_v2

R4B = pytest.importorskip("fhir.resources.R4B.bundle", reason="fhir.resources is needed to validate bundles")


def _resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def _bundle(engine: Engine, patient: str) -> dict[str, Any]:
    bundle = engine.export_fhir(patient, "piriformis")
    R4B.Bundle.model_validate(bundle)
    return bundle


def _verification(condition: dict[str, Any]) -> str:
    code: str = condition["verificationStatus"]["coding"][0]["code"]
    return code


def _conditions(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["code"]["coding"][0]["code"]: c for c in _resources(bundle, "Condition")}


@pytest.mark.parametrize(("side", "code"), [("right", "G57.01"), ("left", "G57.02"), ("bilateral", "G57.03")])
def test_condition_is_coded_by_side_and_confirmed_with_the_criteria(
    sqlite_engine: Engine, side: str, code: str
) -> None:
    sqlite_engine.enroll("p1", T0)
    sqlite_engine.send("p1", "assess", T0, assess_v2(side=side))
    conditions = _conditions(_bundle(sqlite_engine, "p1"))
    assert set(conditions) == {code, "R25.3"}
    assert _verification(conditions[code]) == "confirmed"
    assert _verification(conditions["R25.3"]) == "confirmed"


def test_condition_is_provisional_before_assessment_and_v1_keeps_g57_00(sqlite_engine: Engine) -> None:
    sqlite_engine.enroll("p1", T0)
    conditions = _conditions(_bundle(sqlite_engine, "p1"))
    assert _verification(conditions["G57.00"]) == "provisional"  # side unknown yet
    sqlite_engine.enroll("old", T0, version=1)
    sqlite_engine.send("old", "assess", T0, assess_data(pain=8))
    assert set(_conditions(_bundle(sqlite_engine, "old"))) == {"G57.00", "R25.3"}


def test_criteria_not_met_refutes_the_condition_but_observed_fasciculations_stay_confirmed(
    sqlite_engine: Engine,
) -> None:
    sqlite_engine.enroll("p1", T0)
    sqlite_engine.send("p1", "assess", T0, assess_v2(findings=["buttock_pain"], fasciculations="stable"))
    assert sqlite_engine.status("p1").outcome == {"reason": "criteria_not_met"}
    conditions = _conditions(_bundle(sqlite_engine, "p1"))
    assert _verification(conditions["G57.02"]) == "refuted"
    assert conditions["G57.02"]["clinicalStatus"]["coding"][0]["code"] == "inactive"
    assert _verification(conditions["R25.3"]) == "confirmed"


def test_radiculopathy_at_assessment_leaves_the_condition_unconfirmed(sqlite_engine: Engine) -> None:
    sqlite_engine.enroll("p1", T0)
    sqlite_engine.send("p1", "assess", T0, assess_v2(findings=["buttock_pain", "dermatomal_deficit"]))
    conditions = _conditions(_bundle(sqlite_engine, "p1"))
    assert _verification(conditions["G57.02"]) == "unconfirmed"


def test_emergency_red_flag_is_an_active_stat_service_request(sqlite_engine: Engine) -> None:
    """Cauda equina at assessment: a stat ServiceRequest naming the flag, not only a revoked CarePlan's activity."""
    sqlite_engine.enroll("p1", T0)
    sqlite_engine.send("p1", "assess", T0, assess_v2(red_flags=["cauda_equina"]))
    bundle = _bundle(sqlite_engine, "p1")
    (request,) = _resources(bundle, "ServiceRequest")
    assert request["status"] == "active" and request["priority"] == "stat"
    assert request["performerType"]["text"] == "emergency department / spinal surgery"
    assert request["occurrenceTiming"]["code"]["text"] == "same day"
    assert [r["text"] for r in request["reasonCode"]] == ["cauda equina"]
    careplan = _resources(bundle, "CarePlan")[0]
    assert careplan["status"] == "revoked"
    assert {"reference": f"ServiceRequest/{request['id']}", "display": request["code"]["text"]} in [
        a.get("reference") for a in careplan["activity"]
    ]
    provenance = _resources(bundle, "Provenance")[0]
    assert f"ServiceRequest/{request['id']}" in [t["reference"] for t in provenance["target"]]


def test_urgent_red_flags_are_one_urgent_request_each(sqlite_engine: Engine) -> None:
    sqlite_engine.enroll("p1", T0)
    sqlite_engine.send("p1", "assess", T0, assess_v2())
    sqlite_engine.send("p1", "reassess", T0 + timedelta(weeks=2), reassess_v2(red_flags=["cancer", "trauma"]))
    requests = _resources(_bundle(sqlite_engine, "p1"), "ServiceRequest")
    assert sorted(r["performerType"]["text"] for r in requests) == [
        "radiology (urgent imaging)",
        "suspected cancer pathway",
    ]
    assert {r["priority"] for r in requests} == {"urgent"}
    assert all([c["text"] for c in r["reasonCode"]] == ["cancer", "trauma"] for r in requests)
    assert all(_verification(c) == "confirmed" for c in _resources(_bundle(sqlite_engine, "p1"), "Condition"))


def test_every_do_not_perform_status_is_exported(sqlite_engine: Engine) -> None:
    """Kegel exercises (do_not), amitriptyline at 70 (avoid), NSAIDs on an anticoagulant (contraindicated)."""
    sqlite_engine.enroll("p1", T0, factors={"age": 70, "anticoagulant": True})
    sqlite_engine.send("p1", "assess", T0, assess_v2())
    careplan = _resources(_bundle(sqlite_engine, "p1"), "CarePlan")[0]
    details = {a["detail"]["description"]: a["detail"] for a in careplan["activity"] if "detail" in a}
    marked = [text for text, d in details.items() if d["doNotPerform"]]
    for words in ("Kegel", "NSAIDs", "amitriptyline", "gabapentinoids"):
        assert any(words in text for text in marked), words
    assert details["Avoid prolonged sitting"]["doNotPerform"] is False
