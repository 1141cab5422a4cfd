"""A patient's course at a glance: pain over time on coloured state bands, events and thresholds.

The states come from the audit entries' recorded configurations; each line's baseline comes
from re-applying the recorded events on the definition (the same rules the engine ran), so
the 30 % / 50 % improvement levels are drawn where the guards measured them. matplotlib is
imported only when a plot is drawn, through a bare Figure (Agg), never pyplot's global state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from persistence import AuditEntry
from states import Pathway, StatesError

from .errors import CarepathError
from .replay import stored_payload

__all__ = ["STATE_COLOURS", "TimelineError", "plot_timeline"]

STATE_COLOURS = {
    "assessment": "#80deea",
    "first_line": "#a5d6a7",
    "second_line": "#fff59d",
    "third_line": "#ffcc80",
    "resolved": "#66bb6a",
    "rediagnose": "#ce93d8",
    "urgent_referral": "#ef5350",
    "withdrawn": "#bdbdbd",
}
_FALLBACK_COLOURS = ("#90caf9", "#f48fb1", "#b0bec5", "#bcaaa4", "#e6ee9c")
_EVENT_MARKERS = {"enroll": "*", "assess": "D", "reassess": "o", "tick": "v", "override": "s", "relapse": "^"}
_EVENT_ROW = 10.9  # pain is 0-10: events sit in a row above the scale


class TimelineError(CarepathError):
    """Raised when a timeline cannot be drawn (no audit entries to draw)."""


@dataclass(frozen=True)
class _Band:
    state: str
    start: datetime
    end: datetime
    baseline: float | None


def plot_timeline(
    entries: Sequence[AuditEntry], definition: Pathway, path: str | Path, *, until: datetime | None = None
) -> Path:
    """Draw the patient's pain, states, events and thresholds to `path` (format from its suffix)."""
    if not entries:
        raise TimelineError("no audit entries: nothing to draw")
    from matplotlib.figure import Figure  # lazily: importing matplotlib costs the CLI's cold start

    target = Path(path)
    end = until or entries[-1].at + max(timedelta(weeks=2), (entries[-1].at - entries[0].at) * 0.05)
    fig = Figure(figsize=(11, 5.5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    bands = _bands(entries, definition, end)
    _draw_bands(ax, bands)
    _draw_thresholds(ax, bands, definition.policy)
    _draw_pain(ax, entries)
    _draw_events(ax, entries)
    _style(ax, entries[0], definition)
    fig.legend(loc="outside lower center", ncols=6, fontsize=8, frameon=False)
    fig.savefig(target)
    return target


def _bands(entries: Sequence[AuditEntry], definition: Pathway, end: datetime) -> list[_Band]:
    """Spans of time in one state (a new line, even of the same name, starts a new span)."""
    contexts = _replayed_contexts(entries, definition)
    bands: list[_Band] = []
    for entry, context in zip(entries, contexts, strict=True):
        if not entry.config_after:
            continue
        state = definition.state_name(entry.config_after)
        baseline = context.get("line_baseline") if context else None
        started = context.get("line_started_at") if context else None
        last = bands[-1] if bands else None
        new_line = started is not None and started == entry.at.isoformat() and baseline is not None
        if last is not None and last.state == state and not new_line:
            continue
        if last is not None:
            bands[-1] = _Band(last.state, last.start, entry.at, last.baseline)
        bands.append(_Band(state, entry.at, end, baseline))
    return bands


def _replayed_contexts(entries: Sequence[AuditEntry], definition: Pathway) -> list[dict[str, Any] | None]:
    """The context after each entry, by re-applying the events; None from where replay fails."""
    contexts: list[dict[str, Any] | None] = []
    configuration: Sequence[str] = ()
    context: dict[str, Any] | None = None
    for entry in entries:
        try:
            if entry.event == "enroll":
                configuration, context = definition.start(stored_payload(definition, entry), entry.at)
            elif context is not None:
                payload = stored_payload(definition, entry)  # upcast, as replay reads it
                step = definition.apply(configuration, context, entry.event, payload, entry.at)
                configuration, context = step.configuration_after, step.context
        except StatesError:
            context = None
        contexts.append(context)
    return contexts


def _draw_bands(ax: Any, bands: Sequence[_Band]) -> None:
    seen: set[str] = set()
    for band in bands:
        colour = STATE_COLOURS.get(band.state) or _FALLBACK_COLOURS[len(seen) % len(_FALLBACK_COLOURS)]
        label = None if band.state in seen else band.state
        seen.add(band.state)
        ax.axvspan(band.start, band.end, color=colour, alpha=0.45, lw=0, label=label)


def _draw_thresholds(ax: Any, bands: Sequence[_Band], policy: Any) -> None:
    resolved = getattr(policy, "resolved_max_pain", None)
    if resolved is not None:
        ax.axhline(resolved, color="#1b5e20", ls="--", lw=1.4, label=f"resolved: pain <= {resolved:g}")
    levels = [
        (getattr(policy, "moderate_improvement", None), ":", "#e65100"),
        (getattr(policy, "substantial_improvement", None), "-.", "#b71c1c"),
    ]
    labelled: set[float] = set()
    for band in bands:
        if band.baseline is None or band.baseline <= 0:
            continue
        for fraction, style, colour in levels:
            if fraction is None:
                continue
            level = band.baseline * (1 - fraction)
            label = None if fraction in labelled else f"{fraction:.0%} improvement on the line baseline"
            labelled.add(fraction)
            ax.hlines(level, band.start, band.end, colors=colour, linestyles=style, lw=1.3, label=label)


def _draw_pain(ax: Any, entries: Sequence[AuditEntry]) -> None:
    points = [(e.at, e.payload["pain"]) for e in entries if isinstance(e.payload.get("pain"), (int, float))]
    if not points:
        return
    times, pains = zip(*points, strict=True)
    ax.plot(times, pains, "-o", color="#263238", lw=2.2, ms=6, label="pain", zorder=5)
    for at, pain in points:
        ax.annotate(f"{pain:g}", (at, pain), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)


def _draw_events(ax: Any, entries: Sequence[AuditEntry]) -> None:
    shown: set[str] = set()
    for entry in entries:
        changed = entry.config_before != entry.config_after
        label = None if entry.event in shown else f"event: {entry.event}"
        shown.add(entry.event)
        ax.plot(
            [entry.at],
            [_EVENT_ROW],
            marker=_EVENT_MARKERS.get(entry.event, "X"),
            ls="none",
            color="#37474f" if changed else "#90a4ae",
            ms=7,
            label=label,
            clip_on=False,
        )
        if changed:
            ax.axvline(entry.at, color="#37474f", lw=0.6, ls=(0, (2, 3)), zorder=1)


def _style(ax: Any, first: AuditEntry, definition: Pathway) -> None:
    import matplotlib.dates as mdates

    ax.set_ylim(-0.3, 11.5)
    ax.set_yticks(range(0, 11))
    ax.set_ylabel("pain (0-10)")
    ax.set_title(f"{first.patient_id}: {definition.name} v{definition.version}", loc="left", fontweight="bold")
    locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]  # unannotated in matplotlib
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]  # as above
    ax.grid(axis="y", color="#cfd8dc", lw=0.5)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
