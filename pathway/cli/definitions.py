"""Definition commands: check definition files, publish their JSON Schema, list what is registered."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from states import DefinitionError, json_schema, load_file, model_problems

from .. import definitions_document
from .app import JsonOption, app, emit_json, engine
from .render import console
from .text import escape_controls, shown

__all__ = ["check", "list_pathways", "schema"]


@app.command()
def check(
    files: Annotated[list[Path], typer.Argument(help="Definition files (YAML or JSON) or folders of them.")],
    json_out: JsonOption = False,
) -> None:
    """Check pathway definition files: report every problem of each at once, with its place in the file.

    Exit status 2 when any file has a problem. Example: carepath check my-pathway.yaml
    """
    from states import definition_files

    report: list[dict[str, Any]] = []
    for path in files:
        for file in definition_files(path):
            report.append(_check_one(file))
    if json_out:
        emit_json(report)
    else:
        for entry in report:
            where = f"{entry['file']} ({entry['pathway']} version {entry['version']})"
            if entry["problems"]:
                console().print(f"[red]{where}: {len(entry['problems'])} problem(s)[/red]")
                for problem in entry["problems"]:
                    console().print(f"  - {problem}", markup=False, highlight=False)
            else:
                console().print(f"[green]{where}: ok[/green]")
    if any(entry["problems"] for entry in report):
        raise typer.Exit(2)


def _check_one(file: Path) -> dict[str, Any]:
    try:
        model = load_file(file)
    except DefinitionError as err:
        return {"file": str(file), "pathway": err.name, "version": err.version, "problems": list(err.problems)}
    return {"file": str(file), "pathway": model.name, "version": model.version, "problems": model_problems(model)}


@app.command()
def schema() -> None:
    """Print the JSON Schema of pathway definition files, for an editor to check a file as it is written.

    Example: carepath schema > pathway.schema.json
    """
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


@app.command("pathways")
def list_pathways(json_out: JsonOption = False) -> None:
    """List the registered pathway definitions: versions, review status, reviewer and date.

    Example: carepath --pathways ./my-pathways pathways --json
    """
    rows = definitions_document()
    if json_out:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table("pathway", "version", "title", "review", "reviewer", "date")
    for row in rows:
        table.add_row(
            *(shown(str(row[key] or "")) for key in ("pathway", "version", "title", "review", "reviewer", "date"))
        )
    console().print(table)


@app.command("migrate-patients")
def migrate_patients(
    pathway: Annotated[str, typer.Option("--pathway", help="The pathway whose patients move.")],
    from_version: Annotated[int, typer.Option("--from", min=1, help="The version they are on.")],
    to_version: Annotated[int, typer.Option("--to", min=1, help="The version declaring the migration.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would change; write nothing.")] = False,
    actor: Annotated[str | None, typer.Option(help="Who moved the patients.")] = None,
    json_out: JsonOption = False,
) -> None:
    """Move live patients of a pathway to a newer version, by the state mapping that version declares.

    Each patient moved gets one audit entry (migrate, with both versions); patients in a final
    state stay. Example: carepath migrate-patients --pathway NAME --from 1 --to 2 --dry-run
    """
    changes = engine().migrate_patients(pathway, from_version, to_version, dry_run=dry_run, actor=actor)
    if json_out:
        emit_json({"dry_run": dry_run, "migrated": len(changes), "patients": [c.to_json() for c in changes]})
        return
    verb = "would move" if dry_run else "moved"
    console().print(f"{verb} {len(changes)} patient(s) of {shown(pathway)} from version {from_version} to {to_version}")
    for change in changes:
        states = f"{change.state_before} -> {change.state_after}"
        keys = ", ".join(change.context_changes) or "no context change"
        line = escape_controls(f"  {change.patient_id}: {states}; {keys}")
        console().print(line, markup=False, highlight=False)
