"""Guards as data: the conditions transitions test, evaluable, explainable and recordable.

The engine, `explain` and the audit log all read these same objects, so the rules exist once.
A guard is a disjunction of clauses, each a conjunction of conditions on named inputs; a
threshold is either a literal or the name of a policy field (so another policy can be replayed).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from carepath._records import quick_init

__all__ = [
    "Condition",
    "ConditionResult",
    "Decision",
    "Guard",
    "Rule",
    "RuleBook",
    "RuleResult",
    "decide",
    "evaluate_rule",
    "format_value",
]

Inputs = Mapping[str, Any]
K = TypeVar("K")
V = TypeVar("V")

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    "in": lambda value, allowed: value in allowed,
    "contains": lambda value, item: item in value,
    "nonempty": lambda value, _unused: bool(value),
    "empty": lambda value, _unused: not value,
}


@dataclass(frozen=True)
class Condition:
    """One comparison of a named input with a threshold (a literal or a policy field name)."""

    input: str
    op: str
    threshold: Any = None
    policy_field: str | None = None

    def __post_init__(self) -> None:
        if self.op not in _COMPARE:
            raise ValueError(f"unknown operator {self.op!r} in condition on {self.input}")

    def threshold_value(self, policy: BaseModel) -> Any:
        if self.policy_field is not None:
            return getattr(policy, self.policy_field)
        return self.threshold

    def holds(self, inputs: Inputs, policy: BaseModel) -> bool:
        value = inputs.get(self.input)
        if value is None:
            return False
        field = self.policy_field
        return _COMPARE[self.op](value, self.threshold if field is None else getattr(policy, field))

    def evaluate(self, inputs: Inputs, policy: BaseModel) -> ConditionResult:
        value = inputs.get(self.input)
        threshold = self.threshold_value(policy)
        holds = value is not None and _COMPARE[self.op](value, threshold)
        return ConditionResult(self, value, threshold, holds)

    def describe(self, policy: BaseModel, *, percent: bool = False) -> str:
        """The condition as text, e.g. "improvement < 30 %" (fractions as percentages when asked)."""
        threshold = self.threshold_value(policy)
        if self.op == "nonempty":
            return f"{self.input} not empty"
        if self.op == "empty":
            return f"{self.input} empty"
        if self.op == "in":
            return f"{self.input} in ({', '.join(sorted(map(str, threshold)))})"
        return f"{self.input} {self.op} {format_value(threshold, percent=percent)}"


@dataclass(frozen=True)
class ConditionResult:
    """A condition with the value it saw, the threshold in force and whether it held."""

    condition: Condition
    value: Any
    threshold: Any
    holds: bool

    def as_record(self) -> dict[str, Any]:
        return {
            "input": self.condition.input,
            "op": self.condition.op,
            "threshold": _jsonable(self.threshold),
            "value": _jsonable(self.value),
            "holds": self.holds,
        }


@dataclass(frozen=True)
class Guard:
    """Any of the clauses holds, a clause holding when all of its conditions hold."""

    clauses: tuple[tuple[Condition, ...], ...]

    @classmethod
    def all_of(cls, *conditions: Condition) -> Guard:
        return cls((tuple(conditions),))

    @classmethod
    def any_of(cls, *clauses: Sequence[Condition]) -> Guard:
        return cls(tuple(tuple(clause) for clause in clauses))

    def evaluate(self, inputs: Inputs, policy: BaseModel) -> list[list[ConditionResult]]:
        return [[c.evaluate(inputs, policy) for c in clause] for clause in self.clauses]

    def inputs(self) -> list[str]:
        return list(dict.fromkeys(c.input for clause in self.clauses for c in clause))


@dataclass(frozen=True)
class Rule:
    """On `event` in any of `sources`, go to `target` when `guard` holds (None: always)."""

    name: str
    event: str
    sources: frozenset[str]
    target: str
    guard: Guard | None = None
    outcome: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class RuleResult:
    """A rule as evaluated against one event: per-clause condition results and the verdict."""

    rule: Rule
    clauses: list[list[ConditionResult]]
    holds: bool

    def as_record(self) -> dict[str, Any]:
        return {
            "rule": self.rule.name,
            "target": self.rule.target,
            "holds": self.holds,
            "clauses": [[c.as_record() for c in clause] for clause in self.clauses],
        }


# The parts of a decision record fixed by the rules checked and the policy: the thresholds they
# read and each checked rule's name with whether it won.
RecordParts = tuple[dict[str, Any], tuple[tuple[str, bool], ...]]


@quick_init
@dataclass(frozen=True)
class Decision:
    """The first rule that held (or None), the rules checked before it, and the values they saw."""

    rule: Rule | None
    checked: tuple[Rule, ...]
    inputs: Mapping[str, Any]
    policy: BaseModel
    # Given by a RuleBook, which computes them once per (rules checked, winner); not part of the value.
    record_parts: RecordParts | None = field(default=None, compare=False, repr=False)

    @property
    def evaluated(self) -> list[RuleResult]:
        """Every checked rule with its per-condition results (computed on demand)."""
        return [evaluate_rule(rule, self.inputs, self.policy) for rule in self.checked]

    def as_record(self) -> dict[str, Any]:
        """What the audit log keeps: the rule that won, the inputs and thresholds, each rule checked."""
        rule = self.rule
        inputs = _jsonable_inputs(self.inputs)
        thresholds, checked = self.record_parts or _record_parts(self.checked, rule, self.policy)
        return {
            "rule": rule.name if rule else None,
            "inputs": inputs,
            "thresholds": dict(thresholds),
            "checked": [[name, won] for name, won in checked],
        }


def evaluate_rule(rule: Rule, inputs: Inputs, policy: BaseModel) -> RuleResult:
    """Evaluate one rule's guard against the inputs."""
    if rule.guard is None:
        return RuleResult(rule, [], True)
    clauses = rule.guard.evaluate(inputs, policy)
    holds = any(all(c.holds for c in clause) for clause in clauses)
    return RuleResult(rule, clauses, holds)


def decide(rules: Sequence[Rule], event: str, active: frozenset[str], inputs: Inputs, policy: BaseModel) -> Decision:
    """Evaluate the rules for `event` that apply to the active states in order; first that holds wins."""
    checked: list[Rule] = []
    for rule in rules:
        if rule.event != event or rule.sources.isdisjoint(active):
            continue
        checked.append(rule)
        if rule.guard is None or _guard_holds(rule.guard, inputs, policy):
            return Decision(rule, tuple(checked), inputs, policy)
    return Decision(None, tuple(checked), inputs, policy)


# One condition as the rule book tests it: (input, comparison, threshold in force).
_Test = tuple[str, Callable[[Any, Any], bool], Any]
# One rule the configuration lets the event try: its guard's clauses (None: no guard), the rules
# checked when it wins, and its decision record's fixed parts.
_Candidate = tuple[Rule, tuple[tuple[_Test, ...], ...] | None, tuple[Rule, ...], RecordParts | None]
# An (event, configuration)'s candidates in order, then the checked rules and record parts when none holds.
_Table = tuple[tuple[_Candidate, ...], tuple[Rule, ...], RecordParts | None]


class RuleBook:
    """A definition's rules compiled for one policy; `decide` gives what the module's `decide` gives.

    Per (event, configuration) the rules that can apply are found once, with the checked-rules
    tuples and record parts of each possible winner; conditions become (input, comparison,
    threshold) tuples tested in one loop. Policies are frozen, so thresholds are read once.
    """

    def __init__(self, rules: Sequence[Rule], policy: BaseModel) -> None:
        self.rules = tuple(rules)
        self.policy = policy
        self._tables: dict[tuple[str, tuple[str, ...]], _Table] = {}

    def decide(self, event: str, configuration: tuple[str, ...], inputs: Inputs) -> Decision:
        """The decision of `decide(rules, event, frozenset(configuration), inputs, policy)`."""
        table = self._tables.get((event, configuration))
        if table is None:
            table = self._table(event, configuration)
            remember(self._tables, (event, configuration), table)
        get = inputs.get
        for rule, clauses, checked, parts in table[0]:
            if clauses is None:
                return Decision(rule, checked, inputs, self.policy, parts)
            for clause in clauses:
                for name, compare, threshold in clause:
                    value = get(name)
                    if value is None or not compare(value, threshold):
                        break
                else:
                    return Decision(rule, checked, inputs, self.policy, parts)
        return Decision(None, table[1], inputs, self.policy, table[2])

    def _table(self, event: str, configuration: tuple[str, ...]) -> _Table:
        active = frozenset(configuration)
        rules = tuple(rule for rule in self.rules if rule.event == event and not rule.sources.isdisjoint(active))
        candidates = tuple(
            (rule, self._clauses(rule.guard), rules[: i + 1], self._parts(rules[: i + 1], rule))
            for i, rule in enumerate(rules)
        )
        return candidates, rules, self._parts(rules, None)

    def _clauses(self, guard: Guard | None) -> tuple[tuple[_Test, ...], ...] | None:
        if guard is None:
            return None
        return tuple(tuple(self._test(condition) for condition in clause) for clause in guard.clauses)

    def _test(self, condition: Condition) -> _Test:
        compare = _COMPARE[condition.op]
        field = condition.policy_field
        if field is None:
            return condition.input, compare, condition.threshold
        if not hasattr(self.policy, field):
            # Not resolvable now: read it when tested, failing there as `Condition.holds` would.
            policy = self.policy
            return condition.input, lambda value, _unused: compare(value, getattr(policy, field)), None
        return condition.input, compare, getattr(self.policy, field)

    def _parts(self, checked: tuple[Rule, ...], winner: Rule | None) -> RecordParts | None:
        try:
            return _record_parts(checked, winner, self.policy)
        except AttributeError:
            return None  # a policy field missing: `as_record` fails when asked, as it would without a book


# Memos keyed by configurations hold the few a definition's patients are in; configurations read
# from a damaged database could be many, so a memo stops growing at this size.
MEMO_LIMIT = 4096


def remember(memo: dict[K, V], key: K, value: V) -> None:
    """Keep `value` in `memo` unless the memo is full."""
    if len(memo) < MEMO_LIMIT:
        memo[key] = value


def _record_parts(checked: tuple[Rule, ...], winner: Rule | None, policy: BaseModel) -> RecordParts:
    return _thresholds(checked, policy), tuple((rule.name, rule is winner) for rule in checked)


# Keyed by the rules' identities; the value keeps the rules alive so an id is never reused.
_POLICY_FIELDS: dict[tuple[int, ...], tuple[tuple[Rule, ...], tuple[str, ...]]] = {}


def _thresholds(rules: tuple[Rule, ...], policy: BaseModel) -> dict[str, Any]:
    """The policy values the rules compare against (which fields they read is memoised)."""
    key = tuple(map(id, rules))
    cached = _POLICY_FIELDS.get(key)
    if cached is None:
        fields = tuple(
            dict.fromkeys(
                c.policy_field
                for rule in rules
                if rule.guard is not None
                for clause in rule.guard.clauses
                for c in clause
                if c.policy_field is not None
            )
        )
        cached = _POLICY_FIELDS[key] = (rules, fields)
    return {name: getattr(policy, name) for name in cached[1]}


def _guard_holds(guard: Guard, inputs: Inputs, policy: BaseModel) -> bool:
    # Plain loops: this runs for every rule of every applied and replayed event.
    for clause in guard.clauses:
        for condition in clause:
            if not condition.holds(inputs, policy):
                break
        else:
            return True
    return False


def format_value(value: Any, *, percent: bool = False) -> str:
    """A condition's threshold or input value as people read it: 4 not 4.0, 0.3 as "30 %"."""
    if value is None:
        return "not recorded"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)) and percent:
        return f"{round(value * 100)} %"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.2f}".rstrip("0")
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(sorted(map(str, value))) or "none"
    return str(value)


# Values a record keeps as they are (the fast path of `_jsonable`).
_PLAIN = frozenset({str, int, bool, type(None)})


def _jsonable_inputs(inputs: Inputs) -> dict[str, Any]:
    # `_jsonable` of each value, plain values and floats (most inputs) without its call.
    return {
        name: value if type(value) in _PLAIN else round(value, 6) if type(value) is float else _jsonable(value)
        for name, value in inputs.items()
    }


def _jsonable(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if isinstance(value, (frozenset, set, tuple)):
        return sorted(str(v) for v in value)
    if isinstance(value, list):
        return [str(v) if not isinstance(v, (int, float, bool)) else v for v in value]
    if isinstance(value, float):
        return round(value, 6)
    return value
