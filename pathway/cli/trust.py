"""Trust commands: anchor (checkpoints of every chain head) and rotate-key; helpers for
`verify --anchor` and `worker --anchor-dir`."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .. import InvalidCommand
from .app import JsonOption, app, emit_json, read_json_file, reading
from .render import console

if TYPE_CHECKING:
    from .. import Engine, VerifyReport

__all__ = ["check_anchor_file", "write_anchor"]


@app.command("anchor")
def anchor_command(
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the anchor to this file (default: print it).")
    ] = None,
) -> None:
    """Write a checkpoint of every enrolment's chain head, authenticated with the audit key.

    Keep anchors where the database's writers cannot rewrite them; `verify --anchor FILE` then
    finds chains truncated, enrolments deleted and enrolments fabricated since.

    Example: carepath anchor --out /mnt/worm/carepath-2026-06-01.json
    """
    document = _anchor_now()
    if out is None:
        emit_json(document)
        return
    write_anchor(out, document)
    console().print(f"anchored {document['enrolments']} enrolments at {document['created_at']} to {out}")


@app.command("rotate-key")
def rotate_key_command(
    data: Annotated[bool, typer.Option("--data", help="Rotate the data key instead of the audit key.")] = False,
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key-file",
            help="Key file to add to (default: $CAREPATH_AUDIT_KEY_FILE; with --data $CAREPATH_DATA_KEY_FILE).",
        ),
    ] = None,
    key_id: Annotated[str | None, typer.Option("--id", help="Id of the new key (default: k1, k2, ...).")] = None,
    json_: JsonOption = False,
) -> None:
    """Add a fresh random key to a key file (created 0600 when missing); new entries use it.

    Older keys stay in the file: entries written under them still verify (audit keys) or
    decrypt (data keys). Every process must read the new file before it is trusted to write.

    Example: CAREPATH_AUDIT_KEY_FILE=/etc/carepath/audit.keys carepath rotate-key
    """
    from persistence import AUDIT_KEY_ENV, AUDIT_KEY_FILE_ENV, DATA_KEY_ENV, DATA_KEY_FILE_ENV, add_key

    one, file = (DATA_KEY_ENV, DATA_KEY_FILE_ENV) if data else (AUDIT_KEY_ENV, AUDIT_KEY_FILE_ENV)
    path = key_file or (Path(os.environ[file]) if os.environ.get(file) else None)
    if path is None:
        hint = f" (move {one} into one: a line 'ID HEX')" if os.environ.get(one) else ""
        raise InvalidCommand(f"rotate-key needs a key file: --key-file or ${file}{hint}")
    new_id = add_key(path, key_id)
    if json_:
        emit_json({"key_id": new_id, "key_file": str(path), "kind": "data" if data else "audit"})
        return
    console().print(f"added {'data' if data else 'audit'} key {new_id!r} to {path}; it is used for new entries")
    if os.environ.get(one):
        sys.stderr.write(f"carepath: note: ${one} is set and takes precedence over the key file\n")


def _anchor_now() -> dict[str, Any]:
    return reading().anchor()  # the worker's own engine when it anchors


def write_anchor(path: Path, document: dict[str, Any]) -> None:
    """Write an anchor file whole (a temporary file renamed into place), readable by its owner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(document, indent=1) + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)


def anchor_to_folder(folder: Path) -> Path:
    """Write an anchor named by its time into `folder` (the worker's periodic anchors)."""
    document = _anchor_now()
    stamp = datetime.fromisoformat(document["created_at"]).strftime("%Y%m%dT%H%M%S%fZ")
    path = folder / f"carepath-anchor-{stamp}.json"
    write_anchor(path, document)
    return path


def check_anchor_file(engine: Engine, path: Path, report: VerifyReport) -> dict[str, Any]:
    """Check the database against an anchor file; problems go into `report`. Returns a summary."""
    document = read_json_file(path, "--anchor")
    problems = engine.check_anchor(document)
    for problem in problems:
        report.add(problem)
    return {
        "file": str(path),
        "created_at": document.get("created_at"),
        "enrolments": document.get("enrolments"),
        "ok": not problems,
        "problem_count": len(problems),
    }
