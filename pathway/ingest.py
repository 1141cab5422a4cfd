"""Bulk ingestion: many events per transaction, each checked exactly as `send` checks it.

Input is JSON Lines, one event per line:
    {"patient": "p-1", "event": "enroll", "at": "...", "factors": {...}, "pathway": "...", "version": 1}
    {"patient": "p-1", "event": "assess", "at": "...", "data": {...}, "actor": "...", "idempotency_key": "..."}
Other events may name the enrolment with "pathway" (needed when the patient is on several pathways).
A rejected line is reported with its line number and reason and writes nothing; the other lines
of its batch still commit. The engine's clock is read once for the whole import.
"""

from __future__ import annotations

import queue
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING, Any

import orjson

from persistence import StorageUnavailable

from .engine import DEFAULT_PATHWAY, Engine
from .errors import InvalidCommand, exit_code
from .tuning import bulk_allocation, worker_context

if TYPE_CHECKING:
    from persistence import Transaction

__all__ = ["IngestReport", "Rejection", "ingest", "read_jsonl"]

MISSING_FIELDS = "each line needs string fields patient, event and at"
_ENVELOPE = {"patient", "event", "at", "data", "actor", "idempotency_key", "factors", "pathway", "version"}


@dataclass(frozen=True)
class Rejection:
    """A line that was not applied, and why."""

    line: int
    patient: str | None
    error: str
    exit_code: int


@dataclass
class IngestReport:
    """Totals of one import."""

    accepted: int = 0
    unchanged: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    def merge(self, other: IngestReport) -> None:
        self.accepted += other.accepted
        self.unchanged += other.unchanged
        self.duplicates += other.duplicates
        self.rejected.extend(other.rejected)

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "unchanged": self.unchanged,
            "duplicates": self.duplicates,
            "rejected": [vars(r) for r in self.rejected],
        }


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


def ingest(engine: Engine, lines: Iterable[str], *, batch: int = 1_000, workers: int = 1) -> IngestReport:
    """Apply every event of a JSON Lines stream, `batch` events per transaction.

    With `workers` > 1 the patients are shared out (by a hash of their id, so each patient's
    events stay in order in one process) over that many processes, which compute their batches
    in parallel and write them optimistically (revision-checked); the report is the same.
    """
    now = engine.clock()
    if workers > 1:
        return _ingest_parallel(engine.store.url, read_jsonl(lines), batch, workers, now, engine.retries)
    report = IngestReport()
    records = read_jsonl(lines)
    with bulk_allocation():
        while chunk := list(islice(records, batch)):
            work = partial(_apply_chunk, engine, chunk=chunk, now=now)
            report.merge(engine.store.run(work, retries=engine.retries))
    return report


Chunk = list[tuple[int, Any]]


def _ingest_parallel(
    url: str, records: Iterator[tuple[int, Any]], batch: int, workers: int, now: datetime, retries: int
) -> IngestReport:
    context = worker_context()
    inboxes = [context.Queue(maxsize=4) for _ in range(workers)]  # bounded: memory stays flat
    results, failures = context.Queue(), context.Queue()
    processes = [
        context.Process(target=_ingest_worker, args=(url, inbox, results, failures, now, retries), daemon=True)
        for inbox in inboxes
    ]
    for process in processes:
        process.start()
    report = IngestReport()
    buffers: list[Chunk] = [[] for _ in range(workers)]
    try:
        for number, record in records:
            patient = record.get("patient") if isinstance(record, dict) else None
            if not isinstance(patient, str):
                report.merge(_reject_unrouted(number, record))
                continue
            slot = zlib.crc32(patient.encode()) % workers
            buffers[slot].append((number, record))
            if len(buffers[slot]) >= batch:
                _hand_over(inboxes[slot], buffers[slot], processes[slot], failures)
                buffers[slot] = []
        for slot, inbox in enumerate(inboxes):
            if buffers[slot]:
                _hand_over(inbox, buffers[slot], processes[slot], failures)
            _hand_over(inbox, None, processes[slot], failures)
        for _ in processes:
            report.merge(_result(results, failures, processes))
    except BaseException:
        for process in processes:  # the others wait for chunks that will not come
            process.terminate()
        raise
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
    report.rejected.sort(key=lambda r: r.line)
    return report


def _hand_over(inbox: Any, chunk: Chunk | None, process: Any, failures: Any) -> None:
    """Queue a chunk for a worker; if a worker failed or stopped, raise instead of waiting."""
    while True:
        try:
            inbox.put(chunk, timeout=0.5)
            return
        except queue.Full:
            _raise_failure(failures)
            if not process.is_alive():
                raise StorageUnavailable("an import worker stopped unexpectedly") from None


def _raise_failure(failures: Any) -> None:
    try:
        error = failures.get_nowait()
    except queue.Empty:
        return
    raise StorageUnavailable(f"an import worker failed: {error}")


def _result(results: Any, failures: Any, processes: list[Any]) -> IngestReport:
    """The next worker's report; a worker's error is raised, a vanished worker too."""
    while True:
        _raise_failure(failures)
        try:
            part: IngestReport = results.get(timeout=0.5)
            return part
        except queue.Empty:
            if not any(p.is_alive() for p in processes) and results.empty():
                _raise_failure(failures)
                raise StorageUnavailable("an import worker stopped unexpectedly") from None


def _ingest_worker(url: str, inbox: Any, results: Any, failures: Any, now: datetime, retries: int) -> None:
    engine = Engine(url, lambda: now, retries=retries)
    report = IngestReport()
    try:
        with bulk_allocation():
            while (chunk := inbox.get()) is not None:
                work = partial(_apply_chunk, engine, chunk=chunk, now=now)
                report.merge(engine.store.run(work, retries=retries, optimistic=True))
        results.put(report)
    except BaseException as err:  # reported as text: not every exception survives pickling
        failures.put(f"{type(err).__name__}: {err}")
    finally:
        engine.close()


def _reject_unrouted(number: int, record: Any) -> IngestReport:
    """A line without a patient id: rejected like any other bad line, without a worker."""
    part = IngestReport()
    error = (
        record
        if isinstance(record, Exception)
        else InvalidCommand("each line needs string fields patient, event and at")
    )
    part.rejected.append(Rejection(number, None, str(error), exit_code(error)))
    return part


def _apply_chunk(engine: Engine, tx: Transaction, *, chunk: list[tuple[int, Any]], now: datetime) -> IngestReport:
    part = IngestReport()
    tx.prefetch(
        [
            record["patient"]
            for _, record in chunk
            if isinstance(record, dict) and isinstance(record.get("patient"), str)
        ]
    )
    for number, record in chunk:
        patient = record.get("patient") if isinstance(record, dict) else None
        try:
            if isinstance(record, Exception):
                raise record
            _apply_line(engine, tx, record, now, part)
        except Exception as err:  # every rejection is reported, never silently dropped
            if not _is_domain_error(err):
                raise
            part.rejected.append(Rejection(number, patient, str(err), exit_code(err)))
    return part


def _apply_line(engine: Engine, tx: Transaction, record: dict[str, Any], now: datetime, part: IngestReport) -> None:
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
    pathway = record.get("pathway")
    if pathway is not None and not isinstance(pathway, str):
        raise InvalidCommand("pathway must be a string")
    if event == "enroll":
        engine.enroll_in(
            tx,
            patient,
            at,
            pathway=pathway if pathway is not None else DEFAULT_PATHWAY,
            version=record.get("version"),
            factors=record.get("factors"),
            actor=record.get("actor"),
            now=now,
        )
        part.accepted += 1
        return
    result = engine.send_in(
        tx,
        patient,
        event,
        at,
        record.get("data"),
        pathway=pathway,
        actor=record.get("actor"),
        idempotency_key=record.get("idempotency_key"),
        now=now,
    )
    if result.duplicate:
        part.duplicates += 1
    elif result.changed:
        part.accepted += 1
    else:
        part.unchanged += 1


def _is_domain_error(err: Exception) -> bool:
    from persistence import ConcurrentUpdate, PersistenceError, StorageUnavailable
    from states import StatesError

    from .errors import CarepathError

    if isinstance(err, (ConcurrentUpdate, StorageUnavailable)):
        return False  # retried or fatal for the whole batch, not a property of one line
    return isinstance(err, (StatesError, PersistenceError, CarepathError))
