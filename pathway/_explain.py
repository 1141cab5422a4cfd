"""Why a patient is where they are and what would move them; the cohort at a glance.

`explain` reads the definition's own rules (states._guards) and evaluates them against the
patient's recorded context: inputs that come with the next observation (pain, fasciculations,
red flags) stand in with their last recorded values, and inputs that grow with time
(weeks in line, weeks since assessment) are evaluated at `at`. Nothing here restates a rule.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from persistence import AuditEntry, Snapshot
from states import Pathway, StatesError, get_pathway, require_aware
from states._guards import ConditionResult, Rule, evaluate_rule, format_value
from states._payloads import Payload

from ._clock import Clock, system_clock
from ._engine import Engine, iso_or_none, pick_enrolment
from ._errors import TimeWentBackwards
from ._hints import monitoring
from ._words import term_text

if TYPE_CHECKING:
    from persistence import Store

__all__ = [
    "CohortRow",
    "ConditionView",
    "Explanation",
    "TransitionView",
    "cohort",
    "due_cohort",
    "explain",
]

# The time step used to tell clock-driven inputs from recorded ones, and to extrapolate them.
_PROBE = timedelta(days=1)

# Where a condition's current value comes from.
CLOCK = "clock"  # grows with time: evaluated at `at`
RECORDED = "last_recorded"  # comes with the next event: the last recorded value stands in
UNKNOWN = "not_recorded"  # nothing recorded yet: the next event decides


@dataclass(frozen=True)
class ConditionView:
    """One condition of a rule with its current value, verdict and what would make it hold."""

    result: ConditionResult
    text: str
    basis: str
    holds_from: datetime | None = None
    need: str | None = None
    words: str = ""
    next_words: str = ""

    input = property(lambda self: self.result.condition.input)
    value = property(lambda self: self.result.value)
    threshold = property(lambda self: self.result.threshold)
    holds = property(lambda self: self.result.holds)

    def to_json(self) -> dict[str, Any]:
        record = self.result.as_record()
        record.update(text=self.text, basis=self.basis, holds_from=iso_or_none(self.holds_from), need=self.need)
        record["sentence"] = self.words
        return record

    @property
    def need_words(self) -> str | None:
        """What would have to change, in words: "the next pain at most 2", "6 weeks in line: from ..."."""
        if self.holds:
            return None
        if self.basis == CLOCK:
            when = f"from {self.holds_from:%Y-%m-%d %H:%M %Z}" if self.holds_from else "never by waiting"
            return f"{self.words.removeprefix('at ')}: {when}"
        return self.next_words


@dataclass(frozen=True)
class TransitionView:
    """One outgoing rule of the current state, evaluated now."""

    rule: str
    event: str
    target: str
    description: str
    clauses: list[list[ConditionView]]
    holds_now: bool
    decides_now: bool
    action: str = ""

    @property
    def text(self) -> str:
        """E.g. "second_line when weeks_in_line >= 4 (now 2.0) and improvement < 30 % (now 43 %)"."""
        if not self.clauses:
            return f"{self.target} on {self.event}: {self.description}" if self.description else self.target
        clauses = [" and ".join(c.text for c in clause) for clause in self.clauses]
        joined = " or ".join(f"({c})" for c in clauses) if len(clauses) > 1 else clauses[0]
        return f"{self.target} when {joined}"

    @property
    def sentence(self) -> str:
        """The rule in words, e.g. "escalates to second line when improvement stays below 30 % at 4 weeks in line"."""
        action = self.action or f"moves to {term_text(self.target)}"
        if not self.clauses:
            return f"{action} on {term_text(self.event)}" + (f": {self.description}" if self.description else "")
        return f"{action} " + ", or ".join(_clause_words(clause) for clause in self.clauses)

    @property
    def needs_words(self) -> list[str]:
        """`needs` in words."""
        if self.holds_now or not self.clauses:
            return []
        closest = min(self.clauses, key=lambda clause: sum(not c.holds for c in clause))
        return [w for c in closest if (w := c.need_words)]

    @property
    def needs(self) -> list[str]:
        """What would have to change: the failing conditions of the clause closest to holding."""
        if self.holds_now or not self.clauses:
            return []
        closest = min(self.clauses, key=lambda clause: sum(not c.holds for c in clause))
        return [c.need for c in closest if not c.holds and c.need]

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "event": self.event,
            "target": self.target,
            "description": self.description,
            "text": self.text,
            "sentence": self.sentence,
            "clauses": [[c.to_json() for c in clause] for clause in self.clauses],
            "holds_now": self.holds_now,
            "decides_now": self.decides_now,
            "needs": self.needs,
        }


@dataclass(frozen=True)
class Explanation:
    """Every outgoing rule of a patient's current state, evaluated at `at`."""

    patient_id: str
    pathway: str
    version: int
    state: str
    configuration: list[str]
    at: datetime
    next_due_at: datetime | None
    final: bool
    transitions: list[TransitionView]
    # Re-derivations in the history (late events, events dated before ticks, corrections), oldest
    # first: seq, event, at, recorded_at and what the entry records (state before and after,
    # decisions changed, ticks superseded).
    rederived: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "patient_id": self.patient_id,
            "pathway": self.pathway,
            "version": self.version,
            "state": self.state,
            "configuration": self.configuration,
            "at": self.at.isoformat(),
            "next_due_at": iso_or_none(self.next_due_at),
            "final": self.final,
            "transitions": [t.to_json() for t in self.transitions],
            "rederived": self.rederived,
        }


def explain(
    source: Engine | Store, patient_id: str, at: datetime | None = None, *, pathway: str | None = None
) -> Explanation:
    """What would move the patient next: each outgoing rule with its inputs' current values.

    `pathway` names the enrolment (optional when the patient has one). `at` defaults to the
    engine's clock (the system clock for a bare store); raises UnknownPatient, AmbiguousEnrolment,
    and TimeWentBackwards when `at` is before the patient's last event.
    """
    store, clock = _store_and_clock(source)
    snapshot = pick_enrolment(patient_id, pathway, store.snapshots(patient_id))
    at = require_aware(at) if at is not None else clock()
    if at < snapshot.last_event_at:
        raise TimeWentBackwards(patient_id, at, snapshot.last_event_at)
    definition = get_pathway(snapshot.pathway, snapshot.version)
    active = frozenset(snapshot.configuration)
    rules = [rule for rule in definition.rules if rule.sources & active]
    history = store.history(patient_id, snapshot.pathway)
    rederived = [
        {
            "seq": e.seq,
            "event": e.event,
            "at": e.at.isoformat(),
            "recorded_at": e.recorded_at.isoformat(),
            **e.decision["rederived"],
        }
        for e in history
        if isinstance(e.decision, dict) and isinstance(e.decision.get("rederived"), dict)
    ]
    evaluator = _Evaluator(definition, snapshot, history, at)
    transitions: list[TransitionView] = []
    decided: set[str] = set()
    for rule in rules:
        view = evaluator.view(rule, decides=rule.event not in decided)
        if view.holds_now:
            decided.add(rule.event)
        transitions.append(view)
    return Explanation(
        patient_id=patient_id,
        pathway=snapshot.pathway,
        version=snapshot.version,
        state=snapshot.state,
        configuration=list(snapshot.configuration),
        at=at,
        next_due_at=snapshot.next_due_at,
        final=definition.outcome(snapshot.configuration, snapshot.context) is not None or not rules,
        transitions=transitions,
        rederived=rederived,
    )


class _Evaluator:
    """Evaluates rules for one patient at one time, computing each event's inputs once."""

    def __init__(self, definition: Pathway, snapshot: Snapshot, history: Sequence[AuditEntry], at: datetime) -> None:
        self.definition = definition
        self.snapshot = snapshot
        self.history = history
        self.at = at
        self.percent = frozenset(definition.presentation.percent_inputs)
        self._inputs: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}

    def view(self, rule: Rule, *, decides: bool) -> TransitionView:
        now, later = self._event_inputs(rule.event) if rule.guard else ({}, {})
        result = evaluate_rule(rule, now, self.definition.policy)
        clauses = [[self._condition(c, later) for c in clause] for clause in result.clauses]
        return TransitionView(
            rule=rule.name,
            event=rule.event,
            target=rule.target,
            description=rule.description,
            clauses=clauses,
            holds_now=result.holds,
            decides_now=result.holds and decides,
            action=self._action(rule),
        )

    def _action(self, rule: Rule) -> str:
        """What the rule does to the patient, in words: stays, escalates to a later stage, moves to a state."""
        configuration = self.snapshot.configuration
        stages = self.definition.presentation.stages
        current = next((s for s in configuration if s in stages), None)
        if rule.target in configuration:
            return f"stays in {term_text(rule.target)}"
        if current is not None and rule.target in stages and stages.index(rule.target) > stages.index(current):
            return f"escalates to {term_text(rule.target)}"
        return f"moves to {term_text(rule.target)}"

    def _event_inputs(self, event: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The rule inputs of `event` at `at` and one probe step later (to spot clock inputs)."""
        if event not in self._inputs:
            payload = _stand_in(self.definition, event, self.history)
            if payload is None:
                self._inputs[event] = ({}, {})
            else:
                context = self.snapshot.context
                now = self.definition.inputs(event, payload, context, self.at)
                probe = _later(self.at)
                # At the end of the calendar there is no later instant: every input reads as recorded.
                later = now if probe is None else self.definition.inputs(event, payload, context, probe)
                self._inputs[event] = (now, later)
        return self._inputs[event]

    def _condition(self, result: ConditionResult, later: dict[str, Any]) -> ConditionView:
        condition = result.condition
        percent = condition.input in self.percent
        value = result.value
        basis = _basis(value, later.get(condition.input))
        shown = f"{value:.1f}" if basis == CLOCK else format_value(value, percent=percent)
        described = condition.describe(self.definition.policy, percent=percent)
        holds_from = None if result.holds else _crossing(result, later.get(condition.input), self.at)
        words, next_words = _phrase(result, basis, percent)
        return ConditionView(
            result=result,
            text=f"{described} (now {shown})",
            basis=basis,
            holds_from=holds_from,
            need=None if result.holds else _need(described, basis, holds_from),
            words=words,
            next_words=next_words,
        )


def _stand_in(definition: Pathway, event: str, history: Sequence[AuditEntry]) -> Payload | None:
    """The event's payload built from the latest recorded data it accepts (None when there is none)."""
    model = definition.payloads.get(event)
    if model is None:
        return None
    fields = model.model_fields
    for entry in reversed(history):
        data = {key: value for key, value in entry.payload.items() if key in fields}
        try:
            return definition.validate(event, data)
        except StatesError:
            continue
    try:
        return definition.validate(event, {})
    except StatesError:
        return None


def _basis(value: Any, later: Any) -> str:
    if value is None:
        return UNKNOWN
    if _is_number(value) and _is_number(later) and later != value:
        return CLOCK
    return RECORDED


def _crossing(result: ConditionResult, later: Any, at: datetime) -> datetime | None:
    """When a clock-driven condition starts to hold, extrapolating its input linearly."""
    value, threshold = result.value, result.threshold
    if not (_is_number(value) and _is_number(later) and _is_number(threshold)):
        return None
    slope = later - value
    rising = result.condition.op in (">=", ">") and slope > 0
    falling = result.condition.op in ("<=", "<") and slope < 0
    if not (rising or falling):
        return None
    try:
        return at + _PROBE * float((threshold - value) / slope)
    except (OverflowError, ValueError):  # past year 9999, beyond a timedelta, or not a number: none to show
        return None


def _later(at: datetime) -> datetime | None:
    """`at` one probe step on, or None when that is past the last representable time."""
    try:
        return at + _PROBE
    except OverflowError:
        return None


_RELATION = {"<": "below", "<=": "at or below", ">=": "at or above", ">": "above"}


def _phrase(result: ConditionResult, basis: str, percent: bool) -> tuple[str, str]:
    """A condition in words, and what the next event would need, in words.

    Clock inputs read as a time ("at 4 weeks in line"), recorded ones as values that stay or
    are ("improvement stays below 30 %": the next "improvement to be below 30 %").
    """
    condition = result.condition
    name = term_text(condition.input)
    op, threshold = condition.op, result.threshold
    shown = format_value(threshold, percent=percent)
    if op in _RELATION:
        if basis == CLOCK and op in (">=", ">"):
            words = f"at {shown} {name}" if "weeks" in condition.input else f"once {name} reaches {shown}"
            return words, words
        relation = f"{_RELATION[op]} {shown}"
    elif op in ("nonempty", "empty"):
        words = f"any {name}" if op == "nonempty" else f"no {name}"
        return words, f"{words} with the next event"
    elif op == "contains":
        return f"{name} include {term_text(threshold)}", f"the next {name} to include {term_text(threshold)}"
    elif op == "in":
        terms = [term_text(t) for t in sorted(map(str, threshold))]
        relation = f"{', '.join(terms[:-1])} or {terms[-1]}" if len(terms) > 1 else shown
    elif op == "==" and isinstance(threshold, bool):
        words = name if threshold else f"not {name}"
        return words, f"{words} with the next event"
    elif op == "==":
        relation = term_text(threshold)
    else:
        relation = f"other than {term_text(threshold)}"
    verb = "stays" if basis == RECORDED and result.holds and op in _RELATION else "is"
    return f"{name} {verb} {relation}", f"the next {name} to be {relation}"


def _clause_words(clause: list[ConditionView]) -> str:
    """The conditions of a clause in words, the times last: "pain stays at or above 4 and ... at 4 weeks in line"."""
    values = " and ".join(c.words for c in clause if c.basis != CLOCK)
    times = " and ".join(c.words for c in clause if c.basis == CLOCK)
    if not values:
        return times
    return f"when {values} {times}".rstrip()


def _need(described: str, basis: str, holds_from: datetime | None) -> str:
    if basis == CLOCK:
        return f"{described}: from {holds_from:%Y-%m-%d %H:%M %Z}" if holds_from else f"{described}: never by waiting"
    if basis == RECORDED:
        return f"next {described}"
    return f"{described}: given with the event"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- cohort views -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CohortRow:
    """One patient in a cohort view: state, dwell time, next due time and what a tick would do."""

    patient_id: str
    pathway: str
    version: int
    state: str
    configuration: list[str]
    state_since: datetime
    dwell: timedelta
    next_due_at: datetime | None
    tick: str | None
    overdue: bool
    due: bool = False
    flags: tuple[str, ...] = ()

    @property
    def dwell_days(self) -> float:
        return self.dwell / timedelta(days=1)

    def to_json(self) -> dict[str, Any]:
        return {
            "patient_id": self.patient_id,
            "pathway": self.pathway,
            "version": self.version,
            "state": self.state,
            "configuration": self.configuration,
            "state_since": self.state_since.isoformat(),
            "dwell_days": round(self.dwell_days, 2),
            "dwell_weeks": round(self.dwell_days / 7, 2),
            "next_due_at": iso_or_none(self.next_due_at),
            "tick": self.tick,
            "overdue": self.overdue,
            "flags": list(self.flags),
        }


def cohort(store: Store, at: datetime, state: str | None = None) -> Iterator[CohortRow]:
    """Every enrolment (optionally those in `state`), streamed from the store, as seen at `at`."""
    at = require_aware(at)
    for snapshot in store.iter_snapshots(state):
        yield _row(snapshot, at)


def due_cohort(store: Store, at: datetime) -> Iterator[CohortRow]:
    """The enrolments a tick at `at` could change (next_due_at <= at), earliest first."""
    at = require_aware(at)
    for snapshot in store.due_snapshots(at):
        yield _row(snapshot, at)


def _row(snapshot: Snapshot, at: datetime) -> CohortRow:
    tick = _tick_target(snapshot, at)
    definition = get_pathway(snapshot.pathway, snapshot.version)
    schedule = monitoring(definition)
    configuration = set(snapshot.configuration)
    return CohortRow(
        patient_id=snapshot.patient_id,
        pathway=snapshot.pathway,
        version=snapshot.version,
        state=snapshot.state,
        configuration=list(snapshot.configuration),
        state_since=snapshot.state_since,
        dwell=max(at - snapshot.state_since, timedelta(0)),
        next_due_at=snapshot.next_due_at,
        tick=tick,
        overdue=bool(schedule.overdue & configuration) or tick in schedule.overdue,
        due=bool(schedule.due & configuration),
        flags=tuple(definition.flags(snapshot.context)),
    )


def _tick_target(snapshot: Snapshot, at: datetime) -> str | None:
    """The state a tick at `at` would move the patient to, decided by the definition's rules."""
    if snapshot.next_due_at is None or snapshot.next_due_at > at or at < snapshot.last_event_at:
        return None
    definition = get_pathway(snapshot.pathway, snapshot.version)
    payload = definition.validate("tick", {})
    decision = definition.decide(snapshot.configuration, snapshot.context, "tick", payload, at)
    return decision.rule.target if decision.rule is not None else None


def _store_and_clock(source: Engine | Store) -> tuple[Store, Clock]:
    if isinstance(source, Engine):
        return source.store, source.clock
    return source, system_clock
