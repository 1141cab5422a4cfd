"""Definition checks run at registration: every state reaches an end, every rule's terms are defined."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

import pytest
from statemachine import State, StateChart

from states import DefinitionError, get_pathway, pathways, register
from states.checks import check_definition, definition_problems, states_without_end, vocabulary_terms
from states.guards import Condition, Guard, Rule
from states.piriformis import RULES, PiriformisChart, PiriformisPathway
from states.vocabulary import Fasciculations, Finding, Line, RedFlag
from tests.conftest import T0
from tests.helpers import assess_data, reassess_data

SAMPLE_DATA: dict[str, dict[str, Any]] = {
    "assess": assess_data(),
    "reassess": reassess_data(),
    "tick": {},
    "relapse": {"pain": 5, "fasciculations": "present"},
    "override": {"to": "second_line", "reason": "r", "clinician": "dr"},
    "withdraw": {"reason": "moved"},
}


class NoEndChart(StateChart):  # type: ignore[type-arg]  # no model
    """Two states passing the patient back and forth for ever: the library accepts it (no final state)."""

    waiting = State(initial=True)
    treating = State()
    start = waiting.to(treating)
    stop = treating.to(waiting)


class TrapChart(StateChart):  # type: ignore[type-arg]  # no model
    """A nested loop with no way out, with the library's own reachability checks switched off."""

    validate_final_reachability = False
    validate_trap_states = False

    assessment = State(initial=True)

    class treatment(State.Compound):
        first = State(initial=True)
        second = State()
        escalate = first.to(second) | second.to(first)

    done = State(final=True)
    assess = assessment.to(treatment) | assessment.to(done)


def _broken_rule(**changes: Any) -> Rule:
    fields: dict[str, Any] = {
        "name": "broken",
        "event": "reassess",
        "sources": frozenset({"treatment"}),
        "target": "resolved",
        "guard": Guard.all_of(Condition("pain", "<=", 2)),
    }
    fields.update(changes)
    return Rule(**fields)


def _with_rule(rule: Rule) -> type[PiriformisPathway]:
    """The piriformis definition under a new version, with one more rule."""

    class Variant(PiriformisPathway):
        version = 990
        rules = (*RULES, rule)

    return Variant


# -- the registered definitions ----------------------------------------------------------------------


def test_every_registered_definition_passes_its_checks() -> None:
    """Each definition in the registry has no problem (it could not have registered otherwise)."""
    assert pathways()
    for name, version in pathways():
        assert definition_problems(type(get_pathway(name, version))) == []


def test_every_piriformis_state_reaches_an_end() -> None:
    """From every state, nested ones included, some sequence of events ends the pathway."""
    assert states_without_end(PiriformisChart) == []


def test_rule_inputs_are_what_inputs_produces() -> None:
    """The declared inputs per event are exactly the names `inputs()` returns for a real payload."""
    definition = get_pathway("piriformis", 1)
    _, context = definition.start(definition.validate_enrollment({}), T0)
    assert set(definition.rule_inputs) == set(definition.payloads)
    for event, data in SAMPLE_DATA.items():
        produced = definition.inputs(event, definition.validate(event, data), context, T0 + timedelta(weeks=1))
        assert set(produced) == definition.rule_inputs[event], event


def test_vocabulary_terms_come_from_the_payloads() -> None:
    """The vocabulary is every enumerated term the payloads accept."""
    terms = vocabulary_terms(PiriformisPathway.payloads)
    for enum in (Finding, Fasciculations, RedFlag, Line):
        assert {member.value for member in enum} <= terms
    assert "grumpy" not in terms


# -- broken definitions fail --------------------------------------------------------------------------


def test_chart_without_an_end_fails() -> None:
    """A chart whose states cannot reach a final state is named state by state."""
    assert states_without_end(NoEndChart) == ["waiting", "treating"]


def test_nested_loop_without_an_end_fails() -> None:
    """Our check finds a loop inside a compound even when the library's checks are off."""
    assert states_without_end(TrapChart) == ["treatment", "first", "second"]


def test_definition_with_a_chart_without_an_end_fails_to_register() -> None:
    """Registering such a definition raises DefinitionError and leaves the registry as it was."""

    class Endless(PiriformisPathway):
        name = "endless"
        chart: ClassVar[type[StateChart[Any]]] = NoEndChart

    before = pathways()
    with pytest.raises(DefinitionError) as raised:
        register(Endless)
    assert raised.value.name == "endless"
    assert "state 'waiting' cannot reach a final state" in raised.value.problems
    assert pathways() == before


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"event": "discharge"}, "unknown event 'discharge'"),
        ({"sources": frozenset({"treatment", "limbo"})}, "unknown source state 'limbo'"),
        ({"target": "nowhere"}, "unknown target state 'nowhere'"),
        ({"guard": Guard.all_of(Condition("mood", "==", 1))}, "input 'mood' is not produced for 'reassess'"),
        (
            {"guard": Guard.all_of(Condition("weeks_since_assessment", ">=", 2))},
            "input 'weeks_since_assessment' is not produced for 'reassess'",
        ),
        ({"guard": Guard.all_of(Condition("pain", "<=", None, "max_pain"))}, "policy has no field 'max_pain'"),
        ({"guard": Guard.all_of(Condition("fasciculations", "==", "grumpy"))}, "undefined term 'grumpy'"),
        (
            {"guard": Guard.all_of(Condition("fasciculations", "in", frozenset({"absent", "gone"})))},
            "undefined term 'gone'",
        ),
    ],
    ids=["event", "source", "target", "input", "input-of-other-event", "policy-field", "term", "term-in-set"],
)
def test_definition_with_a_broken_rule_fails(changes: dict[str, Any], problem: str) -> None:
    """A rule naming anything undefined makes the definition fail its checks, saying what and where."""
    broken = _with_rule(_broken_rule(**changes))
    with pytest.raises(DefinitionError) as raised:
        check_definition(broken)
    assert f"rule 'broken': {problem}" in raised.value.problems
    assert "piriformis version 990 is invalid" in str(raised.value)


def test_definition_with_a_sound_extra_rule_passes() -> None:
    """The same kind of rule, with every name defined, passes: the checks reject only real problems."""
    check_definition(_with_rule(_broken_rule()))


def test_every_problem_is_reported_at_once() -> None:
    """All problems are listed together, so one fix round is enough."""
    rule = _broken_rule(target="nowhere", guard=Guard.all_of(Condition("mood", "==", "grumpy")))
    problems = definition_problems(_with_rule(rule))
    assert len(problems) == 3
