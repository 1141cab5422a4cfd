"""Inputs and context updates of a definition, compiled once into plain functions.

These run for every applied and replayed event, so each spec becomes a small closure reading
the payload's attributes and the stored context directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from pydantic import BaseModel

from ._compile import condition
from ._functions import named_function
from ._guards import Condition, Rule
from ._model import InputSpec, PathwayModel, UpdateSpec

__all__ = ["InputFn", "Update", "UpdateFn", "compile_derived", "compile_inputs", "compile_updates", "plain"]

Context = dict[str, Any]
# (payload, context, time, policy, the event's inputs computed before this one)
InputFn = Callable[[BaseModel, Context, datetime, BaseModel, Mapping[str, Any]], Any]
# (context to change, payload, time, the event's inputs, policy)
UpdateFn = Callable[[Context, BaseModel, datetime, Mapping[str, Any], BaseModel], None]
WEEK = timedelta(weeks=1)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def plain(value: Any) -> Any:
    """A payload value as JSON-shaped data: terms as their strings, lists element-wise, objects as given."""
    if type(value) in _SCALARS:  # most values: exactly a str, number or None (a term is an Enum)
        return value
    if isinstance(value, Enum):
        return value._value_  # `.value` is a descriptor costing a Python call per read
    if isinstance(value, list):
        return [v._value_ if isinstance(v, Enum) else plain(v) for v in value]  # mostly terms: no call each
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)  # a stored payload lists every field
    return value


def _plain_set(values: Iterable[Any]) -> set[Any]:
    """`{plain(v) for v in values}`, terms read without a call each."""
    return {v._value_ if isinstance(v, Enum) else plain(v) for v in values}


def _input(spec: InputSpec, model: PathwayModel) -> InputFn:  # one branch per input kind
    kind = spec.kind
    if kind == "payload":
        field, otherwise = spec.payload or "", spec.otherwise
        if otherwise is not None:

            def given_or_remembered(
                payload: BaseModel, ctx: Context, at: datetime, policy: BaseModel, known: Mapping[str, Any]
            ) -> Any:
                value = getattr(payload, field)
                return plain(value) if value is not None else ctx.get(otherwise)

            return given_or_remembered

        def given(payload: BaseModel, ctx: Context, at: datetime, policy: BaseModel, known: Mapping[str, Any]) -> Any:
            value = getattr(payload, field)
            if type(value) in _SCALARS:  # `plain` for the common values, without its call
                return value
            return value._value_ if isinstance(value, Enum) else plain(value)

        return given
    if kind == "context":
        key = spec.context or ""
        return lambda payload, ctx, at, policy, known: ctx.get(key)
    if kind == "count":
        field = spec.count or ""
        of = spec.of
        terms = frozenset(model.term_sets[of] if isinstance(of, str) else (of or ()))
        return lambda payload, ctx, at, policy, known: len(_plain_set(getattr(payload, field)) & terms)
    if kind == "classes":
        field = spec.classes or ""
        groups = tuple(frozenset(group) for group in spec.of_classes or ())

        def classes(payload: BaseModel, ctx: Context, at: datetime, policy: BaseModel, known: Any) -> int:
            found = _plain_set(getattr(payload, field))
            return sum(1 for group in groups if group & found)

        return classes
    if kind == "has":
        field, term = spec.has or "", spec.term
        return lambda payload, ctx, at, policy, known: term in _plain_set(getattr(payload, field))
    if kind == "weeks_since":
        key, plus = spec.weeks_since or "", spec.plus

        def weeks(payload: BaseModel, ctx: Context, at: datetime, policy: BaseModel, known: Any) -> float | None:
            since = ctx.get(key)
            if since is None:
                return None
            elapsed = (at - datetime.fromisoformat(since)) / WEEK
            if plus is not None:
                extra = ctx.get(plus)
                return None if extra is None else elapsed + extra
            return elapsed

        return weeks
    if kind == "improvement":
        return _improvement(spec)
    if kind in ("fall", "rise"):
        key, field, sign = spec.fall or spec.rise or "", spec.value or "", 1 if kind == "fall" else -1

        def fall(payload: BaseModel, ctx: Context, at: datetime, policy: BaseModel, known: Any) -> float | None:
            baseline: float | None = ctx.get(key)
            value: float | None = getattr(payload, field)
            return None if baseline is None or value is None else sign * (baseline - value)

        return fall
    if kind == "holds":
        conditions = tuple(condition(c, model.term_sets) for c in spec.holds or ())

        def holds(payload: BaseModel, ctx: Context, at: datetime, policy: BaseModel, known: Mapping[str, Any]) -> bool:
            for c in conditions:  # noqa: SIM110  # `all` without a generator: this runs for every event
                if not c.holds(known, policy):
                    return False
            return True

        return holds
    if kind in ("streak", "streak_weeks"):
        return _streak(spec, kind)
    if kind == "recent":
        key, within = spec.recent or "", spec.within or ""

        def recent(payload: BaseModel, ctx: Context, at: datetime, policy: BaseModel, known: Any) -> int:
            window = getattr(policy, within) * WEEK
            return sum(1 for t in ctx.get(key) or () if timedelta(0) <= at - datetime.fromisoformat(t) < window)

        return recent
    function = named_function(spec.function or "")
    return lambda payload, ctx, at, policy, known: function(payload, ctx, at)


def _streak(spec: InputSpec, kind: str) -> InputFn:
    """Consecutive events whose boolean input `of` held: their count, or the weeks they span."""
    key, of = spec.streak or spec.streak_weeks or "", str(spec.of)

    def streak(payload: BaseModel, ctx: Context, at: datetime, policy: BaseModel, known: Any) -> float | None:
        if not known.get(of):
            return 0 if kind == "streak" else None
        run: list[str] = ctx.get(key) or []
        if kind == "streak":
            return len(run) + 1
        return (at - datetime.fromisoformat(run[0])) / WEEK if run else 0.0

    return streak


def _improvement(spec: InputSpec) -> InputFn:
    key, field, floor, zero = spec.improvement or "", spec.value or "", spec.min_baseline, spec.zero_baseline

    def improvement(payload: BaseModel, ctx: Context, at: datetime, policy: BaseModel, known: Any) -> float | None:
        baseline: float | None = ctx.get(key)
        value: float | None = getattr(payload, field)
        if baseline is None or value is None:
            return None
        if floor is not None and baseline < getattr(policy, floor):
            return None  # too little pain at the start for a relative change to mean anything
        if baseline == 0:
            return zero
        # Rounded so binary float error cannot move a boundary: 7 -> 4.9 is 30 %, not 29.99999 %.
        return round((baseline - value) / baseline, 9)

    return improvement


def compile_inputs(
    model: PathwayModel,
) -> dict[str, Callable[[BaseModel, Context, datetime, BaseModel], dict[str, Any]]]:
    """Per event, one function computing every named input of that event."""
    compiled: dict[str, Callable[[BaseModel, Context, datetime, BaseModel], dict[str, Any]]] = {}
    for event, spec in model.events.items():
        parts = tuple((name, _input(input_spec, model)) for name, input_spec in spec.inputs.items())

        compiled[event] = _sequence(parts)
    return compiled


def _sequence(
    parts: tuple[tuple[str, InputFn], ...],
) -> Callable[[BaseModel, Context, datetime, BaseModel], dict[str, Any]]:
    """Inputs computed in order: `holds` and `streak` inputs read those listed before them."""

    def inputs(payload: BaseModel, ctx: Context, at: datetime, policy: BaseModel) -> dict[str, Any]:
        known: dict[str, Any] = {}
        for name, fn in parts:
            known[name] = fn(payload, ctx, at, policy, known)
        return known

    return inputs


def compile_derived(
    model: PathwayModel,
) -> Callable[[BaseModel, Context, datetime, BaseModel], dict[str, Any]]:
    """The model's derived context values, computed after each applied event."""
    return _sequence(tuple((name, _input(spec, model)) for name, spec in model.derived.items()))


# -- updates -------------------------------------------------------------------------------------------


def expression(text: Any) -> Callable[[BaseModel | None, Mapping[str, Any], datetime, Mapping[str, Any]], Any]:
    """A value from `payload.<field>`, `context.<key>`, `input.<name>`, `at`, or a literal."""
    if isinstance(text, str) and text == "at":
        return lambda payload, ctx, at, inputs: isoformat(at)
    if isinstance(text, str) and text.startswith("payload."):
        field = text.removeprefix("payload.")

        def given(payload: BaseModel | None, ctx: Mapping[str, Any], at: datetime, inputs: Mapping[str, Any]) -> Any:
            value = getattr(payload, field, None)
            return value if type(value) in _SCALARS else plain(value)  # `plain` for the common values, without its call

        return given
    if isinstance(text, str) and text.startswith("context."):
        key = text.removeprefix("context.")
        return lambda payload, ctx, at, inputs: ctx.get(key)
    if isinstance(text, str) and text.startswith("input."):
        name = text.removeprefix("input.")
        return lambda payload, ctx, at, inputs: inputs.get(name)
    return lambda payload, ctx, at, inputs: text


@dataclass(frozen=True)
class Update:
    """One context update: when it applies (the event, the decided rule) and the steps it runs then.

    Whether it applies depends on the event and the rule alone, so a definition selects the
    updates of each (event, rule) once and runs only their steps, in declaration order.
    """

    events: frozenset[str]
    rules: frozenset[str] | None
    entering: frozenset[str] | None
    steps: tuple[UpdateFn, ...]

    def applies(self, event: str, rule: Rule, stays: bool) -> bool:
        """Whether the update runs for `event` decided by `rule` (`stays`: the rule keeps the patient in place)."""
        if event not in self.events:
            return False
        if self.rules is not None and rule.name not in self.rules:
            return False
        return self.entering is None or (rule.target in self.entering and not stays)


def _update(spec: UpdateSpec) -> Update:
    """An update as steps each changing one context key (the factors: two), run one after the other."""
    steps: list[UpdateFn] = [_setter(key, value, spec.if_given) for key, value in spec.set.items()]
    steps += [_counter(key, condition(c)) for key, c in spec.count.items()]
    steps += [_record(key, fields) for key, fields in spec.record.items()]
    steps += [_streak_step(key, flag) for key, flag in spec.streak.items()]
    steps += [_append(key, value) for key, value in spec.append.items()]
    if spec.set_factors is not None or spec.clear_factors is not None:
        steps.append(_factors(spec.set_factors, spec.clear_factors))
    if spec.when:
        steps = [_when(tuple(condition(c) for c in spec.when), tuple(steps))]
    entering = frozenset(spec.entering) if spec.entering is not None else None
    rules = frozenset(spec.rules) if spec.rules is not None else None
    return Update(frozenset(spec.events), rules, entering, tuple(steps))


def _when(conditions: tuple[Condition, ...], steps: tuple[UpdateFn, ...]) -> UpdateFn:
    def when(ctx: Context, payload: BaseModel, at: datetime, inputs: Mapping[str, Any], policy: BaseModel) -> None:
        for c in conditions:
            if not c.holds(inputs, policy):
                return
        for step in steps:
            step(ctx, payload, at, inputs, policy)

    return when


def _setter(key: str, text: Any, if_given: bool) -> UpdateFn:
    """`key: expression`; with `if_given`, a value that is None leaves the key as it is."""
    if isinstance(text, str) and text == "at":

        def stamp(ctx: Context, payload: BaseModel, at: datetime, inputs: Mapping[str, Any], policy: BaseModel) -> None:
            ctx[key] = isoformat(at)

        return stamp
    if isinstance(text, str) and text.startswith("payload."):
        field = text.removeprefix("payload.")

        def copy(ctx: Context, payload: BaseModel, at: datetime, inputs: Mapping[str, Any], policy: BaseModel) -> None:
            value = getattr(payload, field, None)
            if type(value) not in _SCALARS:  # `plain` for the common values, without its call
                value = value._value_ if isinstance(value, Enum) else plain(value)
            if not (if_given and value is None):
                ctx[key] = value

        return copy
    compute = expression(text)

    def assign(ctx: Context, payload: BaseModel, at: datetime, inputs: Mapping[str, Any], policy: BaseModel) -> None:
        value = compute(payload, ctx, at, inputs)
        if not (if_given and value is None):
            ctx[key] = value

    return assign


def _counter(key: str, counted: Condition) -> UpdateFn:
    """One more while `counted` holds, back to 0 when it does not."""

    def count(ctx: Context, payload: BaseModel, at: datetime, inputs: Mapping[str, Any], policy: BaseModel) -> None:
        ctx[key] = ctx.get(key, 0) + 1 if counted.holds(inputs, policy) else 0

    return count


def _record(key: str, fields: Mapping[str, Any]) -> UpdateFn:
    computed = tuple((name, expression(value)) for name, value in fields.items())

    def record(ctx: Context, payload: BaseModel, at: datetime, inputs: Mapping[str, Any], policy: BaseModel) -> None:
        ctx[key] = {name: value(payload, ctx, at, inputs) for name, value in computed}

    return record


def _streak_step(key: str, flag: str) -> UpdateFn:
    """The times of consecutive events whose input `flag` held; emptied when it does not."""

    def streak(ctx: Context, payload: BaseModel, at: datetime, inputs: Mapping[str, Any], policy: BaseModel) -> None:
        ctx[key] = [*(ctx.get(key) or []), isoformat(at)] if inputs.get(flag) else []

    return streak


def _append(key: str, text: Any) -> UpdateFn:
    compute = expression(text)

    def append(ctx: Context, payload: BaseModel, at: datetime, inputs: Mapping[str, Any], policy: BaseModel) -> None:
        ctx[key] = [*(ctx.get(key) or []), compute(payload, ctx, at, inputs)]

    return append


def _factors(set_text: Any, clear_text: Any) -> UpdateFn:
    set_factors = expression(set_text) if set_text is not None else None
    clear_factors = expression(clear_text) if clear_text is not None else None

    def factors(ctx: Context, payload: BaseModel, at: datetime, inputs: Mapping[str, Any], policy: BaseModel) -> None:
        _change_factors(
            ctx,
            at,
            set_factors and set_factors(payload, ctx, at, inputs),
            clear_factors and clear_factors(payload, ctx, at, inputs),
        )

    return factors


# The last time written as text: the updates of one event often stamp the same time several times.
_LAST_ISOFORMAT: tuple[datetime | None, str] = (None, "")


def isoformat(at: datetime) -> str:
    """`at.isoformat()`, remembered for the last `at` (the same object, so the same text)."""
    global _LAST_ISOFORMAT  # one pair replaced whole: safe across threads
    last = _LAST_ISOFORMAT
    if last[0] is at:
        return last[1]
    text = at.isoformat()
    _LAST_ISOFORMAT = (at, text)
    return text


def _change_factors(ctx: Context, at: datetime, given: Any, cleared: Any) -> None:
    """Merge `given` into the patient factors and remove `cleared`, stamping each change in `factors_at`."""
    factors = dict(ctx.get("factors") or {})
    changed = dict(given or {})
    factors.update(changed)
    for name in cleared or ():
        factors.pop(name, None)
    ctx["factors"] = factors
    if "factors_at" in ctx:
        stamps = dict(ctx.get("factors_at") or {})
        stamps.update({name: at.isoformat() for name in [*changed, *(cleared or ())]})
        ctx["factors_at"] = stamps


def compile_updates(model: PathwayModel) -> tuple[Update, ...]:
    return tuple(_update(spec) for spec in model.updates)
