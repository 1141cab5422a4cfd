"""The engine operations the server calls beyond enrol/send/status, in one place, each a thin
call of the `Engine` method of that name, shaped as the CLI's `--json` prints it."""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._engine import entry_json

if TYPE_CHECKING:
    from .._engine import Engine

__all__ = [
    "cohort_json",
    "definition_json",
    "definitions_json",
    "diagram_svg",
    "due_json",
    "entry_json",
    "event_schemas",
    "explain_json",
    "export_fhir",
    "history_json",
    "replay_json",
    "timeline_png",
    "verify_json",
]


def history_json(engine: Engine, patient_id: str, pathway: str | None) -> list[dict[str, Any]]:
    return [entry.to_json() for entry in engine.history(patient_id, pathway)]


def explain_json(engine: Engine, patient_id: str, at: datetime | None, pathway: str | None) -> dict[str, Any]:
    return engine.explain(patient_id, at, pathway=pathway).to_json()


def replay_json(
    engine: Engine, patient_id: str, until: datetime | None, as_of: datetime | None, pathway: str | None
) -> dict[str, Any]:
    return engine.replay(patient_id, pathway, until, as_of).to_json()


def verify_json(engine: Engine, patient_id: str | None, pathway: str | None) -> dict[str, Any]:
    return engine.verify(patient_id, pathway=pathway).to_json()


def export_fhir(engine: Engine, patient_id: str, pathway: str | None) -> dict[str, Any]:
    return engine.export_fhir(patient_id, pathway)


def diagram_svg(engine: Engine, patient_id: str, pathway: str | None) -> bytes:
    return engine.diagram("svg", patient_id=patient_id, pathway=pathway)


def timeline_png(engine: Engine, patient_id: str, pathway: str | None) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        return engine.timeline(patient_id, Path(folder) / "timeline.png", pathway=pathway).read_bytes()


def cohort_json(engine: Engine, at: datetime, state: str | None) -> dict[str, Any]:
    """The `list --json` document."""
    rows = list(engine.cohort(at, state))
    counts = engine.count_by_state()
    return {
        "at": at.isoformat(),
        "state": state,
        "counts": counts,
        "total": sum(counts.values()),
        "overdue": sum(row.overdue for row in rows),
        "patients": [row.to_json() for row in rows],
    }


def due_json(engine: Engine, at: datetime) -> dict[str, Any]:
    """The `due --json` document."""
    rows = list(engine.due_cohort(at))
    actions: dict[str, int] = {}
    for row in rows:
        key = row.tick or "nothing"
        actions[key] = actions.get(key, 0) + 1
    return {"at": at.isoformat(), "count": len(rows), "actions": actions, "patients": [r.to_json() for r in rows]}


def definitions_json() -> list[dict[str, Any]]:
    """The `pathways --json` document."""
    from states import get_pathway, pathways

    rows: list[dict[str, Any]] = []
    for name, version in pathways():
        definition = get_pathway(name, version)
        review = definition.review
        rows.append(
            {
                "pathway": name,
                "version": version,
                "title": definition.model.title,
                "review": review.status,
                "reviewer": review.reviewer,
                "date": review.date.isoformat() if review.date else None,
                "events": definition.event_names(),
            }
        )
    return rows


def definition_json(name: str, version: int) -> dict[str, Any]:
    """One registered definition as data (raises UnknownDefinition)."""
    from states import get_pathway

    document: dict[str, Any] = get_pathway(name, version).model.model_dump(mode="json", by_alias=True)
    return document


def event_schemas(name: str, version: int) -> dict[str, Any]:
    """The JSON Schema of each event's data (and of an enrolment's) in one definition."""
    from states import get_pathway

    definition = get_pathway(name, version)
    schemas: dict[str, Any] = {"enroll": definition.enroll_payload.model_json_schema()}
    schemas.update({event: model.model_json_schema() for event, model in definition.payloads.items()})
    return schemas
