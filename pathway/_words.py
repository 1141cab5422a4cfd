"""Terms, outcomes and numbers as words, for views: `red_flags=['cauda_equina']` reads
"red flag: cauda equina (emergency)". Nothing here names a pathway's terms."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["number_text", "outcome_text", "term_text"]


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
