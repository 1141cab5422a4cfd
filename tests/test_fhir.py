"""FHIR export: a valid R4 Bundle with the pathway's CarePlan, Condition, Observations and Provenance."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from pathway import Engine
from pathway.cli import main
from tests.conftest import T0
from tests.helpers import assess_data, reassess_data

R4B = pytest.importorskip("fhir.resources.R4B.bundle", reason="fhir.resources is needed to validate bundles")


def _resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def _patient_in_first_line(engine: Engine) -> None:
    engine.enroll("p1", T0, factors={"pregnancy_weeks": 24}, version=1)
    engine.send("p1", "assess", T0, assess_data(pain=8), actor="dr-a")
    engine.send("p1", "reassess", T0 + timedelta(weeks=2), reassess_data(pain=6), actor="dr-b")


def test_bundle_validates_against_fhir_models(sqlite_engine: Engine) -> None:
    """The export parses as a FHIR Bundle and holds one resource of each expected kind."""
    _patient_in_first_line(sqlite_engine)
    bundle = sqlite_engine.export_fhir("p1")
    R4B.Bundle.model_validate(bundle)
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds.count("CarePlan") == 1 and kinds.count("Provenance") == 1
    assert kinds.count("Observation") == 2


def test_careplan_carries_plan_codes_and_contraindications(sqlite_engine: Engine) -> None:
    """NSAIDs at 24 weeks of pregnancy are a do-not-perform activity coded in RxNorm, with the reason."""
    _patient_in_first_line(sqlite_engine)
    careplan = _resources(sqlite_engine.export_fhir("p1"), "CarePlan")[0]
    nsaids = next(a["detail"] for a in careplan["activity"] if "NSAIDs" in a["detail"]["description"])
    assert nsaids["doNotPerform"] is True
    assert {c["code"] for c in nsaids["code"]["coding"]} == {"5640", "7258"}
    assert "pregnancy" in nsaids["statusReason"]["text"]
    assert careplan["status"] == "active"


def test_observations_are_loinc_pain_scores_with_clinical_time(sqlite_engine: Engine) -> None:
    """Each recorded pain becomes a LOINC 72514-3 Observation at the event's clinical time."""
    _patient_in_first_line(sqlite_engine)
    observations = _resources(sqlite_engine.export_fhir("p1"), "Observation")
    assert [o["valueQuantity"]["value"] for o in observations] == [8.0, 6.0]
    assert all(o["code"]["coding"][0]["code"] == "72514-3" for o in observations)
    assert observations[1]["effectiveDateTime"] == (T0 + timedelta(weeks=2)).isoformat()


def test_provenance_points_at_the_audit_chain_head(sqlite_engine: Engine) -> None:
    """Provenance names the actors and the last audit entry's hash."""
    _patient_in_first_line(sqlite_engine)
    provenance = _resources(sqlite_engine.export_fhir("p1"), "Provenance")[0]
    head = sqlite_engine.history("p1")[-1]
    assert provenance["entity"][0]["what"]["identifier"]["value"] == f"p1/{head.seq}/{head.hash}"
    assert [a["who"]["display"] for a in provenance["agent"]] == ["dr-a", "dr-b"]


def test_export_command_prints_bundle_and_exits_4_for_unknown_patient(
    sqlite_url: str, sqlite_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    """`carepath export-fhir` prints one JSON Bundle; an unknown patient exits 4."""
    _patient_in_first_line(sqlite_engine)
    assert main(["--db", sqlite_url, "export-fhir", "p1"]) == 0
    assert json.loads(capsys.readouterr().out)["resourceType"] == "Bundle"
    assert main(["--db", sqlite_url, "export-fhir", "nobody"]) == 4
