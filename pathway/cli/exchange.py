"""Data exchange: `carepath import` (bulk events from JSON Lines) and `carepath export-fhir`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from persistence import is_private_memory

from .app import JsonOption, PathwayOption, app, emit_json, engine
from .render import console


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="JSON Lines file, one event per line; '-' reads stdin.")],
    batch: Annotated[int, typer.Option(min=1, help="Events per transaction.")] = 1000,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Processes sharing the patients (default: one per core).")
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Ingest many events, each checked as `send` checks it; exit 2 if any line was rejected.

    Lines look like {"patient": "p-1", "event": "enroll", "at": "2026-01-05T09:00:00+00:00", "factors": {}}
    or {"patient": "p-1", "event": "assess", "at": "...", "data": {...}}; a "pathway" key names the
    enrolment to enrol or to send to (needed for a patient on several pathways).

    Example: carepath import events.jsonl --json
    """
    from ..ingest import ingest

    eng = engine()
    if workers is None:
        workers = 1 if is_private_memory(eng.url) else (os.cpu_count() or 1)
    if str(file) == "-":
        report = ingest(eng, sys.stdin, batch=batch, workers=workers)
    else:
        with file.open(encoding="utf-8") as handle:
            report = ingest(eng, handle, batch=batch, workers=workers)
    if json_:
        emit_json(report.to_json())
    else:
        console().print(
            f"imported {report.accepted} events ({report.unchanged} unchanged, "
            f"{report.duplicates} duplicates, {len(report.rejected)} rejected)"
        )
        for rejection in report.rejected[:20]:
            sys.stderr.write(f"line {rejection.line}: {rejection.error}\n")
    if report.rejected:
        raise typer.Exit(2)


@app.command("export-fhir")
def export_fhir(
    patient: Annotated[str, typer.Argument(help="Patient id.")],
    pathway: PathwayOption = None,
) -> None:
    """Print the patient's pathway as a FHIR R4 Bundle (CarePlan, Condition, Observation, Provenance).

    Example: carepath export-fhir p-001 --pathway sciatica > p-001.fhir.json
    """
    from ..fhir import export_bundle

    emit_json(export_bundle(engine(), patient, pathway))
