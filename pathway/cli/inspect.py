"""Inspection commands: explain, list, due, diagram, timeline.

Their modules (rules evaluation, Graphviz, matplotlib) are imported inside each command so
that the CLI starts fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .. import DEFAULT_PATHWAY, InvalidCommand, clinical_time, cohort_document, due_actions, due_document
from .app import JsonOption, PathwayOption, app, emit_json, parse_time, reading
from .render import console, rederivation_lines, styled_state
from .text import shown

if TYPE_CHECKING:
    from .. import CohortRow, Explanation, TransitionView

OptionalAt = Annotated[
    str | None,
    typer.Option("--at", help="Time to evaluate at, ISO 8601 with a zone (default: now)."),
]


def _at(text: str | None) -> datetime:
    # Checked before the database is opened: input errors come first.
    return clinical_time(parse_time(text)) if text is not None else reading().clock()


# -- explain ------------------------------------------------------------------------------------


@app.command()
def explain(
    patient: Annotated[str, typer.Argument(help="Patient id.")],
    at: OptionalAt = None,
    pathway: PathwayOption = None,
    json_: JsonOption = False,
) -> None:
    """Show what would move a patient next: every outgoing rule, its conditions and current values.

    Example: carepath explain p-001 --pathway sciatica --at 2026-02-02T09:00:00+00:00
    """
    explanation = reading().explain(patient, parse_time(at) if at is not None else None, pathway=pathway)
    if json_:
        emit_json(explanation.to_json())
    else:
        _print_explanation(explanation)


def _print_explanation(x: Explanation) -> None:
    out = console()
    from states import get_pathway

    state = styled_state(x.state, get_pathway(x.pathway, x.version))
    out.print(f"[bold]{shown(x.patient_id)}[/]  {state}  {shown(x.pathway)} v{x.version}  at {_when(x.at)}")
    out.print(f"configuration: {shown(', '.join(x.configuration))}")
    due = f"{_when(x.next_due_at)} (a tick then changes the patient)" if x.next_due_at else "-"
    out.print(f"next due: {due}")
    for record in x.rederived:
        late = "late " if record.get("late") else ""
        what = "correction" if record["event"] == "correct" else late + record["event"]
        out.print(f"re-derived by seq {record['seq']} ({what} at {record['at']}, recorded {record['recorded_at']}):")
        for line in rederivation_lines(record):
            out.print(f"  {shown(line)}")
    if not x.transitions:
        out.print("[dim]final state: no rule leaves it[/]")
        return
    out.print("[dim]observed values: the last recorded stand in for the next event's; times: as of 'at'[/]")
    for event in dict.fromkeys(t.event for t in x.transitions):
        out.print(f"\n[bold]on {shown(event)}[/]")
        for t in (t for t in x.transitions if t.event == event):
            _print_transition(t, shown)


def _print_transition(t: TransitionView, escape: Callable[[str], str]) -> None:
    mark = "[bold green]->[/]" if t.decides_now else ("[green]ok[/]" if t.holds_now else "[dim] x[/]")
    console().print(f"  {mark} {escape(t.sentence)}  [dim]{escape(t.rule)}[/]")
    now = _now_values(t)
    if now:
        console().print(f"       [dim]now: {escape(now)}[/]")
    for need in t.needs_words:
        console().print(f"       [yellow]needs[/] {escape(need)}")


def _now_values(t: TransitionView) -> str:
    """The current value of each input the rule reads, once each: "weeks in line 2.0, improvement 43 %"."""
    values: dict[str, str] = {}
    for clause in t.clauses:
        for c in clause:
            values.setdefault(c.input, c.text.rsplit("(now ", 1)[-1].rstrip(")"))
    return ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in values.items())


# -- cohort views --------------------------------------------------------------------------------


@app.command("list")
def list_patients(
    state: Annotated[str | None, typer.Option("--state", help="Only patients in this state.")] = None,
    at: OptionalAt = None,
    json_: JsonOption = False,
) -> None:
    """List enrolments with their pathway, state, time in it, next due time and overdue flag; counts per state.

    Example: carepath list --state second_line --json
    """
    when = _at(at)
    rows = list(reading().cohort(when, state))
    counts = reading().count_by_state()
    if json_:
        emit_json(cohort_document(when, state, rows, counts))
        return
    _print_rows(f"patients{f' in {state}' if state else ''} at {_when(when)}", rows, when)
    _print_counts(counts)


@app.command()
def due(
    at: OptionalAt = None,
    json_: JsonOption = False,
) -> None:
    """List the enrolments a tick at a time could change (next_due_at <= at) and what it would do.

    Example: carepath due --at 2026-03-01T00:00:00+00:00 --json
    """
    when = _at(at)
    rows = list(reading().due_cohort(when))
    if json_:
        emit_json(due_document(when, rows))
        return
    actions = due_actions(rows)
    _print_rows(f"{len(rows)} patients due at {_when(when)}", rows, when)
    summary = ", ".join(f"{count} -> {action}" for action, count in sorted(actions.items())) or "nothing to do"
    console().print(f"a tick at {_when(when)} would move: {shown(summary)}")


def _print_rows(title: str, rows: list[CohortRow], at: datetime) -> None:
    from rich.table import Table

    from states import get_pathway

    table = Table(title=title)
    flagged = any(row.flags for row in rows)
    for column in ("patient", "pathway", "state", "since", "dwell", "next due", "reassessment"):
        table.add_column(column)
    if flagged:
        table.add_column("flags")
    for row in rows:
        table.add_row(
            shown(row.patient_id),
            shown(row.pathway),
            styled_state(row.state, get_pathway(row.pathway, row.version)),
            _when(row.state_since),
            _dwell(row.dwell),
            _when(row.next_due_at) if row.next_due_at else "-",
            _reassessment(row, at),
            *(["[bold yellow]" + shown(", ".join(f.replace("_", " ") for f in row.flags)) + "[/]"] if flagged else []),
        )
    console().print(table)


def _reassessment(row: CohortRow, at: datetime) -> str:
    if row.overdue:
        late = f" ({_dwell(at - row.next_due_at)} late)" if row.next_due_at and row.tick else ""
        return f"[bold red]overdue[/]{late}"
    if row.tick:
        return f"[yellow]tick -> {row.tick}[/]"
    if row.due:
        return "[yellow]due[/]"
    return ""


def _print_counts(counts: dict[str, int]) -> None:
    from rich.table import Table

    table = Table(title="patients per state")
    table.add_column("state")
    table.add_column("patients", justify="right")
    for state, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        table.add_row(styled_state(state), str(count))
    table.add_row("[bold]total[/]", f"[bold]{sum(counts.values())}[/]")
    console().print(table)


def _dwell(span: timedelta) -> str:
    days = span / timedelta(days=1)
    if days < 1:
        return f"{span / timedelta(hours=1):.0f} h"
    if days < 14:
        return f"{days:.0f} d"
    return f"{days / 7:.1f} wk"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M %Z").strip() if value is not None else "-"


# -- pictures -------------------------------------------------------------------------------------


@app.command()
def diagram(
    patient: Annotated[str | None, typer.Option("--patient", help="Highlight this patient's active states.")] = None,
    pathway: Annotated[
        str | None,
        typer.Option(
            "--pathway",
            help="Pathway definition (default: the default pathway); with --patient, which enrolment.",
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="mermaid, dot, svg or png (default: from -o's suffix, else mermaid)."),
    ] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write to this file (default: stdout).")] = None,
) -> None:
    """Draw the whole statechart (compound and parallel regions), a patient's active states highlighted.

    Example: carepath diagram --patient p-001 --pathway sciatica --format svg -o p-001.svg
    """
    from .. import TEXT_FORMATS

    chosen = fmt or _format_from(output)
    if output is None and chosen not in TEXT_FORMATS:
        raise InvalidCommand(f"--format {chosen} is binary: give -o FILE")
    if patient is not None:
        data = reading().diagram(chosen, patient_id=patient, pathway=pathway)
    else:
        data = reading().diagram(chosen, pathway=pathway or DEFAULT_PATHWAY)
    if output is None:
        sys.stdout.write(data.decode())
        return
    output.write_bytes(data)
    console().print(f"wrote {output} ({chosen}, {len(data)} bytes)")


def _format_from(output: Path | None) -> str:
    suffix = output.suffix.lower().lstrip(".") if output is not None else ""
    return {"mmd": "mermaid", "md": "mermaid", "gv": "dot"}.get(suffix, suffix) or "mermaid"


@app.command()
def timeline(
    patient: Annotated[str, typer.Argument(help="Patient id.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Image file to write (.png, .svg or .pdf).")],
    pathway: PathwayOption = None,
) -> None:
    """Plot pain over time with the states as coloured bands, events marked and thresholds drawn.

    Example: carepath timeline p-001 --pathway sciatica -o p-001.png
    """
    written = reading().timeline(patient, output, pathway=pathway)
    console().print(f"wrote {written}")
