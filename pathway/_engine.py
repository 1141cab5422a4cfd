"""The application service: load an enrolment, apply an event on its definition, save, in one
transaction. Reads its clock once per command.

An enrolment is a patient on one pathway; a patient may have several. Commands on one patient
name the pathway, or leave it out when the patient has one enrolment (`resolve_pathway`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property, partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from carepath._records import quick_init
from persistence import (
    DEFAULT_URL,
    AuditEntry,
    ConcurrentUpdate,
    EnrolmentKey,
    IdempotencyConflict,
    IdRange,
    NewEntry,
    NoDatabase,
    Snapshot,
    SnapshotUpdate,
    UnknownPatient,
)
from persistence._reader import light_reader
from persistence._urls import is_private_memory
from states import (
    MIGRATE_EVENT,
    EventNotAllowed,
    NoMigration,
    Pathway,
    PlanItem,
    Step,
    UnknownEvent,
    definition_for_enrolment,
    get_pathway,
    known_events,
    require_aware,
)
from states._payloads import Payload, stored_payload

from ._clock import Clock, system_clock
from ._errors import AmbiguousEnrolment, EventInFuture, InvalidCommand, InvalidPatientId, TimeWentBackwards
from ._observe import COMMANDS_COUNTER, DURATION_HISTOGRAM, Metrics, NoMetrics, default_metrics, logger
from ._tuning import bulk_allocation, parallel_map

if TYPE_CHECKING:
    from persistence import Store, Transaction

    from ._cohort_plot import CohortHistory
    from ._explain import CohortRow, Explanation
    from ._fold import Rederived
    from ._ingest import IngestReport
    from ._replay import Problem, ReplayResult, VerifyReport, WhatIfReport
    from ._simulate import Scenario, SimulationResult

__all__ = [
    "DATABASE_ENV",
    "DEFAULT_PATHWAY",
    "EARLIEST_YEAR",
    "MAX_FUTURE_SKEW",
    "PAYLOAD_SCHEMA",
    "Batch",
    "Engine",
    "HistoryEntry",
    "MigrationChange",
    "Rederivation",
    "SendResult",
    "Status",
    "SweepReport",
    "clinical_time",
    "enrolment_label",
    "entry_json",
    "iso_or_none",
    "pick_enrolment",
    "resolve_pathway",
]

# An event may be stamped at most this far ahead of the engine's clock (DESIGN.md section 3).
MAX_FUTURE_SKEW = timedelta(minutes=5)
# Shape of stored payloads; bump it and add an upcaster when a payload changes shape.
PAYLOAD_SCHEMA = 1
DEFAULT_PATHWAY = "piriformis"
# The database an engine opens when given none (then persistence.DEFAULT_URL).
DATABASE_ENV = "CAREPATH_DB"
# Parallel work from the library only when asked: `workers=AUTO` is one process per core when
# the work is large enough (what the command line does by default).
Workers = int | Literal["auto"]

T = TypeVar("T")


@quick_init
@dataclass(frozen=True)
class Status:
    """What a patient's snapshot says, with the plan of its state (computed when first read)."""

    snapshot: Snapshot

    @property
    def definition(self) -> Pathway:
        return get_pathway(self.snapshot.pathway, self.snapshot.version)

    @property
    def patient_id(self) -> str:
        return self.snapshot.patient_id

    @property
    def pathway(self) -> str:
        return self.snapshot.pathway

    @property
    def version(self) -> int:
        return self.snapshot.version

    @property
    def state(self) -> str:
        return self.snapshot.state

    @property
    def configuration(self) -> list[str]:
        return list(self.snapshot.configuration)

    @property
    def revision(self) -> int:
        return self.snapshot.revision

    @property
    def next_due_at(self) -> datetime | None:
        return self.snapshot.next_due_at

    @property
    def context(self) -> dict[str, Any]:
        return self.snapshot.context

    @property
    def state_since(self) -> datetime:
        return self.snapshot.state_since

    @property
    def last_event_at(self) -> datetime:
        return self.snapshot.last_event_at

    @cached_property
    def plan(self) -> list[PlanItem]:
        return self.definition.plan(self.snapshot.configuration, self.snapshot.context)

    @property
    def outcome(self) -> dict[str, Any] | None:
        return self.definition.outcome(self.snapshot.configuration, self.snapshot.context)

    @property
    def flags(self) -> list[str]:
        return self.definition.flags(self.snapshot.context)

    def to_json(self) -> dict[str, Any]:
        return {
            "patient_id": self.patient_id,
            "pathway": self.pathway,
            "version": self.version,
            "state": self.state,
            "configuration": list(self.configuration),
            "revision": self.revision,
            "next_due_at": iso_or_none(self.next_due_at),
            "plan": [item.model_dump(mode="json") for item in self.plan],
            "outcome": self.outcome,
            "flags": self.flags,
            "context": self.context,
            "state_since": iso_or_none(self.state_since),
            "last_event_at": iso_or_none(self.last_event_at),
        }


@dataclass(frozen=True)
class Rederivation:
    """What re-deriving an enrolment from its history changed (a late event, an event dated before
    recorded ticks, or a correction): the state before and after, the tick entries superseded,
    the earlier clinical decisions that changed (seq, event, at, rule before and after; "not
    applied" for an event the new state does not allow, None for one no longer in the fold)."""

    late: bool
    state_before: str
    state_after: str
    supersedes: list[int]
    changes: list[dict[str, Any]]
    skipped: list[int]
    corrects: int | None = None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Rederivation:
        return cls(
            late=bool(record.get("late")),
            state_before=str(record.get("state_before")),
            state_after=str(record.get("state_after")),
            supersedes=list(record.get("supersedes") or []),
            changes=[dict(c) for c in record.get("changes") or []],
            skipped=list(record.get("skipped") or []),
            corrects=record.get("corrects"),
        )

    @property
    def state_changed(self) -> bool:
        return self.state_before != self.state_after

    def to_json(self) -> dict[str, Any]:
        return {
            "late": self.late,
            "state_before": self.state_before,
            "state_after": self.state_after,
            "state_changed": self.state_changed,
            "supersedes": self.supersedes,
            "changes": self.changes,
            "skipped": self.skipped,
            "corrects": self.corrects,
        }


@quick_init
@dataclass(frozen=True)
class SendResult:
    """The audit entry an event produced (or the earlier one, for a repeated idempotency key).

    `rederived` says what re-deriving the state from the history changed, when the event was
    dated before the enrolment's last event, or was a correction (None otherwise).
    """

    status: Status
    entry: AuditEntry | None
    changed: bool
    duplicate: bool = False
    rederived: Rederivation | None = None


def entry_json(entry: AuditEntry) -> dict[str, Any]:
    """An audit entry as JSON (the shape of `carepath history --json`).

    `state_before` / `state_after` are state names as `status` reports them (None before
    enrolment); the full configurations are beside them.
    """
    definition = get_pathway(entry.pathway, entry.version)
    decision = entry.decision or {}
    return {
        "seq": entry.seq,
        "event": entry.event,
        "at": entry.at.isoformat(),
        "recorded_at": entry.recorded_at.isoformat(),
        "actor": entry.actor,
        "data": entry.payload,
        "state_before": definition.state_name(entry.config_before) if entry.config_before else None,
        "state_after": definition.state_name(entry.config_after),
        "configuration_before": entry.config_before,
        "configuration_after": entry.config_after,
        "transitions": entry.transitions,
        "decision": entry.decision,
        "idempotency_key": entry.idempotency_key,
        "late": bool((decision.get("rederived") or {}).get("late")),
        "rederived": decision.get("rederived"),
        "payload_schema": entry.payload_schema,
        "pathway": entry.pathway,
        "version": entry.version,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


@dataclass(frozen=True)
class HistoryEntry(AuditEntry):
    """An audit entry of `Engine.history`, with its JSON shape (`to_json`)."""

    @classmethod
    def of(cls, entry: AuditEntry) -> HistoryEntry:
        return cls(**entry.__dict__)

    def to_json(self) -> dict[str, Any]:
        return entry_json(self)


@dataclass(frozen=True)
class MigrationChange:
    """What moving one enrolment to another version changes (or would change, in a dry run)."""

    patient_id: str
    pathway: str
    from_version: int
    to_version: int
    state_before: str
    state_after: str
    configuration_before: list[str]
    configuration_after: list[str]
    context_changes: dict[str, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "patient_id": self.patient_id,
            "pathway": self.pathway,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "state_before": self.state_before,
            "state_after": self.state_after,
            "configuration_before": self.configuration_before,
            "configuration_after": self.configuration_after,
            "context_changes": self.context_changes,
        }


@dataclass
class SweepReport:
    """What one `tick` sweep did."""

    at: datetime
    advanced: int = 0
    unchanged: int = 0
    # Keyed by `enrolment_label`: "patient (pathway)".
    skipped: dict[str, str] = field(default_factory=dict)

    def merge(self, other: SweepReport) -> None:
        self.advanced += other.advanced
        self.unchanged += other.unchanged
        self.skipped.update(other.skipped)


class Engine:
    """Enrol patients on pathways, apply events, and answer what state and plan each enrolment has.

    The one door of the library: commands, queries, replay and verification, what-if, explain,
    import, export and pictures are its methods. A context manager: leaving the block closes
    the store's connections.
    """

    def __init__(
        self,
        store: Store | str | None = None,
        clock: Clock = system_clock,
        *,
        retries: int = 5,
        read_only: bool = False,
        pool_size: int | None = None,
        pool_timeout: float | None = None,
        metrics: Metrics | None = None,
        log_payloads: bool = False,
    ) -> None:
        """`store`: a database URL, else $CAREPATH_DB, else sqlite:///carepath.db (or an open Store).

        `read_only`: open an existing database for queries only (persistence.Store's `create=False`).
        `pool_size` / `pool_timeout` (seconds): the connection pool of the database (SQLAlchemy's
        defaults when None). `metrics`: where command counts and latencies go (default: an
        OpenTelemetry meter when `opentelemetry` is installed, else nowhere). `log_payloads`: put
        event payloads and patient factors in the log records (never by default).
        """
        self._opening = threading.Lock()
        self.read_only = read_only
        if isinstance(store, str) or store is None:
            self.url: str = store or os.environ.get(DATABASE_ENV) or DEFAULT_URL
            self._store: Store | None = None
        else:
            self.url, self._store = store.url, store
            _attach_outbox(store)
        self.clock = clock
        self.retries = retries
        for name, value in (("pool_size", pool_size), ("pool_timeout", pool_timeout)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise InvalidCommand(f"{name} must be a positive number, got {value!r}")
        self.pool_size = pool_size
        self.pool_timeout = pool_timeout
        self._metrics = metrics
        self.log_payloads = log_payloads

    @property
    def store(self) -> Store:
        """The persistence store, opened on first use (once, whichever thread gets there first)."""
        if self._store is None:
            with self._opening:
                if self._store is None:
                    from persistence import Store

                    store = Store(
                        self.url,
                        create=not self.read_only,
                        pool_size=self.pool_size,
                        pool_timeout=self.pool_timeout,
                    )
                    self._store = _attach_outbox(store)
        return self._store

    @property
    def metrics(self) -> Metrics:
        """Where command counts and latencies go (the default chosen on first use)."""
        if self._metrics is None:
            self._metrics = default_metrics()
        return self._metrics

    def close(self) -> None:
        """Release the store's connections (if it was ever opened)."""
        if self._store is not None:
            self._store.dispose()

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    @property
    def shown_url(self) -> str:
        """The database URL with any password hidden, for messages."""
        return self.store.engine.url.render_as_string(hide_password=True)

    # -- logs and metrics ---------------------------------------------------------------

    def _observed(
        self,
        command: str,
        event: str,
        patient_id: str | None,
        pathway: str | None,
        data: Mapping[str, Any] | None,
        work: Callable[[], T],
    ) -> T:
        """Run one command, then count it, time it and log it (INFO, structured fields)."""
        started = time.perf_counter()
        try:
            result = work()
        except Exception as err:
            self._report(command, event, patient_id, pathway, data, started, None, err)
            raise
        self._report(command, event, patient_id, pathway, data, started, result, None)
        return result

    def _report(
        self,
        command: str,
        event: str,
        patient_id: str | None,
        pathway: str | None,
        data: Mapping[str, Any] | None,
        started: float,
        result: object,
        error: Exception | None,
    ) -> None:
        elapsed = (time.perf_counter() - started) * 1000
        if error is not None:
            outcome = "rejected"
        elif isinstance(result, SendResult):
            outcome = "duplicate" if result.duplicate else "accepted" if result.changed else "unchanged"
        else:
            outcome = "accepted"
        metrics = self._metrics if self._metrics is not None else self.metrics
        if type(metrics) is not NoMetrics:  # the default without OpenTelemetry: nothing to build
            metrics.add(COMMANDS_COUNTER, 1, {"command": command, "outcome": outcome})
            metrics.record(DURATION_HISTOGRAM, elapsed, {"command": command})
        if not logger.isEnabledFor(logging.INFO):
            return
        before = after = None
        if isinstance(result, SendResult):
            status = result.status
            pathway, after = status.pathway, status.state
            entry = result.entry
            before = after
            if entry is not None and result.changed and entry.config_before:
                before = status.definition.state_name(entry.config_before)
        elif isinstance(result, Status):
            pathway, after = result.pathway, result.state
        fields: dict[str, Any] = {
            "command": command,
            "event": event,
            "patient_id": patient_id,
            "pathway": pathway,
            "state_before": before,
            "state_after": after,
            "duration_ms": round(elapsed, 3),
            "outcome": outcome,
        }
        if error is not None:
            fields["error"] = type(error).__name__
        if isinstance(result, SweepReport):
            fields.update(advanced=result.advanced, unchanged=result.unchanged, skipped=len(result.skipped))
        elif command == "ingest" and result is not None:
            from ._ingest import IngestReport

            if isinstance(result, IngestReport):
                fields.update(
                    accepted=result.accepted,
                    unchanged=result.unchanged,
                    duplicates=result.duplicates,
                    already_applied=result.already_applied,
                    rejected=len(result.rejected),
                )
        elif command == "migrate_patients" and isinstance(result, list):
            fields["moved"] = len(result)
        elif command == "prune_outbox" and isinstance(result, int):
            fields["pruned"] = result
        if self.log_payloads and data is not None:
            fields["data"] = dict(data)
        what = command if event == command else f"{command} {event}"
        who = f" {patient_id}" if patient_id is not None else ""
        moved = f": {before} -> {after}" if before is not None else f": {after}" if after is not None else ""
        logger.info("%s%s%s (%s)", what, who, moved, outcome, extra=fields)

    # -- commands -------------------------------------------------------------------

    def enroll(
        self,
        patient_id: str,
        at: datetime,
        *,
        pathway: str = DEFAULT_PATHWAY,
        version: int | None = None,
        allow_unapproved: bool = False,
        handover_from: str | None = None,
        factors: Mapping[str, Any] | None = None,
        actor: str | None = None,
        idempotency_key: str | None = None,
    ) -> Status:
        """Enrol a patient on a pathway: a new enrolment with its own chain (seq 1) and snapshot.

        With `idempotency_key`, repeating the same enrolment returns its status again (a different
        enrolment of the patient on the pathway is still a DuplicatePatient).

        A patient may be enrolled on several pathways; the same pathway twice is a DuplicatePatient
        (DuplicateEnrolment). The enrolment gets the latest approved version of the pathway, or
        `version`; a version not approved needs `allow_unapproved`, and a retired one takes no new
        enrolments. With `handover_from`, the patient comes from their enrolment on that pathway
        (which the new pathway must accept hand-overs from): the enrolment records where it came
        from, and takes its patient factors when none are given.
        """
        at = clinical_time(at)
        now = self.clock()

        def work(tx: Transaction) -> Status:
            _check_patient_id(patient_id)
            return self._stage_enroll(
                tx,
                patient_id,
                at,
                pathway,
                version,
                allow_unapproved,
                handover_from,
                factors,
                actor,
                idempotency_key,
                now,
            )

        store, retries = self.store, self.retries
        return self._observed(
            "enroll", "enroll", patient_id, pathway, factors, lambda: store.run_read_first(work, retries=retries)
        )

    def send(
        self,
        patient_id: str,
        event: str,
        at: datetime,
        data: Mapping[str, Any] | None = None,
        *,
        pathway: str | None = None,
        actor: str | None = None,
        idempotency_key: str | None = None,
        late: bool = False,
    ) -> SendResult:
        """Apply one event to one enrolment, durably; raises a specific error and writes nothing otherwise.

        `pathway` names the enrolment; it may be left out when the patient has only one. A
        clinical event dated before recorded ticks is folded in at its time (the ticks after it
        are re-derived); one dated before the last clinical event needs `late` (else LateEvent),
        and the enrolment is re-derived from its history (`SendResult.rederived`).
        """
        at = clinical_time(at)
        now = self.clock()

        def work(tx: Transaction) -> SendResult:
            return self._stage_send(tx, patient_id, event, at, data, pathway, actor, idempotency_key, late, now)

        # Decided before the write lock is taken: a rejected event takes none.
        store, retries = self.store, self.retries
        return self._observed(
            "send", event, patient_id, pathway, data, lambda: store.run_read_first(work, retries=retries)
        )

    def correct(
        self,
        patient_id: str,
        seq: int,
        reason: str,
        data: Mapping[str, Any] | None = None,
        *,
        pathway: str | None = None,
        actor: str | None = None,
    ) -> SendResult:
        """Mark entry `seq` of an enrolment as entered in error, with `data` its corrected payload
        (an enrolment's: `{"factors": ...}`) or without it (the event did not happen to this
        patient), and re-derive the state. Appends one `correct` entry; nothing is edited."""
        now = self.clock()
        work = partial(
            self._correct_in,
            patient_id=patient_id,
            seq=seq,
            reason=reason,
            data=data,
            pathway=pathway,
            actor=actor,
            now=now,
        )
        run = partial(self.store.run, work, retries=self.retries)
        return self._observed("correct", "correct", patient_id, pathway, data, run)

    def migrate_patients(
        self,
        pathway: str,
        from_version: int,
        to_version: int,
        *,
        dry_run: bool = False,
        actor: str | None = None,
    ) -> list[MigrationChange]:
        """Move every live enrolment of `pathway` on `from_version` to `to_version` by its declared mapping.

        Each moved enrolment gets one audit entry (`migrate`, recording both versions, dated at the
        patient's last event) and keeps its history; patients in a final state stay where they
        are. With `dry_run` nothing is written and the result lists exactly what would change.
        Raises NoMigration, MigrationFailed (before anything is written) or UnknownDefinition.
        """
        work = partial(self._migrate_patients, pathway, from_version, to_version, dry_run, actor)
        return self._observed("migrate_patients", "dry_run" if dry_run else "migrate", None, pathway, None, work)

    def _migrate_patients(
        self, pathway: str, from_version: int, to_version: int, dry_run: bool, actor: str | None
    ) -> list[MigrationChange]:
        earlier = get_pathway(pathway, from_version)
        target = get_pathway(pathway, to_version)
        if target.model.migration_from(from_version) is None:
            raise NoMigration(pathway, from_version, to_version)
        _check_text(actor, "actor")
        candidates = [
            snap.patient_id
            for snap in self.store.iter_snapshots()
            if snap.pathway == pathway
            and snap.version == from_version
            and earlier.outcome(snap.configuration, snap.context) is None
        ]
        now = self.clock()
        planned = [self._migration(self.store.snapshot(pid, pathway), earlier, target) for pid in candidates]
        if dry_run:
            return [change for change, _ in planned]
        done: list[MigrationChange] = []
        for change, _ in planned:
            work = partial(
                self._migrate_in, patient_id=change.patient_id, earlier=earlier, target=target, actor=actor, now=now
            )
            written = self.store.run(work, retries=self.retries)
            if written is not None:
                done.append(written)
        return done

    def _migration(
        self, snapshot: Snapshot, earlier: Pathway, target: Pathway
    ) -> tuple[MigrationChange, tuple[tuple[str, ...], dict[str, Any]]]:
        # Takes effect as of the patient's last event, so later charting is not refused as earlier.
        configuration, context = target.migrate(
            earlier.version, snapshot.configuration, snapshot.context, snapshot.last_event_at
        )
        keys = sorted(snapshot.context.keys() | context.keys())
        changes = {
            key: {"before": snapshot.context.get(key), "after": context.get(key)}
            for key in keys
            if snapshot.context.get(key) != context.get(key)
        }
        change = MigrationChange(
            snapshot.patient_id,
            snapshot.pathway,
            earlier.version,
            target.version,
            snapshot.state,
            target.state_name(configuration),
            list(snapshot.configuration),
            list(configuration),
            changes,
        )
        return change, (configuration, context)

    def _migrate_in(
        self, tx: Transaction, patient_id: str, earlier: Pathway, target: Pathway, actor: str | None, now: datetime
    ) -> MigrationChange | None:
        snapshot = tx.load(patient_id, earlier.name)
        if snapshot.version != earlier.version:
            return None  # moved meanwhile by another process
        change, (configuration, context) = self._migration(snapshot, earlier, target)
        at = snapshot.last_event_at
        entry = NewEntry(
            event=MIGRATE_EVENT,
            payload={"from_version": earlier.version, "to_version": target.version},
            payload_schema=PAYLOAD_SCHEMA,
            at=at,
            actor=actor,
            config_before=list(snapshot.configuration),
            config_after=list(configuration),
            transitions=[],
            decision=None,
            idempotency_key=None,
        )
        update = replace(_update(target, configuration, context, at), version=target.version)
        tx.append(snapshot, entry, update, now)
        return change

    # -- the same commands inside a caller's transaction (bulk ingestion) -------------------

    def _enroll_in(
        self,
        tx: Transaction,
        patient_id: str,
        at: datetime,
        *,
        pathway: str = DEFAULT_PATHWAY,
        version: int | None = None,
        allow_unapproved: bool = False,
        handover_from: str | None = None,
        factors: Mapping[str, Any] | None = None,
        actor: str | None = None,
        idempotency_key: str | None = None,
        now: datetime,
    ) -> Status:
        """Stage an enrolment in `tx`; raises and stages nothing when the input is bad."""
        _check_patient_id(patient_id)
        at = clinical_time(at)
        return self._stage_enroll(
            tx, patient_id, at, pathway, version, allow_unapproved, handover_from, factors, actor, idempotency_key, now
        )

    def _stage_enroll(
        self,
        tx: Transaction,
        patient_id: str,
        at: datetime,
        pathway: str,
        version: int | None,
        allow_unapproved: bool,
        handover_from: str | None,
        factors: Mapping[str, Any] | None,
        actor: str | None,
        idempotency_key: str | None,
        now: datetime,
    ) -> Status:
        """`_enroll_in` past its first checks: a valid patient id and `at` a UTC instant already."""
        definition = definition_for_enrolment(pathway, version, allow_unapproved=allow_unapproved)
        if actor is not None:
            _check_text(actor, "actor")
        if idempotency_key is not None:
            _check_text(idempotency_key, "idempotency_key")
        data: dict[str, Any] = {"factors": factors if factors is not None else {}}
        if handover_from is not None:
            data.update(self._handover(tx, patient_id, definition, handover_from, factors))
        enrollment = definition.validate_enrollment(data)
        _check_not_future(at, now)
        payload = stored_payload(enrollment)
        if idempotency_key is not None:
            earlier = tx.find_entry(patient_id, definition.name, idempotency_key)
            if earlier is not None:
                same = (
                    earlier.event == "enroll"
                    and earlier.payload == payload
                    and earlier.at == at
                    and earlier.version == definition.version
                )
                if not same:
                    raise IdempotencyConflict(patient_id, idempotency_key, definition.name)
                return Status(tx.load(patient_id, definition.name))
        configuration, context = definition.start(enrollment, at)
        entry = NewEntry(
            event="enroll",
            payload=payload,
            payload_schema=PAYLOAD_SCHEMA,
            at=at,
            actor=actor,
            config_before=[],
            config_after=list(configuration),
            transitions=[],
            decision=None,
            idempotency_key=idempotency_key,
        )
        tx.enroll(
            patient_id, definition.name, definition.version, _update(definition, configuration, context, at), entry, now
        )
        return Status(tx.load(patient_id, definition.name))

    @staticmethod
    def _handover(
        tx: Transaction, patient_id: str, definition: Pathway, source: str, factors: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """The enrolment data of a patient handed over from their enrolment on `source`."""
        if source not in definition.model.handover_from:
            accepted = ", ".join(definition.model.handover_from) or "none"
            raise InvalidCommand(f"{definition.name} takes no hand-over from {source} (it accepts: {accepted})")
        earlier = tx.load(patient_id, source)
        outcome = get_pathway(earlier.pathway, earlier.version).outcome(earlier.configuration, earlier.context)
        handover = {
            "pathway": earlier.pathway,
            "version": earlier.version,
            "state": earlier.state,
            "reason": (outcome or {}).get("reason"),
        }
        if factors is not None:
            return {"handover": handover}
        known = definition.model.factors
        carried = {k: v for k, v in (earlier.context.get("factors") or {}).items() if k in known}
        return {"handover": handover, "factors": carried}

    def _send_in(
        self,
        tx: Transaction,
        patient_id: str,
        event: str,
        at: datetime,
        data: Mapping[str, Any] | None = None,
        *,
        pathway: str | None = None,
        actor: str | None = None,
        idempotency_key: str | None = None,
        late: bool = False,
        now: datetime,
    ) -> SendResult:
        """Stage one event in `tx`; raises and stages nothing when it is rejected."""
        at = clinical_time(at)
        return self._stage_send(tx, patient_id, event, at, data, pathway, actor, idempotency_key, late, now)

    def _stage_send(
        self,
        tx: Transaction,
        patient_id: str,
        event: str,
        at: datetime,
        data: Mapping[str, Any] | None,
        pathway: str | None,
        actor: str | None,
        idempotency_key: str | None,
        late: bool,
        now: datetime,
    ) -> SendResult:
        """`_send_in` with `at` a UTC instant already (`clinical_time`)."""
        known = known_events()
        if event not in known:  # input errors come before "unknown patient"
            raise UnknownEvent(event, sorted(known))
        _check_patient_id(patient_id)
        if actor is not None:
            _check_text(actor, "actor")
        if idempotency_key is not None:
            _check_text(idempotency_key, "idempotency_key")
        if pathway is not None:
            _check_text(pathway, "pathway")
            snapshot = tx.load(patient_id, pathway)
        else:
            snapshot = pick_enrolment(patient_id, None, tx.enrolments(patient_id))
        definition = get_pathway(snapshot.pathway, snapshot.version)
        payload = definition.validate(event, data if data is not None else {})
        _check_not_future(at, now)
        if idempotency_key is not None:
            earlier = tx.find_entry(patient_id, snapshot.pathway, idempotency_key)
            if earlier is not None:
                return self._repeat(snapshot, earlier, event, payload, at, idempotency_key)
        if at < snapshot.last_event_at:
            if event == "tick":  # a tick never re-derives: it is simply too early
                raise TimeWentBackwards(snapshot.patient_id, at, snapshot.last_event_at)
            # Dated before recorded ticks or a later clinical event: folded in at its time.
            return self._send_rederived(tx, snapshot, event, payload, at, actor, idempotency_key, late, now)
        step = definition.apply(snapshot.configuration, snapshot.context, event, payload, at)
        if not step.changed:
            return SendResult(Status(snapshot), None, changed=False)
        written = tx.append(
            snapshot,
            _entry(step, payload, at, actor, idempotency_key),
            _update(definition, step.configuration_after, step.context, at),
            now,
        )
        return SendResult(Status(tx.load(patient_id, snapshot.pathway)), written, changed=True)

    def _send_rederived(
        self,
        tx: Transaction,
        snapshot: Snapshot,
        event: str,
        payload: Payload,
        at: datetime,
        actor: str | None,
        key: str | None,
        late: bool,
        now: datetime,
    ) -> SendResult:
        from ._errors import BeforeBarrier, LateEvent
        from ._fold import fold, rederive

        prior = tx.history(snapshot.patient_id, snapshot.pathway)
        before = fold(prior)
        if at < before.barrier:
            what = "enrolment" if before.barrier == prior[0].at else f"move to version {snapshot.version}"
            raise BeforeBarrier(snapshot.patient_id, at, before.barrier, what)
        if at < before.last_clinical_at and not late:
            raise LateEvent(snapshot.patient_id, at, before.last_clinical_at)
        candidate = _candidate(snapshot, event, payload.model_dump(mode="json"), at, actor, key, now)
        result = rederive(prior, candidate, before)
        refused = result.after.skipped.get(candidate.seq)
        if refused is not None:
            raise EventNotAllowed(event, refused)
        if result.step is None:
            return SendResult(self._status(snapshot), None, changed=False)
        return self._write_rederived(tx, snapshot, candidate, result, now)

    def _write_rederived(
        self, tx: Transaction, snapshot: Snapshot, candidate: AuditEntry, result: Rederived, now: datetime
    ) -> SendResult:
        after = result.after
        entry = NewEntry(
            event=candidate.event,
            payload=candidate.payload,
            payload_schema=PAYLOAD_SCHEMA,
            at=candidate.at,
            actor=candidate.actor,
            config_before=list(snapshot.configuration),
            config_after=list(after.configuration),
            transitions=result.transitions,
            decision=result.decision,
            idempotency_key=candidate.idempotency_key,
        )
        update = SnapshotUpdate(
            configuration=list(after.configuration),
            context=after.context,
            state=after.state,
            next_due_at=after.definition.next_due_at(after.configuration, after.context),
            last_event_at=after.last_event_at,
            state_since=after.state_since,
        )
        written = tx.append(snapshot, entry, update, now)
        status = self._status(tx.load(snapshot.patient_id, snapshot.pathway))
        return SendResult(status, written, changed=True, rederived=Rederivation.from_record(result.record))

    def _correct_in(
        self,
        tx: Transaction,
        patient_id: str,
        seq: int,
        reason: str,
        data: Mapping[str, Any] | None = None,
        *,
        pathway: str | None = None,
        actor: str | None = None,
        now: datetime,
    ) -> SendResult:
        """Stage a correction of entry `seq` in `tx` (see `correct`)."""
        from ._fold import CORRECT_EVENT, NON_CLINICAL, fold, rederive

        _check_patient_id(patient_id)
        _check_text(actor, "actor")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
            raise InvalidCommand(f"reason must be a non-empty text of at most {MAX_REASON} characters")
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise InvalidCommand("seq must be an entry's sequence number")
        if pathway is not None:
            _check_text(pathway, "pathway")
            snapshot = tx.load(patient_id, pathway)
        else:
            snapshot = pick_enrolment(patient_id, None, tx.enrolments(patient_id))
        prior = tx.history(snapshot.patient_id, snapshot.pathway)
        target = next((e for e in prior if e.seq == seq), None)
        if target is None:
            raise InvalidCommand(f"patient {patient_id!r} on {snapshot.pathway} has no entry {seq}")
        if target.event in NON_CLINICAL:
            raise InvalidCommand(f"entry {seq} is a {target.event}, not a clinical entry: it cannot be corrected")
        definition = get_pathway(target.pathway, target.version)
        if target.event == "enroll":
            if data is None:
                raise InvalidCommand("an enrolment is corrected with its data (--data '{\"factors\": {...}}')")
            corrected: dict[str, Any] | None = definition.validate_enrollment(dict(data)).model_dump(mode="json")
        else:
            corrected = definition.validate(target.event, dict(data)).model_dump(mode="json") if data else None
        payload = {"seq": seq, "reason": reason, "data": corrected}
        candidate = _candidate(snapshot, CORRECT_EVENT, payload, target.at, actor, None, now)
        result = rederive(prior, candidate, fold(prior))
        return self._write_rederived(tx, snapshot, candidate, result, now)

    def tick(self, at: datetime, *, batch: int = 2000, limit: int | None = None, workers: Workers = 1) -> SweepReport:
        """Sweep every enrolment due at `at`: advance its monitoring, in batches of `batch`.

        With `workers` > 1 (and no `limit`), ranges of patient ids are swept by that many
        processes, which compute in parallel and write revision-checked batches. `workers="auto"`:
        one per core when more than two batches are due, else this process alone. The default
        (1) starts no process.
        """
        at = clinical_time(at)
        now = self.clock()
        _check_not_future(at, now)
        if workers == "auto":
            many = limit is None and len(self.store.due_ids(at, limit=2 * batch)) >= 2 * batch
            workers = (os.cpu_count() or 1) if many else 1
        if workers > 1 and limit is None and not is_private_memory(self.url):
            sweep = partial(self._tick_parallel, at, now, batch, workers)
        else:
            sweep = partial(self._tick_range, at, now, batch, limit, None)
        return self._observed("tick", "tick", None, None, None, sweep)

    def _tick_parallel(self, at: datetime, now: datetime, batch: int, workers: int) -> SweepReport:
        bounds = self.store.id_boundaries(workers, due_at=at)  # an even share of the due patients each
        ranges = list(zip([None, *bounds], [*bounds, None], strict=True))
        report = SweepReport(at)
        calls = [(self.url, at, now, batch, id_range) for id_range in ranges]
        for part in parallel_map(_tick_in_process, calls, len(ranges)):
            report.merge(part)
        return report

    def _tick_range(
        self, at: datetime, now: datetime, batch: int, limit: int | None, id_range: IdRange | None
    ) -> SweepReport:
        report = SweepReport(at)
        # Each enrolment is swept once. Those seen that are still due (skipped, unchanged, or due
        # again) come back from the index first, so the next claim asks for that many more.
        seen: set[EnrolmentKey] = set()
        still_due: set[EnrolmentKey] = set()
        # After a batch lost to concurrent writers, the next patients go one per locked transaction
        # (the way `worker` claims them): other writers then only slow the sweep down.
        one_by_one = 0
        while limit is None or report.advanced < limit:
            size = batch if limit is None else min(batch, limit - report.advanced)
            # A range sweep runs beside the others: compute unlocked, write revision-checked.
            optimistic = id_range is not None and not one_by_one
            if one_by_one:
                size, one_by_one = 1, one_by_one - 1
            work = partial(
                self._sweep_batch, at=at, now=now, size=size, seen=seen, extra=len(still_due), id_range=id_range
            )
            try:
                retries = min(self.retries, 1) if size > 1 else self.retries
                claimed, due_again, done = self.store.run(work, retries=retries, optimistic=optimistic)
            except ConcurrentUpdate:
                if size == 1:
                    raise
                one_by_one = size
                continue
            # Merged only once committed: a batch retried after a conflict must not count or skip twice.
            seen.update(claimed)
            still_due.update(due_again)
            report.merge(done)
            if len(claimed) < size:
                break
        return report

    def _sweep_batch(
        self,
        tx: Transaction,
        at: datetime,
        now: datetime,
        size: int,
        seen: set[EnrolmentKey],
        extra: int,
        id_range: IdRange | None,
    ) -> tuple[list[EnrolmentKey], list[EnrolmentKey], SweepReport]:
        claimed = tx.claim_due(at, size + extra, id_range=id_range)
        fresh = [snap for snap in claimed if snap.key not in seen][:size]
        report = SweepReport(at)
        due_again: list[EnrolmentKey] = []
        for snapshot in fresh:
            if at < snapshot.last_event_at:
                label = enrolment_label(snapshot.patient_id, snapshot.pathway)
                report.skipped[label] = "tick earlier than the patient's last event"
                due_again.append(snapshot.key)
                continue
            definition = get_pathway(snapshot.pathway, snapshot.version)
            payload = definition.validate("tick", {})
            step = self._apply(definition, snapshot, "tick", payload, at)
            if not step.changed:
                report.unchanged += 1
                due_again.append(snapshot.key)
                continue
            update = _update(definition, step.configuration_after, step.context, at)
            tx.append(snapshot, _entry(step, payload, at, "scheduler", None), update, now)
            if update.next_due_at is not None and update.next_due_at <= at:
                due_again.append(snapshot.key)
            report.advanced += 1
        return [snap.key for snap in fresh], due_again, report

    # -- queries ----------------------------------------------------------------------

    def resolve(self, patient_id: str, pathway: str | None = None) -> str:
        """The pathway of the patient's enrolment that `pathway` names (see `resolve_pathway`)."""
        _check_lookup(patient_id, pathway)
        if pathway is not None and self.store.exists(patient_id, pathway):
            return pathway
        return resolve_pathway(patient_id, pathway, self.store.pathways(patient_id))

    def enrolments(self, patient_id: str) -> list[Status]:
        """Every enrolment of a patient, by pathway (empty when not enrolled)."""
        return [self._status(snap) for snap in self.store.snapshots(patient_id)]

    def status(self, patient_id: str, pathway: str | None = None) -> Status:
        _check_lookup(patient_id, pathway)
        if self._store is None:
            # A command that only reads one snapshot need not load the whole store.
            reader = light_reader(self.url)
            if reader is not None:
                try:
                    found = reader.snapshots(patient_id)
                except NoDatabase:
                    if self.read_only:
                        raise
                else:  # a writing engine creates the database (below) where there is none
                    return self._status(pick_enrolment(patient_id, pathway, found))
        if pathway is not None:
            return self._status(self.store.snapshot(patient_id, pathway))
        return self._status(pick_enrolment(patient_id, None, self.store.snapshots(patient_id)))

    def plan(self, patient_id: str, pathway: str | None = None) -> list[PlanItem]:
        return self.status(patient_id, pathway).plan

    def history(self, patient_id: str, pathway: str | None = None) -> list[HistoryEntry]:
        """The audit entries of an enrolment in order (each with `to_json()`)."""
        return [HistoryEntry.of(e) for e in self.store.history(patient_id, self.resolve(patient_id, pathway))]

    def due(self, at: datetime) -> list[Status]:
        """Enrolments a tick at `at` could change."""
        at = clinical_time(at)
        return [self._status(snap) for snap in self.store.due_snapshots(at)]

    def patients(self, state: str | None = None) -> Iterator[Status]:
        return (self._status(snap) for snap in self.store.iter_snapshots(state))

    def count_by_state(self) -> dict[str, int]:
        """Enrolments per state name."""
        return self.store.count_by_state()

    def count_entries(self) -> int:
        """Audit entries of every enrolment."""
        return self.store.count_entries()

    def cohort(self, at: datetime, state: str | None = None) -> Iterator[CohortRow]:
        """Every enrolment (optionally those in `state`) as seen at `at`: state, dwell, due, overdue, flags."""
        from ._explain import cohort

        return cohort(self.store, at, state)

    def due_cohort(self, at: datetime) -> Iterator[CohortRow]:
        """The enrolments a tick at `at` could change, earliest first, with what the tick would do."""
        from ._explain import due_cohort

        return due_cohort(self.store, at)

    def explain(self, patient_id: str, at: datetime | None = None, *, pathway: str | None = None) -> Explanation:
        """What would move the patient next: each outgoing rule with its inputs' current values
        (`at` defaults to the engine's clock)."""
        from ._explain import explain

        return explain(self, patient_id, at, pathway=pathway)

    # -- audit: replay, verify, what-if -------------------------------------------------

    def replay(
        self,
        patient_id: str,
        pathway: str | None = None,
        until: datetime | None = None,
        as_of: datetime | None = None,
    ) -> ReplayResult:
        """Rebuild an enrolment from its audit log, checking every recorded step.

        `until` (clinical time): the state at that time as known now; `as_of` (record time): what
        the record said then. Raises ReplayDiverged when the log does not reproduce the record.
        """
        from ._replay import replay

        return replay(self.store, patient_id, until, pathway=pathway, as_of=as_of)

    def verify(
        self,
        patient_id: str | None = None,
        *,
        pathway: str | None = None,
        workers: Workers = 1,
        progress: Callable[[int], None] | None = None,
    ) -> VerifyReport:
        """Check the hash chains, replay every step and compare the stored snapshots (of one
        enrolment, or of every one).

        `workers` > 1 shares the patients among that many processes; "auto" takes one per core
        for 2,000 patients or more. The default (1) starts no process. `progress` is called with
        numbers of entries checked.
        """
        from ._replay import verify, worker_count

        count = workers if workers != "auto" else worker_count(self.store) if patient_id is None else 1
        return verify(self.store, patient_id, pathway=pathway, progress=progress, workers=count)

    def whatif(
        self,
        policy: Mapping[str, Any] | None = None,
        *,
        version: tuple[str, int] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> WhatIfReport:
        """Re-run every patient's recorded events under `policy`, or on `version` (pathway, version)
        of their pathway, and report who would have moved differently."""
        from ._replay import whatif

        return whatif(self.store, policy, version=version, progress=progress)

    def anchor(self) -> dict[str, Any]:
        """A checkpoint of every enrolment's chain head, authenticated with the audit key."""
        from persistence._anchors import make_anchor

        return make_anchor(self.store, self.clock())

    def check_anchor(self, document: Any) -> list[Problem]:
        """What changed since an anchor (`anchor`): truncated chains, missing or unanchored enrolments."""
        from persistence._anchors import check_anchor

        from ._replay import Problem

        return [
            Problem(found.patient_id, found.seq, found.reason, found.detail, found.pathway)
            for found in check_anchor(self.store, document)
        ]

    # -- bulk work, exchange and pictures ----------------------------------------------------

    def ingest(
        self, lines: Iterable[str], *, batch: int = 1_000, workers: int = 1, allow_unapproved: bool = False
    ) -> IngestReport:
        """Apply every event of a JSON Lines stream, `batch` events per transaction; a bad line is
        rejected alone. `workers` > 1 shares the patients among that many processes.
        `allow_unapproved` lets enrolment lines name a version not approved, as `enroll` does."""
        from ._ingest import ingest

        work = partial(ingest, self, lines, batch=batch, workers=workers, allow_unapproved=allow_unapproved)
        return self._observed("ingest", "ingest", None, None, None, work)

    @contextmanager
    def batch(self, *, optimistic: bool = False) -> Iterator[Batch]:
        """Commands staged in one transaction: written together when the block ends, or not at all.

        No retry: a conflict with another writer raises ConcurrentUpdate (see `run_batch`).
        """
        with self.store.transaction(optimistic=optimistic) as tx:
            yield Batch(self, tx, self.clock())

    def run_batch(self, work: Callable[[Batch], T], *, optimistic: bool = False) -> T:
        """`work(batch)` in one transaction, run again (bounded) when another writer got there first."""
        now = self.clock()
        return self.store.run(lambda tx: work(Batch(self, tx, now)), retries=self.retries, optimistic=optimistic)

    def export_fhir(self, patient_id: str, pathway: str | None = None) -> dict[str, Any]:
        """The enrolment as a FHIR R4 Bundle (CarePlan, Condition, Observation, Provenance)."""
        from ._fhir import export_bundle

        return export_bundle(self, patient_id, pathway)

    def diagram(
        self,
        fmt: str = "mermaid",
        *,
        patient_id: str | None = None,
        pathway: str | None = None,
        version: int | None = None,
    ) -> bytes:
        """The statechart of `pathway` (default: the default pathway; `version`: its latest) as
        mermaid, dot, svg or png; with `patient_id`, that enrolment's definition, active states
        highlighted. svg and png need Graphviz (GraphvizMissing otherwise)."""
        from ._diagram import render

        if patient_id is not None:
            status = self.status(patient_id, pathway)
            return render(status.definition, fmt, status.configuration)
        return render(get_pathway(pathway or DEFAULT_PATHWAY, version), fmt, [])

    def timeline(self, patient_id: str, output: Path, *, pathway: str | None = None) -> Path:
        """Plot an enrolment's course (states as bands, events, measured values) into an image file
        (.png, .svg or .pdf; needs matplotlib). Returns the file written."""
        from ._timeline import plot_timeline

        entries = self.history(patient_id, pathway)
        definition = get_pathway(entries[0].pathway, entries[0].version)
        return plot_timeline(entries, definition, output)

    def cohort_history(self, start: datetime | None = None, end: datetime | None = None) -> CohortHistory:
        """Every enrolment's states over time, from the audit log (for cohort plots)."""
        from ._cohort_plot import read_history

        return read_history(self.store, start, end)

    def simulate(
        self,
        scenario: Scenario | None = None,
        *,
        patients: int = 300,
        seed: int = 7,
        start: datetime | None = None,
        weeks: int = 26,
        progress: Callable[[int, int], None] | None = None,
        more: Sequence[tuple[Scenario, int]] = (),
    ) -> SimulationResult:
        """Run a seeded synthetic cohort on this engine (whose clock must be a FakeClock at or
        before `start`); see `carepath demo`."""
        from ._simulate import DEFAULT_START, simulate

        return simulate(
            self,
            scenario=scenario,
            patients=patients,
            seed=seed,
            start=start or DEFAULT_START,
            weeks=weeks,
            progress=progress,
            more=more,
        )

    def migrate(self) -> list[str]:
        """Create or upgrade the database schema (idempotent); returns what was upgraded."""
        return self.store.migrate()

    # -- the outbox --------------------------------------------------------------------

    def prune_outbox(self, delivered_before: datetime) -> int:
        """Delete the outbox messages delivered strictly before `delivered_before`; returns how many.

        Undelivered messages stay whatever their age; the audit log is untouched (the outbox is no
        part of its hash chain). A poller whose cursor is older than the cut misses the pruned messages.
        """
        cut = clinical_time(delivered_before, "delivered_before")
        return self._observed("prune_outbox", "prune_outbox", None, None, None, partial(self._prune_outbox, cut))

    def _prune_outbox(self, cut: datetime) -> int:
        from persistence import prune_outbox

        return prune_outbox(self.store, cut)

    # -- internals ---------------------------------------------------------------------

    @staticmethod
    def _apply(definition: Pathway, snapshot: Snapshot, event: str, payload: Payload, at: datetime) -> Step:
        if at < snapshot.last_event_at:
            raise TimeWentBackwards(snapshot.patient_id, at, snapshot.last_event_at)
        return definition.apply(snapshot.configuration, snapshot.context, event, payload, at)

    def _repeat(
        self, snapshot: Snapshot, earlier: AuditEntry, event: str, payload: Payload, at: datetime, key: str
    ) -> SendResult:
        same = earlier.event == event and earlier.payload == payload.model_dump(mode="json") and earlier.at == at
        if not same:
            raise IdempotencyConflict(snapshot.patient_id, key, snapshot.pathway)
        return SendResult(self._status(snapshot), earlier, changed=False, duplicate=True)

    @staticmethod
    def _status(snapshot: Snapshot) -> Status:
        return Status(snapshot)


class Batch:
    """Commands staged in one transaction (`Engine.batch`, `Engine.run_batch`): each is checked as
    the engine's own command is, and all are written together, or none. Made by those two
    methods, not by callers."""

    def __init__(self, engine: Engine, tx: Transaction, now: datetime) -> None:
        self._engine, self._tx, self._now = engine, tx, now

    def enroll(
        self,
        patient_id: str,
        at: datetime,
        *,
        pathway: str = DEFAULT_PATHWAY,
        version: int | None = None,
        allow_unapproved: bool = False,
        handover_from: str | None = None,
        factors: Mapping[str, Any] | None = None,
        actor: str | None = None,
        idempotency_key: str | None = None,
    ) -> Status:
        """Stage an enrolment (see `Engine.enroll`)."""
        return self._engine._enroll_in(
            self._tx,
            patient_id,
            at,
            pathway=pathway,
            version=version,
            allow_unapproved=allow_unapproved,
            handover_from=handover_from,
            factors=factors,
            actor=actor,
            idempotency_key=idempotency_key,
            now=self._now,
        )

    def send(
        self,
        patient_id: str,
        event: str,
        at: datetime,
        data: Mapping[str, Any] | None = None,
        *,
        pathway: str | None = None,
        actor: str | None = None,
        idempotency_key: str | None = None,
        late: bool = False,
    ) -> SendResult:
        """Stage one event (see `Engine.send`)."""
        return self._engine._send_in(
            self._tx,
            patient_id,
            event,
            at,
            data,
            pathway=pathway,
            actor=actor,
            idempotency_key=idempotency_key,
            late=late,
            now=self._now,
        )

    def correct(
        self,
        patient_id: str,
        seq: int,
        reason: str,
        data: Mapping[str, Any] | None = None,
        *,
        pathway: str | None = None,
        actor: str | None = None,
    ) -> SendResult:
        """Stage a correction (see `Engine.correct`)."""
        return self._engine._correct_in(
            self._tx, patient_id, seq, reason, data, pathway=pathway, actor=actor, now=self._now
        )


def resolve_pathway(patient_id: str, pathway: str | None, enrolled: Sequence[str]) -> str:
    """Which of a patient's enrolments (the pathways in `enrolled`) a command means.

    A named pathway must be one of them (else UnknownPatient naming patient and pathway); with
    none named, the patient's only enrolment, AmbiguousEnrolment when there are several, and
    UnknownPatient when there is none.
    """
    if pathway is not None:
        if pathway not in enrolled:
            raise UnknownPatient(patient_id, pathway)
        return pathway
    if not enrolled:
        raise UnknownPatient(patient_id)
    if len(enrolled) > 1:
        raise AmbiguousEnrolment(patient_id, sorted(enrolled))
    return enrolled[0]


def pick_enrolment(patient_id: str, pathway: str | None, snapshots: Sequence[Snapshot]) -> Snapshot:
    """The snapshot among a patient's enrolments that `pathway` names (see `resolve_pathway`)."""
    if pathway is None and len(snapshots) == 1:  # the common case: the patient's only enrolment
        return snapshots[0]
    chosen = resolve_pathway(patient_id, pathway, [snap.pathway for snap in snapshots])
    return next(snap for snap in snapshots if snap.pathway == chosen)


def enrolment_label(patient_id: str, pathway: str) -> str:
    """An enrolment in reports keyed by text: "p-001 (sciatica)"."""
    return f"{patient_id} ({pathway})"


# The id column holds 200 characters (PostgreSQL enforces it, SQLite would not).
MAX_PATIENT_ID = 200


def _check_patient_id(patient_id: object) -> None:
    if (
        type(patient_id) is str
        and patient_id.strip()
        and len(patient_id) <= MAX_PATIENT_ID
        and patient_id.isprintable()
    ):
        return  # the common case, a valid id, in one test: the checks below name what is wrong with others
    if not isinstance(patient_id, str):
        raise InvalidPatientId(repr(patient_id), f"it is a {type(patient_id).__name__}, not text")
    if not patient_id.strip():
        raise InvalidPatientId(patient_id, "it is empty")
    if len(patient_id) > MAX_PATIENT_ID:
        raise InvalidPatientId(patient_id, f"it is longer than {MAX_PATIENT_ID} characters")
    if not patient_id.isprintable():
        raise InvalidPatientId(patient_id, "it contains control characters")


def _check_text(value: object, field: str) -> None:
    """Actor names, idempotency keys and pathway names: optional strings following the patient id's
    rule (non-empty, at most 200 characters, no control characters), the same on every backend."""
    if value is None:
        return
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_PATIENT_ID:
        raise InvalidCommand(f"{field} must be a non-empty string of at most {MAX_PATIENT_ID} characters")
    if not value.isprintable():
        raise InvalidCommand(f"{field} {value[:40]!r} contains control characters")


# A correction's reason: free text, but not a document.
MAX_REASON = 2000


def _candidate(
    snapshot: Snapshot,
    event: str,
    payload: dict[str, Any],
    at: datetime,
    actor: str | None,
    key: str | None,
    now: datetime,
) -> AuditEntry:
    """The entry an event would be, as the fold reads it (the store adds the hashes)."""
    return AuditEntry(
        patient_id=snapshot.patient_id,
        seq=snapshot.last_seq + 1,
        event=event,
        payload=payload,
        payload_schema=PAYLOAD_SCHEMA,
        at=at,
        recorded_at=now,
        actor=actor,
        pathway=snapshot.pathway,
        version=snapshot.version,
        config_before=list(snapshot.configuration),
        config_after=[],
        transitions=[],
        decision=None,
        idempotency_key=key,
        prev_hash=snapshot.last_hash,
        hash="",
    )


def _check_lookup(patient_id: object, pathway: object) -> None:
    """Ids a query names: refused as at enrolment (PostgreSQL cannot even compare a NUL)."""
    _check_patient_id(patient_id)
    _check_text(pathway, "pathway")


# Clinical times before this year are typing errors (0001-01-01, 1026 for 2026), not history.
EARLIEST_YEAR = 1900


def clinical_time(at: datetime, field: str = "at") -> datetime:
    """An aware, plausible time as a UTC instant: events are stored, replayed and compared in UTC,
    so an offset (-05:00) or a daylight-saving fold of a ZoneInfo time never changes the order or
    the recorded context. Raises NaiveTime, or InvalidCommand for a time before 1900 (or one no
    UTC time represents, e.g. 0001-01-01T00:00:00+14:00)."""
    if type(at) is datetime and at.tzinfo is UTC and at.year >= EARLIEST_YEAR:
        return at  # already one (every command normalises its times once, then passes them on)
    at = require_aware(at, field)
    try:
        utc = at.astimezone(UTC)
    except (OverflowError, ValueError):
        utc = None
    if utc is None:
        raise InvalidCommand(f"{field}: {at.isoformat()} is not a plausible clinical time (no UTC time is that)")
    if utc.year < EARLIEST_YEAR:
        raise InvalidCommand(f"{field}: {at.isoformat()} is not a plausible clinical time (before {EARLIEST_YEAR})")
    return utc


def _tick_in_process(url: str, at: datetime, now: datetime, batch: int, id_range: IdRange) -> SweepReport:
    """One range of a parallel sweep, in a worker process with its own connections."""
    engine = Engine(url, lambda: now)
    engine.store.schema_known()  # the command ensured it before starting the workers
    try:
        with bulk_allocation():  # a worker process of its own: its collector is nobody else's
            return engine._tick_range(at, now, batch, None, id_range)
    finally:
        engine.close()


def _check_not_future(at: datetime, now: datetime) -> None:
    if at > now + MAX_FUTURE_SKEW:
        raise EventInFuture(at, now)


def _entry(step: Step, payload: Payload, at: datetime, actor: str | None, key: str | None) -> NewEntry:
    return NewEntry(
        event=step.event,
        payload=stored_payload(payload),
        payload_schema=PAYLOAD_SCHEMA,
        at=at,
        actor=actor,
        config_before=list(step.configuration_before),
        config_after=list(step.configuration_after),
        transitions=[dict(t) for t in step.transitions],
        decision=step.decision_record(),
        idempotency_key=key,
    )


def _update(definition: Pathway, configuration: Iterable[str], context: dict[str, Any], at: datetime) -> SnapshotUpdate:
    configuration = list(configuration)
    return SnapshotUpdate(
        configuration=configuration,
        context=context,
        state=definition.state_name(configuration),
        next_due_at=definition.next_due_at(configuration, context),
        last_event_at=at,
    )


def _attach_outbox(store: Store) -> Store:
    """Have the store write the transitions a backend may act on to its outbox (pathway/_notices.py)."""
    from ._notices import notices

    store.notify = notices
    return store


def iso_or_none(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
