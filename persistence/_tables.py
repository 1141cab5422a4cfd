"""The SQL tables, derived from the column declarations (persistence/_columns.py): one snapshot row
per enrolment (patient and pathway), one audit row per accepted event."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, Integer, String, Table, UniqueConstraint, text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine
from sqlmodel import SQLModel

from ._columns import AUDIT, PATIENTS, Field, TableDecl

__all__ = ["DUE_INDEX", "IDEMPOTENCY_INDEX", "SEQ_CONSTRAINT", "UTCDateTime", "audit", "metadata", "patients"]

DUE_INDEX = "ix_carepath_patients_due"
SEQ_CONSTRAINT = "uq_carepath_audit_seq"
IDEMPOTENCY_INDEX = "uq_carepath_audit_idempotency"


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on every backend.

    SQLite keeps them as naive UTC text (which sorts correctly for the due index); PostgreSQL
    as timestamptz.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime reached the database layer")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


_KINDS: dict[str, Callable[[Field], TypeEngine[Any]]] = {
    "text": lambda f: String(f.length),
    "integer": lambda f: Integer(),
    "json": lambda f: JSON(),
    "time": lambda f: UTCDateTime(),
}


def _columns(table: TableDecl) -> list[Column[Any]]:
    return [
        Column(f.name, _KINDS[f.kind](f), primary_key=f.primary_key, nullable=f.nullable, index=f.index)
        for f in table.fields
    ]


metadata = SQLModel.metadata

patients = Table(
    PATIENTS.name,
    metadata,
    *_columns(PATIENTS),
    # Covering index: the due sweep finds its enrolments from the index alone, no table lookups.
    Index(DUE_INDEX, "next_due_at", "patient_id", "pathway"),
)
"""The current snapshot of one enrolment: a patient on one pathway (the primary key)."""

audit = Table(
    AUDIT.name,
    metadata,
    *_columns(AUDIT),
    # One hash chain per enrolment: its sequence numbers and idempotency keys are its own.
    UniqueConstraint("patient_id", "pathway", "seq", name=SEQ_CONSTRAINT),
    # Partial: only keyed events are indexed, so ticks and unkeyed sends do not pay for it.
    Index(
        IDEMPOTENCY_INDEX,
        "patient_id",
        "pathway",
        "idempotency_key",
        unique=True,
        sqlite_where=text("idempotency_key IS NOT NULL"),
        postgresql_where=text("idempotency_key IS NOT NULL"),
    ),
)
"""One accepted event; rows are only ever inserted."""
