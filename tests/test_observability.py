"""Logs and metrics of the engine's commands: structured, payload-free by default, JSON on the command line."""

from __future__ import annotations

import json
import logging
import sys
import types
from collections.abc import Mapping
from pathlib import Path

import pytest

from pathway import (
    COMMANDS_COUNTER,
    DURATION_HISTOGRAM,
    Engine,
    FakeClock,
    JsonFormatter,
    NoMetrics,
    OpenTelemetryMetrics,
    default_metrics,
)
from pathway.cli import main
from tests.conftest import T0
from tests.helpers import assess_data

# A pain score no duration, revision or time in a record can spell (durations have 3 decimals).
SECRET_PAIN = 9.87654
FIELDS = ("command", "event", "patient_id", "pathway", "state_before", "state_after", "duration_ms", "outcome")


class Recorded:
    """A metrics sink that keeps what it is given."""

    def __init__(self) -> None:
        self.added: list[tuple[str, int, dict[str, str]]] = []
        self.recorded: list[tuple[str, float, dict[str, str]]] = []

    def add(self, name: str, value: int, attributes: Mapping[str, str]) -> None:
        self.added.append((name, value, dict(attributes)))

    def record(self, name: str, value: float, attributes: Mapping[str, str]) -> None:
        self.recorded.append((name, value, dict(attributes)))


def _commands(engine: Engine) -> None:
    engine.enroll("p1", T0, version=1, factors={"age": 71, "anticoagulant": True})
    engine.send("p1", "assess", T0, assess_data(pain=SECRET_PAIN), idempotency_key="visit-1")
    engine.send("p1", "assess", T0, assess_data(pain=SECRET_PAIN), idempotency_key="visit-1")
    with pytest.raises(Exception, match="assess"):
        engine.send("p1", "assess", T0, assess_data(pain=SECRET_PAIN))


def _records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "carepath.engine"]


def test_each_command_logs_one_structured_record(
    sqlite_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Enrol, send, a repeated key and a refused event each give one INFO record with the structured fields."""
    caplog.set_level(logging.INFO, logger="carepath")
    with Engine(sqlite_url, clock, metrics=NoMetrics()) as engine:
        _commands(engine)
    records = _records(caplog)
    assert [(r.levelname, r.command, r.outcome) for r in records] == [
        ("INFO", "enroll", "accepted"),
        ("INFO", "send", "accepted"),
        ("INFO", "send", "duplicate"),
        ("INFO", "send", "rejected"),
    ]
    sent = records[1]
    assert all(hasattr(sent, name) for name in FIELDS)
    assert (sent.event, sent.patient_id, sent.pathway) == ("assess", "p1", "piriformis")  # type: ignore[attr-defined]
    assert (sent.state_before, sent.state_after) == ("assessment", "first_line")  # type: ignore[attr-defined]
    assert isinstance(sent.duration_ms, float) and sent.duration_ms >= 0  # type: ignore[attr-defined]
    assert records[3].error == "EventNotAllowed"


def test_records_carry_no_payload_values_or_factors(
    sqlite_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither a payload value nor a patient factor appears in any record, unless log_payloads asks."""
    caplog.set_level(logging.DEBUG, logger="carepath")
    with Engine(sqlite_url, clock, metrics=NoMetrics()) as engine:
        _commands(engine)
    formatter = JsonFormatter()
    written = [formatter.format(r) for r in caplog.records]
    assert written and not any(str(SECRET_PAIN) in line or "anticoagulant" in line for line in written)

    caplog.clear()
    with Engine(sqlite_url, clock, metrics=NoMetrics(), log_payloads=True) as engine:
        engine.send("p1", "reassess", T0, {"pain": SECRET_PAIN, "fasciculations": "stable", "red_flags": []})
    assert any(str(SECRET_PAIN) in formatter.format(r) for r in _records(caplog))


def test_nothing_is_built_when_info_is_off(sqlite_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """With INFO off for the engine's logger no record is asked for (the hot path stays cheap)."""

    class Quiet:
        def __init__(self) -> None:
            self.asked: list[object] = []

        def isEnabledFor(self, level: int) -> bool:  # logging.Logger's name
            return level > logging.INFO

        def info(self, *args: object, **kwargs: object) -> None:
            self.asked.append(args)

    quiet = Quiet()
    monkeypatch.setattr("pathway._engine.logger", quiet)
    with Engine(sqlite_url, clock, metrics=NoMetrics()) as engine:
        engine.enroll("p1", T0, version=1)
        engine.send("p1", "assess", T0, assess_data())
    assert quiet.asked == []


def test_metrics_count_commands_by_outcome_and_time_them(sqlite_url: str, clock: FakeClock) -> None:
    """The metrics hook gets one count per command and outcome, and one latency per command."""
    sink = Recorded()
    with Engine(sqlite_url, clock, metrics=sink) as engine:
        _commands(engine)
    assert [(name, value, attrs["command"], attrs["outcome"]) for name, value, attrs in sink.added] == [
        (COMMANDS_COUNTER, 1, "enroll", "accepted"),
        (COMMANDS_COUNTER, 1, "send", "accepted"),
        (COMMANDS_COUNTER, 1, "send", "duplicate"),
        (COMMANDS_COUNTER, 1, "send", "rejected"),
    ]
    assert [(name, attrs) for name, _, attrs in sink.recorded] == [
        (DURATION_HISTOGRAM, {"command": c}) for c in ("enroll", "send", "send", "send")
    ]
    assert all(value >= 0 for _, value, _ in sink.recorded)


class FakeInstrument:
    def __init__(self, kind: str, name: str, calls: list[tuple[str, str, float, dict[str, str]]]) -> None:
        self.kind, self.name, self.calls = kind, name, calls

    def add(self, value: float, attributes: dict[str, str]) -> None:
        self.calls.append((self.kind, self.name, value, attributes))

    def record(self, value: float, attributes: dict[str, str]) -> None:
        self.calls.append((self.kind, self.name, value, attributes))


class FakeMeter:
    """What the engine uses of an OpenTelemetry meter: create_counter and create_histogram."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float, dict[str, str]]] = []
        self.created: list[tuple[str, str, str]] = []

    def create_counter(self, name: str, unit: str = "") -> FakeInstrument:
        self.created.append(("counter", name, unit))
        return FakeInstrument("counter", name, self.calls)

    def create_histogram(self, name: str, unit: str = "") -> FakeInstrument:
        self.created.append(("histogram", name, unit))
        return FakeInstrument("histogram", name, self.calls)


def test_the_default_uses_an_opentelemetry_meter_when_installed(
    sqlite_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With opentelemetry importable, the default sends counts and latencies to its `carepath` meter."""
    meter = FakeMeter()
    otel = types.ModuleType("opentelemetry")
    otel_metrics = types.ModuleType("opentelemetry.metrics")
    names: list[str] = []
    otel_metrics.get_meter = lambda name: names.append(name) or meter  # type: ignore[attr-defined]
    otel.metrics = otel_metrics  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "opentelemetry", otel)
    monkeypatch.setitem(sys.modules, "opentelemetry.metrics", otel_metrics)
    with Engine(sqlite_url, clock) as engine:
        assert isinstance(engine.metrics, OpenTelemetryMetrics)
        engine.enroll("p1", T0, version=1)
        engine.enroll("p2", T0, version=1)
    assert names == ["carepath"]
    assert meter.created == [("counter", COMMANDS_COUNTER, "1"), ("histogram", DURATION_HISTOGRAM, "ms")]
    counts = [(kind, value, attrs) for kind, _, value, attrs in meter.calls if kind == "counter"]
    assert counts == [("counter", 1, {"command": "enroll", "outcome": "accepted"})] * 2


def test_without_opentelemetry_metrics_go_nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """When opentelemetry cannot be imported the default is NoMetrics."""
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.setitem(sys.modules, "opentelemetry.metrics", None)
    assert isinstance(default_metrics(), NoMetrics)


def test_cli_logs_json_lines_to_stderr(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--log-format json writes one parseable JSON object per command to stderr, fields included."""
    at = "2026-01-05T09:00:00+00:00"
    enroll = ["enroll", "p1", "--at", at, "--version", "1", "--factors", '{"age": 71}']
    assert main(["--db", sqlite_url, "--log-format", "json", *enroll]) == 0
    data = json.dumps(assess_data(pain=SECRET_PAIN))
    assert main(["--db", sqlite_url, "--log-format", "json", "send", "p1", "assess", "--at", at, "--data", data]) == 0
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines()]
    assert [(d["logger"], d["level"], d["command"], d["outcome"]) for d in lines] == [
        ("carepath.engine", "info", "enroll", "accepted"),
        ("carepath.engine", "info", "send", "accepted"),
    ]
    assert lines[1]["state_after"] == "first_line" and isinstance(lines[1]["duration_ms"], float)
    assert str(SECRET_PAIN) not in err and '"age"' not in err


def test_cli_logs_nothing_by_default_and_refuses_an_unknown_format(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --log-format stderr stays quiet; an unknown format or level is an input error (exit 2)."""
    assert main(["--db", sqlite_url, "enroll", "p1", "--at", "2026-01-05T09:00:00+00:00"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["--db", sqlite_url, "--log-format", "xml", "status", "p1"]) == 2
    assert "--log-format 'xml'" in capsys.readouterr().err
    assert main(["--db", sqlite_url, "--log-level", "loud", "status", "p1"]) == 2
    assert all(isinstance(h, logging.NullHandler) for h in logging.getLogger("carepath").handlers)


def test_json_formatter_writes_parseable_lines(tmp_path: Path) -> None:
    """A record with extra fields becomes one JSON object holding them."""
    record = logging.LogRecord("carepath.engine", logging.INFO, __file__, 1, "send %s", ("p1",), None)
    record.outcome = "accepted"
    record.duration_ms = 1.5
    document = json.loads(JsonFormatter().format(record))
    assert document["message"] == "send p1"
    assert (document["level"], document["logger"], document["outcome"], document["duration_ms"]) == (
        "info",
        "carepath.engine",
        "accepted",
        1.5,
    )


def test_a_sweep_and_an_import_log_one_summary_each(
    sqlite_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """tick and ingest log one record each, with their counts and no patient."""
    caplog.set_level(logging.INFO, logger="carepath")
    line = json.dumps({"patient": "q1", "event": "enroll", "at": T0.isoformat(), "version": 1, "factors": {"age": 71}})
    with Engine(sqlite_url, clock, metrics=NoMetrics()) as engine:
        engine.ingest([line, "not json"])
        engine.tick(T0)
    ingested, swept = _records(caplog)
    assert (ingested.command, ingested.patient_id, ingested.accepted, ingested.rejected) == ("ingest", None, 1, 1)  # type: ignore[attr-defined]
    assert (swept.command, swept.outcome, swept.advanced, swept.unchanged) == ("tick", "accepted", 0, 0)  # type: ignore[attr-defined]
    assert not hasattr(ingested, "data")  # no line's payload or factors
