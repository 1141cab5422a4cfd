"""Inputs and context updates of a definition, compiled once into plain functions.

These run for every applied and replayed event, so each spec becomes a small closure reading
the payload's attributes and the stored context directly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
        return [plain(v) for v in value]
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)  # a stored payload lists every field
    return value


def _time(context: Mapping[str, Any], key: str) -> datetime | None:
    value = context.get(key)
    return datetime.fromisoformat(value) if value is not None else None


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
        return lambda payload, ctx, at, policy, known: len({plain(v) for v in getattr(payload, field)} & terms)
    if kind == "classes":
        field = spec.classes or ""
        groups = tuple(frozenset(group) for group in spec.of_classes or ())

        def classes(payload: BaseModel, ctx: Context, at: datetime, policy: BaseModel, known: Any) -> int:
            found = {plain(v) for v in getattr(payload, field)}
            return sum(1 for group in groups if group & found)

        return classes
    if kind == "has":
        field, term = spec.has or "", spec.term
        return lambda payload, ctx, at, policy, known: term in {plain(v) for v in getattr(payload, field)}
    if kind == "weeks_since":
        key, plus = spec.weeks_since or "", spec.plus

        def weeks(payload: BaseModel, ctx: Context, at: datetime, policy: BaseModel, known: Any) -> float | None:
            since = _time(ctx, key)
            if since is None:
                return None
            elapsed = (at - since) / WEEK
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
        return lambda payload, ctx, at, policy, known: all(c.holds(known, policy) for c in conditions)
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
        return lambda payload, ctx, at, inputs: at.isoformat()
    if isinstance(text, str) and text.startswith("payload."):
        field = text.removeprefix("payload.")
        return lambda payload, ctx, at, inputs: plain(getattr(payload, field, None))
    if isinstance(text, str) and text.startswith("context."):
        key = text.removeprefix("context.")
        return lambda payload, ctx, at, inputs: ctx.get(key)
    if isinstance(text, str) and text.startswith("input."):
        name = text.removeprefix("input.")
        return lambda payload, ctx, at, inputs: inputs.get(name)
    return lambda payload, ctx, at, inputs: text


@dataclass(frozen=True)
class Update:
    """One context update: when it applies (the event, the decided rule) and what it does then.

    Whether it applies depends on the event and the rule alone, so a definition selects the
    updates of each (event, rule) once and runs only those, in declaration order.
    """

    events: frozenset[str]
    rules: frozenset[str] | None
    entering: frozenset[str] | None
    run: UpdateFn

    def applies(self, event: str, rule: Rule, stays: bool) -> bool:
        """Whether the update runs for `event` decided by `rule` (`stays`: the rule keeps the patient in place)."""
        if event not in self.events:
            return False
        if self.rules is not None and rule.name not in self.rules:
            return False
        return self.entering is None or (rule.target in self.entering and not stays)


def _update(spec: UpdateSpec) -> Update:
    setters = tuple((key, expression(value)) for key, value in spec.set.items())
    counters: tuple[tuple[str, Condition], ...] = tuple((key, condition(c)) for key, c in spec.count.items())
    conditions = tuple(condition(c) for c in spec.when)
    records = tuple((key, tuple((f, expression(v)) for f, v in fields.items())) for key, fields in spec.record.items())
    streaks = tuple(spec.streak.items())
    appends = tuple((key, expression(value)) for key, value in spec.append.items())
    set_factors = expression(spec.set_factors) if spec.set_factors is not None else None
    clear_factors = expression(spec.clear_factors) if spec.clear_factors is not None else None
    if_given = spec.if_given

    def update(ctx: Context, payload: BaseModel, at: datetime, inputs: Mapping[str, Any], policy: BaseModel) -> None:
        for c in conditions:
            if not c.holds(inputs, policy):
                return
        for key, value in setters:
            result = value(payload, ctx, at, inputs)
            if not (if_given and result is None):
                ctx[key] = result
        for key, counted in counters:
            ctx[key] = ctx.get(key, 0) + 1 if counted.holds(inputs, policy) else 0
        for key, fields in records:
            ctx[key] = {name: value(payload, ctx, at, inputs) for name, value in fields}
        for key, flag in streaks:
            ctx[key] = [*(ctx.get(key) or []), at.isoformat()] if inputs.get(flag) else []
        for key, value in appends:
            ctx[key] = [*(ctx.get(key) or []), value(payload, ctx, at, inputs)]
        if set_factors is not None or clear_factors is not None:
            _change_factors(
                ctx,
                at,
                set_factors and set_factors(payload, ctx, at, inputs),
                clear_factors and clear_factors(payload, ctx, at, inputs),
            )

    entering = frozenset(spec.entering) if spec.entering is not None else None
    rules = frozenset(spec.rules) if spec.rules is not None else None
    return Update(frozenset(spec.events), rules, entering, update)


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
