"""A pathway definition as it runs: the compiled model, the chart runner, one step per event.

A definition is pure: given a configuration (list of state ids), a context (JSON object), an
event with its validated payload and its clinical time, it returns the next configuration and
context, the transitions taken and the rule values that decided them. It reads no clock.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from carepath._records import quick_init

from ._compile import (
    build_chart,
    build_enroll_payload,
    build_payloads,
    build_policy_model,
    build_rules,
    condition,
    is_stay,
)
from ._errors import EventNotAllowed, MigrationFailed, NoMigration, UnknownEvent
from ._guards import Decision, Rule, RuleBook, remember
from ._inputs import UpdateFn, compile_derived, compile_inputs, compile_updates, expression, isoformat
from ._model import PathwayModel, Presentation, Review
from ._payloads import Payload, parse_payload
from ._plan import PlanBook, PlanItem

if TYPE_CHECKING:
    from statemachine import StateChart

__all__ = ["MIGRATE_EVENT", "ChartRunner", "Context", "Pathway", "Step"]

# The audit event of a patient moved to another version of its pathway (never sent by a caller).
MIGRATE_EVENT = "migrate"

Context = dict[str, Any]


@quick_init
@dataclass(frozen=True)
class Step:
    """The result of applying one event: what changed and why."""

    event: str
    configuration_before: tuple[str, ...]
    configuration_after: tuple[str, ...]
    context: Context
    transitions: tuple[dict[str, str], ...]
    decision: Decision | None
    changed: bool = True

    def decision_record(self) -> dict[str, Any] | None:
        return self.decision.as_record() if self.decision else None


@dataclass
class _Machine:
    """The model object the chart stores its configuration on."""

    state: Any = None


class _TransitionLog:
    """Chart listener collecting the transitions one event takes."""

    def __init__(self) -> None:
        self.taken: list[dict[str, str]] = []

    def on_transition(self, source: Any, target: Any, event: Any) -> None:
        self.taken.append({"source": source.id, "target": target.id, "event": str(event)})


# The memo's entry for an event the configuration has no transition for.
_NOT_ALLOWED: tuple[tuple[str, ...], tuple[dict[str, str], ...]] = ((), ())


class ChartRunner:
    """Runs events on one reused chart instance, restoring a configuration without entry actions.

    The chart's guards read only the rule decision, so the outcome of (configuration, event,
    decided rule) is fixed for a definition and is memoised, refusals included: replaying
    thousands of events does the statechart work once per distinct step.
    """

    def __init__(self, chart: type[StateChart[Any]]) -> None:
        self._chart = chart
        self._log = _TransitionLog()
        self._lock = threading.Lock()
        self._machine = self._new_machine()
        self._order = {state_id: i for i, state_id in enumerate(chart.states_map)}
        self._ordered: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._memo: dict[
            tuple[tuple[str, ...], str, str | None], tuple[tuple[str, ...], tuple[dict[str, str], ...]]
        ] = {}

    def _new_machine(self) -> StateChart[Any]:
        initial = self._chart.initial_state
        model = _Machine(state=initial.id if initial is not None else None)
        return self._chart(model=model, listeners=[self._log])

    @property
    def chart(self) -> StateChart[Any]:
        return self._machine

    def initial_configuration(self) -> tuple[str, ...]:
        initial = type(self._machine).initial_state
        assert initial is not None
        return (initial.id,)

    def ordered(self, ids: Sequence[str]) -> tuple[str, ...]:
        """State ids in document order, the canonical stored form (memoised: configurations are few)."""
        key = ids if type(ids) is tuple else tuple(ids)
        ordered = self._ordered.get(key)
        if ordered is None:
            ordered = tuple(sorted(key, key=self._order.__getitem__))
            remember(self._ordered, key, ordered)
        return ordered

    def run(
        self, configuration: tuple[str, ...], event: str, decision: Decision
    ) -> tuple[tuple[str, ...], tuple[dict[str, str], ...]]:
        key = (configuration, event, decision.rule.name if decision.rule else None)
        cached = self._memo.get(key)
        if cached is not None:
            if cached is _NOT_ALLOWED:
                raise EventNotAllowed(event, configuration)
            return cached
        with self._lock:  # one chart instance, shared by the threads of an embedding service
            from statemachine.exceptions import TransitionNotAllowed
            from statemachine.orderedset import OrderedSet

            restored = OrderedSet(configuration) if len(configuration) > 1 else configuration[0]
            self._machine.current_state_value = restored
            self._log.taken = []
            try:
                self._machine.send(event, decision=decision)
            except TransitionNotAllowed:
                self._memo[key] = _NOT_ALLOWED  # refusals are as fixed as steps
                raise EventNotAllowed(event, configuration) from None
            result = (self.ordered(list(self._machine.configuration_values)), tuple(self._log.taken))
            if self._machine.is_terminated:
                # A machine that entered a top-level final state processes no further events.
                self._machine = self._new_machine()
        self._memo[key] = result
        return result


class Pathway:
    """A versioned pathway definition compiled from its model: chart, rules, payloads, policy, plan.

    Pure: given a configuration (list of state ids), a context (JSON object), an event with its
    validated payload and its clinical time, `apply` returns the next configuration and
    context, the transitions taken and the rule values that decided them.
    """

    def __init__(self, model: PathwayModel, policy: BaseModel | None = None) -> None:
        self.model = model
        self.name = model.name
        self.version = model.version
        self._parents = model.parents()
        self.rules: tuple[Rule, ...] = build_rules(model)
        self.policy_model = build_policy_model(model)
        self.policy = policy if policy is not None else self.policy_model()
        self._book = RuleBook(self.rules, self.policy)
        self._inputs = compile_inputs(model)
        self._updates = compile_updates(model)
        # Per (event, id of the decided rule): the steps of the updates that apply, in declaration order.
        self._updates_by_rule: dict[tuple[str, int], tuple[UpdateFn, ...]] = {}
        self._idle = {event: frozenset(spec.idle_states()) for event, spec in model.events.items()}
        # (event, configuration) pairs no rule can decide and the chart refuses: refused at once
        self._refused: dict[tuple[str, tuple[str, ...]], bool] = {}
        # The context keys a patient's enrolment time starts.
        self._stamped_at_start = tuple(key for key, value in model.context.items() if value == "at")
        self._derived = compile_derived(model) if model.derived else None
        self._status_regions = frozenset(model.status_regions)
        self._finals = frozenset(s for s in model.state_ids() if (spec := model.find_state(s)) and spec.final)
        self._plan = PlanBook(model)
        # Per configuration: its state name, and the schedules that can make it due.
        self._state_names: dict[tuple[str, ...], str] = {}
        self._due_plans: dict[tuple[str, ...], tuple[_Due, ...]] = {}

    @cached_property
    def chart(self) -> type[StateChart[Any]]:
        """The statechart, built when first needed (reading a plan or an outcome needs none)."""
        return build_chart(self.model)

    @cached_property
    def runner(self) -> ChartRunner:
        return ChartRunner(self.chart)

    @cached_property
    def payloads(self) -> dict[str, type[Payload]]:
        """The payload model of each event, built when first needed (reading a plan needs none)."""
        return build_payloads(self.model)

    @cached_property
    def enroll_payload(self) -> type[Payload]:
        return build_enroll_payload(self.model)

    def with_policy(self, policy: BaseModel) -> Pathway:
        """The same definition under another policy (what-if replays)."""
        return Pathway(self.model, policy)

    @property
    def review(self) -> Review:
        return self.model.review

    @property
    def presentation(self) -> Presentation:
        return self.model.presentation

    def _stays(self, decision: Decision) -> bool:
        return decision.rule is not None and is_stay(decision.rule, self._parents)

    def _updates_for(self, event: str, rule: Rule) -> tuple[UpdateFn, ...]:
        """The steps of the context updates `event` decided by `rule` runs (selected once per pair)."""
        key = (event, id(rule))  # the rules live as long as the definition, so an id is not reused
        updates = self._updates_by_rule.get(key)
        if updates is None:
            stays = is_stay(rule, self._parents)
            applying = [update for update in self._updates if update.applies(event, rule, stays)]
            updates = tuple(step for update in applying for step in update.steps)
            self._updates_by_rule[key] = updates
        return updates

    # -- validation -----------------------------------------------------------

    def event_names(self) -> list[str]:
        return list(self.payloads)

    def validate(self, event: str, data: object) -> Payload:
        """Validate an event's data against its schema (raises UnknownEvent, InvalidPayload)."""
        model = self.payloads.get(event)
        if model is None:
            raise UnknownEvent(event, self.event_names())
        return parse_payload(event, model, data)

    def validate_enrollment(self, data: object) -> Payload:
        return parse_payload("enroll", self.enroll_payload, data)

    # -- applying events ------------------------------------------------------

    def start(self, enrollment: Payload, at: datetime) -> tuple[tuple[str, ...], Context]:
        """Configuration and context of a newly enrolled patient."""
        factors = getattr(enrollment, "factors")  # noqa: B009  # a dynamic model's field
        # `model_dump` without its wrapper's keyword plumbing: the same serializer call.
        dumped = factors.__pydantic_serializer__.to_python(factors, mode="json", exclude_defaults=True)
        context: Context = {"factors": dumped}
        for key, value in self.model.context.items():
            context[key] = value if type(value) in _IMMUTABLE else _json_copy(value)
        for key in self._stamped_at_start:
            context[key] = isoformat(at)
        if self._derived is not None:
            context.update(self._derived(enrollment, context, at, self.policy))
        return self._start_configuration, context

    @cached_property
    def _start_configuration(self) -> tuple[str, ...]:
        return self.runner.ordered(self._completed(self.runner.initial_configuration()))

    def inputs(self, event: str, payload: Payload, context: Context, at: datetime) -> dict[str, Any]:
        """The named values the rules' conditions read."""
        compute = self._inputs.get(event)
        return compute(payload, context, at, self.policy) if compute is not None else {}

    def apply(self, configuration: Sequence[str], context: Context, event: str, payload: Payload, at: datetime) -> Step:
        """Apply a validated event; raises EventNotAllowed when the state has no such transition."""
        before = self.runner.ordered(configuration)
        if event not in self.payloads:
            raise UnknownEvent(event, self.event_names())
        if (event, before) in self._refused:  # whatever the inputs: no rule applies, the chart refuses
            raise EventNotAllowed(event, before)
        inputs = self.inputs(event, payload, context, at)
        decision = self._book.decide(event, before, inputs)
        idle = self._idle[event]
        if decision.rule is None and not idle.isdisjoint(before):
            return Step(event, before, before, context, (), decision, changed=False)
        try:
            after, transitions = self.runner.run(before, event, decision)
        except EventNotAllowed:
            if not self._stays(decision):
                if not decision.checked:
                    remember(self._refused, (event, before), True)
                raise
            after, transitions = before, ()  # a decided stay the chart has no transition for
        new_context = self._update_context(context, event, payload, at, decision, inputs)
        return Step(event, before, after, new_context, transitions, decision)

    def decide(
        self, configuration: Sequence[str], context: Context, event: str, payload: Payload, at: datetime
    ) -> Decision:
        """The rule decision for an event, without applying it."""
        inputs = self.inputs(event, payload, context, at)
        return self._book.decide(event, tuple(configuration), inputs)

    def _update_context(
        self, context: Context, event: str, payload: Payload, at: datetime, decision: Decision, inputs: dict[str, Any]
    ) -> Context:
        rule = decision.rule
        assert rule is not None  # the chart refused the event otherwise
        ctx = dict(context)
        for step in self._updates_for(event, rule):
            step(ctx, payload, at, inputs, self.policy)
        if self._derived is not None:
            ctx.update(self._derived(payload, ctx, at, self.policy))
        if rule.target in self._finals:
            ctx["outcome"] = self._outcome(rule, payload, ctx, at, inputs)
        return ctx if ctx != context else context

    @staticmethod
    def _outcome(rule: Rule, payload: Payload, ctx: Context, at: datetime, inputs: dict[str, Any]) -> dict[str, Any]:
        outcome: dict[str, Any] = {}
        for key, value in rule.outcome.items():
            result = expression(value)(payload, ctx, at, inputs)
            if result is not None:
                outcome[key] = result
        return outcome

    # -- reading a state --------------------------------------------------------

    def state_name(self, configuration: Sequence[str]) -> str:
        """The one name status reports: the active state of a status region, else the top-level state."""
        key = configuration if type(configuration) is tuple else tuple(configuration)
        name = self._state_names.get(key)
        if name is None:
            name = self._find_state_name(key)
            remember(self._state_names, key, name)
        return name

    def _find_state_name(self, configuration: tuple[str, ...]) -> str:
        for state_id in configuration:
            if self._parents.get(state_id) in self._status_regions:
                return state_id
        return configuration[0]

    def plan(self, configuration: Sequence[str], context: Context) -> list[PlanItem]:
        """The plan of the current state for this patient."""
        return self._plan.items(self.state_name(configuration), configuration, context)

    def flags(self, context: Context) -> list[str]:
        """The flags shown for this patient: the presentation's flag keys that are true in its context."""
        return [key for key in self.model.presentation.flags if context.get(key)]

    def migrate(
        self, version: int, configuration: Sequence[str], context: Context, at: datetime
    ) -> tuple[tuple[str, ...], Context]:
        """A live patient of `version` as a patient of this version, by the migration this one declares.

        States are mapped (unlisted ids kept) and completed with the initial states they hold;
        context keys are kept (or only those listed), renamed, set from the old context, and any
        key this version declares that is still missing takes its initial value.
        Raises NoMigration when none from `version` is declared, MigrationFailed when a state has
        no place in this version.
        """
        spec = self.model.migration_from(version)
        if spec is None:
            raise NoMigration(self.name, version, self.version)
        old = dict(context)
        mapped = [spec.states.get(state, state) for state in configuration]
        unknown = [state for state in mapped if state not in self.chart.states_map]
        if unknown:
            raise MigrationFailed(self.name, self.version, unknown)
        new: Context = {"factors": old.get("factors", {})}
        for key, value in old.items():
            if key != "factors" and (spec.keep_context is None or key in spec.keep_context):
                new[spec.rename_context.get(key, key)] = value
        sets: dict[str, Any] = dict(spec.set)
        facts = {f"context.{k}": v for k, v in old.items()}
        for fact in spec.set_when:
            if all(condition(c).holds(facts, self.policy) for c in fact.when):
                sets.update(fact.set)
        for state in configuration:
            sets.update(spec.set_by_state.get(state, {}))
        for key, value in sets.items():
            new[key] = expression(value)(None, old, at, {})
        for key, value in self.model.context.items():
            new.setdefault(key, at.isoformat() if value == "at" else copy.deepcopy(value))
        return self.runner.ordered(self._completed(mapped)), new

    def _completed(self, states: Sequence[str]) -> list[str]:
        """`states` with their ancestors, and the initial states of every compound left without a child."""
        active = set(states)
        for state in states:
            parent = self._parents.get(state)
            while parent is not None:
                active.add(parent)
                parent = self._parents.get(parent)
        pending = list(active)
        while pending:
            spec = self.model.find_state(pending.pop())
            if spec is None or not spec.states:
                continue
            children = [c.id for c in spec.states]
            if spec.parallel:
                entered = [c for c in children if c not in active]
            elif not active.intersection(children):
                entered = [next((c.id for c in spec.states if c.initial), children[0])]
            else:
                entered = []
            active.update(entered)
            pending.extend(entered)
        return list(active)

    def outcome(self, configuration: Sequence[str], context: Context) -> dict[str, Any] | None:
        """Why the patient left the pathway, for final states; None otherwise."""
        if configuration[0] not in self._finals:
            return None
        outcome: dict[str, Any] | None = context.get("outcome")
        return outcome

    def next_due_at(self, configuration: Sequence[str], context: Context) -> datetime | None:
        """The earliest time a tick could change the patient, or None."""
        key = configuration if type(configuration) is tuple else tuple(configuration)
        plan = self._due_plans.get(key)
        if plan is None:
            plan = self._due_plan(key)
            remember(self._due_plans, key, plan)
        due: list[datetime] = []
        for since_key, unless, weeks in plan:
            since = context.get(since_key)
            if since is not None and (unless is None or not context.get(unless)):
                due.append(datetime.fromisoformat(since) + getattr(self.policy, weeks) * WEEK)
        return min(due) if due else None

    def _due_plan(self, configuration: tuple[str, ...]) -> tuple[_Due, ...]:
        """The schedules that can make `configuration` due, in the order they are read."""
        plan: list[_Due] = []
        for schedule in self.model.schedules:
            if schedule.after is not None:
                if any(s in configuration for s in schedule.states):
                    plan.append((schedule.since, schedule.unless or "", schedule.after))
                continue
            for state_id in configuration:
                field = schedule.due.get(state_id)
                if field is not None and self._parents.get(state_id) == schedule.region:
                    plan.append((schedule.since, None, field))
        return tuple(plan)


WEEK = timedelta(weeks=1)
_IMMUTABLE = frozenset({str, int, float, bool, type(None)})


def _json_copy(value: Any) -> Any:
    """`copy.deepcopy` of JSON-shaped data at a fraction of its cost; anything else is deep-copied."""
    kind = type(value)
    if kind in _IMMUTABLE:
        return value
    if kind is dict:
        return {key: item if type(item) in _IMMUTABLE else _json_copy(item) for key, item in value.items()}
    if kind is list:
        return [item if type(item) in _IMMUTABLE else _json_copy(item) for item in value]
    return copy.deepcopy(value)


# A schedule as one configuration reads it: the context time it counts from, the context key
# that suspends it (None: none), and the policy field giving its weeks.
_Due = tuple[str, str | None, str]
