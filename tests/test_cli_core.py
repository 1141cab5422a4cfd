"""The core CLI (enroll, send, tick, status, history) as DESIGN.md section 6 fixes it: JSON shapes,
exit statuses, one-line errors. Called in-process through `main(argv)`, once as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

from pathway.cli import main
from tests.conftest import NOW, T0
from tests.helpers import assess_data, reassess_data

WEEK = timedelta(weeks=1)
STATUS_KEYS = {
    "patient_id",
    "pathway",
    "version",
    "state",
    "configuration",
    "revision",
    "next_due_at",
    "plan",
    "outcome",
}
HISTORY_KEYS = {"seq", "event", "at", "recorded_at", "actor", "data", "state_before", "state_after", "hash"}
PLAN_ITEM_KEYS = {"id", "text", "category", "codes", "source", "status", "reasons"}


def iso(when: datetime) -> str:
    return when.isoformat()


class Cli:
    """Runs `carepath --db URL ...` in-process at a frozen clock and captures what it printed."""

    def __init__(self, db: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.db = db
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        with freeze_time(NOW):
            code = main(["--db", self.db, *args])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *args: str) -> Any:
        code, out, err = self(*args, "--json")
        assert code == 0, err
        return json.loads(out)

    def send(self, patient: str, event: str, at: datetime, data: dict[str, Any] | None = None) -> tuple[int, str, str]:
        extra = ["--data", json.dumps(data)] if data is not None else []
        return self("send", patient, event, "--at", iso(at), *extra)


@pytest.fixture
def cli(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    yield Cli(sqlite_url, capsys)


@pytest.fixture
def treated(cli: Cli) -> Cli:
    """Patient p1 enrolled and assessed into first line at T0."""
    assert cli("enroll", "p1", "--version", "1", "--at", iso(T0))[0] == 0
    assert cli.send("p1", "assess", T0, assess_data())[0] == 0
    return cli


def assert_one_line_error(err: str, *words: str) -> None:
    """The error is one line on stderr, names what was wrong and shows no traceback."""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("carepath: error: ")
    assert "Traceback" not in err
    for word in words:
        assert word in err


# -- success paths -------------------------------------------------------------------------------


def test_enroll_prints_the_new_state(cli: Cli) -> None:
    """enroll exits 0 and says where the patient starts."""
    code, out, err = cli("enroll", "p1", "--version", "1", "--at", iso(T0), "--factors", '{"age": 70}')
    assert (code, err) == (0, "")
    assert "p1" in out and "assessment" in out


def test_enroll_json_is_the_status_document(cli: Cli) -> None:
    """enroll --json prints the status of the enrolled patient, factors included."""
    document = cli.json("enroll", "p1", "--version", "1", "--at", iso(T0), "--factors", '{"anticoagulant": true}')
    assert set(document) >= STATUS_KEYS
    assert (document["state"], document["revision"], document["next_due_at"]) == ("assessment", 1, None)
    assert document["context"]["factors"]["anticoagulant"] is True


def test_send_moves_the_patient_and_reports_it(cli: Cli) -> None:
    """send exits 0 and names the new state; the change is durable."""
    cli("enroll", "p1", "--version", "1", "--at", iso(T0))
    code, out, err = cli.send("p1", "assess", T0, assess_data())
    assert (code, err) == (0, "")
    assert "first_line" in out
    assert cli.json("status", "p1")["state"] == "first_line"


def test_send_json_has_status_and_entry(treated: Cli) -> None:
    """send --json is the status document plus whether it changed and the audit entry written."""
    code, out, _ = treated.send("p1", "reassess", T0 + WEEK, reassess_data())
    assert code == 0
    code, out, _ = treated("send", "p1", "tick", "--at", iso(T0 + 3 * WEEK), "--json", "--actor", "nurse")
    document = json.loads(out)
    assert set(document) >= STATUS_KEYS
    assert document["changed"] is True and document["duplicate"] is False
    assert set(document["entry"]) >= HISTORY_KEYS
    assert document["entry"]["actor"] == "nurse"


def test_send_with_idempotency_key_twice_writes_once(treated: Cli) -> None:
    """A repeated keyed send exits 0, says nothing was written, and history grows by one only."""
    args = ("send", "p1", "reassess", "--at", iso(T0 + WEEK), "--data", json.dumps(reassess_data()))
    assert treated(*args, "--idempotency-key", "visit-1")[0] == 0
    code, out, _ = treated(*args, "--idempotency-key", "visit-1")
    assert code == 0 and "nothing written" in out
    assert [e["seq"] for e in treated.json("history", "p1")] == [1, 2, 3]


def test_status_json_shape(treated: Cli) -> None:
    """status --json has every documented key with the documented types."""
    document = treated.json("status", "p1")
    assert set(document) >= STATUS_KEYS
    assert document["patient_id"] == "p1"
    assert (document["pathway"], document["version"]) == ("piriformis", 1)
    assert document["state"] == "first_line"
    assert document["configuration"] == ["treatment", "line", "first_line", "monitoring", "scheduled"]
    assert document["revision"] == 2
    assert datetime.fromisoformat(document["next_due_at"]) == T0 + 2 * WEEK
    assert document["outcome"] is None
    assert document["plan"] and all(set(item) >= PLAN_ITEM_KEYS for item in document["plan"])


def test_status_json_outcome_of_urgent_referral(cli: Cli) -> None:
    """An urgent referral's outcome carries reason, urgency and the red flags."""
    cli("enroll", "p1", "--version", "1", "--at", iso(T0))
    cli.send("p1", "assess", T0, assess_data(red_flags=["cauda_equina"]))
    document = cli.json("status", "p1")
    assert document["state"] == "urgent_referral"
    assert document["outcome"] == {"reason": "red_flag", "urgency": "emergency", "red_flags": ["cauda_equina"]}
    assert document["next_due_at"] is None


def test_status_without_json_is_human_readable(treated: Cli) -> None:
    """Plain status shows the state and the plan."""
    code, out, _ = treated("status", "p1")
    assert code == 0
    assert "first_line" in out and "plan" in out


def test_history_json_shape(treated: Cli) -> None:
    """history --json lists every entry in order with the documented keys."""
    entries = treated.json("history", "p1")
    assert [e["seq"] for e in entries] == [1, 2]
    assert all(set(e) >= HISTORY_KEYS for e in entries)
    enrolled, assessed = entries
    assert enrolled["event"] == "enroll" and enrolled["state_before"] is None
    assert enrolled["state_after"] == "assessment" and enrolled["configuration_before"] == []
    assert assessed["event"] == "assess" and assessed["data"] == json.loads(json.dumps(assess_data()))
    assert assessed["state_before"] == "assessment"
    assert assessed["state_after"] == "first_line"
    assert assessed["configuration_after"] == ["treatment", "line", "first_line", "monitoring", "scheduled"]
    assert datetime.fromisoformat(assessed["at"]) == T0
    assert datetime.fromisoformat(assessed["recorded_at"]) == NOW
    assert len(assessed["hash"]) == 64


def test_history_without_json_is_human_readable(treated: Cli) -> None:
    """Plain history shows each event."""
    code, out, _ = treated("history", "p1")
    assert code == 0 and "assess" in out and "enroll" in out


def test_tick_sweeps_due_patients(treated: Cli) -> None:
    """tick --at advances the due patients and reports the counts."""
    report = treated.json("tick", "--at", iso(T0 + 2 * WEEK))
    assert (report["advanced"], report["unchanged"], report["skipped"]) == (1, 0, {})
    assert treated.json("status", "p1")["configuration"][-1] == "due"
    code, out, _ = treated("tick", "--at", iso(T0 + 2 * WEEK))
    assert code == 0 and "0 advanced" in out


# -- errors and exit statuses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["send", "p1", "reassess", "--at", iso(T0 + WEEK), "--data", '{"pain": 11}'], ["pain"]),
        (["send", "p1", "reassess", "--at", iso(T0 + WEEK), "--data", "{not json"], ["--data", "JSON"]),
        (["send", "p1", "reassess", "--at", iso(T0 + WEEK), "--data", "[1]"], ["--data", "object"]),
        (["send", "p1", "discharge", "--at", iso(T0 + WEEK)], ["discharge"]),
        (["send", "p1", "tick", "--at", "2026-02-01T09:00:00"], ["time zone"]),
        (["send", "p1", "tick", "--at", "next tuesday"], ["--at", "ISO 8601"]),
        (["send", "p1", "tick", "--at", iso(T0 - WEEK)], ["before"]),
        (["send", "p1", "tick", "--at", iso(NOW + timedelta(minutes=6))], ["future"]),
        (["enroll", "p1", "--version", "1", "--at", iso(T0)], ["already enrolled"]),
        (["enroll", "p2", "--version", "1", "--at", iso(T0), "--factors", '{"smoker": true}'], ["smoker"]),
        (["tick", "--at", "2026-02-01"], ["time zone"]),
    ],
    ids=[
        "bad-payload",
        "bad-json",
        "not-an-object",
        "unknown-event",
        "naive-time",
        "bad-time-text",
        "backwards",
        "future",
        "duplicate-enrolment",
        "bad-factor",
        "naive-tick",
    ],
)
def test_invalid_input_exits_2_with_one_line(treated: Cli, args: list[str], words: list[str]) -> None:
    """Every invalid input exits 2 with one line on stderr naming the problem, and writes nothing."""
    code, out, err = treated(*args)
    assert code == 2
    assert out == ""
    assert_one_line_error(err, *words)
    assert [e["seq"] for e in treated.json("history", "p1")] == [1, 2]


def test_usage_error_exits_2(treated: Cli) -> None:
    """A missing required option is a usage error: the framework's message, exit 2."""
    code, _, err = treated("send", "p1", "tick")
    assert code == 2
    assert "--at" in err and "Traceback" not in err


def test_unknown_command_and_help_still_name_every_command(treated: Cli) -> None:
    """A mistyped command is suggested from all commands, and --help lists them all, though a
    known command is dispatched with only its own parameters built."""
    code, _, err = treated("histroy", "p1")
    assert code == 2 and "No such command 'histroy'" in err and "'history'" in err
    code, out, _ = treated("--help")
    assert code == 0 and all(name in out for name in ("status", "history", "import", "verify"))


def test_a_global_option_value_named_like_a_command_is_not_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    """In `--db history status p1` the command is status, refusing `history` as a database URL."""
    code, _, err = Cli("history", capsys)("status", "p1")
    assert code == 2 and "URL" in err and "No such command" not in err


def test_event_not_allowed_exits_3(treated: Cli) -> None:
    """A valid event the state does not accept exits 3 naming the event and state."""
    code, _, err = treated.send("p1", "relapse", T0 + WEEK, {"pain": 5, "fasciculations": "present"})
    assert code == 3
    assert_one_line_error(err, "relapse", "first_line")


@pytest.mark.parametrize(
    "args",
    [
        ["status", "ghost"],
        ["status", "ghost", "--json"],
        ["history", "ghost", "--json"],
        ["send", "ghost", "reassess", "--at", iso(T0), "--data", json.dumps(reassess_data())],
    ],
)
def test_unknown_patient_exits_4(cli: Cli, args: list[str]) -> None:
    """Commands naming a patient nobody enrolled (in a carepath database) exit 4; stdout holds nothing,
    or with --json only the error document."""
    assert cli("migrate")[0] == 0
    code, out, err = cli(*args)
    assert code == 4
    if "--json" in args:
        assert json.loads(out)["error"]["code"] == "unknown_patient"
    else:
        assert out == ""
    assert_one_line_error(err, "ghost")


def test_debug_shows_the_traceback_and_keeps_the_exit_status(treated: Cli) -> None:
    """With --debug the error's traceback is shown too; the exit status stays the error's."""
    with freeze_time(NOW):
        code, _, err = treated("--debug", "send", "p1", "reassess", "--at", iso(T0 + WEEK), "--data", "{}")
    assert code == 2
    assert "Traceback" in err and "InvalidPayload" in err
    code, _, err = treated("--debug", "status", "p1", "--pathway", "nowhere")
    assert code == 4 and "Traceback" in err


# -- a real process ---------------------------------------------------------------------------------------


def _carepath(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed console script (or `python -m pathway`) in a child process."""
    script = Path(sys.executable).with_name("carepath")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "pathway"]
    env = {k: v for k, v in os.environ.items() if k != "CAREPATH_DB"}
    return subprocess.run(
        [*command, "--db", db, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def test_console_script_end_to_end(sqlite_url: str) -> None:
    """The installed `carepath` enrols, sends, reports status and history, and maps errors to exit codes."""
    start = (datetime.now(UTC) - timedelta(days=60)).replace(microsecond=0)
    assert _carepath(sqlite_url, "enroll", "p1", "--version", "1", "--at", iso(start)).returncode == 0
    sent = _carepath(sqlite_url, "send", "p1", "assess", "--at", iso(start), "--data", json.dumps(assess_data()))
    assert sent.returncode == 0, sent.stderr
    status = _carepath(sqlite_url, "status", "p1", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["state"] == "first_line"
    history = _carepath(sqlite_url, "history", "p1", "--json")
    assert [e["seq"] for e in json.loads(history.stdout)] == [1, 2]

    refused = _carepath(sqlite_url, "send", "p1", "reassess", "--at", iso(start), "--data", '{"pain": -1}')
    assert refused.returncode == 2
    assert_one_line_error(refused.stderr, "pain")
    assert _carepath(sqlite_url, "status", "ghost").returncode == 4
    # Validation comes first: a bad payload for an event the state refuses is still exit 2.
    assert _carepath(sqlite_url, "send", "p1", "relapse", "--at", iso(start), "--data", "{}").returncode == 2
    relapse = json.dumps({"pain": 5, "fasciculations": "present"})
    assert _carepath(sqlite_url, "send", "p1", "relapse", "--at", iso(start), "--data", relapse).returncode == 3

    debug = _carepath(sqlite_url, "--debug", "send", "p1", "reassess", "--at", iso(start), "--data", "{}")
    assert debug.returncode == 2
    assert "Traceback" in debug.stderr and "InvalidPayload" in debug.stderr


def test_unknown_event_for_unknown_patient_is_an_input_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An event no pathway knows exits 2 even for a patient nobody enrolled: input errors come first."""
    assert main(["--db", f"sqlite:///{tmp_path / 'c.db'}", "send", "nobody", "bogus", "--at", T0.isoformat()]) == 2
    assert "unknown event 'bogus'" in capsys.readouterr().err
