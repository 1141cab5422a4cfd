"""SQLModel tables: one snapshot row per enrolment (patient and pathway), one audit row per accepted event."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, UniqueConstraint, text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from .rows import AUDIT_TABLE, PATIENTS_TABLE

__all__ = ["DUE_INDEX", "IDEMPOTENCY_INDEX", "SEQ_CONSTRAINT", "AuditRow", "PatientRow", "UTCDateTime", "metadata"]

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


def _json(nullable: bool = False) -> Any:
    return Field(sa_column=Column(JSON, nullable=nullable))


def _time(nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


class PatientRow(SQLModel, table=True):
    """The current snapshot of one enrolment: a patient on one pathway (the primary key)."""

    __tablename__ = PATIENTS_TABLE
    # Covering index: the due sweep finds its enrolments from the index alone, no table lookups.
    __table_args__ = (Index(DUE_INDEX, "next_due_at", "patient_id", "pathway"),)

    patient_id: str = Field(primary_key=True, max_length=200)
    pathway: str = Field(primary_key=True, max_length=100)
    version: int
    configuration: list[str] = _json()
    context: dict[str, Any] = _json()
    state: str = Field(index=True, max_length=100)
    state_since: datetime = _time()
    revision: int
    next_due_at: datetime | None = _time(nullable=True)
    last_event_at: datetime = _time()
    last_seq: int
    last_hash: str = Field(max_length=64)
    created_at: datetime = _time()
    updated_at: datetime = _time()


class AuditRow(SQLModel, table=True):
    """One accepted event; rows are only ever inserted."""

    __tablename__ = AUDIT_TABLE
    __table_args__ = (
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

    id: int | None = Field(default=None, primary_key=True)
    patient_id: str = Field(max_length=200)
    seq: int
    event: str = Field(max_length=100)
    payload: dict[str, Any] = _json()
    payload_schema: int
    at: datetime = _time()
    recorded_at: datetime = _time()
    actor: str | None = Field(default=None, max_length=200)
    pathway: str = Field(max_length=100)
    version: int
    config_before: list[str] = _json()
    config_after: list[str] = _json()
    transitions: list[dict[str, Any]] = _json()
    decision: dict[str, Any] | None = _json(nullable=True)
    idempotency_key: str | None = Field(default=None, max_length=200)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)
    # The audit key `hash` is an HMAC under; NULL: a plain SHA-256 entry (persistence/chain.py).
    key_id: str | None = Field(default=None, max_length=64)


metadata = SQLModel.metadata
