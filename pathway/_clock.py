"""Clocks. The engine reads its clock once per command and stamps every record with it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

__all__ = ["Clock", "FakeClock", "system_clock"]

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The current UTC time, looked up at call time (so freezegun can move it)."""
    return datetime.now(UTC)


class FakeClock:
    """A clock for tests and simulations that only moves forward, and counts its reads."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs an aware start time")
        self.now = start
        self.reads = 0

    def __call__(self) -> datetime:
        self.reads += 1
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("a clock does not go backwards")
        self.now += delta
        return self.now

    def set(self, when: datetime) -> datetime:
        return self.advance(when - self.now)
