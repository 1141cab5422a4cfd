"""The application service: load a patient, apply an event on its definition, save, in one
transaction. Reads its clock once per command."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

from persistence import (
    DEFAULT_URL,
    AuditEntry,
    IdempotencyConflict,
    IdRange,
    NewEntry,
    Snapshot,
    SnapshotUpdate,
)
from persistence.reader import light_reader
from persistence.urls import is_private_memory
from states import (
    Pathway,
    PlanItem,
    Step,
    UnknownEvent,
    definition_for_enrolment,
    get_pathway,
    known_events,
    require_aware,
)
from states.payloads import Payload

from .clock import Clock, system_clock
from .errors import EventInFuture, InvalidCommand, InvalidPatientId, TimeWentBackwards
from .tuning import bulk_allocation, worker_context

if TYPE_CHECKING:
    from persistence import Store, Transaction

__all__ = ["MAX_FUTURE_SKEW", "PAYLOAD_SCHEMA", "Engine", "SendResult", "Status", "SweepReport", "iso_or_none"]

# An event may be stamped at most this far ahead of the engine's clock (DESIGN.md section 3).
MAX_FUTURE_SKEW = timedelta(minutes=5)
# Shape of stored payloads; bump it and add an upcaster when a payload changes shape.
PAYLOAD_SCHEMA = 1
DEFAULT_PATHWAY = "piriformis"


@dataclass(frozen=True)
class Status:
    """What a patient's snapshot says, with the plan of its state (computed when first read)."""

    snapshot: Snapshot

    @property
    def definition(self) -> Pathway:
        return get_pathway(self.snapshot.pathway, self.snapshot.version)

    patient_id = property(lambda self: self.snapshot.patient_id)
    pathway = property(lambda self: self.snapshot.pathway)
    version = property(lambda self: self.snapshot.version)
    state = property(lambda self: self.snapshot.state)
    configuration = property(lambda self: list(self.snapshot.configuration))
    revision = property(lambda self: self.snapshot.revision)
    next_due_at = property(lambda self: self.snapshot.next_due_at)
    context = property(lambda self: self.snapshot.context)
    state_since = property(lambda self: self.snapshot.state_since)
    last_event_at = property(lambda self: self.snapshot.last_event_at)

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
class SendResult:
    """The audit entry an event produced (or the earlier one, for a repeated idempotency key)."""

    status: Status
    entry: AuditEntry | None
    changed: bool
    duplicate: bool = False


@dataclass
class SweepReport:
    """What one `tick` sweep did."""

    at: datetime
    advanced: int = 0
    unchanged: int = 0
    skipped: dict[str, str] = field(default_factory=dict)

    def merge(self, other: SweepReport) -> None:
        self.advanced += other.advanced
        self.unchanged += other.unchanged
        self.skipped.update(other.skipped)


class Engine:
    """Enrol patients, apply events, and answer what state and plan each patient has."""

    def __init__(self, store: Store | str | None = None, clock: Clock = system_clock, *, retries: int = 5) -> None:
        self._opening = threading.Lock()
        if isinstance(store, str) or store is None:
            self.url: str = store or DEFAULT_URL
            self._store: Store | None = None
        else:
            self.url, self._store = store.url, store
        self.clock = clock
        self.retries = retries

    @property
    def store(self) -> Store:
        """The persistence store, opened on first use (once, whichever thread gets there first)."""
        if self._store is None:
            with self._opening:
                if self._store is None:
                    from persistence import Store

                    self._store = Store(self.url)
        return self._store

    def close(self) -> None:
        """Release the store's connections (if it was ever opened)."""
        if self._store is not None:
            self._store.dispose()

    # -- commands -------------------------------------------------------------------

    def enroll(
        self,
        patient_id: str,
        at: datetime,
        *,
        pathway: str = DEFAULT_PATHWAY,
        factors: Mapping[str, Any] | None = None,
        actor: str | None = None,
        version: int | None = None,
    ) -> Status:
        """Enrol a patient on a pathway (the patient's first audit entry, seq 1); the latest approved version
        unless `version` names one."""
        at = require_aware(at)
        now = self.clock()
        work = partial(
            self.enroll_in,
            patient_id=patient_id,
            at=at,
            pathway=pathway,
            factors=factors,
            actor=actor,
            now=now,
            version=version,
        )
        return self.store.run(work, retries=self.retries)

    def send(
        self,
        patient_id: str,
        event: str,
        at: datetime,
        data: Mapping[str, Any] | None = None,
        *,
        actor: str | None = None,
        idempotency_key: str | None = None,
    ) -> SendResult:
        """Apply one event to one patient, durably; raises a specific error and writes nothing otherwise."""
        at = require_aware(at)
        now = self.clock()
        work = partial(
            self.send_in,
            patient_id=patient_id,
            event=event,
            at=at,
            data=data,
            actor=actor,
            idempotency_key=idempotency_key,
            now=now,
        )
        return self.store.run(work, retries=self.retries)

    # -- the same commands inside a caller's transaction (bulk ingestion) -------------------

    def enroll_in(
        self,
        tx: Transaction,
        patient_id: str,
        at: datetime,
        *,
        pathway: str = DEFAULT_PATHWAY,
        factors: Mapping[str, Any] | None = None,
        actor: str | None = None,
        now: datetime,
        version: int | None = None,
    ) -> Status:
        """Stage an enrolment in `tx`; raises and stages nothing when the input is bad."""
        _check_patient_id(patient_id)
        at = require_aware(at)
        definition = definition_for_enrolment(pathway, version)
        _check_text(actor, "actor")
        enrollment = definition.validate_enrollment({"factors": factors if factors is not None else {}})
        _check_not_future(at, now)
        configuration, context = definition.start(enrollment, at)
        entry = NewEntry(
            event="enroll",
            payload=enrollment.model_dump(mode="json"),
            payload_schema=PAYLOAD_SCHEMA,
            at=at,
            actor=actor,
            config_before=[],
            config_after=list(configuration),
            transitions=[],
            decision=None,
            idempotency_key=None,
        )
        tx.enroll(
            patient_id, definition.name, definition.version, _update(definition, configuration, context, at), entry, now
        )
        return self._status(tx.load(patient_id))

    def send_in(
        self,
        tx: Transaction,
        patient_id: str,
        event: str,
        at: datetime,
        data: Mapping[str, Any] | None = None,
        *,
        actor: str | None = None,
        idempotency_key: str | None = None,
        now: datetime,
    ) -> SendResult:
        """Stage one event in `tx`; raises and stages nothing when it is rejected."""
        at = require_aware(at)
        known = known_events()
        if event not in known:  # input errors come before "unknown patient"
            raise UnknownEvent(event, sorted(known))
        snapshot = tx.load(patient_id)
        definition = get_pathway(snapshot.pathway, snapshot.version)
        _check_text(actor, "actor")
        _check_text(idempotency_key, "idempotency_key")
        payload = definition.validate(event, data if data is not None else {})
        _check_not_future(at, now)
        if idempotency_key is not None:
            earlier = tx.find_entry(patient_id, idempotency_key)
            if earlier is not None:
                return self._repeat(snapshot, earlier, event, payload, at, idempotency_key)
        step = self._apply(definition, snapshot, event, payload, at)
        if not step.changed:
            return SendResult(self._status(snapshot), None, changed=False)
        written = tx.append(
            snapshot,
            _entry(step, payload, at, actor, idempotency_key),
            _update(definition, step.configuration_after, step.context, at),
            now,
        )
        return SendResult(self._status(tx.load(patient_id)), written, changed=True)

    def tick(self, at: datetime, *, batch: int = 2000, limit: int | None = None, workers: int = 1) -> SweepReport:
        """Sweep every patient due at `at`: advance their monitoring, in batches of `batch`.

        With `workers` > 1 (and no `limit`), ranges of patient ids are swept by that many
        processes, which compute in parallel and write revision-checked batches.
        """
        at = require_aware(at)
        now = self.clock()
        _check_not_future(at, now)
        if workers > 1 and limit is None and not is_private_memory(self.url):
            return self._tick_parallel(at, now, batch, workers)
        return self._tick_range(at, now, batch, limit, None)

    def _tick_parallel(self, at: datetime, now: datetime, batch: int, workers: int) -> SweepReport:
        bounds = self.store.id_boundaries(workers)
        ranges = list(zip([None, *bounds], [*bounds, None], strict=True))
        report = SweepReport(at)
        with ProcessPoolExecutor(max_workers=len(ranges), mp_context=worker_context()) as pool:
            parts = [pool.submit(_tick_in_process, self.url, at, now, batch, id_range) for id_range in ranges]
            for part in parts:
                report.merge(part.result())
        return report

    def _tick_range(
        self, at: datetime, now: datetime, batch: int, limit: int | None, id_range: IdRange | None
    ) -> SweepReport:
        report = SweepReport(at)
        # Each patient is swept once. Those seen that are still due (skipped, unchanged, or due
        # again) come back from the index first, so the next claim asks for that many more.
        seen: set[str] = set()
        still_due: set[str] = set()
        while limit is None or report.advanced < limit:
            size = batch if limit is None else min(batch, limit - report.advanced)
            work = partial(
                self._sweep_batch, at=at, now=now, size=size, seen=seen, extra=len(still_due), id_range=id_range
            )
            with bulk_allocation():
                # A range sweep runs beside the others: compute unlocked, write revision-checked.
                optimistic = id_range is not None
                claimed, due_again, done = self.store.run(work, retries=self.retries, optimistic=optimistic)
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
        seen: set[str],
        extra: int,
        id_range: IdRange | None,
    ) -> tuple[list[str], list[str], SweepReport]:
        claimed = tx.claim_due(at, size + extra, id_range=id_range)
        fresh = [snap for snap in claimed if snap.patient_id not in seen][:size]
        report = SweepReport(at)
        due_again: list[str] = []
        for snapshot in fresh:
            if at < snapshot.last_event_at:
                report.skipped[snapshot.patient_id] = "tick earlier than the patient's last event"
                due_again.append(snapshot.patient_id)
                continue
            definition = get_pathway(snapshot.pathway, snapshot.version)
            payload = definition.validate("tick", {})
            step = self._apply(definition, snapshot, "tick", payload, at)
            if not step.changed:
                report.unchanged += 1
                due_again.append(snapshot.patient_id)
                continue
            update = _update(definition, step.configuration_after, step.context, at)
            tx.append(snapshot, _entry(step, payload, at, "scheduler", None), update, now)
            if update.next_due_at is not None and update.next_due_at <= at:
                due_again.append(snapshot.patient_id)
            report.advanced += 1
        return [snap.patient_id for snap in fresh], due_again, report

    # -- queries ----------------------------------------------------------------------

    def status(self, patient_id: str) -> Status:
        if self._store is None:
            # A command that only reads one snapshot need not load the whole store.
            reader = light_reader(self.url)
            if reader is not None:
                return self._status(reader.snapshot(patient_id))
        return self._status(self.store.snapshot(patient_id))

    def plan(self, patient_id: str) -> list[PlanItem]:
        return self.status(patient_id).plan

    def history(self, patient_id: str) -> list[AuditEntry]:
        return self.store.history(patient_id)

    def due(self, at: datetime) -> list[Status]:
        """Patients a tick at `at` could change."""
        at = require_aware(at)
        return [self._status(snap) for snap in self.store.due_snapshots(at)]

    def patients(self, state: str | None = None) -> Iterator[Status]:
        return (self._status(snap) for snap in self.store.iter_snapshots(state))

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
            raise IdempotencyConflict(snapshot.patient_id, key)
        return SendResult(self._status(snapshot), earlier, changed=False, duplicate=True)

    @staticmethod
    def _status(snapshot: Snapshot) -> Status:
        return Status(snapshot)


# The id column holds 200 characters (PostgreSQL enforces it, SQLite would not).
MAX_PATIENT_ID = 200


def _check_patient_id(patient_id: str) -> None:
    if not isinstance(patient_id, str) or not patient_id.strip():
        raise InvalidPatientId(str(patient_id), "it is empty")
    if len(patient_id) > MAX_PATIENT_ID:
        raise InvalidPatientId(patient_id, f"it is longer than {MAX_PATIENT_ID} characters")
    if any(not ch.isprintable() for ch in patient_id):
        raise InvalidPatientId(patient_id, "it contains control characters")


def _check_text(value: object, field: str) -> None:
    """Actor names and idempotency keys: optional strings of at most 200 characters."""
    if value is None:
        return
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_PATIENT_ID:
        raise InvalidCommand(f"{field} must be a non-empty string of at most {MAX_PATIENT_ID} characters")


def _tick_in_process(url: str, at: datetime, now: datetime, batch: int, id_range: IdRange) -> SweepReport:
    """One range of a parallel sweep, in a worker process with its own connections."""
    engine = Engine(url, lambda: now)
    try:
        return engine._tick_range(at, now, batch, None, id_range)
    finally:
        engine.close()


def _check_not_future(at: datetime, now: datetime) -> None:
    if at > now + MAX_FUTURE_SKEW:
        raise EventInFuture(at, now)


def _entry(step: Step, payload: Payload, at: datetime, actor: str | None, key: str | None) -> NewEntry:
    return NewEntry(
        event=step.event,
        payload=payload.model_dump(mode="json"),
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


def iso_or_none(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
