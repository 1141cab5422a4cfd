"""Definition commands: `check`, `schema`, `pathways`, and `--pathways` on every command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import states
from pathway.cli import main
from states._registry import BUILTIN_DIR
from tests.conftest import T0


def toy(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "version": 1,
        "review": {"status": "approved", "reviewer": "test", "date": "2026-11-01"},
        "states": [
            {"id": "waiting", "initial": True},
            {"id": "seen", "states": [{"id": "scheduled", "initial": True}, {"id": "due"}]},
            {"id": "discharged", "final": True},
        ],
        "events": {
            "visit": {"payload": {"score": {"type": "number", "min": 0, "max": 10}}},
            "tick": {"idle_in": "seen", "inputs": {"weeks": {"weeks_since": "seen_at"}}},
            "discharge": {},
        },
        "policy": {"due_weeks": {"default": 1.0}},
        "context": {"seen_at": None},
        "rules": [
            {"name": "visit", "event": "visit", "from": ["waiting"], "to": "seen"},
            {
                "name": "tick.due",
                "event": "tick",
                "from": ["scheduled"],
                "to": "due",
                "when": {"all": [{"input": "weeks", "op": ">=", "policy": "due_weeks"}]},
            },
            {"name": "discharge", "event": "discharge", "from": ["seen"], "to": "discharged"},
        ],
        "updates": [{"events": ["visit"], "set": {"seen_at": "at"}}],
        "schedules": [{"region": "seen", "since": "seen_at", "due": {"scheduled": "due_weeks"}}],
    }


def test_check_passes_the_built_in_definitions(capsys: pytest.CaptureFixture[str]) -> None:
    """`carepath check` on the package's own folder finds no problem (exit 0)."""
    assert main(["check", str(BUILTIN_DIR)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # a long checkout path wraps the lines
    assert "piriformis version 1): ok" in out and "sciatica version 1): ok" in out


def test_check_reports_every_problem_with_its_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A broken file exits 2 and lists each problem with its path inside the file."""
    data = toy("toy-check")
    data["rules"][0]["to"] = "nowhere"
    data["schedules"][0]["due"] = {"scheduled": "no_such_field"}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["check", str(path), "--json"]) == 2
    [report] = json.loads(capsys.readouterr().out)
    assert report["pathway"] == "toy-check"
    assert any(p.startswith("rules[0] (visit): unknown target state 'nowhere'") for p in report["problems"])
    assert any("schedules[0].due.scheduled: policy has no field 'no_such_field'" in p for p in report["problems"])


def test_check_reports_a_file_that_is_not_a_definition(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Schema errors come with their location; YAML syntax errors with the file name."""
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nversion: one\nstates: []\n")
    assert main(["check", str(path)]) == 2
    out = capsys.readouterr().out
    assert "version" in out and "events" in out and "rules" in out
    path.write_text("name: [unclosed\n")
    assert main(["check", str(path)]) == 2
    assert "bad.yaml" in capsys.readouterr().out


def test_schema_is_a_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    """`carepath schema` prints a JSON Schema document for editors."""
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"].startswith("https://json-schema.org/") and "rules" in schema["properties"]


def test_pathways_lists_versions_with_their_review(capsys: pytest.CaptureFixture[str]) -> None:
    """`carepath pathways --json` shows each registered version with its review status."""
    assert main(["pathways", "--json"]) == 0
    rows = {(r["pathway"], r["version"]): r for r in json.loads(capsys.readouterr().out)}
    assert rows[("piriformis", 1)]["review"] == "approved"
    assert rows[("sciatica", 1)]["review"] == "under_review"


@pytest.mark.parametrize("source", ["option", "environment"])
def test_a_definition_from_pathways_works_in_every_command(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], source: str
) -> None:
    """A file named with --pathways or CAREPATH_PATHWAYS is enrolled on, swept by the worker, listed and verified."""
    folder = tmp_path / "defs"
    folder.mkdir()
    (folder / "toy.yaml").write_text(yaml.safe_dump(toy(f"toy-{source}")))
    monkeypatch.setattr(states._registry, "_LOADED", False)
    base = ["--db", db_url]
    if source == "option":
        base += ["--pathways", str(folder)]
    else:
        monkeypatch.setenv("CAREPATH_PATHWAYS", str(folder))
    at = T0.isoformat()
    assert main([*base, "enroll", "t1", "--pathway", f"toy-{source}", "--at", at]) == 0
    assert main([*base, "send", "t1", "visit", "--at", at, "--data", '{"score": 4}']) == 0
    later = (T0.replace(day=20)).isoformat()
    assert main([*base, "due", "--at", later, "--json"]) == 0
    assert "t1" in capsys.readouterr().out
    assert main([*base, "worker", "--once", "--at", later]) == 0
    capsys.readouterr()
    assert main([*base, "status", "t1", "--json"]) == 0
    assert "due" in json.loads(capsys.readouterr().out)["configuration"]
    assert main([*base, "list", "--json"]) == 0
    assert f"toy-{source}" in capsys.readouterr().out
    assert main([*base, "verify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_the_published_schema_matches_the_code() -> None:
    """docs/pathway.schema.json is what `carepath schema` prints (regenerate it when the model changes)."""
    published = json.loads((Path(__file__).parent.parent / "docs" / "pathway.schema.json").read_text())
    assert published == states.json_schema(), "run: carepath schema > docs/pathway.schema.json"


@pytest.mark.parametrize(
    "command", [["status", "t1", "--json"], ["verify", "--json"], ["replay", "t1"], ["list"], ["export-fhir", "t1"]]
)
def test_a_database_with_an_unknown_definition_gives_one_clear_error(
    tmp_path: Path,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    """Without the definition a patient is on: exit 2 naming it, nothing half-printed, no false tamper report."""
    folder = tmp_path / "defs"
    folder.mkdir()
    (folder / "toy.yaml").write_text(yaml.safe_dump(toy("toy-gone")))
    monkeypatch.setattr(states._registry, "_LOADED", False)
    at = T0.isoformat()
    assert main(["--db", db_url, "--pathways", str(folder), "enroll", "t1", "--pathway", "toy-gone", "--at", at]) == 0
    capsys.readouterr()
    monkeypatch.setattr(
        states._registry, "_MODELS", {k: v for k, v in states._registry._MODELS.items() if k[0] != "toy-gone"}
    )
    assert main(["--db", db_url, *command]) == 2
    captured = capsys.readouterr()
    if "--json" in command:  # the error as the one JSON document
        assert json.loads(captured.out)["error"]["code"] == "unknown_definition"
    else:
        assert captured.out == ""
    assert captured.err.count("\n") == 1 and "unknown pathway definition toy-gone version 1" in captured.err
