"""Build-time checks of a pathway definition, run when it is registered (so a broken definition
fails at import, not on a patient).

python-statemachine already refuses disconnected top-level states and top-level traps; these
checks add what it cannot know:
- every state, nested ones included, can reach a top-level final state;
- every rule names a known event, existing source and target states, inputs that `inputs()`
  produces for its event, policy fields that exist, and vocabulary terms the payloads define.
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin

from pydantic import BaseModel

from .errors import DefinitionError
from .guards import Condition, Rule

if TYPE_CHECKING:
    from .definition import Pathway

__all__ = ["check_definition", "definition_problems", "states_without_end", "vocabulary_terms"]


def check_definition(definition: type[Pathway]) -> None:
    """Raise DefinitionError listing every problem of `definition`; return quietly when there is none."""
    problems = definition_problems(definition)
    if problems:
        raise DefinitionError(definition.name, definition.version, problems)


def definition_problems(definition: type[Pathway]) -> list[str]:
    """Every problem found in `definition`, as one readable line each."""
    problems = [f"state {state!r} cannot reach a final state" for state in states_without_end(definition.chart)]
    state_ids = set(definition.chart.states_map)
    fields = set(type(definition.default_policy()).model_fields)
    terms = vocabulary_terms(definition.payloads)
    for rule in definition.rules:
        problems += _rule_problems(rule, definition, state_ids, fields, terms)
    return problems


# -- states ---------------------------------------------------------------------------------------


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


# -- rules ----------------------------------------------------------------------------------------


def _rule_problems(
    rule: Rule, definition: type[Pathway], state_ids: set[str], fields: set[str], terms: set[str]
) -> list[str]:
    where = f"rule {rule.name!r}"
    problems: list[str] = []
    if rule.event not in definition.payloads:
        problems.append(f"{where}: unknown event {rule.event!r}")
    problems += [f"{where}: unknown source state {s!r}" for s in sorted(rule.sources - state_ids)]
    if rule.target not in state_ids:
        problems.append(f"{where}: unknown target state {rule.target!r}")
    produced = definition.rule_inputs.get(rule.event, frozenset())
    for condition in _conditions(rule):
        if condition.input not in produced:
            problems.append(f"{where}: input {condition.input!r} is not produced for {rule.event!r}")
        if condition.policy_field is not None and condition.policy_field not in fields:
            problems.append(f"{where}: policy has no field {condition.policy_field!r}")
        problems += [f"{where}: undefined term {term!r}" for term in sorted(_terms_in(condition) - terms)]
    return problems


def _conditions(rule: Rule) -> Iterator[Condition]:
    if rule.guard is not None:
        for clause in rule.guard.clauses:
            yield from clause


def _terms_in(condition: Condition) -> set[str]:
    """The vocabulary terms a condition compares with: its string thresholds."""
    threshold = condition.threshold
    if isinstance(threshold, str):
        return {threshold}
    if isinstance(threshold, (set, frozenset, list, tuple)):
        return {value for value in threshold if isinstance(value, str)}
    return set()


def vocabulary_terms(payloads: Mapping[str, type[BaseModel]]) -> set[str]:
    """Every enumerated term the event payloads accept (the definition's vocabulary)."""
    terms: set[str] = set()
    for model in payloads.values():
        for info in model.model_fields.values():
            for enum in _enums_in(info.annotation):
                terms |= {str(member.value) for member in enum}
    return terms


def _enums_in(annotation: Any) -> Iterator[type[Enum]]:
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        yield annotation
    elif get_origin(annotation) in (list, set, frozenset, tuple, Union, types.UnionType):
        for argument in get_args(annotation):
            yield from _enums_in(argument)
