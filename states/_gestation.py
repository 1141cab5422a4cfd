"""Named functions for gestation, used where a definition file cannot compute it (see `functions.py`).

Kept generic: any pathway with the patient factors `due_date` or `pregnancy_weeks` can use them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from ._functions import input_function

__all__ = ["FULL_TERM_WEEKS", "LAST_GESTATION_WEEK", "gestation_weeks"]

FULL_TERM_WEEKS = 40  # a due date is 40 weeks of gestation
LAST_GESTATION_WEEK = 42  # beyond this the pregnancy is taken to have ended (the factor should be updated)
WEEK = timedelta(weeks=1)


@input_function("gestation_weeks")
def gestation_weeks(payload: BaseModel, context: Mapping[str, Any], at: datetime) -> float | None:
    """Weeks of pregnancy at `at`: from the factor `due_date`, else `pregnancy_weeks` advanced since it was recorded.

    The time a factor was recorded is `factors_at[name]` (set by an event that changes factors),
    else the enrolment time `enrolled_at`. None when not pregnant or past 42 weeks.
    """
    factors: Mapping[str, Any] = context.get("factors") or {}
    weeks: float | None = None
    if factors.get("due_date") is not None:
        due = date.fromisoformat(str(factors["due_date"]))
        weeks = FULL_TERM_WEEKS - (due - at.date()).days / 7
    elif factors.get("pregnancy_weeks") is not None:
        stamps: Mapping[str, Any] = context.get("factors_at") or {}
        recorded = stamps.get("pregnancy_weeks") or context.get("enrolled_at")
        elapsed = (at - datetime.fromisoformat(recorded)) / WEEK if recorded else 0.0
        weeks = float(factors["pregnancy_weeks"]) + elapsed
    if weeks is None or weeks > LAST_GESTATION_WEEK:
        return None
    return round(max(weeks, 0.0), 6)
