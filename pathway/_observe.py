"""Logs and metrics of the engine's commands.

Logs: standard `logging` under the `carepath` logger (`carepath.engine` for commands), one INFO
record per command with structured fields in the record (`extra`): command, event, patient_id,
pathway, state_before, state_after, duration_ms, outcome (accepted, unchanged, duplicate or
rejected) and, for a rejection, the error's class. Payload values and patient factors are never
logged unless the engine was made with `log_payloads=True`. `JsonFormatter` writes a record as
one JSON line.

Metrics: anything with `add` (a counter) and `record` (a histogram) serves (`Metrics`). The
default sends them to an OpenTelemetry meter when `opentelemetry` is installed, else nowhere.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "COMMANDS_COUNTER",
    "DURATION_HISTOGRAM",
    "JsonFormatter",
    "Metrics",
    "NoMetrics",
    "OpenTelemetryMetrics",
    "default_metrics",
    "logger",
]

logging.getLogger("carepath").addHandler(logging.NullHandler())
logger = logging.getLogger("carepath.engine")

# Instrument names: commands by command and outcome, and their latency in milliseconds.
COMMANDS_COUNTER = "carepath.commands"
DURATION_HISTOGRAM = "carepath.command.duration"


@runtime_checkable
class Metrics(Protocol):
    """Where the engine reports its counters and latencies."""

    def add(self, name: str, value: int, attributes: Mapping[str, str]) -> None:
        """Add `value` to the counter `name` (per attribute set)."""

    def record(self, name: str, value: float, attributes: Mapping[str, str]) -> None:
        """Record one value of the histogram `name` (per attribute set)."""


class NoMetrics:
    """Metrics that go nowhere."""

    def add(self, name: str, value: int, attributes: Mapping[str, str]) -> None:
        return None

    def record(self, name: str, value: float, attributes: Mapping[str, str]) -> None:
        return None


class OpenTelemetryMetrics:
    """Counters and histograms of an OpenTelemetry meter (instruments created on first use)."""

    def __init__(self, meter: Any) -> None:
        self.meter = meter
        self._counters: dict[str, Any] = {}
        self._histograms: dict[str, Any] = {}
        self._lock = threading.Lock()

    def add(self, name: str, value: int, attributes: Mapping[str, str]) -> None:
        counter = self._counters.get(name)
        if counter is None:
            with self._lock:
                counter = self._counters.get(name) or self.meter.create_counter(name, unit="1")
                self._counters[name] = counter
        counter.add(value, attributes=dict(attributes))

    def record(self, name: str, value: float, attributes: Mapping[str, str]) -> None:
        histogram = self._histograms.get(name)
        if histogram is None:
            with self._lock:
                histogram = self._histograms.get(name) or self.meter.create_histogram(name, unit="ms")
                self._histograms[name] = histogram
        histogram.record(value, attributes=dict(attributes))


def default_metrics() -> Metrics:
    """An OpenTelemetry meter named `carepath` when `opentelemetry` is installed, else NoMetrics."""
    try:
        metrics = importlib.import_module("opentelemetry.metrics")
    except ImportError:
        return NoMetrics()
    return OpenTelemetryMetrics(metrics.get_meter("carepath"))


# Attributes every LogRecord has: the rest came through `extra`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and the record's structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                document[key] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, ensure_ascii=False)
