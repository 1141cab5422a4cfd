"""One error model: every public error has a stable code, a category, an exit and an HTTP status,
structured details, survives pickling, and is exported; the README lists every code."""

from __future__ import annotations

import importlib
import inspect
import json
import pickle
import pkgutil
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import pathway
import persistence
import states
from carepath import Category, Error, Problem, code_table, error_document, exit_code
from pathway import Engine
from pathway.cli import main
from states import InvalidPayload
from tests.conftest import T0
from tests.helpers import assess_data, reassess_data

PACKAGES = (states, persistence, pathway)
README = Path(__file__).parent.parent / "README.md"

# Every public error class: (code, exit status, HTTP status). A code is a promise to callers:
# change one only on purpose, here and in the README.
EXPECTED: dict[str, tuple[str, int, int]] = {
    "carepath.errors.Error": ("error", 2, 500),
    # states
    "states._errors.StatesError": ("states_error", 2, 500),
    "states._errors.InvalidInput": ("invalid_input", 2, 422),
    "states._errors.UnknownEvent": ("unknown_event", 2, 422),
    "states._errors.InvalidPayload": ("invalid_payload", 2, 422),
    "states._errors.NaiveTime": ("naive_time", 2, 422),
    "states._errors.UnknownDefinition": ("unknown_definition", 2, 422),
    "states._errors.UnapprovedDefinition": ("unapproved_definition", 2, 422),
    "states._errors.RetiredDefinition": ("retired_definition", 2, 422),
    "states._errors.NoMigration": ("no_migration", 2, 422),
    "states._errors.MigrationFailed": ("migration_failed", 2, 422),
    "states._errors.EventNotAllowed": ("event_not_allowed", 3, 409),
    "states._errors.DefinitionError": ("invalid_definition", 2, 422),
    "states._functions.UnknownFunction": ("unknown_function", 2, 422),
    "states._upcast.UnknownPayloadSchema": ("unknown_payload_schema", 2, 500),
    # persistence
    "persistence._errors.PersistenceError": ("persistence_error", 2, 500),
    "persistence._errors.UnknownPatient": ("unknown_patient", 4, 404),
    "persistence._errors.DuplicatePatient": ("duplicate_patient", 2, 409),
    "persistence._errors.DuplicateEnrolment": ("duplicate_enrolment", 2, 409),
    "persistence._errors.ConcurrentUpdate": ("concurrent_update", 5, 503),
    "persistence._errors.IdempotencyConflict": ("idempotency_conflict", 2, 409),
    "persistence._errors.StorageUnavailable": ("storage_unavailable", 5, 503),
    "persistence._errors.NoDatabase": ("no_database", 5, 503),
    "persistence._keys.KeyConfigError": ("invalid_key_config", 2, 500),
    "persistence._crypto.EncryptedData": ("encrypted_data", 2, 500),
    "persistence._anchors.AnchorError": ("invalid_anchor", 2, 422),
    # pathway
    "pathway._errors.CarepathError": ("carepath_error", 2, 500),
    "pathway._errors.InvalidCommand": ("invalid_command", 2, 422),
    "pathway._errors.InvalidPatientId": ("invalid_patient_id", 2, 422),
    "pathway._errors.AmbiguousEnrolment": ("ambiguous_enrolment", 2, 422),
    "pathway._errors.TimeWentBackwards": ("time_went_backwards", 2, 422),
    "pathway._errors.LateEvent": ("late_event", 2, 422),
    "pathway._errors.BeforeBarrier": ("before_barrier", 2, 422),
    "pathway._errors.EventInFuture": ("event_in_future", 2, 422),
    "pathway._replay.ReplayDiverged": ("replay_diverged", 2, 500),
    "pathway._replay.NotEnrolledAt": ("not_enrolled_at", 4, 404),
    "pathway._replay.InvalidPolicy": ("invalid_policy", 2, 422),
    "pathway._diagram.DiagramError": ("invalid_diagram", 2, 422),
    "pathway._diagram.GraphvizMissing": ("graphviz_missing", 2, 500),
    "pathway._extras.MissingExtra": ("missing_extra", 2, 500),
    "pathway._diagram.UnknownFormat": ("unknown_diagram_format", 2, 422),
    "pathway._simulate.SimulationError": ("invalid_simulation", 2, 422),
    "pathway._ingest.ImportStopped": ("import_stopped", 5, 503),
    "pathway._cohort_plot.EmptyCohort": ("empty_cohort", 2, 422),
    "pathway._timeline.TimelineError": ("empty_timeline", 2, 422),
}


def _subclasses(cls: type[Error]) -> Iterator[type[Error]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _error_classes() -> list[type[Error]]:
    """Every public error class of the three packages (each module imported), and the root."""
    for package in PACKAGES:
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)
    found = {
        cls
        for cls in _subclasses(Error)
        if cls.__module__.split(".")[0] in {p.__name__ for p in PACKAGES} and not cls.__name__.startswith("_")
    }
    return [Error, *sorted(found, key=_name)]


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


ERRORS = _error_classes()


def _sample(parameter: inspect.Parameter) -> Any:
    annotation = str(parameter.annotation)
    if "datetime" in annotation:
        return datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    if annotation.startswith(("int", "float")):
        return 3
    if "Problem" in annotation:
        return [Problem(("pain",), "less_than_equal", "Input should be less than or equal to 10 (got 12)")]
    if "list" in annotation or "Sequence" in annotation or "tuple" in annotation:
        return ["a", "b"]
    if "IngestReport" in annotation:
        from pathway import IngestReport

        return IngestReport(accepted=3)
    return f"{parameter.name}-value"


def _instance(kind: type[Error]) -> Error:
    parameters = list(inspect.signature(kind.__init__).parameters.values())[1:]
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return kind("something went wrong")
    return kind(*(_sample(p) for p in parameters if p.default is p.empty and p.kind is not p.VAR_KEYWORD))


def test_every_error_class_is_in_the_expected_table() -> None:
    """The classes found by walking the root's subclasses are exactly those of the expected table."""
    assert sorted(_name(cls) for cls in ERRORS) == sorted(EXPECTED)


@pytest.mark.parametrize("kind", ERRORS, ids=_name)
def test_error_class_has_its_code_category_and_statuses(kind: type[Error]) -> None:
    """Each class declares its own snake_case code and a category; exit and HTTP status follow the table."""
    error = _instance(kind)
    assert "code" in vars(kind) and re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", kind.code)
    assert isinstance(kind.category, Category)
    assert (error.code, error.exit_status, error.http_status) == EXPECTED[_name(kind)]
    assert exit_code(error) == error.exit_status == error.category.exit_status


def test_codes_are_unique() -> None:
    """No two error classes share a code."""
    codes = [cls.code for cls in ERRORS]
    assert len(codes) == len(set(codes))


@pytest.mark.parametrize("kind", ERRORS, ids=_name)
def test_error_round_trips_through_pickle(kind: type[Error]) -> None:
    """The unpickled error has the same class, message, attributes and document."""
    error = _instance(kind)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is kind
    assert (str(copy), copy.args, vars(copy)) == (str(error), error.args, vars(error))
    assert copy.to_dict() == error.to_dict()


@pytest.mark.parametrize("kind", ERRORS, ids=_name)
def test_error_document_is_json(kind: type[Error]) -> None:
    """to_dict() is {code, message, details}, JSON as it is, with the error's attributes as details."""
    error = _instance(kind)
    document = error.to_dict()
    assert json.loads(json.dumps(document)) == document
    assert (document["code"], document["message"]) == (kind.code, str(error))
    assert set(document["details"]) == {name for name in vars(error) if not name.startswith("_")}


@pytest.mark.parametrize("kind", ERRORS[1:], ids=_name)
def test_error_is_exported_by_its_package(kind: type[Error]) -> None:
    """Every public error is in its package's __all__ and reachable from the package."""
    package = importlib.import_module(kind.__module__.split(".")[0])
    assert kind.__name__ in package.__all__
    assert getattr(package, kind.__name__) is kind


def test_carepath_loads_no_layer() -> None:
    """Importing `carepath` (the root every layer builds on) imports none of the layers."""
    probe = "import sys, carepath; print(sorted(m for m in ('states', 'persistence', 'pathway') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_an_error_class_without_its_own_code_is_refused() -> None:
    """Declaring an error class without a code, or with a code another class has, fails at once."""
    with pytest.raises(TypeError, match="must declare its own"):

        class NoCode(states.InvalidInput):
            pass

    with pytest.raises(TypeError, match="already the code of"):

        class Twin(states.InvalidInput):
            code = "unknown_event"


def test_a_foreign_exception_exits_2_as_an_unexpected_error() -> None:
    """Anything that is not a carepath error maps to exit 2 and the `unexpected_error` code."""
    assert exit_code(ValueError("x")) == 2
    assert error_document(ValueError("x")) == {
        "code": "unexpected_error",
        "message": "x",
        "details": {"type": "ValueError"},
    }


# -- invalid payloads -------------------------------------------------------------------------------


def test_invalid_payload_problems_carry_location_type_and_message(sqlite_engine: Engine) -> None:
    """An out-of-range score and an unknown term are each a Problem: where, what kind, and why."""
    sqlite_engine.enroll("p", T0, pathway="piriformis", version=1)
    sqlite_engine.send("p", "assess", T0, assess_data())
    with pytest.raises(InvalidPayload) as raised:
        sqlite_engine.send("p", "reassess", T0 + timedelta(weeks=1), reassess_data(pain=12, fasciculations="wobbly"))
    problems = {problem.location: problem for problem in raised.value.problems}
    assert set(problems) == {("pain",), ("fasciculations",)}
    pain, term = problems[("pain",)], problems[("fasciculations",)]
    assert pain.type == "less_than_equal" and "10" in pain.message and "12" in pain.message
    assert term.type in {"literal_error", "enum"} and "wobbly" in term.message
    assert "pain: " in str(raised.value) and "fasciculations: " in str(raised.value)
    details = raised.value.details()
    assert {"location": ["pain"], "type": "less_than_equal", "message": pain.message} in details["problems"]


def test_a_payload_that_is_not_an_object_is_one_problem_at_the_top() -> None:
    """Data that is not a JSON object is reported at the empty location, named `data`."""
    from states._payloads import Payload, parse_payload

    with pytest.raises(InvalidPayload) as raised:
        parse_payload("assess", Payload, [1, 2])
    (problem,) = raised.value.problems
    assert (problem.location, problem.path, problem.type) == ((), "data", "model_type")


# -- the command line ---------------------------------------------------------------------------------


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def treated_db(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> str:
    """A database with p1 enrolled on piriformis version 1 and assessed into first line."""
    assert _run(capsys, "--db", sqlite_url, "enroll", "p1", "--version", "1", "--at", T0.isoformat())[0] == 0
    data = json.dumps(assess_data())
    assert _run(capsys, "--db", sqlite_url, "send", "p1", "assess", "--at", T0.isoformat(), "--data", data)[0] == 0
    return sqlite_url


RELAPSE = json.dumps({"pain": 5, "fasciculations": "present"})
FAILING = {
    "invalid_payload": (2, ["send", "p1", "reassess", "--at", T0.isoformat(), "--data", "{}"]),
    "event_not_allowed": (3, ["send", "p1", "relapse", "--at", T0.isoformat(), "--data", RELAPSE]),
    "unknown_patient": (4, ["status", "ghost"]),
}


@pytest.mark.parametrize("code", sorted(FAILING))
def test_debug_shows_the_traceback_and_keeps_the_exit_status(
    treated_db: str, capsys: pytest.CaptureFixture[str], code: str
) -> None:
    """--debug adds the traceback; the exit status is the error's with and without it."""
    status, args = FAILING[code]
    plain = _run(capsys, "--db", treated_db, *args)
    debug = _run(capsys, "--debug", "--db", treated_db, *args)
    assert plain[0] == debug[0] == status
    assert "Traceback" in debug[2] and "Traceback" not in plain[2]


def test_debug_keeps_exit_status_5_without_a_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No carepath database: exit 5 with and without --debug."""
    args = ["--db", f"sqlite:///{tmp_path / 'none.db'}", "status", "p1"]
    assert _run(capsys, *args)[0] == _run(capsys, "--debug", *args)[0] == 5


def test_json_error_output_carries_the_code_and_problems(treated_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """With --json a failing command prints {"error": {code, message, details}} on stdout; stderr keeps its line."""
    data = json.dumps(reassess_data(pain=12))
    status, out, err = _run(
        capsys, "--db", treated_db, "send", "p1", "reassess", "--at", T0.isoformat(), "--data", data, "--json"
    )
    assert status == 2
    error = json.loads(out)["error"]
    assert error["code"] == "invalid_payload"
    assert error["details"]["event"] == "reassess"
    assert [p["location"] for p in error["details"]["problems"]] == [["pain"]]
    assert err.startswith("carepath: error: invalid reassess data: pain: ") and err.count("\n") == 1


def test_json_error_output_of_a_state_error(treated_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An event not allowed in the state is reported as `event_not_allowed` with the state in the details."""
    status, out, _ = _run(
        capsys, "--db", treated_db, "send", "p1", "relapse", "--at", T0.isoformat(), "--data", RELAPSE, "--json"
    )
    assert status == 3
    error = json.loads(out)["error"]
    assert error["code"] == "event_not_allowed"
    assert error["details"]["event"] == "relapse" and "first_line" in error["details"]["configuration"]


# -- the README ----------------------------------------------------------------------------------------

_TABLE = re.compile(r"<!-- error codes: begin -->\n(.*?)<!-- error codes: end -->", re.S)


def test_readme_lists_every_code() -> None:
    """The README's table of error codes is carepath.code_table(), so the two cannot drift apart."""
    found = _TABLE.search(README.read_text(encoding="utf-8"))
    assert found is not None, "README: no error code table"
    assert found.group(1) == code_table(), "paste carepath.code_table() into the README"
