"""A patient on piriformis version 2, run through the pure definition (no database), for rule tests."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from states import Pathway, PlanItem, get_pathway
from tests.conftest import T0

WEEK = timedelta(weeks=1)
DAY = timedelta(days=1)
V2: Pathway = get_pathway("piriformis", 2)
# Buttock pain and all three classes (sitting, tenderness, tension test): meets the criteria.
FINDINGS = ["buttock_pain", "sitting_aggravation", "sciatic_notch_tenderness", "fair_test"]


def assess_v2(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "side": "left",
        "findings": list(FINDINGS),
        "pain": 8,
        "fasciculations": "present",
        "red_flags": [],
    }
    data.update(overrides)
    return data


def reassess_v2(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"pain": 6, "fasciculations": "stable", "red_flags": []}
    data.update(overrides)
    return data


def override_v2(to: str, pain: float, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "to": to,
        "pain": pain,
        "reason_code": "clinical_judgement",
        "reason": "test",
        "clinician": "dr",
    }
    data.update(overrides)
    return data


class Patient:
    """Configuration and context of one v2 patient; `send` applies an event at T0 + `after`."""

    def __init__(self, factors: dict[str, Any] | None = None, at: datetime = T0) -> None:
        self.configuration, self.context = V2.start(V2.validate_enrollment({"factors": factors or {}}), at)
        self.rule: str | None = None

    def send(self, event: str, after: timedelta = timedelta(0), data: dict[str, Any] | None = None) -> str | None:
        step = V2.apply(self.configuration, self.context, event, V2.validate(event, data or {}), T0 + after)
        self.configuration, self.context = step.configuration_after, step.context
        self.rule = step.decision.rule.name if step.decision and step.decision.rule else None
        return self.rule

    def assess(self, after: timedelta = timedelta(0), **data: Any) -> str | None:
        return self.send("assess", after, assess_v2(**data))

    def reassess(self, after: timedelta, **data: Any) -> str | None:
        return self.send("reassess", after, reassess_v2(**data))

    def override(self, after: timedelta, to: str, pain: float) -> str | None:
        return self.send("override", after, override_v2(to, pain))

    @property
    def state(self) -> str:
        return V2.state_name(self.configuration)

    @property
    def outcome(self) -> dict[str, Any] | None:
        return V2.outcome(self.configuration, self.context)

    def plan(self) -> list[PlanItem]:
        return V2.plan(self.configuration, self.context)

    def item(self, item_id: str) -> PlanItem:
        found = [i for i in self.plan() if i.id == item_id]
        assert found, f"{item_id} not in the plan of {self.state}"
        return found[0]

    def has(self, item_id: str) -> bool:
        return any(i.id == item_id for i in self.plan())


def in_line(line: str, pain: float = 8, factors: dict[str, Any] | None = None, **assess: Any) -> Patient:
    """A patient diagnosed at T0 with pain `pain`, moved to `line` at T0 (override at the same pain)."""
    patient = Patient(factors)
    patient.assess(pain=pain, **assess)
    if line != "first_line":
        patient.override(timedelta(0), line, pain)
    return patient
