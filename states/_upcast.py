"""Upcasters: pure functions bringing a stored payload from an older schema to the current one.

Audit rows keep the payload exactly as it was validated when recorded, with its schema number.
When a payload changes shape, the schema number is bumped and one upcaster per affected
(pathway, event) is registered here, upgrading a payload from schema n to n + 1. Replay and
verify run the chain before validating a stored payload, so old rows are read by current code
without ever being rewritten (rewriting would break the hash chain).

Upcasters are explicit and registered by name; an event with no upcaster for a schema step
keeps its payload unchanged across that step (most payloads do not change in a given bump).

Example, a schema 0 in which `reassess` named its fields `pain_score` and `fasciculation`:

    register_upcaster("piriformis", "reassess", 0, rename_fields(pain_score="pain", fasciculation="fasciculations"))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from carepath.errors import Category

from ._errors import StatesError

__all__ = [
    "UnknownPayloadSchema",
    "Upcaster",
    "register_upcaster",
    "rename_fields",
    "unregister_upcaster",
    "upcast",
    "upcasters",
]

Upcaster = Callable[[Mapping[str, Any]], dict[str, Any]]

# (pathway, event, from_schema) -> upcaster from `from_schema` to `from_schema + 1`.
_CHAIN: dict[tuple[str, str, int], Upcaster] = {}


class UnknownPayloadSchema(StatesError):
    """Raised when a stored payload's schema is newer than the current one or below the oldest known."""

    code = "unknown_payload_schema"
    category = Category.INTERNAL

    def __init__(self, pathway: str, event: str, schema: int, current: int) -> None:
        self.pathway = pathway
        self.event = event
        self.schema = schema
        self.current = current
        super().__init__(
            f"{pathway} {event} payload has schema {schema}, which this version (current schema {current}) cannot read"
        )


def register_upcaster(pathway: str, event: str, from_schema: int, upcaster: Upcaster) -> Upcaster:
    """Register the step from `from_schema` to `from_schema + 1` for one event of one pathway."""
    key = (pathway, event, from_schema)
    if key in _CHAIN:
        raise ValueError(f"an upcaster from schema {from_schema} is already registered for {pathway} {event}")
    _CHAIN[key] = upcaster
    return upcaster


def unregister_upcaster(pathway: str, event: str, from_schema: int) -> None:
    """Remove a registered step (tests register temporary ones)."""
    del _CHAIN[(pathway, event, from_schema)]


def upcasters(pathway: str, event: str) -> dict[int, Upcaster]:
    """The registered steps of one event, by the schema they upgrade from."""
    return {schema: fn for (name, ev, schema), fn in _CHAIN.items() if (name, ev) == (pathway, event)}


def oldest_schema(pathway: str) -> int | None:
    """The oldest schema any upcaster of the pathway reads, or None without upcasters."""
    schemas = [schema for (name, _event, schema) in _CHAIN if name == pathway]
    return min(schemas) if schemas else None


def upcast(pathway: str, event: str, payload: Mapping[str, Any], schema: int, current: int) -> Mapping[str, Any]:
    """The payload in the shape of schema `current` (the same object when it is already current)."""
    if schema == current:
        return payload
    oldest = oldest_schema(pathway)
    if schema > current or oldest is None or schema < oldest:
        raise UnknownPayloadSchema(pathway, event, schema, current)
    upgraded: Mapping[str, Any] = payload
    for step in range(schema, current):
        upcaster = _CHAIN.get((pathway, event, step))
        if upcaster is not None:
            upgraded = upcaster(upgraded)
    return upgraded


def rename_fields(**renames: str) -> Upcaster:
    """An upcaster renaming fields (old name=new name), leaving the others as they are."""

    def rename(payload: Mapping[str, Any]) -> dict[str, Any]:
        return {renames.get(name, name): value for name, value in payload.items()}

    rename.__name__ = "rename_" + "_".join(f"{old}_to_{new}" for old, new in renames.items())
    return rename
