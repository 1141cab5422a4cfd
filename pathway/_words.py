"""Terms, outcomes and numbers as words, for views: `red_flags=['cauda_equina']` reads
"red flag: cauda equina (emergency)". Nothing here names a pathway's terms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from persistence import AuditEntry

    from ._engine import Status

__all__ = ["number_text", "outcome_text", "term_text", "why_here"]


def term_text(term: Any) -> str:
    """A vocabulary term as words: `suspected_lumbar_radiculopathy` -> "suspected lumbar radiculopathy"."""
    if isinstance(term, bool):
        return "yes" if term else "no"
    if isinstance(term, (int, float)):
        return number_text(term)
    return str(term).replace("_", " ")


def number_text(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def outcome_text(outcome: Mapping[str, Any]) -> str:
    """Why a patient left the pathway, in words: the reason, then the terms it lists, then the rest in brackets.

    {reason: red_flag, urgency: emergency, red_flags: [cauda_equina]} -> "red flag: cauda equina (emergency)".
    """
    reason = outcome.get("reason")
    listed = [
        term_text(t) for key, value in outcome.items() if key != "reason" and isinstance(value, list) for t in value
    ]
    others = [
        term_text(value)
        for key, value in outcome.items()
        if key != "reason" and value not in (None, "") and not isinstance(value, (list, dict))
    ]
    text = term_text(reason) if reason not in (None, "") else ""
    if listed:
        text = f"{text}: {', '.join(listed)}" if text else ", ".join(listed)
    if others:
        text = f"{text} ({', '.join(others)})" if text else ", ".join(others)
    return text or "-"


def why_here(status: Status, entries: Sequence[AuditEntry], now: datetime) -> list[str]:
    """Why the patient is where they are, from the definition's timeline hints (nothing without them):
    the stage start and baseline, the last value of the plotted input, the weeks since the episode start."""
    hints = status.definition.presentation.timeline
    if hints is None:
        return []
    context = status.context
    lines: list[str] = []
    started = _time(context.get(hints.started)) if hints.started else None
    baseline = context.get(hints.baseline) if hints.baseline else None
    name = term_text(hints.input)
    if started is not None and status.outcome is None:
        stage = f"in {term_text(status.state)} since {started:%Y-%m-%d} ({_weeks(now - started)})"
        if _is_number(baseline):
            stage += f", baseline {name} {term_text(baseline)}"
        lines.append(stage)
    last = next((e for e in reversed(entries) if _is_number(e.payload.get(hints.input))), None)
    if last is not None:
        lines.append(f"last {name} {number_text(last.payload[hints.input])} on {last.at:%Y-%m-%d}")
    episode = _time(context.get(hints.episode_started)) if hints.episode_started else None
    if episode is not None:
        lines.append(f"{_weeks(now - episode)} since diagnosis ({episode:%Y-%m-%d})")
    return lines


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _weeks(span: timedelta) -> str:
    weeks = max(span, timedelta(0)) / timedelta(weeks=1)
    return f"{weeks:.1f} weeks"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
