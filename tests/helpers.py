"""Small builders for event data, so tests state only what matters to them."""

from __future__ import annotations

from typing import Any

# Buttock pain, three supporting findings of which two special tests: meets the criteria.
TYPICAL_FINDINGS = ["buttock_pain", "sitting_aggravation", "fair_test", "pace_sign"]


def assess_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"findings": list(TYPICAL_FINDINGS), "pain": 8, "fasciculations": "present", "red_flags": []}
    data.update(overrides)
    return data


def reassess_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"pain": 6, "fasciculations": "stable", "red_flags": []}
    data.update(overrides)
    return data
