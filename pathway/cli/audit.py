"""Audit commands: replay, verify, whatif."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .. import DEFAULT_PATHWAY, InvalidCommand, bulk_allocation
from .app import JsonOption, PathwayOption, app, emit_json, parse_time, read_json_file, reading
from .render import console, print_status, styled_state
from .text import shown

if TYPE_CHECKING:
    from .. import VerifyReport, WhatIfReport

# Exit status when the log does not reproduce what was recorded (DESIGN.md section 6).
EXIT_PROBLEM = 1


@app.command("replay")
def replay_command(
    patient: Annotated[str, typer.Argument(help="Patient id.")],
    until: Annotated[
        str | None, typer.Option("--until", help="The state at this clinical time, as known now (ISO 8601, zoned).")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="What the record said at this record time (before later corrections)."),
    ] = None,
    pathway: PathwayOption = None,
    json_: JsonOption = False,
) -> None:
    """Rebuild a patient's enrolment from its audit log, checking every recorded step.

    Exits 1 when the log does not reproduce what was recorded.

    Example: carepath replay p-001 --pathway sciatica --until 2026-02-01T00:00:00+00:00 --json
    What the record said before a correction: carepath replay p-001 --as-of 2026-02-03T12:00:00+00:00
    """
    from .. import ReplayDiverged

    try:
        when = parse_time(until, "--until") if until else None
        recorded = parse_time(as_of, "--as-of") if as_of else None
        result = reading().replay(patient, pathway, until=when, as_of=recorded)
    except ReplayDiverged as err:
        if json_:
            emit_json(
                {
                    "ok": False,
                    "patient_id": err.patient_id,
                    "pathway": err.pathway,
                    "first_bad_seq": err.seq,
                    "reason": err.reason,
                }
            )
        sys.stderr.write(f"carepath: {err}\n")
        raise typer.Exit(EXIT_PROBLEM) from None
    if json_:
        emit_json(result.to_json())
        return
    at = f" at clinical time {result.until.isoformat()}" if result.until else ""
    recorded_by = f" as recorded by {result.as_of.isoformat()}" if result.as_of else ""
    console().print(f"replayed {result.revision} entries (up to seq {result.seq}){at}{recorded_by}")
    print_status(result)


@app.command("verify")
def verify_command(
    patient: Annotated[str | None, typer.Argument(help="Patient id (default: every enrolment).")] = None,
    pathway: PathwayOption = None,
    anchor: Annotated[
        Path | None,
        typer.Option("--anchor", help="Also check the database against this anchor file (`carepath anchor`)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Processes sharing the check (default: one per core for 2,000 patients or more)."),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Check the hash chain, replay every step and compare the stored snapshots.

    Each enrolment (patient and pathway) is one chain. Exits 0 when everything checks out, 1 on
    the first problem found (named by patient, pathway and seq). With an audit key configured
    every entry must carry a valid HMAC under it; without one the chain is unkeyed ("keyed":
    false) and anyone with write access could have recomputed it. With --anchor, also fails when
    an anchored entry changed, a chain is shorter than its anchored head, an anchored enrolment
    is missing, or an enrolment that began before the anchor is not in it.

    Example: carepath verify --json; carepath verify p-001 --pathway sciatica; carepath verify --anchor a.json
    """
    if patient is None and pathway is not None:
        raise InvalidCommand("--pathway names one enrolment of a PATIENT: give the patient id too")
    eng = reading()
    show_progress = patient is None and not json_
    with _progress("verifying", eng.count_entries() if show_progress else 0) as advance, bulk_allocation():
        report = eng.verify(patient, pathway=pathway, progress=advance, workers=workers or "auto")
    anchored = None
    if anchor is not None:
        if patient is not None:
            raise InvalidCommand("--anchor checks every enrolment: give no PATIENT")
        from .trust import check_anchor_file

        anchored = check_anchor_file(eng, anchor, report)
    if json_:
        document = report.to_json()
        if anchored is not None:
            document["anchor"] = anchored
        emit_json(document)
    else:
        _print_verify(report)
        if anchored is not None:
            state = "ok" if anchored["ok"] else f"{anchored['problem_count']} problems"
            console().print(f"anchor {anchored['file']} of {anchored['created_at']}: {state}")
    if not report.ok:
        raise typer.Exit(EXIT_PROBLEM)


@app.command("whatif")
def whatif_command(
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Policy JSON file (fields of the pathway's policy).")
    ] = None,
    version: Annotated[
        int | None, typer.Option("--version", min=1, help="Re-run the patients of --pathway on this version.")
    ] = None,
    pathway: Annotated[str, typer.Option("--pathway", help="The pathway whose version --version names.")] = (
        DEFAULT_PATHWAY
    ),
    json_: JsonOption = False,
) -> None:
    """Replay every patient's recorded events under another policy or version; list who moves differently.

    Example: carepath whatif --policy stricter.json --json
    (stricter.json: {"moderate_improvement": 0.4, "first_line_early_weeks": 3})
    Example: carepath whatif --version 2  (the default pathway's patients re-run on its version 2)
    """
    if (policy is None) == (version is None):
        raise InvalidCommand("give exactly one of --policy FILE or --version N")
    data = _read_policy(policy) if policy is not None else None
    eng = reading()
    with _progress("what-if", 0 if json_ else eng.count_entries()) as advance, bulk_allocation():
        report = eng.whatif(data, version=(pathway, version) if version else None, progress=advance)
    if json_:
        emit_json(report.to_json())
    else:
        _print_whatif(report)


def _read_policy(path: Path) -> dict[str, Any]:
    value = read_json_file(path, "--policy")
    if not isinstance(value, dict):
        raise InvalidCommand(f"--policy: must hold a JSON object, got {type(value).__name__}")
    return value


@contextmanager
def _progress(label: str, total: int) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr over `total` audit entries (none when total is 0 or 1).

    The callback it yields takes the number of entries just checked.
    """
    if total <= 1:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("events"), TimeRemainingColumn())
    # Refreshed by hand, not by rich's refresh thread: a process with other threads takes its
    # parallel workers from a fork server, slower to start (pathway/_tuning.py).
    with Progress(*columns, console=Console(stderr=True), transient=True, auto_refresh=False) as bar:
        task = bar.add_task(label, total=total)

        def advance(events: int) -> None:
            bar.advance(task, events)
            bar.refresh()

        yield advance


def _print_verify(report: VerifyReport) -> None:
    out = console()
    enrolments = f" ({report.enrolments} enrolments)" if report.enrolments != report.patients else ""
    checked = f"{report.patients} patients{enrolments}, {report.events} events"
    notes = []
    if not report.keyed:
        notes.append("unkeyed chain: no audit key configured, so an edit re-hashed with SHA-256 would pass")
    if report.unreplayed:
        notes.append(f"{report.unreplayed} enrolments encrypted, no data key: chain and heads checked, not replayed")
    if report.ok:
        out.print(f"[green]ok[/]: {checked} verified")
        for note in notes:
            out.print(f"  note: {note}")
        return
    out.print(f"[bold red]problem[/]: {report.problem_count} of {checked}")
    for problem in report.problems:
        detail = f" ({problem.detail})" if problem.detail else ""
        out.print(
            f"  {shown(problem.patient_id)} ({shown(problem.pathway)}) seq {problem.first_bad_seq}: "
            f"{shown(problem.reason)}{shown(detail)}"
        )
    for note in notes:
        out.print(f"  note: {note}")


def _print_whatif(report: WhatIfReport) -> None:
    from rich.table import Table

    out = console()
    out.print(f"{len(report.changes)} of {report.patients} patients would have moved differently")
    if not report.changes:
        return
    table = Table()
    for column in ("patient", "pathway", "recorded", "what-if", "first diverging seq", "stopped at seq"):
        table.add_column(column)
    for change in report.changes:
        table.add_row(
            shown(change.patient_id),
            shown(change.pathway),
            styled_state(change.recorded_state),
            styled_state(change.whatif_state),
            str(change.first_diverging_seq),
            str(change.stopped_at_seq or ""),
        )
    out.print(table)
