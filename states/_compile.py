"""Turn a definition model into what runs: the statechart, the rules, the payload and policy models.

The chart is generated from the states and the rules, so the transition graph exists once.
Each rule becomes one chart transition (several rules with the same source, target and event
share one), guarded by "this rule was decided":
- a target outside the source's top-level state leaves from that top-level state (an exit of a
  compound applies in every child: `treatment -> rediagnose`);
- a target inside the source state (`treatment -> first_line`) re-enters the target's region
  internally, leaving the other regions as they are (an override);
- a target that holds the source (`treatment` from `treatment`) is a stay: no transition in
  the rule's region;
- otherwise the transition goes from the source's ancestor that is the target's sibling
  (`first_line -> second_line`).
A schedule's region returns to its initial state on its `reset_on` events whenever the decided
rule keeps the patient inside the state holding that region.

Firing only for the decided rule also keeps SCXML's descendants-first priority from letting a
region's own transition shadow an exit from the parallel state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, create_model, model_validator

from ._guards import Condition, Decision, Guard, Rule
from ._model import ConditionSpec, FieldSpec, PathwayModel, RuleSpec
from ._payloads import Payload

if TYPE_CHECKING:
    from statemachine import StateChart

__all__ = [
    "build_chart",
    "build_enroll_payload",
    "build_payloads",
    "build_policy_model",
    "build_rules",
    "condition",
    "is_stay",
    "term_enum",
]

# -- rules -------------------------------------------------------------------------------------------


def condition(spec: ConditionSpec, term_sets: Mapping[str, tuple[str, ...]] | None = None) -> Condition:
    """A condition as the rules evaluate it; term lists become sets, a named term set its terms."""
    value = spec.value
    if isinstance(value, str) and term_sets and value in term_sets and spec.op in ("in",):
        value = frozenset(term_sets[value])
    elif isinstance(value, (list, tuple)):
        value = frozenset(value)
    return Condition(spec.input, spec.op, value, spec.policy)


def build_rules(model: PathwayModel) -> tuple[Rule, ...]:
    """The rules in evaluation order, as guards over named inputs."""
    return tuple(_rule(spec, model) for spec in model.rules)


def _rule(spec: RuleSpec, model: PathwayModel) -> Rule:
    guard = None
    if spec.when is not None:
        guard = Guard(tuple(tuple(condition(c, model.term_sets) for c in clause) for clause in spec.when.clauses()))
    sources = frozenset(spec.sources)
    return Rule(spec.name, spec.event, sources, spec.target, guard, dict(spec.outcome), spec.description)


def is_stay(rule: Rule | RuleSpec, parents: Mapping[str, str | None]) -> bool:
    """A rule whose target holds (or is) every source: the patient stays where they are."""
    sources = rule.sources
    return all(rule.target == source or rule.target in _ancestors(source, parents) for source in sources)


def _ancestors(state: str, parents: Mapping[str, str | None]) -> list[str]:
    found: list[str] = []
    parent = parents.get(state)
    while parent is not None:
        found.append(parent)
        parent = parents.get(parent)
    return found


# -- chart ---------------------------------------------------------------------------------------------


def _decided(names: frozenset[str], label: str) -> Callable[[Decision], bool]:
    def check(decision: Decision) -> bool:
        return decision.rule is not None and decision.rule.name in names

    check.__name__ = label
    return check


def _stays_within(holder: str, parents: Mapping[str, str | None], label: str) -> Callable[[Decision], bool]:
    def check(decision: Decision) -> bool:
        rule = decision.rule
        return rule is not None and (rule.target == holder or holder in _ancestors(rule.target, parents))

    check.__name__ = label
    return check


def _edge(rule: RuleSpec, source: str, parents: Mapping[str, str | None]) -> tuple[str, bool] | None:
    """(transition source, internal) for one rule source; None for a stay."""
    target = rule.target
    if target == source or target in _ancestors(source, parents):
        return None
    source_chain = [source, *_ancestors(source, parents)]
    if source in _ancestors(target, parents):
        return parents[target] or target, True  # into the source: re-enter the target's region
    target_chain = {target, *_ancestors(target, parents)}
    for i, state in enumerate(source_chain):
        parent = parents.get(state)
        if parent is None or parent in target_chain:
            return source_chain[i], False
    return source_chain[-1], False  # pragma: no cover  # the loop returns at the top level


def build_chart(model: PathwayModel) -> type[StateChart[Any]]:
    """The python-statemachine chart of a definition (strict: unknown events raise, errors propagate)."""
    # Imported here: commands that only read a snapshot and its plan never build a chart.
    from statemachine.io import create_machine_class_from_definition

    parents = model.parents()
    edges: dict[tuple[str, str, str, bool], list[str]] = {}
    for rule in model.rules:
        for source in rule.sources:
            edge = _edge(rule, source, parents)
            if edge is not None:
                origin, internal = edge
                edges.setdefault((origin, rule.event, rule.target, internal), []).append(rule.name)
    transitions: dict[str, list[dict[str, Any]]] = {}
    for (origin, event, target, internal), names in edges.items():
        label = "decided_" + "_or_".join(dict.fromkeys(names))
        transitions.setdefault(origin, []).append(
            {"target": target, "event": event, "internal": internal, "cond": _decided(frozenset(names), label)}
        )
    for schedule in model.schedules:
        if schedule.region is None:
            continue  # a plain timer: no chart states
        region = model.find_state(schedule.region)
        if region is None or not region.states:
            continue  # reported by the checks
        holder = parents.get(schedule.region) or schedule.region  # a top-level compound holds its own steps
        initial = next((s.id for s in region.states if s.initial), region.states[0].id if region.states else None)
        for child in region.states:
            for event in schedule.reset_on:
                transitions.setdefault(child.id, []).append(
                    {"target": initial, "event": event, "cond": _stays_within(holder, parents, f"stays_in_{holder}")}
                )
    states: dict[str, Any] = {spec.id: _state_definition(spec, transitions) for spec in model.states}
    chart = create_machine_class_from_definition(
        _class_name(model),
        states,
        allow_event_without_transition=False,
        catch_errors_as_events=False,
    )
    chart.__doc__ = model.title or model.name
    return chart


def _state_definition(spec: Any, transitions: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    definition: dict[str, Any] = {}
    if spec.initial:
        definition["initial"] = True
    if spec.final:
        definition["final"] = True
    if spec.parallel:
        definition["parallel"] = True
    if spec.states:
        definition["states"] = {child.id: _state_definition(child, transitions) for child in spec.states}
    if spec.id in transitions:
        by_event: dict[str, list[dict[str, Any]]] = {}
        for transition in transitions[spec.id]:
            by_event.setdefault(transition["event"], []).append({k: v for k, v in transition.items() if k != "event"})
        definition["on"] = by_event
    return definition


def _class_name(model: PathwayModel) -> str:
    words = model.name.replace("-", "_").split("_")
    return "".join(w.capitalize() for w in words) + f"V{model.version}Chart"


# -- payloads -----------------------------------------------------------------------------------------

_ENUMS: dict[tuple[str, tuple[str, ...]], type[StrEnum]] = {}


def term_enum(name: str, terms: tuple[str, ...]) -> type[StrEnum]:
    """One enum per vocabulary (shared by every model that uses it)."""
    key = (name, terms)
    if key not in _ENUMS:
        members = {term.upper(): term for term in terms}
        _ENUMS[key] = StrEnum(_camel(name), members)  # type: ignore[assignment]  # the functional API is typed as an instance
    return _ENUMS[key]


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", "_").split("_"))


def _unique_in(field: str) -> Callable[[list[Any]], list[Any]]:
    def unique(values: list[Any]) -> list[Any]:
        seen = set()
        for value in values:
            if value in seen:
                raise ValueError(f"{value} is listed twice in {field}")
            seen.add(value)
        return values

    return unique


def _field_type(name: str, spec: FieldSpec, model: PathwayModel) -> Any:
    bounds: dict[str, Any] = {k: v for k, v in (("ge", spec.min), ("le", spec.max)) if v is not None}
    if spec.type == "number":
        return Annotated[float, Field(allow_inf_nan=False, strict=True, **bounds)]
    if spec.type == "integer":
        return Annotated[int, Field(strict=True, **bounds)]
    if spec.type == "boolean":
        return StrictBool
    if spec.type == "text":
        return Annotated[str, Field(min_length=1, max_length=spec.max_length or 500)]
    if spec.type == "date":
        return date
    if spec.type == "factors":
        return _factors_model(model)
    vocabulary = model.vocabulary[spec.terms or ""]
    enum = term_enum(spec.terms or "", vocabulary.terms)
    if spec.type == "term":
        return enum
    return Annotated[list[enum], AfterValidator(_unique_in(name))]  # type: ignore[valid-type]


def _fields(specs: Mapping[str, FieldSpec], model: PathwayModel) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, spec in specs.items():
        kind = _field_type(name, spec, model)
        described = Field(description=spec.description) if spec.description else Field()
        if spec.required:
            fields[name] = (kind, described)
        elif spec.default is None:
            fields[name] = (kind | None, Field(None, description=spec.description or None))
        else:
            fields[name] = (kind, Field(spec.default, description=spec.description or None))
    return fields


def _factors_model(model: PathwayModel) -> type[Payload]:
    """The patient factors as an object (all optional): enrolment, and events that change them."""
    fields: dict[str, Any] = {
        name: (kind, Field(None, description=description)) for name, (kind, description) in _optional(model)
    }
    factors: type[Payload] = create_model(
        f"{_camel(model.name)}V{model.version}FactorChanges", __base__=Payload, __doc__="Patient factors.", **fields
    )
    return factors


def _optional(model: PathwayModel) -> list[tuple[str, tuple[Any, str | None]]]:
    return [
        (name, (_field_type(name, spec, model) | None, spec.description or None))
        for name, spec in model.factors.items()
    ]


def _terms_by_validators(specs: Mapping[str, FieldSpec], model: PathwayModel) -> dict[str, Any]:
    """Validators of term fields whose vocabulary depends on another field's value."""
    validators: dict[str, Any] = {}
    for name, spec in specs.items():
        if spec.terms_by is None:
            continue
        source, choices = spec.terms_by.field, dict(spec.terms_by.terms)

        def check(payload: Any, name: str = name, source: str = source, choices: dict[str, str] = choices) -> Any:
            value, chosen = getattr(payload, name), getattr(payload, source)
            key = getattr(chosen, "value", chosen)
            allowed = model.vocabulary[choices[key]].terms if key in choices else ()
            if value is not None and getattr(value, "value", value) not in allowed:
                raise ValueError(f"{name} {getattr(value, 'value', value)!r} is not a result of {source} {key!r}")
            return payload

        validators[f"_terms_of_{name}"] = model_validator(mode="after")(check)
    return validators


def build_payloads(model: PathwayModel) -> dict[str, type[Payload]]:
    """One strict payload model per event (unknown fields, terms and out-of-range numbers refused)."""
    return {
        event: create_model(
            f"{_camel(model.name)}{_camel(event)}Payload",
            __base__=Payload,
            __doc__=spec.description or f"The data of {event}.",
            __validators__=_terms_by_validators(spec.payload, model) or None,
            **_fields(spec.payload, model),
        )
        for event, spec in model.events.items()
    }


def build_enroll_payload(model: PathwayModel) -> type[Payload]:
    """Enrolment: the patient factors, all optional."""
    factors: type[Payload] = create_model(
        f"{_camel(model.name)}Factors", __base__=Payload, __doc__="Patient factors.", **_fields(model.factors, model)
    )
    extra: dict[str, Any] = {}
    if model.handover_from:  # where a handed-over patient came from, recorded with the enrolment
        extra["handover"] = (Handover | None, Field(None))
    enroll: type[Payload] = create_model(
        f"{_camel(model.name)}EnrollPayload",
        __base__=Payload,
        __doc__="Enrolment: the patient factors the plan is computed from.",
        factors=(factors, Field(default_factory=factors)),
        **extra,
    )
    return enroll


class Handover(Payload):
    """The enrolment a patient was handed over from: pathway, version, state and why it ended."""

    pathway: str
    version: int
    state: str
    reason: str | None = None


class PolicyBase(BaseModel):
    """Every number the rules compare against; a patient keeps the policy of its version."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def build_policy_model(model: PathwayModel) -> type[BaseModel]:
    """The policy model of a definition: one field per policy number, with its default and bounds."""
    fields: dict[str, Any] = {"version": (int, Field(model.version))}
    for name, spec in model.policy.items():
        kind: Any = int if isinstance(spec.default, int) and not isinstance(spec.default, bool) else float
        bounds: dict[str, Any] = {k: v for k, v in (("ge", spec.min), ("le", spec.max)) if v is not None}
        fields[name] = (kind, Field(spec.default, description=spec.description or None, **bounds))
    policy: type[BaseModel] = create_model(f"{_camel(model.name)}V{model.version}Policy", __base__=PolicyBase, **fields)
    return policy
