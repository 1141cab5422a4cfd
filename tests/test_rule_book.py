"""Property: a definition's compiled rule book decides exactly as the reference `decide` does.

Same winning rule, same rules checked, same decision record (it is hashed into the audit log)
and the same error when a comparison fails, for every built-in definition, random events,
random sets of active states and random inputs near each condition's threshold.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from states import Condition, Decision, Guard, Pathway, Rule, get_pathway, pathways
from states._guards import MEMO_LIMIT, RuleBook, decide


def _values(definition: Pathway, conditions: list[Condition]) -> list[Any]:
    """Values an input may take: nothing, booleans, and each threshold, its members and neighbours."""
    values: list[Any] = [None, True, False, 0, 1, 2, 3, "", [], ["other"]]
    for condition in conditions:
        threshold = condition.threshold_value(definition.policy)
        if isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
            values += [threshold, threshold - 0.1, threshold + 0.1, float(threshold)]
        elif isinstance(threshold, (frozenset, list, tuple)):
            members = sorted(map(str, threshold))
            values += [*members, members[:1], members[-1:]]
        elif threshold is not None:
            values += [threshold, [threshold]]
    return values


def _inputs_for(definition: Pathway, event: str) -> st.SearchStrategy[dict[str, Any]]:
    by_input: dict[str, list[Condition]] = {}
    for rule in definition.rules:
        if rule.event == event and rule.guard is not None:
            for clause in rule.guard.clauses:
                for condition in clause:
                    by_input.setdefault(condition.input, []).append(condition)
    return st.fixed_dictionaries(
        {},
        optional={name: st.sampled_from(_values(definition, found)) for name, found in by_input.items()},
    )


@st.composite
def cases(draw: st.DrawFn) -> tuple[Pathway, str, tuple[str, ...], dict[str, Any]]:
    definition = get_pathway(*draw(st.sampled_from(pathways())))
    event = draw(st.sampled_from(sorted({rule.event for rule in definition.rules})))
    sources = sorted({source for rule in definition.rules if rule.event == event for source in rule.sources})
    source = draw(st.sampled_from(sources))  # mostly states the event has rules in, sometimes any
    others = draw(st.lists(st.sampled_from(definition.model.state_ids()), max_size=3, unique=True))
    return definition, event, tuple(dict.fromkeys([source, *others])), draw(_inputs_for(definition, event))


def _outcome(run: Any) -> tuple[str, Any]:
    try:
        decision: Decision = run()
        record = decision.as_record()
    except Exception as err:  # the error itself is what is compared
        return "error", (type(err), str(err))
    rule = decision.rule.name if decision.rule is not None else None
    return "decision", (decision, rule, [r.name for r in decision.checked], repr(record))  # keys in order too


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_the_rule_book_decides_as_the_rules_do(case: tuple[Pathway, str, tuple[str, ...], dict[str, Any]]) -> None:
    definition, event, configuration, inputs = case
    book = RuleBook(definition.rules, definition.policy)
    reference = _outcome(lambda: decide(definition.rules, event, frozenset(configuration), inputs, definition.policy))
    compiled = _outcome(lambda: book.decide(event, configuration, inputs))
    assert compiled == reference
    assert _outcome(lambda: book.decide(event, configuration, inputs)) == reference  # from its memo too


class _Policy:
    """A policy without the field a rule names: the error comes when the condition is tested."""

    limit = 3


def test_a_missing_policy_field_fails_where_the_reference_fails_and_a_guard_of_no_clauses_never_holds() -> None:
    rules = (
        Rule("never", "go", frozenset({"a"}), "d", Guard(())),
        Rule("first", "go", frozenset({"a"}), "b", Guard.all_of(Condition("x", ">=", policy_field="limit"))),
        Rule("second", "go", frozenset({"a"}), "c", Guard.all_of(Condition("x", ">=", policy_field="absent"))),
    )
    policy: Any = _Policy()
    book = RuleBook(rules, policy)
    for inputs in ({"x": 5}, {"x": 1}, {}):
        reference = _outcome(lambda: decide(rules, "go", frozenset({"a"}), inputs, policy))  # noqa: B023
        assert _outcome(lambda: book.decide("go", ("a",), inputs)) == reference  # noqa: B023


def test_memos_keyed_by_configuration_stop_growing_and_keep_answering() -> None:
    """Configurations read from a damaged database could be many: the memos stay bounded."""
    definition = Pathway(get_pathway("piriformis", 2).model)  # a fresh copy: the shared one keeps its memos
    for i in range(MEMO_LIMIT + 10):
        configuration = (f"unknown_{i}",)
        assert definition.state_name(configuration) == f"unknown_{i}"
        assert definition.next_due_at(configuration, {}) is None
    assert len(definition._state_names) == len(definition._due_plans) == MEMO_LIMIT


def test_an_event_the_state_refuses_is_refused_again_whatever_its_values() -> None:
    """A refusal no rule could change is remembered: later payloads are refused the same way, unread."""
    from datetime import UTC, datetime

    from states import EventNotAllowed

    definition = get_pathway("piriformis", 1)
    at = datetime(2026, 1, 5, tzinfo=UTC)
    resolved = definition.runner.ordered(("resolved",))
    for pain in (1, 9):
        payload = definition.validate("reassess", {"pain": pain, "fasciculations": "stable", "red_flags": []})
        try:
            definition.apply(resolved, {}, "reassess", payload, at)
        except EventNotAllowed as refused:
            assert refused.configuration == resolved
        else:
            raise AssertionError("a reassessment after resolution was applied")
    assert ("reassess", resolved) in definition._refused
