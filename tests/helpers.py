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


def terms(vocabulary: str, pathway: str = "piriformis", version: int = 1) -> list[str]:
    """The terms of one vocabulary of a registered definition."""
    from states import get_pathway

    return list(get_pathway(pathway, version).model.vocabulary[vocabulary].terms)
