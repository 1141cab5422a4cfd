"""FHIR R4 export: a patient's pathway as a Bundle of Patient, Condition, Observation, CarePlan,
ServiceRequest and Provenance resources, built as plain JSON (validated against the R4B models in
the tests).

Code systems are the canonical FHIR URIs of the terminologies DESIGN.md section 2 lists. The
codes come from the definition's `presentation.fhir` hints: the condition of the pathway (or
the code chosen by a context value, `condition_by`), findings that add a condition once
observed other than 'absent', the payload fields recorded as observations (on the events it
names), the Condition and CarePlan status per state, the outcome reasons that refute the
condition, the context key that confirms it, and the item statuses exported as
`doNotPerform`. A plan item that asks for a referral (and is not one not to perform) is its own
active ServiceRequest, referenced by the CarePlan activity, so a referral stays visible when
the CarePlan itself is revoked.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from persistence import AuditEntry
from states._model import CodeSpec, FhirHints

from ._engine import Engine, Status
from ._words import outcome_text, term_text

__all__ = ["SYSTEMS", "export_bundle"]

SYSTEMS = {
    "ICD-10-CM": "http://hl7.org/fhir/sid/icd-10-cm",
    "LOINC": "http://loinc.org",
    "RxNorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "CPT": "http://www.ama-assn.org/go/cpt",
    "SNOMED CT": "http://snomed.info/sct",
}
PATIENT_IDS = "urn:carepath:patient"
AUDIT_IDS = "urn:carepath:audit"
# Without fhir hints a definition exports its CarePlan and Provenance, no Condition or Observation.
_NO_HINTS = FhirHints(condition=CodeSpec(system="SNOMED CT", code="", display=""))


def export_bundle(engine: Engine, patient_id: str, pathway: str | None = None) -> dict[str, Any]:
    """The patient's enrolment on `pathway` (optional when it has one) as a FHIR R4 `collection` Bundle."""
    status = engine.status(patient_id, pathway)
    hints = status.definition.presentation.fhir
    entries: list[AuditEntry] = list(engine.history(patient_id, status.pathway))
    subject = {"reference": f"Patient/{_fhir_id(patient_id)}"}
    observed = [e for e in entries if hints is not None and e.event in hints.observed_events]
    observations = [
        _observation(e, field, code, subject)
        for e in observed
        for field, code in (hints or _NO_HINTS).observations.items()
        if _is_number(e.payload.get(field))
    ]
    conditions = []
    if hints is not None:
        verification = _verification(hints, status)
        conditions.append(
            _condition(status.pathway, _condition_code(hints, status), hints, status, entries, subject, verification)
        )
        for field, code in hints.extra_conditions.items():
            if any(e.payload.get(field) not in (None, "absent") for e in observed):
                # With evidence-based verification, an observed finding is a confirmed condition.
                extra = "confirmed" if hints.confirmed_when is not None else verification
                conditions.append(_condition(code.display.lower(), code, hints, status, entries, subject, extra))
    requests = _service_requests(status, hints or _NO_HINTS, subject, conditions)
    careplan = _careplan(status, hints or _NO_HINTS, subject, conditions, observations, requests)
    resources = [
        _patient(patient_id),
        *conditions,
        *observations,
        *requests.values(),
        careplan,
        _provenance(status, entries, [careplan, *requests.values(), *observations]),
    ]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": _instant(engine.clock()),
        "entry": [{"fullUrl": f"urn:uuid:{r['resourceType'].lower()}-{r['id']}", "resource": r} for r in resources],
    }


def _coding(code: CodeSpec) -> dict[str, str]:
    return {"system": SYSTEMS[code.system], "code": code.code, "display": code.display}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _patient(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": _fhir_id(patient_id),
        "identifier": [{"system": PATIENT_IDS, "value": patient_id}],
    }


def _condition_code(hints: FhirHints, status: Status) -> CodeSpec:
    """The pathway's condition code, or the one `condition_by` names for a context value (e.g. the side)."""
    for key, codes in hints.condition_by.items():
        value = status.context.get(key)
        if isinstance(value, str) and value in codes:
            return codes[value]
    return hints.condition


def _verification(hints: FhirHints, status: Status) -> str:
    """Refuted for the outcome reasons the hints name; with `confirmed_when`, confirmed only once its
    context key is set; else the status the hints give the state."""
    reason = (status.outcome or {}).get("reason")
    if isinstance(reason, str) and reason in hints.refuted_reasons:
        return "refuted"
    if hints.confirmed_when is not None:
        if status.context.get(hints.confirmed_when) not in (None, False):
            return "confirmed"
        return hints.verification_status.get(status.state, "unconfirmed")
    return hints.verification_status.get(status.state, "confirmed")


def _condition(
    key: str,
    code: CodeSpec,
    hints: FhirHints,
    status: Status,
    entries: list[AuditEntry],
    subject: dict[str, str],
    verification: str,
) -> dict[str, Any]:
    """A condition, with its onset at the first observed event."""
    assessed = next((e for e in entries if e.event in hints.observed_events), None)
    clinical = "inactive" if verification == "refuted" else hints.clinical_status.get(status.state, "active")
    condition: dict[str, Any] = {
        "resourceType": "Condition",
        "id": _fhir_id(f"{status.patient_id}-{key}"),
        "clinicalStatus": _coded("http://terminology.hl7.org/CodeSystem/condition-clinical", clinical),
        "verificationStatus": _coded("http://terminology.hl7.org/CodeSystem/condition-ver-status", verification),
        "code": {"coding": [_coding(code)], "text": code.display},
        "subject": subject,
    }
    if assessed is not None:
        condition["onsetDateTime"] = _instant(assessed.at)
    return condition


def _observation(entry: AuditEntry, field: str, code: CodeSpec, subject: dict[str, str]) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": _fhir_id(f"{entry.patient_id}-{field}-{entry.seq}"),
        "status": "final",
        "code": {"coding": [_coding(code)], "text": code.display},
        "subject": subject,
        "effectiveDateTime": _instant(entry.at),
        "valueQuantity": {
            "value": entry.payload[field],
            "unit": "score",
            "system": "http://unitsofmeasure.org",
            "code": "{score}",
        },
        "identifier": [{"system": AUDIT_IDS, "value": f"{entry.patient_id}/{entry.seq}/{entry.hash}"}],
    }


def _do_not_perform(hints: FhirHints, item_status: str) -> bool:
    return item_status in (hints.do_not_perform or ("contraindicated",))


def _service_requests(
    status: Status, hints: FhirHints, subject: dict[str, str], conditions: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Plan item id -> an active ServiceRequest, for each item that asks for a referral to perform."""
    outcome = status.outcome or {}
    named = [term for value in outcome.values() if isinstance(value, list) for term in value if isinstance(term, str)]
    reasons = [{"text": term_text(term)} for term in named] or ([{"text": outcome_text(outcome)}] if outcome else [])
    requests: dict[str, dict[str, Any]] = {}
    for item in status.plan:
        referral = item.referral
        if referral is None or _do_not_perform(hints, item.status):
            continue
        request: dict[str, Any] = {
            "resourceType": "ServiceRequest",
            "id": _fhir_id(f"{status.patient_id}-{item.id}"),
            "status": "active",
            "intent": "plan",
            "category": [{"text": "referral"}],
            "priority": referral.priority,
            "code": {"text": item.text},
            "subject": subject,
            "authoredOn": _instant(status.state_since),
            "occurrenceTiming": {"code": {"text": referral.within}},
            "performerType": {"text": referral.specialty},
            "note": [{"text": f"refer to {referral.specialty}, {referral.within} ({referral.priority})"}],
        }
        if reasons:
            request["reasonCode"] = reasons
        if conditions:
            request["reasonReference"] = [{"reference": f"Condition/{c['id']}"} for c in conditions]
        requests[item.id] = request
    return requests


def _careplan(
    status: Status,
    hints: FhirHints,
    subject: dict[str, str],
    conditions: list[dict[str, Any]],
    observations: list[dict[str, Any]],
    requests: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    activities: list[dict[str, Any]] = []
    for item in status.plan:
        request = requests.get(item.id)
        if request is not None:
            activities.append({"reference": {"reference": f"ServiceRequest/{request['id']}", "display": item.text}})
            continue
        detail: dict[str, Any] = {
            "status": "not-started",
            "description": item.text,
            "doNotPerform": _do_not_perform(hints, item.status),
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
        "status": hints.careplan_status.get(status.state, "active"),
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
