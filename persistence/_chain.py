"""The per-enrolment hash chain over a canonical JSON of each audit row.

Unkeyed (no audit key configured): each entry's `hash` is SHA-256 of the row, `key_id` NULL.
Anyone with write access and this module can recompute such a chain after an edit.

Keyed (an audit key configured, persistence/_keys.py): `hash` is HMAC-SHA256 under the key named
by the row's `key_id`, over the same fields plus `key_id`. Without the key an edit cannot be
re-hashed. Under a configured key an unkeyed entry is a failure, never a fallback.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import orjson

from ._columns import AUDIT, HASHED_FIELDS
from ._keys import AUDIT_KEY_ENV, AUDIT_KEY_FILE_ENV, AuditKeys

if TYPE_CHECKING:
    from ._records import AuditEntry

__all__ = [
    "GENESIS",
    "HASHED_FIELDS",
    "HASH_MISMATCH",
    "KEYED_WITHOUT_KEY",
    "UNKEYED_ENTRY",
    "UNKNOWN_KEY",
    "Sealer",
    "canonical_json",
    "entry_hash",
    "iso_utc",
    "keyed_hash",
]

GENESIS = "0" * 64


@lru_cache(maxsize=4096)  # the same `at` and `recorded_at` recur across a command's rows
def iso_utc(value: datetime) -> str:
    """One spelling per instant: UTC, microseconds, explicit offset."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")


_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8, shortest round-trip floats: one text per row.

    Callers spell datetimes with `iso_utc` first; anything that is not plain JSON is refused.
    """
    return orjson.dumps(value, option=_CANONICAL).decode()


# HASHED_FIELDS (persistence/_columns.py): every audit column but the surrogate id, `hash` and `key_id`.
_HASHED_TIMES = tuple(name for name in HASHED_FIELDS if name in AUDIT.of_kind("time"))


def _compile_material(spell: str) -> Callable[[Any, str | None], bytes]:
    """The hashed material of a source, its fields read as `spell` says (`source[{name!r}]` for a
    row, `source.{name}` for an entry): canonical_json's bytes of the hashed fields, times spelled
    with `iso_utc`, plus `key_id` when keyed. One generated function names every hashed field once,
    as the row codecs do: a loop over the fields cost as much as the hash, on every append and in
    verify, which hashes every entry of the log."""
    read = {name: spell.format(name=name) for name in HASHED_FIELDS}
    values = ", ".join(
        f"{name!r}: _iso({read[name]})" if name in _HASHED_TIMES else f"{name!r}: {read[name]}"
        for name in HASHED_FIELDS
    )
    source = (
        "def material(source, key_id):\n"
        f"    material = {{{values}}}\n"
        "    if key_id is not None:  # keyed entries also bind the key they were written under\n"
        "        material['key_id'] = key_id\n"
        "    return _dumps(material, option=_option)  # canonical_json's bytes, without a decode and encode\n"
    )
    namespace: dict[str, Any] = {"_iso": iso_utc, "_dumps": orjson.dumps, "_option": _CANONICAL}
    exec(source, namespace)
    material: Callable[[Any, str | None], bytes] = namespace["material"]
    return material


# `_material(row, key_id)` of a row (a mapping holding every field of HASHED_FIELDS);
# `_entry_material(entry, key_id)` of an entry read back with clear columns, from its attributes.
_material = _compile_material("source[{name!r}]")
_entry_material = _compile_material("source.{name}")
_sha256 = hashlib.sha256


def entry_hash(row: Mapping[str, Any]) -> str:
    """The unkeyed hash of an audit row; `row` must hold every field of HASHED_FIELDS."""
    return _sha256(_material(row, None)).hexdigest()


def keyed_hash(row: Mapping[str, Any], keys: AuditKeys, key_id: str) -> str:
    """The HMAC-SHA256 of an audit row under the audit key `key_id`."""
    return keys.sign(key_id, _material(row, key_id))


# Reasons a row's own hash does not check out (verify reports them; details after ": ").
HASH_MISMATCH = "hash mismatch"
UNKEYED_ENTRY = "unkeyed entry"
UNKNOWN_KEY = "unknown audit key"
KEYED_WITHOUT_KEY = "keyed entry, no audit key configured"


class Sealer:
    """Hashes new entries and checks stored ones, keyed when audit keys are configured."""

    def __init__(self, keys: AuditKeys | None) -> None:
        self.keys = keys

    @property
    def keyed(self) -> bool:
        return self.keys is not None

    def seal(self, row: Mapping[str, Any]) -> tuple[str | None, str]:
        """(key_id, hash) of a new row: one hash computation, under the newest key if any."""
        keys = self.keys
        if keys is None:
            return None, _sha256(_material(row, None)).hexdigest()
        return keys.current, keys.sign(keys.current, _material(row, keys.current))

    def check(self, row: Mapping[str, Any]) -> tuple[str, str] | None:
        """None when the row's stored hash is right, else (reason, detail)."""
        return self._check(row.get("key_id"), row["hash"], _material, row)

    def check_entry(self, entry: AuditEntry) -> tuple[str, str] | None:
        """`check` of the row an entry was read from (its stored values, when some were decrypted)."""
        if entry.sealed:
            return self.check(entry.stored_row())
        return self._check(entry.key_id, entry.hash, _entry_material, entry)

    def _check(
        self, key_id: str | None, stored: str, material: Callable[[Any, str | None], bytes], source: Any
    ) -> tuple[str, str] | None:
        """The check of a row or entry whose hashed material `material(source, key_id)` gives."""
        keys = self.keys
        if keys is None:
            if key_id is not None:
                return KEYED_WITHOUT_KEY, (
                    f"written under audit key {key_id!r}; set {AUDIT_KEY_ENV} or {AUDIT_KEY_FILE_ENV} to check it"
                )
            recomputed = hashlib.sha256(material(source, None)).hexdigest()
        elif key_id is None:
            return UNKEYED_ENTRY, (
                "an audit key is configured but this entry carries a plain SHA-256 hash: written without "
                "the clinic's key or rewritten by someone without it (no downgrade is accepted)"
            )
        elif key_id not in keys:
            return UNKNOWN_KEY, f"written under key {key_id!r}, not one of the configured keys {keys.ids}"
        else:
            recomputed = keys.sign(key_id, material(source, key_id))
        if recomputed == stored:
            return None
        return HASH_MISMATCH, f"stored {stored[:16]}, recomputed {recomputed[:16]}"
