"""The JSON documents of the cohort views and of the registered definitions, as `list --json`,
`due --json` and `pathways --json` print them and the HTTP server answers them: built in one place."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._explain import CohortRow

__all__ = ["cohort_document", "definitions_document", "due_actions", "due_document"]


def cohort_document(
    at: datetime, state: str | None, rows: Iterable[CohortRow], counts: Mapping[str, int]
) -> dict[str, Any]:
    """The `list` view: enrolments (in `state`, if given) at `at`, with the counts per state."""
    listed = list(rows)
    return {
        "at": at.isoformat(),
        "state": state,
        "counts": dict(counts),
        "total": sum(counts.values()),
        "overdue": sum(row.overdue for row in listed),
        "patients": [row.to_json() for row in listed],
    }


def due_actions(rows: Iterable[CohortRow]) -> dict[str, int]:
    """How many due enrolments a tick would move by each action ("nothing" where it would not)."""
    actions: dict[str, int] = {}
    for row in rows:
        key = row.tick or "nothing"
        actions[key] = actions.get(key, 0) + 1
    return actions


def due_document(at: datetime, rows: Iterable[CohortRow]) -> dict[str, Any]:
    """The `due` view: the enrolments a tick at `at` could change, and what it would do."""
    listed = list(rows)
    return {
        "at": at.isoformat(),
        "count": len(listed),
        "actions": due_actions(listed),
        "patients": [row.to_json() for row in listed],
    }


def definitions_document() -> list[dict[str, Any]]:
    """Every registered definition: name, version, title, review status, reviewer, date, events."""
    from states import get_pathway, pathways

    rows: list[dict[str, Any]] = []
    for name, version in pathways():
        definition = get_pathway(name, version)
        review = definition.review
        rows.append(
            {
                "pathway": name,
                "version": version,
                "title": definition.model.title,
                "review": review.status,
                "reviewer": review.reviewer,
                "date": review.date.isoformat() if review.date else None,
                "events": definition.event_names(),
            }
        )
    return rows
