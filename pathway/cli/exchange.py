"""Data exchange: `carepath import` (bulk events from JSON Lines) and `carepath export-fhir`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from persistence import is_private_memory

from .. import bulk_allocation, exit_code
from .app import JsonOption, PathwayOption, app, emit_json, engine, reading
from .render import console
from .text import escape_controls

if TYPE_CHECKING:
    from .. import IngestReport


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="JSON Lines file, one event per line; '-' reads stdin.")],
    batch: Annotated[int, typer.Option(min=1, help="Events per transaction.")] = 1000,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Processes sharing the patients (default: one per core).")
    ] = None,
    report_file: Annotated[
        Path | None,
        typer.Option("--report", help="Write one JSON line per input line: line, patient, outcome, reason."),
    ] = None,
    allow_unapproved: Annotated[
        bool,
        typer.Option("--allow-unapproved", help="Let enrolment lines name a version that is a draft or under review."),
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Ingest many events, each checked as `send` checks it; a bad line is rejected alone.

    Exit 0 when every line was applied (or already applied), 2 when some line was rejected, 5 when
    the database stopped answering (the report then lists what was done; re-run the file to apply
    the rest). Running a file again applies only the lines not yet applied.

    Lines look like {"patient": "p-1", "event": "enroll", "at": "2026-01-05T09:00:00+00:00", "factors": {}}
    or {"patient": "p-1", "event": "assess", "at": "...", "data": {...}}; a "pathway" key names the
    enrolment to enrol or to send to (needed for a patient on several pathways), a "version" the
    definition version of an enrolment (one not approved needs --allow-unapproved).

    Example: carepath import events.jsonl --report import-report.jsonl
    """
    from .. import ImportStopped

    eng = engine()
    if workers is None:
        workers = 1 if is_private_memory(eng.url) else (os.cpu_count() or 1)
    stopped: ImportStopped | None = None
    try:
        with bulk_allocation():
            if str(file) == "-":
                report = eng.ingest(sys.stdin, batch=batch, workers=workers, allow_unapproved=allow_unapproved)
            else:
                with file.open(encoding="utf-8") as handle:
                    report = eng.ingest(handle, batch=batch, workers=workers, allow_unapproved=allow_unapproved)
    except ImportStopped as err:
        stopped, report = err, err.report
    if report_file is not None:
        _write_report(report_file, report, stopped)
    if json_:
        document = report.to_json()
        document["stopped"] = str(stopped) if stopped is not None else None
        emit_json(document)
    else:
        console().print(
            f"imported {report.accepted} events ({report.unchanged} unchanged, {report.duplicates} duplicates, "
            f"{report.already_applied} already applied, {len(report.rejected)} rejected)"
        )
        for rejection in report.rejected[:20]:
            sys.stderr.write(f"line {rejection.line}: {escape_controls(rejection.error)}\n")
    if stopped is not None:
        sys.stderr.write(
            f"carepath: error: import stopped: {stopped}; lines not reported as applied may not have been "
            "(a batch committed as the database failed is reported by the next run as already applied): "
            "run the same file again to apply the rest\n"
        )
        raise typer.Exit(exit_code(stopped))
    if report.rejected:
        raise typer.Exit(2)


def _write_report(path: Path, report: IngestReport, stopped: Exception | None) -> None:
    with path.open("w", encoding="utf-8") as out:
        for outcome in report.outcomes:
            out.write(json.dumps(outcome.to_json(), ensure_ascii=False) + "\n")
        if stopped is not None:
            out.write(json.dumps({"line": None, "patient": None, "outcome": "stopped", "reason": str(stopped)}) + "\n")


@app.command("export-fhir")
def export_fhir(
    patient: Annotated[str, typer.Argument(help="Patient id.")],
    pathway: PathwayOption = None,
) -> None:
    """Print the patient's pathway as a FHIR R4 Bundle (CarePlan, Condition, Observation, Provenance).

    Example: carepath export-fhir p-001 --pathway sciatica > p-001.fhir.json
    """
    emit_json(reading().export_fhir(patient, pathway))
