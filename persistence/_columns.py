"""Every persisted field, declared once: the two tables' columns in their order.

Derived from these declarations: the SQL tables (persistence/_tables.py), the statements and
value codecs of the hot paths (persistence/_rows.py), the fields the audit hash covers
(persistence/_chain.py) and the record dataclasses' field lists (persistence/_records.py, checked
against these declarations by the test suite).

Pure data: importing it loads no database library.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "AUDIT",
    "HASHED_FIELDS",
    "PATIENTS",
    "Field",
    "SqlKind",
    "TableDecl",
]

# How a column is stored: VARCHAR of a maximum length, INTEGER, JSON, or an aware UTC timestamp.
SqlKind = Literal["text", "integer", "json", "time"]

_SCALAR_TYPES: dict[str, Any] = {"text": str, "integer": int, "time": datetime}


@dataclass(frozen=True)
class Field:
    """One persisted field: its column and the record field it maps to (same name)."""

    name: str
    kind: SqlKind
    # The record's type for JSON columns (str, int and datetime follow from the other kinds).
    json_type: Any = None
    length: int | None = None  # for text columns
    nullable: bool = False
    primary_key: bool = False
    index: bool = False  # a single-column index (multi-column ones are in persistence/_tables.py)
    # Covered by the audit hash chain (persistence/_chain.py): changing this set changes every hash.
    hashed: bool = False
    # Written when the row is inserted and never updated (snapshot columns only).
    written_once: bool = False
    # False: a column with no record field (the audit table's surrogate id).
    in_record: bool = True

    @property
    def python_type(self) -> Any:
        """The record field's type (`X | None` when the column is nullable)."""
        base = self.json_type if self.kind == "json" else _SCALAR_TYPES[self.kind]
        return base | None if self.nullable else base


def _text(name: str, length: int, **options: Any) -> Field:
    return Field(name, "text", length=length, **options)


def _int(name: str, **options: Any) -> Field:
    return Field(name, "integer", **options)


def _json(name: str, json_type: Any, **options: Any) -> Field:
    return Field(name, "json", json_type=json_type, **options)


def _time(name: str, **options: Any) -> Field:
    return Field(name, "time", **options)


@dataclass(frozen=True)
class TableDecl:
    """A table's name and its fields in column order."""

    name: str
    fields: tuple[Field, ...]

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"table {self.name}: a column is declared twice in {names}")
        for f in self.fields:
            if (f.kind == "text") != (f.length is not None) or (f.kind == "json") != (f.json_type is not None):
                raise ValueError(f"table {self.name}: column {f.name} needs a length (text) or a type (json)")

    @property
    def names(self) -> tuple[str, ...]:
        """The record's column names in column order (the surrogate id left out)."""
        return tuple(f.name for f in self.fields if f.in_record)

    def of_kind(self, kind: SqlKind) -> frozenset[str]:
        return frozenset(f.name for f in self.fields if f.kind == kind and f.in_record)

    @property
    def key(self) -> tuple[str, ...]:
        """The primary key's columns."""
        return tuple(f.name for f in self.fields if f.primary_key)

    @property
    def updated(self) -> tuple[str, ...]:
        """The columns an UPDATE of a row writes: all but the key and the written-once ones."""
        return tuple(f.name for f in self.fields if f.in_record and not (f.primary_key or f.written_once))


PATIENTS = TableDecl(
    "carepath_patients",
    (
        _text("patient_id", 200, primary_key=True),
        _text("pathway", 100, primary_key=True),
        _int("version"),
        _json("configuration", list[str]),
        _json("context", dict[str, Any]),
        _text("state", 100, index=True),
        _time("state_since"),
        _int("revision"),
        _time("next_due_at", nullable=True),
        _time("last_event_at"),
        _int("last_seq"),
        _text("last_hash", 64),
        _time("created_at", written_once=True),
        _time("updated_at"),
    ),
)
"""One row per enrolment: a patient on one pathway, its current snapshot."""

AUDIT = TableDecl(
    "carepath_audit",
    (
        _int("id", primary_key=True, in_record=False),
        _text("patient_id", 200, hashed=True),
        _int("seq", hashed=True),
        _text("event", 100, hashed=True),
        _json("payload", dict[str, Any], hashed=True),
        _int("payload_schema", hashed=True),
        _time("at", hashed=True),
        _time("recorded_at", hashed=True),
        _text("actor", 200, nullable=True, hashed=True),
        _text("pathway", 100, hashed=True),
        _int("version", hashed=True),
        _json("config_before", list[str], hashed=True),
        _json("config_after", list[str], hashed=True),
        _json("transitions", list[dict[str, Any]], hashed=True),
        _json("decision", dict[str, Any], nullable=True, hashed=True),
        _text("idempotency_key", 200, nullable=True, hashed=True),
        _text("prev_hash", 64, hashed=True),
        _text("hash", 64),
        # The audit key `hash` is an HMAC under; NULL: a plain SHA-256 entry. Keyed entries bind
        # it in their hash separately (persistence/_chain.py), so it is not one of the hashed fields.
        _text("key_id", 64, nullable=True),
    ),
)
"""One row per accepted event; rows are only ever inserted."""

HASHED_FIELDS = tuple(f.name for f in AUDIT.fields if f.hashed)
"""Every audit column except the surrogate id, the hash itself and the audit key id."""
