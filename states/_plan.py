"""Plan items: what the engine recommends in a state, with a status per patient and why."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from ._compile import condition
from ._guards import Condition

if TYPE_CHECKING:
    from ._model import PathwayModel, PlanItemSpec, StatusRuleSpec

__all__ = [
    "Code",
    "ItemStatus",
    "PlanBook",
    "PlanItem",
    "PlanTemplate",
    "Referral",
    "StatusRule",
]


class ItemStatus(StrEnum):
    """How an item applies to this patient."""

    RECOMMENDED = "recommended"
    CONTINUE = "continue"  # carried forward from an earlier stage
    ALERT = "alert"  # an action to take now
    CAUTION = "caution"  # use with care
    NOT_INDICATED = "not_indicated"  # a condition of the item is not met
    AVOID = "avoid"  # better alternatives exist (Beers-type)
    CONTRAINDICATED = "contraindicated"
    DO_NOT = "do_not"  # a recommendation against doing something


# The status shown when several apply: the most severe. Items of the first version never combine
# `not_indicated` with `caution`, so ordering those two does not change any earlier plan.
_SEVERITY = {status: rank for rank, status in enumerate(ItemStatus)}


class Code(BaseModel):
    """A coded concept in a terminology (RxNorm, CPT, ICD-10-CM, LOINC)."""

    model_config = ConfigDict(frozen=True)

    system: Literal["RxNorm", "CPT", "ICD-10-CM", "LOINC", "SNOMED CT"]
    code: str
    display: str


class Referral(BaseModel):
    """A referral an item asks for: the specialty, the time frame, the request priority."""

    model_config = ConfigDict(frozen=True)

    specialty: str
    within: str
    priority: Literal["routine", "urgent", "asap", "stat"] = "routine"


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
    referral: Referral | None = None

    @model_serializer(mode="wrap")
    def _without_empty_referral(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Items that ask for no referral keep the shape they always had."""
        data: dict[str, Any] = handler(self)
        if data.get("referral", 0) is None:
            del data["referral"]
        return data


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
    referral: Referral | None = None

    def for_patient(self, facts: dict[str, Any], base: ItemStatus = ItemStatus.RECOMMENDED) -> PlanItem:
        """The item for a patient: the most severe applicable status wins (at least `base`), every reason listed."""
        hits = [rule for rule in self.rules if rule.applies(facts)]
        status = max((base, *(r.status for r in hits)), key=_SEVERITY.__getitem__)
        extra: dict[str, Any] = {"referral": self.referral} if self.referral is not None else {}
        return PlanItem(
            id=self.id,
            text=self.text,
            category=self.category,
            codes=list(self.codes),
            source=self.source,
            status=status,
            reasons=[r.reason for r in hits],
            **extra,
        )


def build_plan(templates: Sequence[PlanTemplate], facts: dict[str, Any]) -> list[PlanItem]:
    """Every template applied to the patient's facts, in order."""
    return [t.for_patient(facts) for t in templates]


class PlanBook:
    """The plan sections of a definition model, ready to apply to a patient.

    The reported state's items come first, then those of the other active states in document
    order; an item shows when its `show_when` conditions hold on the patient's facts
    (`factors.<name>`, `context.<key>`, `outcome.<key>`).
    """

    def __init__(self, model: PathwayModel) -> None:
        self._sections: dict[str, tuple[tuple[PlanTemplate, tuple[Condition, ...]], ...]] = {
            state: tuple((_template(item), tuple(condition(c) for c in item.show_when)) for item in items)
            for state, items in model.plan.items()
        }
        self._factor_defaults = {name: spec.default for name, spec in model.factors.items()}
        self._carry = dict(model.plan_carry)

    def items(self, state: str, configuration: Sequence[str], context: Mapping[str, Any]) -> list[PlanItem]:
        facts = self.facts(context)
        ordered = [state, *(s for s in configuration if s != state)]
        sections = [(s, ItemStatus.RECOMMENDED) for s in ordered]
        for section in ordered:  # items carried forward from earlier states come after the state's own
            sections += [(carried, ItemStatus.CONTINUE) for carried in self._carry.get(section, ())]
        return [
            template.for_patient(facts, base)
            for section, base in sections
            for template, shown in self._sections.get(section, ())
            if all(c.holds(facts, _NO_POLICY) for c in shown)
        ]

    def facts(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """The patient's facts under dotted names, factors with their defaults filled in."""
        facts: dict[str, Any] = {f"factors.{k}": v for k, v in self._factor_defaults.items()}
        facts.update({f"factors.{k}": v for k, v in (context.get("factors") or {}).items()})
        facts.update({f"context.{k}": v for k, v in context.items() if k != "factors"})
        facts.update({f"outcome.{k}": v for k, v in (context.get("outcome") or {}).items()})
        return facts


class _NoPolicy(BaseModel):
    """Plan conditions compare facts with literals only."""


_NO_POLICY = _NoPolicy()


def _template(spec: PlanItemSpec) -> PlanTemplate:
    return PlanTemplate(
        spec.id,
        spec.text,
        spec.category,
        spec.source,
        tuple(Code(system=c.system, code=c.code, display=c.display) for c in spec.codes),
        tuple(_status_rule(rule) for rule in spec.rules),
        Referral(**spec.referral.model_dump()) if spec.referral is not None else None,
    )


def _status_rule(spec: StatusRuleSpec) -> StatusRule:
    conditions = tuple(condition(c) for c in spec.when)
    return StatusRule(
        ItemStatus(spec.status), spec.reason, lambda facts: all(c.holds(facts, _NO_POLICY) for c in conditions)
    )
