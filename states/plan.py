"""Plan items: what the engine recommends in a state, with a status per patient and why."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "Code",
    "ItemStatus",
    "PlanItem",
    "PlanTemplate",
    "StatusRule",
]


class ItemStatus(StrEnum):
    """How an item applies to this patient, from least to most severe."""

    RECOMMENDED = "recommended"
    NOT_INDICATED = "not_indicated"
    CAUTION = "caution"
    CONTRAINDICATED = "contraindicated"


_SEVERITY = {
    ItemStatus.RECOMMENDED: 0,
    ItemStatus.NOT_INDICATED: 1,
    ItemStatus.CAUTION: 2,
    ItemStatus.CONTRAINDICATED: 3,
}


class Code(BaseModel):
    """A coded concept in a terminology (RxNorm, CPT, ICD-10-CM, LOINC)."""

    model_config = ConfigDict(frozen=True)

    system: Literal["RxNorm", "CPT", "ICD-10-CM", "LOINC"]
    code: str
    display: str


class PlanItem(BaseModel):
    """One recommendation as it applies to one patient."""

    model_config = ConfigDict(frozen=True)

    id: str
    text: str
    category: str
    codes: list[Code] = []
    source: str
    status: ItemStatus = ItemStatus.RECOMMENDED
    reasons: list[str] = []


@dataclass(frozen=True)
class StatusRule:
    """A status that applies to an item when `applies(facts)` holds, with the reason shown."""

    status: ItemStatus
    reason: str
    applies: Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class PlanTemplate:
    """An item as written in the source, with the rules that adjust it to a patient."""

    id: str
    text: str
    category: str
    source: str
    codes: tuple[Code, ...] = ()
    rules: tuple[StatusRule, ...] = field(default_factory=tuple)

    def for_patient(self, facts: dict[str, Any]) -> PlanItem:
        """The item for a patient: the most severe applicable status wins, every reason listed."""
        hits = [rule for rule in self.rules if rule.applies(facts)]
        status = max((r.status for r in hits), key=_SEVERITY.__getitem__, default=ItemStatus.RECOMMENDED)
        return PlanItem(
            id=self.id,
            text=self.text,
            category=self.category,
            codes=list(self.codes),
            source=self.source,
            status=status,
            reasons=[r.reason for r in hits],
        )


def build_plan(templates: Sequence[PlanTemplate], facts: dict[str, Any]) -> list[PlanItem]:
    """Every template applied to the patient's facts, in order."""
    return [t.for_patient(facts) for t in templates]
