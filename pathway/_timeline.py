"""A patient's course at a glance: a measure over time on coloured state bands, events and thresholds.

What is drawn comes from the definition's presentation hints: the payload field plotted and
its scale, the colour of each state, the policy levels and the improvement levels below each
stage's baseline. The states come from the audit entries' recorded configurations; each
stage's baseline comes from re-applying the recorded events on the definition (the same rules
the engine ran), so improvement levels are drawn where the guards measured them. matplotlib is
imported only when a plot is drawn, through a bare Figure (Agg), never pyplot's global state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from carepath.errors import Category
from persistence import AuditEntry
from states import Pathway, StatesError
from states._model import TimelineHints

from ._errors import CarepathError
from ._extras import require
from ._hints import FALLBACK_COLOURS
from ._replay import stored_payload

__all__ = ["TimelineError", "plot_timeline"]

# Enrolment, then the definition's events in the order it lists them.
_ENROL_MARKER = "*"
_EVENT_MARKERS = ("D", "o", "v", "^", "s", "X", "P", "h", "<", ">")
# Styles of the improvement levels, in the order the hints list them.
_IMPROVEMENT_STYLES = ((":", "#e65100"), ("-.", "#b71c1c"), ("--", "#4a148c"), ((0, (1, 1)), "#880e4f"))
_LEVEL_COLOUR = "#1b5e20"
# Without timeline hints: nothing is plotted, on a 0-10 scale.
_NO_HINTS = TimelineHints(input="", label="")


class TimelineError(CarepathError):
    """Raised when a timeline cannot be drawn (no audit entries to draw)."""

    code = "empty_timeline"
    category = Category.INVALID_INPUT


@dataclass(frozen=True)
class _Band:
    state: str
    start: datetime
    end: datetime
    baseline: float | None


def plot_timeline(
    entries: Sequence[AuditEntry], definition: Pathway, path: str | Path, *, until: datetime | None = None
) -> Path:
    """Draw the patient's measure, states, events and thresholds to `path` (format from its suffix)."""
    if not entries:
        raise TimelineError("no audit entries: nothing to draw")
    require("matplotlib", "drawing a timeline")
    from matplotlib.figure import Figure  # lazily: importing matplotlib costs the CLI's cold start

    target = Path(path)
    end = until or entries[-1].at + max(timedelta(weeks=2), (entries[-1].at - entries[0].at) * 0.05)
    fig = Figure(figsize=(11, 5.5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    hints = definition.presentation.timeline or _NO_HINTS
    bands = _bands(entries, definition, end, hints)
    _draw_bands(ax, bands, definition.presentation.colours)
    _draw_thresholds(ax, bands, definition.policy, hints)
    _draw_measure(ax, entries, hints)
    _draw_events(ax, entries, definition, hints)
    _style(ax, entries[0], definition, hints)
    fig.legend(loc="outside lower center", ncols=6, fontsize=8, frameon=False)
    fig.savefig(target)
    return target


def _bands(entries: Sequence[AuditEntry], definition: Pathway, end: datetime, hints: TimelineHints) -> list[_Band]:
    """Spans of time in one state (a new stage, even of the same name, starts a new span)."""
    contexts = _replayed_contexts(entries, definition)
    bands: list[_Band] = []
    for entry, context in zip(entries, contexts, strict=True):
        if not entry.config_after:
            continue
        state = definition.state_name(entry.config_after)
        baseline = _context_value(context, hints.baseline)
        started = _context_value(context, hints.started)
        last = bands[-1] if bands else None
        new_stage = started is not None and started == entry.at.isoformat() and baseline is not None
        if last is not None and last.state == state and not new_stage:
            continue
        if last is not None:
            bands[-1] = _Band(last.state, last.start, entry.at, last.baseline)
        bands.append(_Band(state, entry.at, end, baseline))
    return bands


def _context_value(context: dict[str, Any] | None, key: str | None) -> Any:
    return context.get(key) if context is not None and key is not None else None


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


def _draw_bands(ax: Any, bands: Sequence[_Band], colours: dict[str, str]) -> None:
    seen: set[str] = set()
    for band in bands:
        colour = colours.get(band.state) or FALLBACK_COLOURS[len(seen) % len(FALLBACK_COLOURS)]
        label = None if band.state in seen else band.state
        seen.add(band.state)
        ax.axvspan(band.start, band.end, color=colour, alpha=0.45, lw=0, label=label)


def _draw_thresholds(ax: Any, bands: Sequence[_Band], policy: Any, hints: TimelineHints) -> None:
    for field, label in hints.levels.items():
        value = getattr(policy, field, None)
        if value is not None:
            ax.axhline(value, color=_LEVEL_COLOUR, ls="--", lw=1.4, label=label.format(value=value))
    levels = [
        (getattr(policy, field, None), label, *_IMPROVEMENT_STYLES[i % len(_IMPROVEMENT_STYLES)])
        for i, (field, label) in enumerate(hints.improvements.items())
    ]
    labelled: set[str] = set()
    for band in bands:
        if band.baseline is None or band.baseline <= 0:
            continue
        for fraction, label, style, colour in levels:
            if fraction is None:
                continue
            level = band.baseline * (1 - fraction)
            text = label.format(value=fraction)
            ax.hlines(
                level,
                band.start,
                band.end,
                colors=colour,
                linestyles=style,
                lw=1.3,
                label=None if text in labelled else text,
            )
            labelled.add(text)


def _draw_measure(ax: Any, entries: Sequence[AuditEntry], hints: TimelineHints) -> None:
    field = hints.input
    points = [
        (e.at, e.payload[field])
        for e in entries
        if isinstance(e.payload.get(field), (int, float)) and not isinstance(e.payload.get(field), bool)
    ]
    if not points:
        return
    times, values = zip(*points, strict=True)
    ax.plot(times, values, "-o", color="#263238", lw=2.2, ms=6, label=field, zorder=5)
    for at, value in points:
        ax.annotate(f"{value:g}", (at, value), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)


def _draw_events(ax: Any, entries: Sequence[AuditEntry], definition: Pathway, hints: TimelineHints) -> None:
    markers = {"enroll": _ENROL_MARKER}
    for i, event in enumerate(definition.model.events):
        markers[event] = _EVENT_MARKERS[i % len(_EVENT_MARKERS)]
    low, high = hints.scale
    row = high + 0.09 * (high - low)  # events sit in a row above the scale
    shown: set[str] = set()
    for entry in entries:
        changed = entry.config_before != entry.config_after
        label = None if entry.event in shown else f"event: {entry.event}"
        shown.add(entry.event)
        ax.plot(
            [entry.at],
            [row],
            marker=markers.get(entry.event, "X"),
            ls="none",
            color="#37474f" if changed else "#90a4ae",
            ms=7,
            label=label,
            clip_on=False,
        )
        if changed:
            ax.axvline(entry.at, color="#37474f", lw=0.6, ls=(0, (2, 3)), zorder=1)


def _style(ax: Any, first: AuditEntry, definition: Pathway, hints: TimelineHints) -> None:
    import matplotlib.dates as mdates
    from matplotlib.ticker import MaxNLocator

    low, high = hints.scale
    span = high - low
    ax.set_ylim(low - 0.03 * span, high + 0.15 * span)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=11, integer=span >= 5))
    ax.set_ylabel(hints.label)
    ax.set_title(f"{first.patient_id}: {definition.name} v{definition.version}", loc="left", fontweight="bold")
    locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]  # unannotated in matplotlib
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]  # as above
    ax.grid(axis="y", color="#cfd8dc", lw=0.5)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
