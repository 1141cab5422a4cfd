"""FHIR R4 export: a patient's pathway as a Bundle of Patient, Condition, Observation, CarePlan
and Provenance resources, built as plain JSON (validated against the R4B models in the tests).

Code systems are the canonical FHIR URIs of the terminologies DESIGN.md section 2 lists.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from persistence import AuditEntry

from .engine import Engine, Status

__all__ = ["SYSTEMS", "export_bundle"]

SYSTEMS = {
    "ICD-10-CM": "http://hl7.org/fhir/sid/icd-10-cm",
    "LOINC": "http://loinc.org",
    "RxNorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "CPT": "http://www.ama-assn.org/go/cpt",
}
PATIENT_IDS = "urn:carepath:patient"
AUDIT_IDS = "urn:carepath:audit"
PAIN = {
    "system": SYSTEMS["LOINC"],
    "code": "72514-3",
    "display": "Pain severity - 0-10 verbal numeric rating [Score] - Reported",
}
PIRIFORMIS = {
    "system": SYSTEMS["ICD-10-CM"],
    "code": "G57.00",
    "display": "Lesion of sciatic nerve, unspecified lower limb",
}
FASCICULATION = {"system": SYSTEMS["ICD-10-CM"], "code": "R25.3", "display": "Fasciculation"}

# Condition and CarePlan status by the reported state.
_CLINICAL = {"resolved": "resolved", "withdrawn": "inactive"}
_VERIFICATION = {"assessment": "provisional", "rediagnose": "unconfirmed"}
_CAREPLAN = {"resolved": "completed", "withdrawn": "revoked", "rediagnose": "revoked", "urgent_referral": "revoked"}
_OBSERVED_EVENTS = ("assess", "reassess", "relapse")


def export_bundle(engine: Engine, patient_id: str, pathway: str | None = None) -> dict[str, Any]:
    """The patient's enrolment on `pathway` (optional when it has one) as a FHIR R4 `collection` Bundle."""
    status = engine.status(patient_id, pathway)
    entries = engine.history(patient_id, status.pathway)
    subject = {"reference": f"Patient/{_fhir_id(patient_id)}"}
    observations = [_pain_observation(e, subject) for e in entries if e.event in _OBSERVED_EVENTS]
    conditions = [_condition("piriformis", PIRIFORMIS, status, entries, subject)]
    if any(e.payload.get("fasciculations") not in (None, "absent") for e in entries if e.event in _OBSERVED_EVENTS):
        conditions.append(_condition("fasciculation", FASCICULATION, status, entries, subject))
    careplan = _careplan(status, subject, conditions, observations)
    resources = [
        _patient(patient_id),
        *conditions,
        *observations,
        careplan,
        _provenance(status, entries, [careplan, *observations]),
    ]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": _instant(engine.clock()),
        "entry": [{"fullUrl": f"urn:uuid:{r['resourceType'].lower()}-{r['id']}", "resource": r} for r in resources],
    }


def _patient(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": _fhir_id(patient_id),
        "identifier": [{"system": PATIENT_IDS, "value": patient_id}],
    }


def _condition(
    key: str, code: dict[str, str], status: Status, entries: list[AuditEntry], subject: dict[str, str]
) -> dict[str, Any]:
    assessed = next((e for e in entries if e.event == "assess"), None)
    condition: dict[str, Any] = {
        "resourceType": "Condition",
        "id": _fhir_id(f"{status.patient_id}-{key}"),
        "clinicalStatus": _coded(
            "http://terminology.hl7.org/CodeSystem/condition-clinical", _CLINICAL.get(status.state, "active")
        ),
        "verificationStatus": _coded(
            "http://terminology.hl7.org/CodeSystem/condition-ver-status", _VERIFICATION.get(status.state, "confirmed")
        ),
        "code": {"coding": [code], "text": code["display"]},
        "subject": subject,
    }
    if assessed is not None:
        condition["onsetDateTime"] = _instant(assessed.at)
    return condition


def _pain_observation(entry: AuditEntry, subject: dict[str, str]) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": _fhir_id(f"{entry.patient_id}-pain-{entry.seq}"),
        "status": "final",
        "code": {"coding": [PAIN], "text": "Pain severity 0-10"},
        "subject": subject,
        "effectiveDateTime": _instant(entry.at),
        "valueQuantity": {
            "value": entry.payload["pain"],
            "unit": "score",
            "system": "http://unitsofmeasure.org",
            "code": "{score}",
        },
        "identifier": [{"system": AUDIT_IDS, "value": f"{entry.patient_id}/{entry.seq}/{entry.hash}"}],
    }


def _careplan(
    status: Status, subject: dict[str, str], conditions: list[dict[str, Any]], observations: list[dict[str, Any]]
) -> dict[str, Any]:
    activities = []
    for item in status.plan:
        detail: dict[str, Any] = {
            "status": "not-started",
            "description": item.text,
            "doNotPerform": item.status == "contraindicated",
        }
        if item.codes:
            detail["code"] = {
                "coding": [{"system": SYSTEMS[c.system], "code": c.code, "display": c.display} for c in item.codes],
                "text": item.text,
            }
        if item.reasons:
            detail["statusReason"] = {"text": f"{item.status}: " + "; ".join(item.reasons)}
        activities.append({"detail": detail})
    careplan: dict[str, Any] = {
        "resourceType": "CarePlan",
        "id": _fhir_id(f"{status.patient_id}-careplan"),
        "status": _CAREPLAN.get(status.state, "active"),
        "intent": "plan",
        "title": f"{status.pathway} pathway v{status.version}: {status.state}",
        "subject": subject,
        "addresses": [{"reference": f"Condition/{c['id']}"} for c in conditions],
        "supportingInfo": [{"reference": f"Observation/{o['id']}"} for o in observations],
        "activity": activities,
    }
    if status.outcome:
        careplan["note"] = [{"text": "outcome: " + ", ".join(f"{k}={v}" for k, v in status.outcome.items())}]
    return careplan


def _provenance(status: Status, entries: list[AuditEntry], targets: list[dict[str, Any]]) -> dict[str, Any]:
    last = entries[-1]
    actors = sorted({e.actor for e in entries if e.actor})
    return {
        "resourceType": "Provenance",
        "id": _fhir_id(f"{status.patient_id}-provenance"),
        "target": [{"reference": f"{t['resourceType']}/{t['id']}"} for t in targets],
        "recorded": _instant(last.recorded_at),
        "agent": [{"who": {"display": actor}} for actor in actors] or [{"who": {"display": "carepath"}}],
        "entity": [
            {
                "role": "source",
                "what": {"identifier": {"system": AUDIT_IDS, "value": f"{last.patient_id}/{last.seq}/{last.hash}"}},
            }
        ],
    }


def _coded(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def _instant(value: datetime) -> str:
    return value.isoformat()


def _fhir_id(text: str) -> str:
    """FHIR ids allow [A-Za-z0-9-.]{1,64}; anything else becomes '-'."""
    cleaned = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-.") else "-" for ch in text)
    return cleaned[:64] or "unnamed"
