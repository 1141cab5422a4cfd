"""Bulk ingestion: many events per transaction, each checked exactly as `send` checks it.

Input is JSON Lines, one event per line:
    {"patient": "p-1", "event": "enroll", "at": "...", "factors": {...}, "pathway": "...", "version": 1}
    {"patient": "p-1", "event": "assess", "at": "...", "data": {...}, "actor": "...", "idempotency_key": "..."}
Other events may name the enrolment with "pathway" (needed when the patient is on several pathways).

Every line is judged on its own: a rejected line is reported with its line number and reason and
writes nothing, and never stops the lines after it. When a batch cannot be written as a whole
(another writer, a value the database refuses), its lines are written one per transaction. Only
a database that stops answering ends an import early (ImportStopped, with the report so far).

Re-running a file applies exactly the lines not yet applied; the others are "already applied":
- an enrolment whose recorded enrolment entry has the same time and data;
- an event with an idempotency key already recorded (a duplicate, as for `send`);
- an event without a key when the enrolment's log holds an entry with the same event, data and
  actor at the same instant: the engine never records an event twice at one instant from one
  line, so such an entry can only be this line applied before.
The engine's clock is read once for the whole import.
"""

from __future__ import annotations

import os
import queue
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING, Any

import orjson

from carepath.errors import UNEXPECTED, Error
from persistence import ConcurrentUpdate, DuplicatePatient, PersistenceError, StorageUnavailable
from states import StatesError, definition_for_enrolment, get_pathway

from ._engine import DEFAULT_PATHWAY, Engine, _check_lookup, clinical_time, pick_enrolment
from ._errors import CarepathError, InvalidCommand, exit_code
from ._tuning import bulk_allocation, stop_processes, tie_to_parent, worker_context

if TYPE_CHECKING:
    from persistence import Transaction

__all__ = ["ImportStopped", "IngestReport", "LineOutcome", "Rejection", "ingest", "read_jsonl"]

MISSING_FIELDS = "each line needs string fields patient, event and at"
_ENVELOPE = {"patient", "event", "at", "data", "actor", "idempotency_key", "factors", "pathway", "version"}

APPLIED = "applied"
UNCHANGED = "unchanged"
DUPLICATE = "duplicate"
ALREADY_APPLIED = "already applied"
REJECTED = "rejected"
# How long stopping workers may take to finish the batch in hand before they are killed.
STOP_GRACE_S = 20.0


@dataclass(frozen=True)
class Rejection:
    """A line that was not applied, and why."""

    line: int
    patient: str | None
    error: str
    exit_code: int
    code: str  # the error's code (`invalid_payload`, `unknown_patient`, ...)


@dataclass(frozen=True)
class LineOutcome:
    """What became of one line: applied, unchanged, duplicate, already applied or rejected."""

    line: int
    patient: str | None
    outcome: str
    reason: str | None = None
    code: str | None = None  # a rejected line's error code

    def to_json(self) -> dict[str, Any]:
        document = {"line": self.line, "patient": self.patient, "outcome": self.outcome, "reason": self.reason}
        if self.code is not None:
            document["code"] = self.code
        return document


@dataclass
class IngestReport:
    """Totals of one import, and the outcome of every line judged."""

    accepted: int = 0
    unchanged: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    already_applied: int = 0
    outcomes: list[LineOutcome] = field(default_factory=list)

    def merge(self, other: IngestReport) -> None:
        self.accepted += other.accepted
        self.unchanged += other.unchanged
        self.duplicates += other.duplicates
        self.already_applied += other.already_applied
        self.rejected.extend(other.rejected)
        self.outcomes.extend(other.outcomes)

    def note(self, line: int, patient: str | None, outcome: str) -> None:
        if outcome == APPLIED:
            self.accepted += 1
        elif outcome == UNCHANGED:
            self.unchanged += 1
        elif outcome == DUPLICATE:
            self.duplicates += 1
        else:
            self.already_applied += 1
        self.outcomes.append(LineOutcome(line, patient, outcome))

    def reject(self, line: int, patient: str | None, error: Exception) -> None:
        code = error.code if isinstance(error, Error) else UNEXPECTED
        self.rejected.append(Rejection(line, patient, str(error), exit_code(error), code))
        self.outcomes.append(LineOutcome(line, patient, REJECTED, str(error), code))

    def sort(self) -> None:
        self.rejected.sort(key=lambda r: r.line)
        self.outcomes.sort(key=lambda o: o.line)

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "unchanged": self.unchanged,
            "duplicates": self.duplicates,
            "already_applied": self.already_applied,
            "rejected": [vars(r) for r in self.rejected],
        }


class ImportStopped(StorageUnavailable):
    """Raised when the database stopped answering during an import; `report` says what was done.

    Every line the report does not list was not applied; running the same file again applies
    exactly those (and reports the others as already applied).
    """

    code = "import_stopped"

    def __init__(self, detail: str, report: IngestReport) -> None:
        super().__init__(detail)
        self.report = report


def read_jsonl(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any] | InvalidCommand]]:
    """Number and parse each non-blank line; a malformed line yields its error instead."""
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as err:
            yield number, InvalidCommand(f"line {number}: not valid JSON ({str(err).split(':')[0]})")
            continue
        if not isinstance(value, dict):
            yield number, InvalidCommand(f"line {number}: must be a JSON object")
            continue
        yield number, value


@dataclass(frozen=True)
class _Terms:
    """What holds for every line of one import: the engine's clock read once, and whether an
    enrolment line may name a version not approved (a draft or one under review)."""

    now: datetime
    allow_unapproved: bool = False


def ingest(
    engine: Engine, lines: Iterable[str], *, batch: int = 1_000, workers: int = 1, allow_unapproved: bool = False
) -> IngestReport:
    """Apply every event of a JSON Lines stream, `batch` events per transaction.

    With `workers` > 1 the patients are shared out (by a hash of their id, so each patient's
    events stay in order in one process) over that many processes, which compute their batches
    in parallel and write them optimistically (revision-checked); the report is the same.
    An enrolment line naming a version not approved is rejected (UnapprovedDefinition) unless
    `allow_unapproved`, as for `Engine.enroll`.
    Raises ImportStopped (with the report so far) when the database stops answering.
    """
    terms = _Terms(engine.clock(), allow_unapproved)
    if workers > 1:
        try:
            engine.store.ensure_schema()  # once, here: the workers take it as done
        except StorageUnavailable as err:
            raise ImportStopped(err.detail, IngestReport()) from None
        return _ingest_parallel(engine.store.url, read_jsonl(lines), batch, workers, terms, engine.retries)
    report = IngestReport()
    records = read_jsonl(lines)
    try:
        while chunk := list(islice(records, batch)):
            report.merge(_commit_chunk(engine, chunk, terms, optimistic=False))
    except StorageUnavailable as err:
        if isinstance(err, ImportStopped):  # the lines of the chunk written before it stopped
            report.merge(err.report)
        report.sort()
        raise ImportStopped(err.detail, report) from None
    report.sort()
    return report


Chunk = list[tuple[int, Any]]


def _commit_chunk(engine: Engine, chunk: Chunk, terms: _Terms, *, optimistic: bool) -> IngestReport:
    """Write a chunk in one transaction; if that fails as a whole, one line per transaction, so a
    line the database refuses is rejected alone. Raises StorageUnavailable when the database is gone."""
    try:
        work = partial(_apply_chunk, engine, chunk=chunk, terms=terms)
        return engine.store.run(work, retries=1 if len(chunk) > 1 else engine.retries, optimistic=optimistic)
    except (ConcurrentUpdate, StorageUnavailable):
        if len(chunk) == 1:
            raise
    part = IngestReport()
    for item in chunk:
        try:
            part.merge(
                engine.store.run(partial(_apply_chunk, engine, chunk=[item], terms=terms), retries=engine.retries)
            )
        except StorageUnavailable as err:
            if _out_of_space(err) or not _reachable(engine):
                raise ImportStopped(err.detail, part) from None
            record = item[1]
            part.reject(item[0], record.get("patient") if isinstance(record, dict) else None, err)
    return part


def _out_of_space(err: StorageUnavailable) -> bool:
    """A full disk (or quota, or page limit) refuses every line alike: no line is to blame."""
    detail = err.detail.lower()
    return any(sign in detail for sign in ("full", "no space", "disk quota", "could not extend", "could not write"))


def _reachable(engine: Engine) -> bool:
    try:
        engine.store.count_patients()
    except StorageUnavailable:
        return False
    return True


def _ingest_parallel(
    url: str, records: Iterator[tuple[int, Any]], batch: int, workers: int, terms: _Terms, retries: int
) -> IngestReport:
    context = worker_context()
    inboxes = [context.Queue(maxsize=4) for _ in range(workers)]  # bounded: memory stays flat
    results = context.Queue()
    stop = context.Event()
    processes = [
        context.Process(
            target=_ingest_worker, args=(index, url, inbox, results, stop, terms, retries, os.getpid()), daemon=True
        )
        for index, inbox in enumerate(inboxes)
    ]
    for process in processes:
        process.start()
    collector = _Collector(results, processes)
    buffers: list[Chunk] = [[] for _ in range(workers)]
    try:
        for number, record in records:
            patient = record.get("patient") if isinstance(record, dict) else None
            if not isinstance(patient, str):
                collector.report.merge(_reject_unrouted(number, record))
                continue
            slot = zlib.crc32(patient.encode()) % workers
            buffers[slot].append((number, record))
            if len(buffers[slot]) >= batch:
                _hand_over(inboxes[slot], buffers[slot], processes[slot], collector)
                buffers[slot] = []
        for slot, inbox in enumerate(inboxes):
            if buffers[slot]:
                _hand_over(inbox, buffers[slot], processes[slot], collector)
            _hand_over(inbox, None, processes[slot], collector)
        collector.wait_all()
    except BaseException as err:
        # Let the others finish the batch in hand (so the report knows what they committed), then
        # make sure nothing is left running or blocked on a pipe.
        stop.set()
        collector.drain(STOP_GRACE_S)
        stop_processes(processes, [*inboxes, results])
        collector.report.sort()
        if isinstance(err, _WorkerFailed):
            raise ImportStopped(str(err), collector.report) from None
        raise
    stop_processes(processes, [*inboxes, results])
    collector.report.sort()
    return collector.report


class _WorkerFailed(Exception):
    pass


class _Collector:
    """Reads what the workers report: a report per committed chunk, then done, or their failure."""

    def __init__(self, results: Any, processes: list[Any]) -> None:
        self.results = results
        self.processes = processes
        self.report = IngestReport()
        self.finished: set[int] = set()

    def poll(self, timeout: float) -> None:
        try:
            index, kind, value = self.results.get(timeout=timeout)
        except queue.Empty:
            self._check_alive()
            return
        if kind == "part":
            self.report.merge(value)
        elif kind == "done":
            self.finished.add(index)
        else:
            self.finished.add(index)
            raise _WorkerFailed(value)

    def _check_alive(self) -> None:
        for index, process in enumerate(self.processes):
            if index not in self.finished and not process.is_alive():
                self.finished.add(index)
                raise _WorkerFailed(f"an import worker stopped unexpectedly (exit status {process.exitcode})")

    def wait_all(self) -> None:
        while len(self.finished) < len(self.processes):
            self.poll(0.5)

    def drain(self, grace: float) -> None:
        """Collect what the stopping workers still report, for at most `grace` seconds."""
        import time

        deadline = time.monotonic() + grace
        while len(self.finished) < len(self.processes) and time.monotonic() < deadline:
            try:
                self.poll(0.2)
            except _WorkerFailed:
                continue
        while True:  # anything already in the pipe
            try:
                _index, kind, value = self.results.get_nowait()
            except (queue.Empty, OSError, ValueError):
                return
            if kind == "part":
                self.report.merge(value)


def _hand_over(inbox: Any, chunk: Chunk | None, process: Any, collector: _Collector) -> None:
    """Queue a chunk for a worker, reading reports meanwhile; raise if a worker failed or stopped."""
    while True:
        collector.poll(0)
        try:
            inbox.put(chunk, timeout=0.2)
            return
        except queue.Full:
            if not process.is_alive():
                raise _WorkerFailed("an import worker stopped unexpectedly") from None


def _ingest_worker(
    index: int, url: str, inbox: Any, results: Any, stop: Any, terms: _Terms, retries: int, parent: int
) -> None:
    tie_to_parent(parent)
    engine = Engine(url, lambda: terms.now, retries=retries)
    engine.store.schema_known()  # the command ensured it before starting the workers
    try:
        with bulk_allocation():
            while not stop.is_set():
                try:
                    chunk = inbox.get(timeout=0.1)  # not blocked for good: the stop must be seen at once
                except queue.Empty:
                    continue
                if chunk is None:
                    break
                results.put((index, "part", _commit_chunk(engine, chunk, terms, optimistic=True)))
        results.put((index, "done", None))
    except BaseException as err:  # reported as text: the parent only needs the message
        if isinstance(err, ImportStopped):
            results.put((index, "part", err.report))
        results.put((index, "failed", f"an import worker failed: {type(err).__name__}: {err}"))
    finally:
        engine.close()
        results.close()
        results.join_thread()


def _reject_unrouted(number: int, record: Any) -> IngestReport:
    """A line without a patient id: rejected like any other bad line, without a worker."""
    part = IngestReport()
    error = record if isinstance(record, Exception) else InvalidCommand(MISSING_FIELDS)
    part.reject(number, None, error)
    return part


def _apply_chunk(engine: Engine, tx: Transaction, *, chunk: list[tuple[int, Any]], terms: _Terms) -> IngestReport:
    part = IngestReport()
    tx.prefetch(
        [
            record["patient"]
            for _, record in chunk
            if isinstance(record, dict) and isinstance(record.get("patient"), str) and record["patient"].isprintable()
        ]
    )
    for number, record in chunk:
        patient = record.get("patient") if isinstance(record, dict) else None
        try:
            if isinstance(record, Exception):
                raise record
            part.note(number, patient, _apply_line(engine, tx, record, terms))
        except Exception as err:  # every rejection is reported, never silently dropped
            if not _is_line_error(err):
                raise
            part.reject(number, patient, err)
    return part


def _apply_line(engine: Engine, tx: Transaction, record: dict[str, Any], terms: _Terms) -> str:
    unknown = set(record) - _ENVELOPE
    if unknown:
        raise InvalidCommand(f"unknown keys {sorted(unknown)}; expected some of {sorted(_ENVELOPE)}")
    patient, event, at_text = record.get("patient"), record.get("event"), record.get("at")
    if not isinstance(patient, str) or not isinstance(event, str) or not isinstance(at_text, str):
        raise InvalidCommand(MISSING_FIELDS)
    try:
        at = datetime.fromisoformat(at_text)
    except ValueError:
        raise InvalidCommand(f"at: {at_text!r} is not an ISO 8601 time") from None
    at = clinical_time(at)
    pathway = record.get("pathway")
    _check_lookup(patient, pathway)
    if event == "enroll":
        try:
            engine._enroll_in(
                tx,
                patient,
                at,
                pathway=pathway if pathway is not None else DEFAULT_PATHWAY,
                version=record.get("version"),
                allow_unapproved=terms.allow_unapproved,
                factors=record.get("factors"),
                actor=record.get("actor"),
                now=terms.now,
            )
        except DuplicatePatient:
            if _enrolled_alike(tx, record, patient, pathway or DEFAULT_PATHWAY, at):
                return ALREADY_APPLIED
            raise
        return APPLIED
    if record.get("idempotency_key") is None and _recorded_alike(tx, record, patient, event, pathway, at):
        return ALREADY_APPLIED
    result = engine._send_in(
        tx,
        patient,
        event,
        at,
        record.get("data"),
        pathway=pathway,
        actor=record.get("actor"),
        idempotency_key=record.get("idempotency_key"),
        now=terms.now,
    )
    if result.duplicate:
        return DUPLICATE
    return APPLIED if result.changed else UNCHANGED


def _enrolled_alike(tx: Transaction, record: dict[str, Any], patient: str, pathway: str, at: datetime) -> bool:
    """Whether the enrolment's recorded enrolment entry is this line's: same time, version and data."""
    try:
        definition = definition_for_enrolment(pathway, record.get("version"), allow_unapproved=True)
        factors = record.get("factors")
        payload = definition.validate_enrollment({"factors": factors if factors is not None else {}})
    except StatesError:
        return False
    wanted = payload.model_dump(mode="json")
    version = record.get("version")
    return any(
        entry.event == "enroll" and entry.payload == wanted and (version is None or entry.version == version)
        for entry in tx.entries_at(patient, pathway, at)
    )


def _recorded_alike(
    tx: Transaction, record: dict[str, Any], patient: str, event: str, pathway: str | None, at: datetime
) -> bool:
    """Whether the enrolment's log already holds this unkeyed event: same event, data and actor at
    the same instant (only an event at or before the last one can be; anything later is new)."""
    try:
        snapshot = (
            tx.load(patient, pathway) if pathway is not None else pick_enrolment(patient, None, tx.enrolments(patient))
        )
        if at > snapshot.last_event_at:
            return False
        data = record.get("data")
        payload = get_pathway(snapshot.pathway, snapshot.version).validate(event, data if data is not None else {})
    except (StatesError, PersistenceError, CarepathError):
        return False  # the line is judged (and rejected) by _send_in
    wanted = payload.model_dump(mode="json")
    actor = record.get("actor")
    return any(
        entry.event == event and entry.payload == wanted and entry.actor == actor
        for entry in tx.entries_at(patient, snapshot.pathway, at)
    )


def _is_line_error(err: Exception) -> bool:
    """A property of the line (bad input, not allowed, ...), not of the database or another writer."""
    if isinstance(err, (ConcurrentUpdate, StorageUnavailable)):
        return False  # retried, or fatal for the whole batch
    return isinstance(err, (StatesError, PersistenceError, CarepathError, ValueError, TypeError, OverflowError))
