"""Typed uses of the public API: `make lint` checks this file with mypy (strict); pytest does not run it.

Each function uses one part of the door the way a caller would, and `assert_type` pins what it
returns: a result that became `Any`, or an attribute that moved, fails the lint.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, assert_type

from pathway import (
    Batch,
    CohortRow,
    Engine,
    Explanation,
    FakeClock,
    HistoryEntry,
    IngestReport,
    JsonFormatter,
    Metrics,
    NoMetrics,
    ReplayResult,
    SendResult,
    Status,
    SweepReport,
    VerifyReport,
    WhatIfReport,
)
from states import PlanItem

AT = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def status_fields(engine: Engine) -> None:
    status = engine.status("p-001")
    assert_type(status, Status)
    assert_type(status.patient_id, str)
    assert_type(status.pathway, str)
    assert_type(status.version, int)
    assert_type(status.state, str)
    assert_type(status.configuration, list[str])
    assert_type(status.revision, int)
    assert_type(status.next_due_at, datetime | None)
    assert_type(status.context, dict[str, Any])
    assert_type(status.state_since, datetime)
    assert_type(status.last_event_at, datetime)
    assert_type(status.plan, list[PlanItem])
    assert_type(status.flags, list[str])
    assert_type(status.to_json(), dict[str, Any])


def commands(engine: Engine) -> None:
    assert_type(engine.enroll("p-001", AT, pathway="piriformis", factors={"age": 70}), Status)
    result = engine.send("p-001", "assess", AT, {"pain": 8}, idempotency_key="visit-1")
    assert_type(result, SendResult)
    assert_type(result.duplicate, bool)
    assert_type(result.status.state, str)
    assert_type(engine.correct("p-001", 2, "typing error"), SendResult)
    assert_type(engine.tick(AT), SweepReport)
    assert_type(engine.tick(AT, workers="auto").advanced, int)


def batch(engine: Engine) -> None:
    with engine.batch() as staged:
        assert_type(staged, Batch)
        assert_type(staged.enroll("p-002", AT), Status)
        assert_type(staged.send("p-002", "assess", AT, {"pain": 8}), SendResult)

    def work(b: Batch) -> str:
        return b.send("p-002", "tick", AT).status.state

    assert_type(engine.run_batch(work), str)


def queries(engine: Engine) -> None:
    entries = engine.history("p-001")
    assert_type(entries, list[HistoryEntry])
    assert_type(entries[0].to_json(), dict[str, Any])
    assert_type(entries[0].seq, int)
    assert_type(engine.enrolments("p-001"), list[Status])
    assert_type(engine.count_by_state(), dict[str, int])
    assert_type(engine.cohort(AT), Iterator[CohortRow])
    assert_type(engine.explain("p-001", AT), Explanation)


def audit(engine: Engine) -> None:
    replayed = engine.replay("p-001", until=AT)
    assert_type(replayed, ReplayResult)
    assert_type(replayed.state, str)
    report = engine.verify(workers=1)
    assert_type(report, VerifyReport)
    assert_type(report.ok, bool)
    assert_type(engine.whatif({"moderate_improvement": 0.4}), WhatIfReport)


def exchange(engine: Engine, lines: list[str], folder: Path) -> None:
    assert_type(engine.ingest(lines, batch=500), IngestReport)
    assert_type(engine.export_fhir("p-001"), dict[str, Any])
    assert_type(engine.diagram("mermaid"), bytes)
    assert_type(engine.timeline("p-001", folder / "p-001.png"), Path)


class Counting:
    """A metrics sink of one's own: anything with `add` and `record` will do."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, name: str, value: int, attributes: Mapping[str, str]) -> None:
        self.counts[name] = self.counts.get(name, 0) + value

    def record(self, name: str, value: float, attributes: Mapping[str, str]) -> None:
        return None


def construction() -> None:
    sink: Metrics = Counting()
    with Engine("sqlite:///carepath.db", FakeClock(AT), pool_size=5, pool_timeout=10.0, metrics=sink) as engine:
        assert_type(engine, Engine)
    quiet: Metrics = NoMetrics()
    assert_type(Engine(metrics=quiet, log_payloads=False).url, str)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
