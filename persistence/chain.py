"""The per-patient hash chain: SHA-256 over a canonical JSON of each audit row."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

__all__ = ["GENESIS", "HASHED_FIELDS", "canonical_json", "entry_hash", "iso_utc"]

GENESIS = "0" * 64

# Every audit column except the surrogate id and the hash itself.
HASHED_FIELDS = (
    "patient_id",
    "seq",
    "event",
    "payload",
    "payload_schema",
    "at",
    "recorded_at",
    "actor",
    "pathway",
    "version",
    "config_before",
    "config_after",
    "transitions",
    "decision",
    "idempotency_key",
    "prev_hash",
)


@lru_cache(maxsize=4096)  # the same `at` and `recorded_at` recur across a command's rows
def iso_utc(value: datetime) -> str:
    """One spelling per instant: UTC, microseconds, explicit offset."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8, shortest round-trip floats: one text per row.

    Callers spell datetimes with `iso_utc` first; anything that is not plain JSON is refused.
    """
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME).decode()


_HASHED_TIMES = ("at", "recorded_at")


def entry_hash(row: Mapping[str, Any]) -> str:
    """The hash of an audit row; `row` must hold every field of HASHED_FIELDS."""
    material = {name: row[name] for name in HASHED_FIELDS}
    for name in _HASHED_TIMES:  # the only datetimes of a row: spelled once, without a generic walk
        material[name] = iso_utc(material[name])
    return hashlib.sha256(canonical_json(material).encode()).hexdigest()
