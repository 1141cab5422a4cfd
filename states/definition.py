"""What every pathway definition provides, the chart runner, and the registry of definitions.

A definition is pure: given a configuration (list of state ids), a context (JSON object), an
event with its validated payload and its clinical time, it returns the next configuration and
context, the transitions taken and the rule values that decided them. It reads no clock.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel
from statemachine import StateChart
from statemachine.exceptions import TransitionNotAllowed
from statemachine.orderedset import OrderedSet

from .checks import check_definition
from .errors import EventNotAllowed, UnknownDefinition, UnknownEvent
from .guards import Decision, Rule, decide
from .payloads import Payload, parse_payload
from .plan import PlanItem

__all__ = [
    "ChartRunner",
    "Pathway",
    "Step",
    "get_pathway",
    "known_events",
    "latest_pathway",
    "pathways",
    "register",
]

Context = dict[str, Any]


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


class ChartRunner:
    """Runs events on one reused chart instance, restoring a configuration without entry actions.

    The chart's guards read only the rule decision, so the outcome of (configuration, event,
    decided rule) is fixed for a definition and is memoised: replaying thousands of events does
    the statechart work once per distinct step.
    """

    def __init__(self, chart: type[StateChart[Any]]) -> None:
        self._chart = chart
        self._log = _TransitionLog()
        self._lock = threading.Lock()
        self._machine = self._new_machine()
        self._order = {state_id: i for i, state_id in enumerate(chart.states_map)}
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
        """State ids in document order, the canonical stored form."""
        return tuple(sorted(ids, key=self._order.__getitem__))

    def run(
        self, configuration: tuple[str, ...], event: str, decision: Decision
    ) -> tuple[tuple[str, ...], tuple[dict[str, str], ...]]:
        key = (configuration, event, decision.rule.name if decision.rule else None)
        cached = self._memo.get(key)
        if cached is not None:
            return cached
        with self._lock:  # one chart instance, shared by the threads of an embedding service
            restored = OrderedSet(configuration) if len(configuration) > 1 else configuration[0]
            self._machine.current_state_value = restored
            self._log.taken = []
            try:
                self._machine.send(event, decision=decision)
            except TransitionNotAllowed:
                raise EventNotAllowed(event, configuration) from None
            result = (self.ordered(list(self._machine.configuration_values)), tuple(self._log.taken))
            if self._machine.is_terminated:
                # A machine that entered a top-level final state processes no further events.
                self._machine = self._new_machine()
        self._memo[key] = result
        return result


class Pathway(ABC):
    """A versioned pathway definition: chart, rules, payload schemas, policy and plan."""

    name: ClassVar[str]
    version: ClassVar[int]
    chart: ClassVar[type[StateChart[Any]]]
    rules: ClassVar[Sequence[Rule]]
    payloads: ClassVar[Mapping[str, type[Payload]]]
    # Events that, when no rule holds in the named state, change nothing instead of failing.
    idle_events: ClassVar[Mapping[str, str]] = {}
    enroll_payload: ClassVar[type[Payload]]
    # The names `inputs()` produces for each event; registration checks every rule reads only these.
    rule_inputs: ClassVar[Mapping[str, frozenset[str]]] = {}

    def __init__(self, policy: BaseModel | None = None) -> None:
        self.policy = policy if policy is not None else self.default_policy()
        self.runner = ChartRunner(self.chart)
        self._by_event: dict[str, tuple[Rule, ...]] = {}

    def _rules_for(self, event: str) -> tuple[Rule, ...]:
        """The rules of one event, in evaluation order (indexed once per event)."""
        rules = self._by_event.get(event)
        if rules is None:
            rules = self._by_event[event] = tuple(rule for rule in self.rules if rule.event == event)
        return rules

    # -- validation -----------------------------------------------------------

    @classmethod
    def event_names(cls) -> list[str]:
        return list(cls.payloads)

    def validate(self, event: str, data: object) -> Payload:
        """Validate an event's data against its schema (raises UnknownEvent, InvalidPayload)."""
        model = self.payloads.get(event)
        if model is None:
            raise UnknownEvent(event, self.event_names())
        return parse_payload(event, model, data)

    def validate_enrollment(self, data: object) -> Payload:
        return parse_payload("enroll", self.enroll_payload, data)

    # -- applying events ------------------------------------------------------

    def apply(self, configuration: Sequence[str], context: Context, event: str, payload: Payload, at: datetime) -> Step:
        """Apply a validated event; raises EventNotAllowed when the state has no such transition."""
        before = self.runner.ordered(configuration)
        if event not in self.payloads:
            raise UnknownEvent(event, self.event_names())
        inputs = self.inputs(event, payload, context, at)
        decision = decide(self._rules_for(event), event, frozenset(before), inputs, self.policy)
        idle_state = self.idle_events.get(event)
        if decision.rule is None and idle_state is not None and idle_state in before:
            return Step(event, before, before, context, (), decision, changed=False)
        after, transitions = self.runner.run(before, event, decision)
        new_context = self.update_context(context, event, payload, at, decision, before, after)
        return Step(event, before, after, new_context, transitions, decision)

    def decide(
        self, configuration: Sequence[str], context: Context, event: str, payload: Payload, at: datetime
    ) -> Decision:
        """The rule decision for an event, without applying it."""
        inputs = self.inputs(event, payload, context, at)
        return decide(self._rules_for(event), event, frozenset(configuration), inputs, self.policy)

    # -- hooks each pathway defines ----------------------------------------------

    @classmethod
    @abstractmethod
    def default_policy(cls) -> BaseModel: ...

    @abstractmethod
    def start(self, enrollment: Payload, at: datetime) -> tuple[tuple[str, ...], Context]:
        """Configuration and context of a newly enrolled patient."""

    @abstractmethod
    def inputs(self, event: str, payload: Payload, context: Context, at: datetime) -> dict[str, Any]:
        """The named values the rules' conditions read."""

    @abstractmethod
    def update_context(
        self,
        context: Context,
        event: str,
        payload: Payload,
        at: datetime,
        decision: Decision,
        before: tuple[str, ...],
        after: tuple[str, ...],
    ) -> Context:
        """The context after an event (a new object; `context` is not modified)."""

    @abstractmethod
    def state_name(self, configuration: Sequence[str]) -> str:
        """The one name status reports for a configuration."""

    @abstractmethod
    def plan(self, configuration: Sequence[str], context: Context) -> list[PlanItem]:
        """The plan of the current state for this patient."""

    @abstractmethod
    def outcome(self, configuration: Sequence[str], context: Context) -> dict[str, Any] | None:
        """Why the patient left the pathway, for final states; None otherwise."""

    @abstractmethod
    def next_due_at(self, configuration: Sequence[str], context: Context) -> datetime | None:
        """The earliest time a tick could change the patient, or None."""


_REGISTRY: dict[tuple[str, int], type[Pathway]] = {}
_INSTANCES: dict[tuple[str, int], Pathway] = {}
_KNOWN_EVENTS: frozenset[str] = frozenset()


def register(definition: type[Pathway]) -> type[Pathway]:
    """Class decorator adding a definition to the registry under (name, version), once it passes its checks."""
    check_definition(definition)
    _REGISTRY[(definition.name, definition.version)] = definition
    global _KNOWN_EVENTS
    _KNOWN_EVENTS = _KNOWN_EVENTS | frozenset(definition.payloads)
    return definition


def get_pathway(name: str, version: int | None = None) -> Pathway:
    """The shared instance of a registered definition (latest version when none is given)."""
    if version is None:
        return latest_pathway(name)
    key = (name, version)
    if key not in _REGISTRY:
        raise UnknownDefinition(name, version)
    if key not in _INSTANCES:
        _INSTANCES[key] = _REGISTRY[key]()
    return _INSTANCES[key]


def latest_pathway(name: str) -> Pathway:
    versions = [v for (n, v) in _REGISTRY if n == name]
    if not versions:
        raise UnknownDefinition(name)
    return get_pathway(name, max(versions))


def known_events() -> frozenset[str]:
    """Every event name some registered definition accepts (kept up to date by `register`)."""
    return _KNOWN_EVENTS


def pathways() -> list[tuple[str, int]]:
    """Every registered (name, version)."""
    return sorted(_REGISTRY)
