"""The engine operations the server calls beyond enrol/send/status, in one place, each a thin
call of the `Engine` method of that name, shaped as the CLI's `--json` prints it."""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import cohort_document, definitions_document, due_document, entry_json

if TYPE_CHECKING:
    from .. import Engine

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
    return cohort_document(at, state, engine.cohort(at, state), engine.count_by_state())


def due_json(engine: Engine, at: datetime) -> dict[str, Any]:
    """The `due --json` document."""
    return due_document(at, engine.due_cohort(at))


def definitions_json() -> list[dict[str, Any]]:
    """The `pathways --json` document."""
    return definitions_document()


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
