"""Human output: rich tables and colours; JSON shapes shared by commands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .text import shown

if TYPE_CHECKING:
    from datetime import datetime

    from rich.console import Console

    from persistence import AuditEntry
    from states import Pathway

    from .. import Status

__all__ = [
    "STATUS_STYLE",
    "console",
    "print_history",
    "rederivation_lines",
    "print_status",
    "state_style",
    "styled_state",
]

STATUS_STYLE = {
    "recommended": "green",
    "caution": "yellow",
    "contraindicated": "bold red",
    "not_indicated": "dim",
}

_console: Console | None = None


def console() -> Console:
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(highlight=False)
    return _console


def state_style(state: str, definition: Pathway | None = None) -> str:
    """The rich style of a state: its colour in the definition (or any registered one), else neutral."""
    from .. import NEUTRAL_COLOUR, known_colours

    colours = definition.presentation.colours if definition is not None else known_colours()
    return colours.get(state, NEUTRAL_COLOUR)


def styled_state(state: str, definition: Pathway | None = None) -> str:
    return f"[{state_style(state, definition)}]{shown(state)}[/]"


def print_status(status: Status, entries: Sequence[AuditEntry] = (), now: datetime | None = None) -> None:
    """The patient's state, why they are there (from the timeline hints), flags, outcome in words and plan.

    `entries` (the enrolment's history) give the last value of the plotted input; `now` the weeks so far.
    """
    from rich.markup import escape
    from rich.table import Table

    from .. import outcome_text, term_text, why_here

    out = console()
    state = styled_state(status.state, status.definition)
    out.print(
        f"[bold]{shown(status.patient_id)}[/]  {status.pathway} v{status.version}  state {state}  "
        f"revision {status.revision}"
    )
    out.print(f"configuration: {', '.join(status.configuration)}")
    due = status.next_due_at.isoformat() if status.next_due_at else "-"
    out.print(f"next due: {due}")
    for line in why_here(status, entries, now or status.last_event_at):
        out.print(f"why here: {escape(line)}")
    if status.flags:
        out.print("[bold yellow]flags:[/] " + ", ".join(term_text(flag) for flag in status.flags))
    if status.outcome:
        out.print("outcome: " + escape(outcome_text(status.outcome)))
    table = Table(title="plan", show_lines=False)
    for column in ("status", "item", "reasons", "source"):
        table.add_column(column)
    for item in status.plan:
        style = STATUS_STYLE.get(item.status, "white")
        table.add_row(f"[{style}]{item.status}[/]", item.text, "; ".join(item.reasons), f"[dim]{item.source}[/]")
    out.print(table)


def rederivation_lines(record: dict[str, Any]) -> list[str]:
    """A re-derivation (a late event, one dated before recorded ticks, a correction) in words."""
    lines = []
    if record.get("corrects") is not None:
        lines.append(f"corrects seq {record['corrects']} (entered in error)")
    if record.get("late"):
        lines.append("late entry: dated before the last clinical event")
    if record.get("supersedes"):
        lines.append("supersedes tick entries " + ", ".join(f"seq {s}" for s in record["supersedes"]))
    before, after = record.get("state_before"), record.get("state_after")
    if before != after:
        lines.append(f"state re-derived: {before} -> {after}")
    for change in record.get("changes") or []:
        lines.append(
            f"decision changed: seq {change['seq']} {change['event']} at {change['at']}: "
            f"{change['before'] or 'not in the record'} -> {change['after'] or 'entered in error'}"
        )
    if record.get("skipped"):
        lines.append("not applied in the re-derived state: " + ", ".join(f"seq {s}" for s in record["skipped"]))
    return lines


def print_history(patient: str, entries: Sequence[AuditEntry]) -> None:
    from rich.table import Table

    pathway = f" on {entries[0].pathway}" if entries else ""
    table = Table(title=f"history of {shown(patient)}{pathway}")
    for column in ("seq", "event", "at", "actor", "state after", "rule", "hash"):
        table.add_column(column)
    notes: list[str] = []
    for e in entries:
        decision = e.decision or {}
        rule = decision.get("rule") or ""
        record = decision.get("rederived")
        event = e.event
        if isinstance(record, dict):
            event += " (late)" if record.get("late") else " (re-derived)" if e.event != "correct" else ""
            notes += [f"seq {e.seq}: {line}" for line in rederivation_lines(record)]
        table.add_row(
            str(e.seq), event, e.at.isoformat(), shown(e.actor or ""), ", ".join(e.config_after), rule, e.hash[:12]
        )
    console().print(table)
    for note in notes:
        console().print(note)
