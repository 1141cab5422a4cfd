"""Definitions as data: loading, the checks run at registration, the registry and review status."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import states
from states import (
    DefinitionError,
    RetiredDefinition,
    UnapprovedDefinition,
    UnknownDefinition,
    definition_for_enrolment,
    get_pathway,
    json_schema,
    load_file,
    model_problems,
    parse_definition,
    pathways,
    register,
    write_cache,
)
from states._registry import BUILTIN_DIR

V1_FILE = BUILTIN_DIR / "piriformis-v1.yaml"


def v1_data() -> dict[str, Any]:
    """The piriformis version 1 file as plain data, to change in a test."""
    data: dict[str, Any] = yaml.safe_load(V1_FILE.read_text())
    return data


def problems_of(data: dict[str, Any]) -> list[str]:
    return model_problems(parse_definition(data))


def toy(**changes: Any) -> dict[str, Any]:
    """A small valid definition: idle -> busy (working / paused) -> done."""
    data: dict[str, Any] = {
        "name": "toy",
        "version": 1,
        "states": [
            {"id": "idle", "initial": True},
            {"id": "busy", "states": [{"id": "working", "initial": True}, {"id": "paused"}]},
            {"id": "done", "final": True},
        ],
        "events": {"start": {}, "pause": {}, "finish": {}},
        "rules": [
            {"name": "start", "event": "start", "from": ["idle"], "to": "busy"},
            {"name": "pause", "event": "pause", "from": ["working"], "to": "paused"},
            {"name": "finish", "event": "finish", "from": ["busy"], "to": "done"},
        ],
    }
    data.update(changes)
    return data


def test_every_built_in_definition_passes_its_checks() -> None:
    """Each definition in the registry has no problem (it could not have registered otherwise)."""
    assert ("piriformis", 1) in pathways()
    for name, version in pathways():
        assert model_problems(get_pathway(name, version).model) == []


def test_the_chart_is_generated_from_the_rules() -> None:
    """Every guarded transition of the chart fires for named rules of the definition, and each rule has one."""
    definition = get_pathway("piriformis", 1)
    rule_names = {rule.name for rule in definition.rules}
    conds = {
        cond.func.__name__
        for state in definition.chart.states_map.values()
        for transition in state.transitions
        for cond in transition.cond
        if hasattr(cond, "func")
    }
    decided = {name for label in conds if label.startswith("decided_") for name in label[8:].split("_or_")}
    assert decided <= rule_names
    assert {"reassess.escalate_to_second_line", "assess.criteria_met", "tick.due"} <= decided


def test_a_state_without_an_end_is_named() -> None:
    """Two states passing the patient back and forth for ever are reported state by state."""
    data = toy(
        rules=[
            {"name": "start", "event": "start", "from": ["idle"], "to": "busy"},
            {"name": "pause", "event": "pause", "from": ["working"], "to": "paused"},
            {"name": "finish", "event": "finish", "from": ["idle"], "to": "done"},
        ]
    )
    problems = problems_of(data)
    assert any("busy" in p and "final state" in p for p in problems), problems


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ({"name": "x", "event": "nudge", "from": ["idle"], "to": "busy"}, "unknown event 'nudge'"),
        ({"name": "x", "event": "start", "from": ["limbo"], "to": "busy"}, "unknown source state 'limbo'"),
        ({"name": "x", "event": "start", "from": ["idle"], "to": "nowhere"}, "unknown target state 'nowhere'"),
        (
            {
                "name": "x",
                "event": "start",
                "from": ["idle"],
                "to": "busy",
                "when": {"all": [{"input": "ready", "op": "=="}]},
            },
            "input 'ready' is not produced",
        ),
    ],
)
def test_a_broken_rule_is_reported_with_where_it_is(rule: dict[str, Any], problem: str) -> None:
    """A rule naming anything undefined makes the definition fail, saying what and which rule."""
    data = toy()
    data["rules"] = [rule, *data["rules"]]
    problems = problems_of(data)
    assert any(problem in p and p.startswith("rules[0] (x)") for p in problems), problems


def test_an_unknown_policy_field_and_term_are_reported() -> None:
    """Rules may only compare against policy fields and vocabulary terms the definition defines."""
    data = v1_data()
    data["rules"][0]["when"]["all"][0]["value"] = "cauda_equinox"
    data["rules"][3]["when"]["all"][1]["policy"] = "min_pain"
    problems = problems_of(data)
    assert any("undefined term 'cauda_equinox'" in p for p in problems)
    assert any("policy has no field 'min_pain'" in p for p in problems)


def test_a_rule_whose_target_the_chart_cannot_reach_is_caught() -> None:
    """A rule from a state no transition ever enters can never take the patient to its target: refused."""
    data = v1_data()
    data["states"][1]["states"][0]["states"].append({"id": "on_hold"})
    data["rules"].insert(0, {"name": "reassess.resume", "event": "reassess", "from": ["on_hold"], "to": "second_line"})
    problems = problems_of(data)
    assert any("unreachable" in p and "on_hold" in p for p in problems), problems


def test_a_rule_shadowed_by_an_unconditional_one_is_caught() -> None:
    """A rule after an unconditional rule of the same event and states can never be decided."""
    data = v1_data()
    stay = next(i for i, r in enumerate(data["rules"]) if r["name"] == "reassess.stay")
    data["rules"].insert(1, data["rules"].pop(stay))
    problems = problems_of(data)
    assert any("reassess.resolved" in p and "reassess.stay" in p for p in problems), problems


def test_a_sound_extra_rule_passes() -> None:
    """relapse straight back to first line is a real transition of the generated chart: no problem."""
    data = v1_data()
    data["version"] = 99
    relapse = next(r for r in data["rules"] if r["name"] == "relapse")
    relapse.update(name="relapse.first_line", to="first_line")
    assert problems_of(data) == []


def test_hints_must_name_real_states_and_inputs() -> None:
    """Presentation hints naming a state, input or payload field that does not exist are problems."""
    data = v1_data()
    data["presentation"]["colours"]["fourth_line"] = "#000000"
    data["presentation"]["timeline"]["input"] = "pain_score"
    data["presentation"]["percent_inputs"] = ["improvment"]
    problems = problems_of(data)
    assert any("unknown state 'fourth_line'" in p for p in problems)
    assert any("pain_score" in p for p in problems)
    assert any("unknown input 'improvment'" in p for p in problems)


def test_every_problem_is_reported_at_once() -> None:
    """All problems are listed together, so one fix round is enough."""
    data = v1_data()
    data["rules"][0]["from"] = ["limbo"]
    data["rules"][1]["to"] = "nowhere"
    data["schedules"][0]["since"] = "last_seen"
    assert len(problems_of(data)) >= 3


def test_a_malformed_file_names_the_place_of_each_problem(tmp_path: Path) -> None:
    """Schema errors say where in the file they are (path inside the document)."""
    data = v1_data()
    data["rules"][2]["to"] = 3
    data["events"]["assess"]["payload"]["pain"]["type"] = "float"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(DefinitionError) as err:
        load_file(path)
    text = "; ".join(err.value.problems)
    assert "rules[2].to" in text and "events.assess.payload.pain.type" in text


def test_json_and_yaml_load_the_same_model(tmp_path: Path) -> None:
    """A definition may be written in JSON as well as YAML."""
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(v1_data(), default=str))
    assert load_file(path) == load_file(V1_FILE)


def test_the_json_schema_describes_the_format() -> None:
    """The published schema names the top-level keys and requires the essential ones."""
    schema = json_schema()
    assert {"name", "version", "states", "events", "rules"} <= set(schema["required"])
    assert "presentation" in schema["properties"]


def test_registering_the_same_version_twice_differently_is_refused() -> None:
    """Two different definitions cannot share a name and version; the same one again is a no-op."""
    same = parse_definition(v1_data())
    assert register(same) is get_pathway("piriformis", 1)
    changed = v1_data()
    changed["title"] = "something else"
    with pytest.raises(DefinitionError, match="another definition"):
        register(parse_definition(changed))


def test_a_broken_definition_does_not_register() -> None:
    """Registering a definition with problems raises and leaves the registry as it was."""
    data = toy(name="toy-broken")
    data["rules"][0]["to"] = "nowhere"
    before = pathways()
    with pytest.raises(DefinitionError):
        register(parse_definition(data))
    assert pathways() == before


def _register_toy(name: str, versions: dict[int, str]) -> None:
    for version, status in versions.items():
        register(parse_definition(toy(name=name, version=version, review={"status": status})))


def test_new_enrolments_get_the_latest_approved_version() -> None:
    """Drafts and versions under review are skipped unless allowed; a pinned version is returned as is."""
    _register_toy("toy-review", {1: "approved", 2: "approved", 3: "under_review", 4: "draft"})
    assert definition_for_enrolment("toy-review").version == 2
    assert definition_for_enrolment("toy-review", allow_unapproved=True).version == 2
    with pytest.raises(UnapprovedDefinition, match="under review"):
        definition_for_enrolment("toy-review", 3)
    assert definition_for_enrolment("toy-review", 3, allow_unapproved=True).version == 3
    assert get_pathway("toy-review", 4).version == 4  # pinned patients are always served


def test_a_retired_version_takes_no_new_enrolments() -> None:
    """Retired versions refuse enrolment even when unapproved ones are allowed; their patients stay served."""
    _register_toy("toy-retired", {1: "retired", 2: "approved"})
    with pytest.raises(RetiredDefinition):
        definition_for_enrolment("toy-retired", 1, allow_unapproved=True)
    assert definition_for_enrolment("toy-retired").version == 2
    assert get_pathway("toy-retired", 1).review.status == "retired"


def test_unknown_pathways_and_versions_say_what_is_known() -> None:
    """An unknown name lists the known pathways; an unknown version lists the known versions."""
    with pytest.raises(UnknownDefinition, match="known versions: 1"):
        get_pathway("piriformis", 42)
    with pytest.raises(UnknownDefinition, match="known pathways"):
        definition_for_enrolment("fibromyalgia")


def test_definitions_from_the_environment_are_registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder named in CAREPATH_PATHWAYS is loaded with the built-in definitions."""
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(toy(name="toy-env")))
    monkeypatch.setenv("CAREPATH_PATHWAYS", str(tmp_path))
    monkeypatch.setattr(states._registry, "_LOADED", False)
    assert get_pathway("toy-env", 1).name == "toy-env"
    assert get_pathway("piriformis", 1).version == 1


def test_definitions_from_an_entry_point_are_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed package's `carepath.pathways` entry point may give a model (or a path, or a list)."""

    class EntryPoint:
        name = "toy-package"

        @staticmethod
        def load() -> Any:
            return lambda: [parse_definition(toy(name="toy-ep"))]

    monkeypatch.setattr(states._registry.metadata, "entry_points", lambda group: [EntryPoint()])
    monkeypatch.setattr(states._registry, "_LOADED", False)
    assert get_pathway("toy-ep", 1).name == "toy-ep"


def test_a_definition_is_frozen_data() -> None:
    """Models are immutable: a running definition cannot be changed under its patients."""
    model = get_pathway("piriformis", 1).model
    with pytest.raises(Exception, match="frozen"):
        model.version = 5  # type: ignore[misc]
    assert copy.deepcopy(model) == model


def test_a_cached_definition_reads_as_its_yaml_and_a_stale_copy_is_ignored(tmp_path: Path) -> None:
    """The JSON copy of a YAML definition gives the same model (dates included), and once the
    file changes the copy no longer matches its digest, so the file itself is read."""
    source = tmp_path / "piriformis-v1.yaml"
    source.write_bytes(V1_FILE.read_bytes())
    assert write_cache(source)
    copy_file = tmp_path / "__pycache__" / "piriformis-v1.yaml.json"
    assert copy_file.is_file()
    assert load_file(source, cached=True) == load_file(source)
    data = v1_data()
    data["description"] = "changed after the copy was made"
    source.write_text(yaml.safe_dump(data))
    assert load_file(source, cached=True).description == "changed after the copy was made"
