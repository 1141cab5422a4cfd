"""Each persisted field is declared once (persistence/_columns.py); tables, records, codecs and hashes follow it."""

from __future__ import annotations

import dataclasses
import typing
from datetime import UTC, datetime

import orjson
import pytest

from persistence._chain import HASHED_FIELDS, entry_hash
from persistence._columns import AUDIT, PATIENTS, Field, TableDecl
from persistence._records import AuditEntry, NewEntry, Snapshot
from persistence._rows import RowCodec
from persistence._tables import UTCDateTime, audit, patients

# Columns the store fills in itself when it appends an entry (NewEntry holds the others).
STORE_SUPPLIED = {"patient_id", "seq", "recorded_at", "pathway", "version", "prev_hash"}
T = datetime(2026, 3, 2, 9, 30, 0, 123456, tzinfo=UTC)


def _record_fields(record: type) -> list[tuple[str, object]]:
    hints = typing.get_type_hints(record)
    # Fields left out of comparisons are not columns (AuditEntry.sealed: the stored ciphertexts).
    return [(f.name, hints[f.name]) for f in dataclasses.fields(record) if f.compare]


def _declared(table: TableDecl) -> list[tuple[str, object]]:
    return [(f.name, f.python_type) for f in table.fields if f.in_record]


def test_snapshot_fields_are_the_declared_patient_columns() -> None:
    """Snapshot has exactly the declared snapshot columns, in their order, with their types."""
    assert _record_fields(Snapshot) == _declared(PATIENTS)


def test_audit_entry_fields_are_the_declared_audit_columns() -> None:
    """AuditEntry has exactly the declared audit columns (but the surrogate id), in order, with their types."""
    assert _record_fields(AuditEntry) == _declared(AUDIT)


def test_new_entry_and_the_store_fill_every_hashed_column() -> None:
    """NewEntry's fields are audit columns of the same types; with the store's own they are the hashed fields."""
    declared = dict(_declared(AUDIT))
    new_fields = dict(_record_fields(NewEntry))
    assert {name: declared[name] for name in new_fields} == new_fields
    assert set(new_fields) | STORE_SUPPLIED == set(HASHED_FIELDS)
    assert not set(new_fields) & STORE_SUPPLIED


def test_hashed_fields_are_unchanged() -> None:
    """The hash covers these 16 fields: adding or removing one would change every hash of every database."""
    assert set(HASHED_FIELDS) == {
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
    }


def test_entry_hash_bytes_are_unchanged() -> None:
    """A known row still hashes to the digest recorded before the columns were declared in one place."""
    row = {
        "patient_id": "p1",
        "seq": 1,
        "event": "enroll",
        "payload": {"pain": 7, "note": "é"},
        "payload_schema": 1,
        "at": T,
        "recorded_at": T,
        "actor": None,
        "pathway": "piriformis",
        "version": 2,
        "config_before": [],
        "config_after": ["assessment"],
        "transitions": [{"source": "start", "target": "assessment"}],
        "decision": None,
        "idempotency_key": "k1",
        "prev_hash": "0" * 64,
    }
    assert entry_hash(row) == "018744604f13f6263c67e37425d66e30b6a4d0833dcb426b06405a9d0384a38f"


@pytest.mark.parametrize(("table", "decl"), [(patients, PATIENTS), (audit, AUDIT)], ids=["patients", "audit"])
def test_sql_tables_follow_the_declarations(table: typing.Any, decl: TableDecl) -> None:
    """Each SQL table has the declared columns in order, with their kinds, lengths, nullability and keys."""
    assert table.name == decl.name
    assert [c.name for c in table.columns] == [f.name for f in decl.fields]
    for f in decl.fields:
        column = table.c[f.name]
        assert (column.nullable, column.primary_key, bool(column.index)) == (f.nullable, f.primary_key, f.index), f.name
        if f.kind == "text":
            assert column.type.length == f.length, f.name
        if f.kind == "time":
            assert isinstance(column.type, UTCDateTime), f.name


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_codec_round_trips_records_by_name(dialect: str) -> None:
    """A snapshot and an entry encoded for the database decode to equal records, on both dialects."""
    codec = RowCodec(dialect, PATIENTS.name, AUDIT.name)
    snap = Snapshot(
        patient_id="p1",
        pathway="piriformis",
        version=1,
        configuration=["treatment", "line"],
        context={"pain": 6},
        state="line",
        state_since=T,
        revision=3,
        next_due_at=None,
        last_event_at=T,
        last_seq=3,
        last_hash="a" * 64,
        created_at=T,
        updated_at=T,
    )
    encoded = codec.snapshot_params(snap)
    if dialect == "postgresql":  # psycopg parses json itself
        encoded = tuple(_parsed(name, value) for name, value in zip(PATIENTS.names, encoded, strict=True))
    assert codec.snapshot(encoded) == snap
    entry = AuditEntry(
        **{name: getattr(snap, name) for name in ("patient_id", "pathway", "version")},
        seq=1,
        event="assess",
        payload={"pain": 6},
        payload_schema=1,
        at=T,
        recorded_at=T,
        actor="dr-a",
        config_before=[],
        config_after=["line"],
        transitions=[],
        decision={"rule": "x"},
        idempotency_key=None,
        prev_hash="0" * 64,
        hash="b" * 64,
        key_id="k2026",
    )
    encoded = codec.entry_params(entry.as_row())
    if dialect == "postgresql":
        encoded = tuple(_parsed(name, value) for name, value in zip(AUDIT.names, encoded, strict=True))
    assert codec.entry(encoded) == entry
    update = codec.update_params(2, snap)
    assert update[-3:] == ("p1", "piriformis", 2)
    assert len(update) == len(PATIENTS.updated) + 3


def _parsed(name: str, value: object) -> object:
    """A value as psycopg returns it: json columns parsed."""
    json_columns = AUDIT.of_kind("json") | PATIENTS.of_kind("json")
    return orjson.loads(value) if isinstance(value, str) and name in json_columns else value


def test_updates_leave_keys_and_creation_time_alone() -> None:
    """An UPDATE of a snapshot writes every column but the enrolment key and created_at."""
    assert set(PATIENTS.updated) == set(PATIENTS.names) - {"patient_id", "pathway", "created_at"}


def test_a_column_declared_twice_is_refused() -> None:
    """A table declaring one column name twice fails when it is declared, naming the table."""
    with pytest.raises(ValueError, match="table t: a column is declared twice"):
        TableDecl("t", (Field("a", "integer"), Field("a", "integer")))


def test_a_text_column_without_length_is_refused() -> None:
    """A text column must declare its maximum length."""
    with pytest.raises(ValueError, match="column a needs a length"):
        TableDecl("t", (Field("a", "text"),))
