"""Checks of a definition model, run when it is registered (and by `carepath check`), so a broken
definition fails before it meets a patient. Every problem is reported at once, with its place.

python-statemachine already refuses disconnected top-level states and top-level traps; these
checks add what it cannot know:
- every state, nested ones included, can reach a top-level final state;
- every rule names a known event, existing source and target states, inputs produced for its
  event, policy fields that exist and vocabulary terms the definition defines; and, run on the
  generated chart from each of its sources, the rule really reaches its target;
- inputs, updates, schedules, plan sections and presentation hints name real states, events,
  payload fields, context keys and policy fields.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel

from ._errors import DefinitionError
from ._guards import Decision, Rule
from ._model import ConditionSpec, PathwayModel, RuleSpec

__all__ = ["check_model", "model_problems", "states_without_end"]


def check_model(model: PathwayModel) -> None:
    """Raise DefinitionError listing every problem of `model`; return quietly when there is none."""
    problems = model_problems(model)
    if problems:
        raise DefinitionError(model.name, model.version, problems)


def model_problems(model: PathwayModel) -> list[str]:
    """Every problem found in `model`, as one readable line each, prefixed by where it is."""
    problems = _structure_problems(model)
    if problems:
        return problems  # the chart cannot be built from a broken structure
    from ._compile import build_chart, build_rules

    try:
        chart = build_chart(model)
    except Exception as err:  # the statechart library's own refusal, in its words
        return [f"states: {' '.join(str(err).split())}"]
    problems += [f"states.{state}: cannot reach a final state" for state in states_without_end(chart)]
    rules = build_rules(model)
    problems += _reach_problems(model, chart, rules)
    problems += _shadow_problems(rules, model.parents())
    return problems


def _structure_problems(model: PathwayModel) -> list[str]:
    state_ids = model.state_ids()
    states = set(state_ids)
    problems = [f"states: {s!r} is defined twice" for s in sorted({s for s in state_ids if state_ids.count(s) > 1})]
    if sum(1 for s in model.states if s.initial) != 1:
        problems.append("states: exactly one top-level state is initial")
    if not any(s.final for s in model.states):
        problems.append("states: no top-level final state")
    problems += [f"status_regions: unknown state {r!r}" for r in model.status_regions if r not in states]
    problems += _vocabulary_problems(model)
    problems += _event_problems(model, states)
    for i, rule in enumerate(model.rules):
        problems += _rule_problems(f"rules[{i}] ({rule.name})", rule, model, states)
    names = [rule.name for rule in model.rules]
    problems += [f"rules: name {n!r} is used twice" for n in sorted({n for n in names if names.count(n) > 1})]
    problems += _update_problems(model, states)
    problems += _schedule_problems(model, states)
    problems += _plan_problems(model, states)
    problems += _presentation_problems(model, states)
    for i, migration in enumerate(model.migrations):
        problems += [
            f"migrations[{i}].states: unknown state {new!r}" for new in migration.states.values() if new not in states
        ]
    return problems


def _vocabulary_problems(model: PathwayModel) -> list[str]:
    problems: list[str] = []
    for name, terms in model.term_sets.items():
        problems += [f"term_sets.{name}: undefined term {t!r}" for t in terms if t not in _terms(model)]
    for where, fields in [
        ("factors", model.factors),
        *((f"events.{e}.payload", s.payload) for e, s in model.events.items()),
    ]:
        for field, spec in fields.items():
            if spec.terms is not None and spec.terms not in model.vocabulary:
                problems.append(f"{where}.{field}: unknown vocabulary {spec.terms!r}")
    return problems


def _terms(model: PathwayModel) -> set[str]:
    return {term for vocabulary in model.vocabulary.values() for term in vocabulary.terms}


def _event_problems(model: PathwayModel, states: set[str]) -> list[str]:
    problems: list[str] = []
    for event, spec in model.events.items():
        where = f"events.{event}"
        problems += [f"{where}.idle_in: unknown state {s!r}" for s in spec.idle_states() if s not in states]
        for field, fspec in spec.payload.items():
            if fspec.terms_by is not None:
                if fspec.terms_by.field not in spec.payload:
                    problems.append(
                        f"{where}.payload.{field}.terms_by: {event} has no payload field {fspec.terms_by.field!r}"
                    )
                problems += [
                    f"{where}.payload.{field}.terms_by: unknown vocabulary {v!r}"
                    for v in fspec.terms_by.terms.values()
                    if v not in model.vocabulary
                ]
        problems += _input_problems(where, spec.inputs, spec.payload, model)
    derived_kinds = {"context", "weeks_since", "recent", "function"}
    for name, source in model.derived.items():
        if name not in model.context:
            problems.append(f"derived.{name}: unknown context key {name!r} (declare it under `context`)")
        if source.kind not in derived_kinds:
            problems.append(f"derived.{name}: a derived value reads no payload ({', '.join(sorted(derived_kinds))})")
    problems += _input_problems("derived", model.derived, {}, model)
    return problems


def _input_problems(
    where: str, inputs: Mapping[str, Any], payload: Mapping[str, Any], model: PathwayModel
) -> list[str]:
    problems: list[str] = []
    earlier: set[str] = set()
    for name, source in inputs.items():
        for field in (source.payload, source.count, source.classes, source.has, source.value):
            if field is not None and field not in payload:
                problems.append(f"{where}.inputs.{name}: the event has no payload field {field!r}")
        keys = [source.context, source.weeks_since, source.improvement, source.fall, source.rise, source.plus]
        keys += [source.streak, source.streak_weeks, source.recent, source.otherwise]
        for key in keys:
            if key is not None and key not in model.context:
                problems.append(f"{where}.inputs.{name}: unknown context key {key!r}")
        for field in (source.min_baseline, source.within):
            if field is not None and field not in model.policy:
                problems.append(f"{where}.inputs.{name}: policy has no field {field!r}")
        if source.kind in ("streak", "streak_weeks"):
            if source.of not in earlier:
                problems.append(f"{where}.inputs.{name}: {source.of!r} is not an input listed before it")
        elif isinstance(source.of, str) and source.of not in model.term_sets:
            problems.append(f"{where}.inputs.{name}: unknown term set {source.of!r}")
        for condition in source.holds or ():
            problems += _condition_problems(f"{where}.inputs.{name}", condition, earlier, model, "before it")
        if source.function is not None:
            from ._functions import registered_functions

            if source.function not in registered_functions():
                problems.append(f"{where}.inputs.{name}: no function named {source.function!r} is registered")
        earlier.add(name)
    return problems


def _rule_problems(where: str, rule: RuleSpec, model: PathwayModel, states: set[str]) -> list[str]:
    problems: list[str] = []
    event = model.events.get(rule.event)
    if event is None:
        problems.append(f"{where}: unknown event {rule.event!r} (every event needs a payload schema under `events`)")
    problems += [f"{where}: unknown source state {s!r}" for s in rule.sources if s not in states]
    if rule.target not in states:
        problems.append(f"{where}: unknown target state {rule.target!r}")
    produced = set(event.inputs) if event is not None else set()
    for condition in _conditions(rule):
        problems += _condition_problems(where, condition, produced, model, f"for {rule.event!r}")
    return problems


def _condition_problems(
    where: str, condition: ConditionSpec, produced: set[str], model: PathwayModel, scope: str
) -> list[str]:
    problems: list[str] = []
    if condition.input not in produced:
        problems.append(f"{where}: input {condition.input!r} is not produced {scope}")
    if condition.policy is not None and condition.policy not in model.policy:
        problems.append(f"{where}: policy has no field {condition.policy!r}")
    defined = _terms(model) | set(model.term_sets)
    problems += [f"{where}: undefined term {term!r}" for term in sorted(_terms_in(condition) - defined)]
    return problems


def _conditions(rule: RuleSpec) -> Iterator[ConditionSpec]:
    if rule.when is not None:
        for clause in rule.when.clauses():
            yield from clause


def _terms_in(condition: ConditionSpec) -> set[str]:
    """The vocabulary terms a condition compares with: its string thresholds."""
    value = condition.value
    if isinstance(value, str):
        return {value}
    if isinstance(value, (list, tuple)):
        return {v for v in value if isinstance(v, str)}
    return set()


def _update_problems(model: PathwayModel, states: set[str]) -> list[str]:
    problems: list[str] = []
    rule_names = {rule.name for rule in model.rules}
    for i, update in enumerate(model.updates):
        where = f"updates[{i}]"
        problems += [f"{where}.events: unknown event {e!r}" for e in update.events if e not in model.events]
        problems += [f"{where}.entering: unknown state {s!r}" for s in update.entering or () if s not in states]
        problems += [f"{where}.rules: unknown rule {r!r}" for r in update.rules or () if r not in rule_names]
        for key in (*update.set, *update.count, *update.record, *update.streak, *update.append):
            if key not in model.context:
                problems.append(f"{where}: unknown context key {key!r} (declare it under `context`)")
        produced = set().union(*(set(model.events[e].inputs) for e in update.events if e in model.events))
        for condition in update.when:
            problems += _condition_problems(f"{where}.when", condition, produced, model, "by its events")
        for key, condition in update.count.items():
            problems += _condition_problems(f"{where}.count.{key}", condition, produced, model, "by its events")
        problems += [
            f"{where}.streak.{key}: input {flag!r} is not produced by its events"
            for key, flag in update.streak.items()
            if flag not in produced
        ]
        expressions = [*update.set.values(), *(v for r in update.record.values() for v in r.values())]
        expressions += [*update.append.values(), update.set_factors, update.clear_factors]
        for expression in expressions:
            problems += _expression_problems(where, expression, update.events, model)
    return problems


def _expression_problems(where: str, expression: Any, events: tuple[str, ...], model: PathwayModel) -> list[str]:
    if not isinstance(expression, str):
        return []
    if expression.startswith("payload."):
        field = expression.removeprefix("payload.")
        missing = [e for e in events if e in model.events and field not in model.events[e].payload]
        return [f"{where}: {e} has no payload field {field!r}" for e in missing]
    if expression.startswith("context.") and expression.removeprefix("context.") not in model.context:
        return [f"{where}: unknown context key {expression.removeprefix('context.')!r}"]
    return []


def _schedule_problems(model: PathwayModel, states: set[str]) -> list[str]:
    problems: list[str] = []
    parents = model.parents()
    for i, schedule in enumerate(model.schedules):
        where = f"schedules[{i}]"
        if schedule.since not in model.context:
            problems.append(f"{where}.since: unknown context key {schedule.since!r}")
        if schedule.region is None:
            problems += [f"{where}.states: unknown state {s!r}" for s in schedule.states if s not in states]
            if schedule.after not in model.policy:
                problems.append(f"{where}.after: policy has no field {schedule.after!r}")
            if schedule.unless is not None and schedule.unless not in model.context:
                problems.append(f"{where}.unless: unknown context key {schedule.unless!r}")
            continue
        region = model.find_state(schedule.region)
        if region is None or not region.states or region.parallel:
            problems.append(f"{where}.region: {schedule.region!r} is not a region of a state")
        for state, field in schedule.due.items():
            if parents.get(state) != schedule.region:
                problems.append(f"{where}.due: {state!r} is not a state of region {schedule.region!r}")
            if field not in model.policy:
                problems.append(f"{where}.due.{state}: policy has no field {field!r}")
        problems += [f"{where}.reset_on: unknown event {e!r}" for e in schedule.reset_on if e not in model.events]
    return problems


def _plan_problems(model: PathwayModel, states: set[str]) -> list[str]:
    problems: list[str] = []
    ids: list[str] = []
    for state, items in model.plan.items():
        if state not in states:
            problems.append(f"plan.{state}: unknown state")
        for j, item in enumerate(items):
            ids.append(item.id)
            conditions = [*item.show_when, *(c for rule in item.rules for c in rule.when)]
            for condition in conditions:
                problem = _fact_problem(condition.input, model)
                if problem:
                    problems.append(f"plan.{state}[{j}] ({item.id}): {problem}")
    problems += [f"plan: item id {i!r} is used twice" for i in sorted({i for i in ids if ids.count(i) > 1})]
    for state, carried in model.plan_carry.items():
        problems += [f"plan_carry.{state}: unknown state {s!r}" for s in (state, *carried) if s not in states]
    return problems


def _fact_problem(name: str, model: PathwayModel) -> str | None:
    scope, _, key = name.partition(".")
    if scope == "factors" and key not in model.factors:
        return f"unknown patient factor {key!r}"
    if scope == "context" and key not in model.context:
        return f"unknown context key {key!r}"
    if scope not in ("factors", "context", "outcome"):
        return f"a plan condition reads factors.<name>, context.<key> or outcome.<key>, not {name!r}"
    return None


def _presentation_problems(model: PathwayModel, states: set[str]) -> list[str]:
    hints = model.presentation
    problems = [f"presentation.state_order: unknown state {s!r}" for s in hints.state_order if s not in states]
    problems += [f"presentation.stages: unknown state {s!r}" for s in hints.stages if s not in states]
    problems += [f"presentation.colours: unknown state {s!r}" for s in hints.colours if s not in states]
    if hints.goal is not None and hints.goal not in states:
        problems.append(f"presentation.goal: unknown state {hints.goal!r}")
    problems += [f"presentation.flags: unknown context key {k!r}" for k in hints.flags if k not in model.context]
    inputs = {name for event in model.events.values() for name in event.inputs}
    problems += [f"presentation.percent_inputs: unknown input {i!r}" for i in hints.percent_inputs if i not in inputs]
    fields = {field for event in model.events.values() for field in event.payload}
    if hints.timeline is not None:
        if hints.timeline.input not in fields:
            problems.append(f"presentation.timeline.input: no event has a payload field {hints.timeline.input!r}")
        for key in (hints.timeline.baseline, hints.timeline.started, hints.timeline.episode_started):
            if key is not None and key not in model.context:
                problems.append(f"presentation.timeline: unknown context key {key!r}")
        for where, levels in (("levels", hints.timeline.levels), ("improvements", hints.timeline.improvements)):
            problems += [
                f"presentation.timeline.{where}: policy has no field {f!r}" for f in levels if f not in model.policy
            ]
    if hints.fhir is not None:
        for field in (*hints.fhir.observations, *hints.fhir.extra_conditions):
            if field not in fields:
                problems.append(f"presentation.fhir: no event has a payload field {field!r}")
        problems += [
            f"presentation.fhir.condition_by: unknown context key {k!r}"
            for k in hints.fhir.condition_by
            if k not in model.context
        ]
        if hints.fhir.confirmed_when is not None and hints.fhir.confirmed_when not in model.context:
            problems.append(f"presentation.fhir.confirmed_when: unknown context key {hints.fhir.confirmed_when!r}")
        problems += [
            f"presentation.fhir.observed_events: unknown event {e!r}"
            for e in hints.fhir.observed_events
            if e not in model.events
        ]
        for where, by_state in (
            ("clinical_status", hints.fhir.clinical_status),
            ("verification_status", hints.fhir.verification_status),
            ("careplan_status", hints.fhir.careplan_status),
        ):
            problems += [f"presentation.fhir.{where}: unknown state {s!r}" for s in by_state if s not in states]
    return problems


# -- the generated chart ----------------------------------------------------------------------------


def states_without_end(chart: Any) -> list[str]:
    """Ids of the chart's states from which no sequence of transitions reaches a top-level final state.

    A state can move by its own transitions and by those of its ancestors (an exit from a compound
    applies in every child); entering a compound enters its initial child, a parallel state all of
    its regions.
    """
    states: Mapping[str, Any] = chart.states_map
    moves = {state_id: set(_moves(state)) for state_id, state in states.items()}
    ends = {state_id for state_id, state in states.items() if state.final and state.parent is None}
    reaching = set(ends)
    changed = True
    while changed:  # fixed point: a state reaches an end when one of its moves does
        changed = False
        for state_id, targets in moves.items():
            if state_id not in reaching and targets & reaching:
                reaching.add(state_id)
                changed = True
    return [state_id for state_id in states if state_id not in reaching]


def _moves(state: Any) -> Iterator[str]:
    """States the chart can be in right after `state` (or, for a compound, right as it is entered)."""
    for holder in (state, *_ancestors(state)):
        for transition in holder.transitions:
            yield from (target.id for target in transition.targets)
    children = list(state.states)
    if state.parallel:
        yield from (child.id for child in children)
    else:
        yield from (child.id for child in children if child.initial)


def _ancestors(state: Any) -> Iterator[Any]:
    parent = state.parent
    while parent is not None:
        yield parent
        parent = parent.parent


def _reach_problems(model: PathwayModel, chart: Any, rules: tuple[Rule, ...]) -> list[str]:
    """Run every rule on the chart from each of its sources: it must end in (or stay in) its target."""
    from ._compile import is_stay
    from ._definition import ChartRunner

    runner = ChartRunner(chart)
    parents = model.parents()
    problems: list[str] = []
    for rule in rules:
        for source in sorted(rule.sources):
            configuration = runner.ordered(_entered(chart.states_map[source], chart))
            decision = Decision(rule, (rule,), {}, _NoPolicy())
            try:
                after, _ = runner.run(configuration, rule.event, decision)
            except Exception:
                if is_stay(rule, parents):
                    continue  # a stay the chart has no transition for leaves the configuration as it is
                problems.append(f"rules ({rule.name}): the chart cannot take {rule.event!r} from {source!r}")
                continue
            if rule.target not in after and not is_stay(rule, parents):
                problems.append(
                    f"rules ({rule.name}): from {source!r} the chart reaches {after!r}, not {rule.target!r}"
                )
    return problems


def _entered(state: Any, chart: Any) -> list[str]:
    """A configuration holding `state`: its ancestors, their other regions and its initial descendants."""
    active = {state.id}
    for ancestor in _ancestors(state):
        active.add(ancestor.id)
        if ancestor.parallel:
            for region in ancestor.states:
                if region.id not in active and not (_descends(state, region)):
                    active |= _initial_closure(region)
    active |= _initial_closure(state)
    return list(active)


def _descends(state: Any, holder: Any) -> bool:
    return state is holder or any(a is holder for a in _ancestors(state))


def _initial_closure(state: Any) -> set[str]:
    found = {state.id}
    children = list(state.states)
    if state.parallel:
        for child in children:
            found |= _initial_closure(child)
    elif children:
        initial = next((c for c in children if c.initial), children[0])
        found |= _initial_closure(initial)
    return found


class _NoPolicy(BaseModel):
    """Reachability runs the chart with a decided rule only; no threshold is read."""


def _shadow_problems(rules: tuple[Rule, ...], parents: Mapping[str, str | None]) -> list[str]:
    """Rules that can never be decided: an earlier unconditional rule of the event covers all their states."""
    problems: list[str] = []
    for i, rule in enumerate(rules):
        for earlier in rules[:i]:
            if earlier.event != rule.event or earlier.guard is not None:
                continue
            if all(_covered(source, earlier.sources, parents) for source in rule.sources):
                problems.append(
                    f"rules ({rule.name}): never decided: {earlier.name!r} before it holds always in its states"
                )
                break
    return problems


def _covered(state: str, sources: frozenset[str], parents: Mapping[str, str | None]) -> bool:
    """`state` is one of `sources` or inside one of them."""
    while state is not None:
        if state in sources:
            return True
        parent = parents.get(state)
        if parent is None:
            return False
        state = parent
    return False
