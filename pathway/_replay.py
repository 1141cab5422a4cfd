"""Replay, verify and what-if over the audit log (DESIGN.md section 5).

- `replay` rebuilds an enrolment's state by re-applying its recorded events to the recorded
  definition version, checking every step against what was recorded; with `until` it answers
  "what was the state at time T".
- `verify` checks each enrolment's hash chain, that replay reproduces every recorded step, and
  that the stored snapshot equals the replayed one, streaming the log (memory stays flat).
- `whatif` re-runs the recorded events under another policy and reports who would have moved
  differently.

An enrolment (a patient on one pathway) is the unit: its own sequence, chain and snapshot.

Stored payloads are upcast to the current payload schema (states/_upcast.py) before they are
validated. One definition instance (and its memoising chart runner) serves every patient of a
(pathway, version), so replay does no statechart work per event beyond the first of a kind.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import partial
from itertools import groupby
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from carepath.errors import Category
from carepath.errors import Problem as FieldProblem
from persistence import (
    GENESIS,
    AuditEntry,
    EnrolmentKey,
    IdRange,
    Snapshot,
    UnknownPatient,
    is_private_memory,
)
from persistence._chain import Sealer
from persistence._crypto import is_sealed
from states import (
    MIGRATE_EVENT,
    EventNotAllowed,
    InvalidInput,
    Pathway,
    StatesError,
    Step,
    UnknownDefinition,
    get_pathway,
)
from states._guards import ConditionResult, evaluate_rule

from ._engine import Status, clinical_time, resolve_pathway
from ._errors import CarepathError
from ._fold import CORRECT_EVENT, NON_CLINICAL, fold, folded_snapshot, is_clinical, rederive, stored_payload
from ._tuning import bulk_allocation, parallel_map

if TYPE_CHECKING:
    from persistence import Store

    from ._fold import Folded

__all__ = [
    "InvalidPolicy",
    "NotEnrolledAt",
    "Problem",
    "ReplayDiverged",
    "ReplayResult",
    "VerifyReport",
    "WhatIfChange",
    "WhatIfReport",
    "describe_decision",
    "replay",
    "stored_payload",
    "verify",
    "worker_count",
    "whatif",
]

T = TypeVar("T")
Progress = Callable[[int], None]
Resolve = Callable[[str, int], Pathway]

# Reasons `verify` reports (DESIGN.md section 5); replay and snapshot reasons add detail after ": ".
HASH_MISMATCH = "hash mismatch"
BROKEN_LINK = "broken link to previous entry"
SEQUENCE_GAP = "sequence gap"
REPLAY_DIVERGED = "replay diverged"
SNAPSHOT_DIFFERS = "snapshot differs"
UNDECRYPTABLE = "cannot decrypt"
# A full report lists at most this many problems (the count covers them all).
MAX_LISTED_PROBLEMS = 100


class ReplayDiverged(CarepathError):
    """Raised when re-applying an enrolment's recorded events does not reproduce what was recorded."""

    code = "replay_diverged"
    category = Category.INTERNAL

    def __init__(self, patient_id: str, seq: int, reason: str, pathway: str | None = None) -> None:
        self.patient_id = patient_id
        self.pathway = pathway
        self.seq = seq
        self.reason = reason
        on = f" on {pathway}" if pathway is not None else ""
        super().__init__(f"patient {patient_id!r}{on}, seq {seq}: {reason}")


class NotEnrolledAt(UnknownPatient):
    """Raised when replaying an enrolment to a time before it began."""

    code = "not_enrolled_at"

    def __init__(self, patient_id: str, until: datetime, pathway: str | None = None) -> None:
        super().__init__(patient_id, pathway)
        self.until = until
        on = f" on {pathway}" if pathway is not None else ""
        self.args = (f"patient {patient_id!r} was not enrolled yet{on} at {until.isoformat()}",)


class InvalidPolicy(CarepathError):
    """Raised when a what-if policy does not validate against a definition's policy model (`problems` say where)."""

    code = "invalid_policy"
    category = Category.INVALID_INPUT

    def __init__(self, pathway: str, problems: Sequence[FieldProblem]) -> None:
        self.pathway = pathway
        self.problems = tuple(problems)
        super().__init__(f"invalid policy for {pathway}: " + "; ".join(map(str, self.problems)))


class _Mismatch(Exception):
    """A recorded entry that replay or the chain check does not reproduce (internal)."""

    def __init__(self, seq: int, reason: str, detail: str = "") -> None:
        self.seq = seq
        self.reason = reason
        self.detail = detail
        super().__init__(reason)


def _diverged(seq: int, detail: str) -> _Mismatch:
    return _Mismatch(seq, f"{REPLAY_DIVERGED}: {detail}")


@contextmanager
def _streaming(items: Iterator[T]) -> Iterator[Iterator[T]]:
    """Close a streaming read (and free its connection) even when we stop early."""
    try:
        yield items
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


# -- rebuilding one patient ------------------------------------------------------------------


class _Rebuild:
    """A patient's snapshot rebuilt from its entries, one step at a time."""

    def __init__(self, definition: Pathway, enrollment: AuditEntry) -> None:
        self.definition = definition
        self.patient_id = enrollment.patient_id
        configuration, self.context = definition.start(stored_payload(definition, enrollment), enrollment.at)
        self.configuration = tuple(configuration)
        self.state = definition.state_name(self.configuration)
        self.state_since = self.last_event_at = enrollment.at
        self.created_at = self.updated_at = enrollment.recorded_at
        self.seq = enrollment.seq
        self.last_hash = enrollment.hash
        self.applied = 1
        # Every entry so far: a late entry or a correction folds them all again.
        self.entries: list[AuditEntry] = [enrollment]

    def step(self, entry: AuditEntry) -> Step:
        """Apply an entry's event to the current state (raises EventNotAllowed, InvalidInput)."""
        if entry.event == MIGRATE_EVENT:  # moved to another version by its declared mapping
            target = get_pathway(entry.pathway, entry.version)
            configuration, context = target.migrate(self.definition.version, self.configuration, self.context, entry.at)
            return Step(MIGRATE_EVENT, self.configuration, configuration, context, (), None)
        payload = stored_payload(self.definition, entry)
        return self.definition.apply(self.configuration, self.context, entry.event, payload, entry.at)

    def advance(self, entry: AuditEntry, step: Step) -> None:
        if entry.event == MIGRATE_EVENT:
            self.definition = get_pathway(entry.pathway, entry.version)
        self.configuration = step.configuration_after
        self.context = step.context
        state = self.definition.state_name(self.configuration)
        if state != self.state:
            self.state, self.state_since = state, entry.at
        self.last_event_at = entry.at
        self._took(entry)

    def adopt(self, entry: AuditEntry, folded: Folded) -> None:
        """Take the state re-derived from the whole log after `entry`."""
        self.definition = folded.definition
        self.configuration = folded.configuration
        self.context = folded.context
        self.state, self.state_since = folded.state, folded.state_since
        self.last_event_at = folded.last_event_at
        self._took(entry)

    def _took(self, entry: AuditEntry) -> None:
        """Count `entry` as applied: the chain head and the record times move to it."""
        self.updated_at = entry.recorded_at
        self.seq = entry.seq
        self.last_hash = entry.hash
        self.applied += 1
        self.entries.append(entry)

    def snapshot(self) -> Snapshot:
        """The snapshot the engine would have stored after the entries applied so far."""
        return Snapshot(
            patient_id=self.patient_id,
            pathway=self.definition.name,
            version=self.definition.version,
            configuration=list(self.configuration),
            context=self.context,
            state=self.state,
            state_since=self.state_since,
            revision=self.applied,
            next_due_at=self.definition.next_due_at(self.configuration, self.context),
            last_event_at=self.last_event_at,
            last_seq=self.seq,
            last_hash=self.last_hash,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


def _checked_start(entry: AuditEntry) -> _Rebuild:
    """Start a patient's replay from its enrolment entry, checked against the record."""
    if entry.event != "enroll":
        raise _diverged(entry.seq, f"first entry is {entry.event!r}, not an enrolment")
    definition = get_pathway(entry.pathway, entry.version)  # unknown here: a clear error, not tampering
    try:
        rebuild = _Rebuild(definition, entry)
    except StatesError as err:
        raise _diverged(entry.seq, str(err)) from None
    _expect(entry.seq, "configuration before", entry.config_before, [])
    _expect(entry.seq, "configuration after", entry.config_after, list(rebuild.configuration))
    return rebuild


def _checked_step(rebuild: _Rebuild, entry: AuditEntry) -> None:
    """Re-apply one entry and check configuration, rule, guard values and transitions."""
    event = entry.event
    if event == CORRECT_EVENT or (entry.at < rebuild.last_event_at and is_clinical(event)):
        _checked_rederived(rebuild, entry)
        return
    definition = rebuild.definition
    if event == MIGRATE_EVENT:
        _expect(entry.seq, "version migrated from", entry.payload.get("from_version"), definition.version)
    elif entry.pathway != definition.name or entry.version != definition.version:
        raise _diverged(
            entry.seq,
            f"entry names {entry.pathway} v{entry.version}, patient is on {definition.name} v{definition.version}",
        )
    if entry.at < rebuild.last_event_at:
        raise _diverged(entry.seq, f"at {entry.at.isoformat()} is before the previous entry's")
    # Each check compares first and spells the difference only when there is one (`_expect`).
    if entry.config_before != list(rebuild.configuration):
        _expect(entry.seq, "configuration before", entry.config_before, list(rebuild.configuration))
    try:
        step = rebuild.step(entry)
    except UnknownDefinition:
        raise  # the log names a definition this process does not know: not a sign of tampering
    except StatesError as err:  # not allowed in the replayed state, or the payload no longer valid
        raise _diverged(entry.seq, str(err)) from None
    if not step.changed:
        raise _diverged(entry.seq, f"{event} changes nothing on replay, yet it was recorded")
    if entry.config_after != list(step.configuration_after):
        _expect(entry.seq, "configuration after", entry.config_after, list(step.configuration_after))
    decision = step.decision
    replayed_rule = decision.rule.name if decision and decision.rule else None
    recorded = entry.decision
    if (recorded or {}).get("rule") != replayed_rule:
        _expect(entry.seq, "decided rule", (recorded or {}).get("rule"), replayed_rule)
    if entry.transitions != list(step.transitions):  # the chart's transitions are plain dicts
        _expect(entry.seq, "transitions", entry.transitions, [dict(t) for t in step.transitions])
    if not _same(recorded, step.decision_record()):
        raise _diverged(entry.seq, "recorded guard values differ from the replayed ones")
    rebuild.advance(entry, step)


def _checked_rederived(rebuild: _Rebuild, entry: AuditEntry) -> None:
    """An entry dated before the previous ones, or a correction: the engine re-derived the state
    by folding the whole log (pathway/_fold.py); do the same and check what it recorded."""
    definition = rebuild.definition
    if (entry.pathway, entry.version) != (definition.name, definition.version):
        raise _diverged(
            entry.seq,
            f"entry names {entry.pathway} v{entry.version}, patient is on {definition.name} v{definition.version}",
        )
    prior = rebuild.entries
    _expect(entry.seq, "configuration before", entry.config_before, list(rebuild.configuration))
    try:
        before = fold(prior)
        if entry.event == CORRECT_EVENT:
            _check_correction(prior, entry)
        elif entry.at < before.barrier:
            raise _diverged(entry.seq, f"at {entry.at.isoformat()} is before the enrolment or its last migration")
        result = rederive(prior, entry, before)
    except UnknownDefinition:
        raise
    except (StatesError, KeyError, ValueError, TypeError) as err:
        raise _diverged(entry.seq, str(err)) from None
    if entry.event != CORRECT_EVENT and result.step is None:
        raise _diverged(entry.seq, f"{entry.event} is not allowed, or changes nothing, at its clinical time")
    _expect(entry.seq, "configuration after", entry.config_after, list(result.after.configuration))
    _expect(entry.seq, "transitions", entry.transitions, result.transitions)
    if not _same(entry.decision, result.decision):
        raise _diverged(entry.seq, "recorded re-derivation differs from the replayed one")
    rebuild.adopt(entry, result.after)


def _check_correction(prior: list[AuditEntry], entry: AuditEntry) -> None:
    """A correction names an earlier clinical entry, at that entry's time."""
    target = next((e for e in prior if e.seq == entry.payload.get("seq")), None)
    if target is None or target.event in NON_CLINICAL:
        raise _diverged(entry.seq, f"corrects {entry.payload.get('seq')!r}, which is no clinical entry")
    if target.at != entry.at:
        raise _diverged(entry.seq, "a correction is dated at the entry it corrects")
    if target.event == "enroll" and entry.payload.get("data") is None:
        raise _diverged(entry.seq, "an enrolment is corrected with data")


def _expect(seq: int, what: str, recorded: Any, replayed: Any) -> None:
    if recorded != replayed:
        raise _diverged(seq, f"{what} recorded {recorded!r}, replayed {replayed!r}")


# -- replay -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayResult(Status):
    """A patient's status as rebuilt from the log (at clinical time `until`, as recorded by `as_of`),
    with the last seq taken into account."""

    seq: int = 0
    until: datetime | None = None
    as_of: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        document = super().to_json()
        document["seq"] = self.seq
        document["until"] = self.until.isoformat() if self.until else None
        document["as_of"] = self.as_of.isoformat() if self.as_of else None
        return document


def replay(
    store: Store,
    patient_id: str,
    until: datetime | None = None,
    *,
    pathway: str | None = None,
    as_of: datetime | None = None,
) -> ReplayResult:
    """Rebuild an enrolment's state from its audit log, checking each step against the record.

    `pathway` names the enrolment (optional when the patient has one). Two times (aware):
    `until` is clinical time, the state at T as we know it now (every late entry and correction
    recorded since included); `as_of` is record time, what the record said at R (entries
    recorded after R left out, so later corrections and late entries too). Raises
    UnknownPatient, AmbiguousEnrolment, NotEnrolledAt (enrolled after `until`, or recorded
    after `as_of`) or ReplayDiverged.
    """
    if until is not None:
        until = clinical_time(until, "until")
    if as_of is not None:
        as_of = clinical_time(as_of, "as_of")
    pathway = resolve_pathway(patient_id, pathway, store.pathways(patient_id))
    rebuild: _Rebuild | None = None
    with _streaming(store.iter_entries(patient_id, pathway=pathway)) as entries:
        for entry in entries:
            if as_of is not None and entry.recorded_at > as_of:
                break
            if until is not None and rebuild is None and entry.at > until:
                raise NotEnrolledAt(patient_id, until, pathway)
            try:
                if rebuild is None:
                    rebuild = _checked_start(entry)
                else:
                    _checked_step(rebuild, entry)
            except _Mismatch as err:
                if until is not None and entry.at > until and entry.event != CORRECT_EVENT:
                    break  # a step after T that does not reproduce leaves the state at T as it was
                raise ReplayDiverged(patient_id, err.seq, err.reason, pathway) from None
    if rebuild is None:
        when = until if until is not None else as_of
        if when is not None:
            raise NotEnrolledAt(patient_id, when, pathway)
        raise ReplayDiverged(patient_id, 1, f"{REPLAY_DIVERGED}: the patient has no audit entries", pathway)
    if until is None:
        return ReplayResult(rebuild.snapshot(), seq=rebuild.seq, as_of=as_of)
    known = [entry for entry in rebuild.entries if entry.at <= until]
    snapshot = folded_snapshot(fold(rebuild.entries, until), known)
    return ReplayResult(snapshot, seq=known[-1].seq, until=until, as_of=as_of)


# -- verify -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """The first thing found wrong with one enrolment's log or snapshot."""

    patient_id: str
    first_bad_seq: int
    reason: str
    detail: str = ""
    pathway: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "patient_id": self.patient_id,
            "pathway": self.pathway,
            "first_bad_seq": self.first_bad_seq,
            "reason": self.reason,
            "detail": self.detail,
        }


@dataclass
class VerifyReport:
    """What `verify` checked and the problems it found (the first one is the headline).

    `patients` counts distinct patients, `enrolments` their chains (a patient on two pathways: 2).
    """

    patients: int = 0
    events: int = 0
    enrolments: int = 0
    problem_count: int = 0
    problems: list[Problem] = field(default_factory=list)
    # Whether the chain was checked as keyed (HMAC under the configured audit keys).
    keyed: bool = False
    # Enrolments whose chain and head were checked but whose events were not replayed: their
    # payloads are encrypted and no data key is configured.
    unreplayed: int = 0
    _sealer: Sealer = field(default_factory=lambda: Sealer(None), repr=False, compare=False)
    _decrypts: bool = field(default=False, repr=False, compare=False)
    # The patient of the enrolment checked last: streams come in patient order, so counting
    # distinct patients needs only this.
    _last_patient: str | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def __getstate__(self) -> dict[str, Any]:
        # Reports cross process boundaries (parallel verify); the keys stay where they were loaded.
        state = dict(self.__dict__)
        state["_sealer"] = Sealer(None)
        return state

    def add(self, problem: Problem) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append(problem)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "ok": self.ok,
            "patients": self.patients,
            "enrolments": self.enrolments,
            "events": self.events,
            "keyed": self.keyed,
        }
        if self.unreplayed:
            document["unreplayed"] = self.unreplayed
        if not self.ok:
            document.update(self.problems[0].to_json())
            document["problem_count"] = self.problem_count
            document["problems"] = [p.to_json() for p in self.problems]
        return document


def verify(
    store: Store,
    patient_id: str | None = None,
    *,
    pathway: str | None = None,
    progress: Progress | None = None,
    workers: int = 1,
) -> VerifyReport:
    """Check the hash chain, replay equality and the snapshot of one enrolment or of every one.

    With `patient_id`, that patient's enrolment on `pathway` (optional when the patient has one).

    Streams entries and snapshots side by side in patient order, so memory does not grow with
    the log. `progress` is called with a number of entries checked as the work advances.
    Verifying every patient with `workers` > 1 spreads ranges of patients over that many
    processes (`worker_count` suggests how many); the report is the same as a single pass.
    Raises UnknownPatient when the named patient has no such enrolment, AmbiguousEnrolment
    when it has several and none is named.
    """
    if patient_id is None:
        if workers > 1 and not is_private_memory(store.url):
            return _verify_parallel(store, workers, progress)
        key = None
    else:
        key = (patient_id, resolve_pathway(patient_id, pathway, store.pathways(patient_id)))
    return _verify_stream(store, key, None, progress)


# Below this many patients one process is faster than starting others.
PARALLEL_MIN_PATIENTS = 2_000


def worker_count(store: Store) -> int:
    """Processes worth starting to verify every patient: one per core for a large file or server
    database, else one."""
    if is_private_memory(store.url):
        return 1
    cores = os.cpu_count() or 1
    return cores if cores > 1 and store.count_patients() >= PARALLEL_MIN_PATIENTS else 1


def _verify_parallel(store: Store, workers: int, progress: Progress | None) -> VerifyReport:
    bounds = store.id_boundaries(workers * 4)
    ranges = list(zip([None, *bounds], [*bounds, None], strict=True))
    report = _new_report(store)
    calls = [(store.url, id_range) for id_range in ranges]
    # In patient order, so the first problem listed is the first by id.
    for done in parallel_map(_verify_range_in_process, calls, workers):
        report.patients += done.patients  # ranges split by patient id: no patient counted twice
        report.enrolments += done.enrolments
        report.events += done.events
        report.unreplayed += done.unreplayed
        for problem in done.problems:
            report.add(problem)
        report.problem_count += done.problem_count - len(done.problems)
        if progress is not None:
            progress(done.events)
    return report


def _verify_range_in_process(url: str, id_range: IdRange) -> VerifyReport:
    from persistence import Store

    store = Store(url, create=False)  # verifying reads only: never creates or writes anything
    try:
        with bulk_allocation():
            return _verify_stream(store, None, id_range, None)
    finally:
        store.dispose()


def _verify_stream(
    store: Store, key: EnrolmentKey | None, id_range: IdRange | None, progress: Progress | None
) -> VerifyReport:
    report = _new_report(store)
    if key is not None:
        stored, log = store.enrolment_log(*key)
        if stored is None:
            raise UnknownPatient(*key)
        snapshots: Iterator[Snapshot] = iter([stored])
        entries: Iterator[AuditEntry] = iter(log)
    else:
        snapshots = store.iter_snapshots(id_range=id_range)
        if is_private_memory(store.url):
            # One in-memory connection cannot stream two queries at once: read snapshots first.
            snapshots = iter(list(snapshots))
        entries = store.iter_entries(id_range=id_range)
    # Both streams come in (patient_id, pathway) order; each enrolment is checked once.
    # The two streams are two reads: an enrolment written between them would look inconsistent, so
    # a problem found in a stream is confirmed on one consistent read of that enrolment first.
    check = _check_enrolment if key is not None else partial(_confirmed, store)
    with _streaming(entries) as stream, _streaming(snapshots):
        groups = groupby(stream, key=attrgetter("key"))
        snapshot = next(snapshots, None)
        group = next(groups, None)
        while snapshot is not None or group is not None:
            orphan = group is not None and (snapshot is None or group[0] != snapshot.key)
            if orphan and group is not None and (snapshot is None or not store.exists(*group[0])):
                # Entries whose enrolment has no snapshot (enrolments are never deleted).
                check(report, group[0], None, group[1], progress)
                group = next(groups, None)
                continue
            if group is not None and snapshot is not None and group[0] == snapshot.key:
                check(report, snapshot.key, snapshot, group[1], progress)
                group = next(groups, None)
            else:
                assert snapshot is not None
                check(report, snapshot.key, snapshot, iter(()), progress)
            snapshot = next(snapshots, None)
    return report


def _confirmed(
    store: Store,
    report: VerifyReport,
    key: EnrolmentKey,
    snapshot: Snapshot | None,
    entries: Iterable[AuditEntry],
    progress: Progress | None,
) -> None:
    """Check an enrolment from the streams; a problem counts only if one consistent read shows it too."""
    listed = list(entries)
    trial = _new_report(store)
    trial._last_patient = report._last_patient
    _check_enrolment(trial, key, snapshot, listed, None)
    if trial.ok:
        report.patients += trial.patients
        report.enrolments += trial.enrolments
        report.events += trial.events
        report.unreplayed += trial.unreplayed
        report._last_patient = trial._last_patient
        if progress is not None:
            progress(trial.events)
        return
    snapshot, listed = store.enrolment_log(*key)
    _check_enrolment(report, key, snapshot, listed, progress)


def _new_report(store: Store) -> VerifyReport:
    """An empty report carrying how the store's entries are checked (audit keys, data key)."""
    return VerifyReport(keyed=store.sealer.keyed, _sealer=store.sealer, _decrypts=store.cipher is not None)


def _check_enrolment(
    report: VerifyReport,
    key: EnrolmentKey,
    snapshot: Snapshot | None,
    entries: Iterable[AuditEntry],
    progress: Progress | None,
) -> None:
    patient_id, pathway = key
    checked = _Checked(report._sealer, report._decrypts)
    try:
        replayed = checked.run(entries)
        if checked.sealed_at is None:
            _compare_snapshot(snapshot, replayed)
        else:
            report.unreplayed += 1
            _compare_head(snapshot, checked.seq, checked.head)
    except _Mismatch as err:
        report.add(Problem(patient_id, err.seq, err.reason, err.detail, pathway))
    if patient_id != report._last_patient:
        report.patients += 1
        report._last_patient = patient_id
    report.enrolments += 1
    report.events += checked.events
    if progress is not None:
        progress(checked.events)


class _Checked:
    """Chain and replay checks over one patient's entries, in sequence order."""

    def __init__(self, sealer: Sealer, decrypts: bool) -> None:
        self.events = 0
        self.sealer = sealer
        self.decrypts = decrypts
        # The first entry left encrypted (no data key): from there on only the chain is checked.
        self.sealed_at: int | None = None
        self.seq, self.head = 0, GENESIS

    def run(self, entries: Iterable[AuditEntry]) -> Snapshot | None:
        rebuild: _Rebuild | None = None
        expected, previous = 1, GENESIS
        for entry in entries:
            _check_chain(entry, expected, previous, self.sealer)
            if self.sealed_at is None and is_sealed(entry.payload):
                if self.decrypts:  # a data key is configured, yet it does not open this entry
                    raise _Mismatch(entry.seq, UNDECRYPTABLE, f"under data key {entry.payload.get('kid')!r}")
                self.sealed_at = entry.seq
            if self.sealed_at is None:
                if rebuild is None:
                    rebuild = _checked_start(entry)
                else:
                    _checked_step(rebuild, entry)
            self.events += 1
            expected, previous = entry.seq + 1, entry.hash
            self.seq, self.head = entry.seq, entry.hash
        return rebuild.snapshot() if rebuild is not None else None


def _check_chain(entry: AuditEntry, expected: int, previous: str, sealer: Sealer) -> None:
    if entry.seq != expected:
        raise _Mismatch(expected, SEQUENCE_GAP, f"expected seq {expected}, found {entry.seq}")
    wrong = sealer.check_entry(entry)
    if wrong is not None:
        raise _Mismatch(entry.seq, *wrong)
    if entry.prev_hash != previous:
        raise _Mismatch(entry.seq, BROKEN_LINK, f"prev_hash {entry.prev_hash[:16]}, previous entry {previous[:16]}")


def _compare_head(stored: Snapshot | None, seq: int, head: str) -> None:
    """Without replay (encrypted payloads, no data key): the snapshot must point at the chain's head."""
    if stored is None:
        raise _Mismatch(1, f"{SNAPSHOT_DIFFERS}: audit entries without a patient snapshot")
    if stored.last_seq != seq:
        detail = f"{SNAPSHOT_DIFFERS}: last_seq stored {stored.last_seq}, chain {seq}"
        raise _Mismatch(min(stored.last_seq, seq) + 1, detail)
    if stored.last_hash != head:
        raise _Mismatch(seq, f"{SNAPSHOT_DIFFERS}: last_hash stored {stored.last_hash[:16]}, chain {head[:16]}")


_SNAPSHOT_FIELDS = tuple(f.name for f in fields(Snapshot))


def _compare_snapshot(stored: Snapshot | None, replayed: Snapshot | None) -> None:
    """Raise when the stored snapshot is not the one the replayed log produces."""
    if replayed is None:
        raise _Mismatch(1, f"{SNAPSHOT_DIFFERS}: the patient has no audit entries")
    if stored is None:
        raise _Mismatch(1, f"{SNAPSHOT_DIFFERS}: audit entries without a patient snapshot")
    if stored.last_seq != replayed.last_seq:
        # The first entry one side has and the other lacks (deleted or appended out of band).
        seq = min(stored.last_seq, replayed.last_seq) + 1
        raise _Mismatch(seq, f"{SNAPSHOT_DIFFERS}: last_seq stored {stored.last_seq}, replayed {replayed.last_seq}")
    if stored == replayed:  # the usual case: every field equal, nothing to read as instants
        return
    for name in _SNAPSHOT_FIELDS:
        mine, theirs = getattr(stored, name), getattr(replayed, name)
        if not _same(mine, theirs):
            raise _Mismatch(replayed.last_seq, f"{SNAPSHOT_DIFFERS}: {name} {_difference(name, mine, theirs)}")


def _same(recorded: Any, replayed: Any) -> bool:
    """Equal, reading times recorded as text as instants.

    Earlier engines kept an event's own offset in the context and guard values they stored
    ("2026-01-05T09:00:00-05:00"), while replay reads each event's time back from the log in UTC;
    both name the same instant, so neither is a difference.
    """
    return bool(recorded == replayed or _instants(recorded) == _instants(replayed))


def _instants(value: Any) -> Any:
    if isinstance(value, str):
        if len(value) >= 25 and value[10:11] == "T" and value[-6] in "+-" and value[-3] == ":":
            try:
                return datetime.fromisoformat(value).astimezone(UTC)
            except (ValueError, OverflowError):
                return value
        return value
    if isinstance(value, dict):
        return {key: _instants(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_instants(item) for item in value]
    return value


def _difference(name: str, stored: Any, replayed: Any) -> str:
    if name == "context" and isinstance(stored, dict) and isinstance(replayed, dict):
        keys = sorted(k for k in stored.keys() | replayed.keys() if stored.get(k) != replayed.get(k))
        return "; ".join(f"{k} stored {stored.get(k)!r}, replayed {replayed.get(k)!r}" for k in keys)
    return f"stored {stored!r}, replayed {replayed!r}"


# -- what-if -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WhatIfChange:
    """An enrolment that would have moved differently under the what-if policy."""

    patient_id: str
    recorded_state: str
    whatif_state: str
    first_diverging_seq: int
    # The recorded event the what-if state does not allow (replay stops there), if any.
    stopped_at_seq: int | None = None
    pathway: str = ""
    # Why the what-if run stopped: the event not allowed, or data the other version refuses.
    stopped_because: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "patient_id": self.patient_id,
            "pathway": self.pathway,
            "recorded_state": self.recorded_state,
            "whatif_state": self.whatif_state,
            "first_diverging_seq": self.first_diverging_seq,
            "stopped_at_seq": self.stopped_at_seq,
            "stopped_because": self.stopped_because,
        }


@dataclass
class WhatIfReport:
    """Who would have moved differently, out of how many patients and events."""

    policy: dict[str, Any]
    patients: int = 0
    events: int = 0
    changes: list[WhatIfChange] = field(default_factory=list)
    enrolments: int = 0
    # With a version what-if: the pathway and the version its patients were re-run on.
    version: tuple[str, int] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "version": {"pathway": self.version[0], "version": self.version[1]} if self.version else None,
            "patients": self.patients,
            "enrolments": self.enrolments,
            "events": self.events,
            "changed": len(self.changes),
            "patients_changed": [c.to_json() for c in self.changes],
        }


def whatif(
    store: Store,
    policy: Mapping[str, Any] | None = None,
    *,
    version: tuple[str, int] | None = None,
    progress: Progress | None = None,
) -> WhatIfReport:
    """Re-run every patient's recorded events under `policy`, or on another `version` (pathway,
    version) of their pathway, and report who moves differently.

    The recorded payloads and times are re-applied as they were; a recorded tick that changes
    nothing under the new policy is skipped, and a recorded event the what-if state does not
    allow, or data the other version refuses, ends that patient's what-if run (the clinician
    would have seen another state). Recorded migrations are left out: the what-if stays on one
    definition. Raises InvalidPolicy when `policy` does not fit a patient's definition, and
    UnknownDefinition for an unknown version.
    """
    resolve = _with_version(*version) if version is not None else _with_policy(policy or {})
    report = WhatIfReport(policy=dict(policy or {}), version=version)
    last_patient = None
    with _streaming(store.iter_entries()) as stream:
        for (patient_id, _pathway), entries in groupby(stream, key=attrgetter("key")):
            count, change = _whatif_patient(patient_id, entries, resolve)
            report.patients += patient_id != last_patient  # entries come in patient order
            last_patient = patient_id
            report.enrolments += 1
            report.events += count
            if change is not None:
                report.changes.append(change)
            if progress is not None:
                progress(count)
    return report


def _with_policy(policy: Mapping[str, Any]) -> Resolve:
    """A resolver giving each recorded (pathway, version) a definition under `policy`."""
    cache: dict[tuple[str, int], Pathway] = {}

    def resolve(name: str, version: int) -> Pathway:
        key = (name, version)
        if key not in cache:
            recorded = get_pathway(name, version)
            model: type[BaseModel] = type(recorded.policy)
            try:
                chosen = model.model_validate(dict(policy))
            except ValidationError as err:
                raise InvalidPolicy(name, FieldProblem.from_validation(err.errors())) from None
            cache[key] = recorded.with_policy(chosen)
        return cache[key]

    return resolve


def _with_version(pathway: str, version: int) -> Resolve:
    """A resolver giving the enrolments of `pathway` that version instead of their recorded one."""
    chosen = get_pathway(pathway, version)
    return lambda name, recorded: chosen if name == pathway else get_pathway(name, recorded)


def _whatif_patient(
    patient_id: str, entries: Iterable[AuditEntry], resolve: Resolve
) -> tuple[int, WhatIfChange | None]:
    iterator = iter(entries)
    first = next(iterator)
    definition = resolve(first.pathway, first.version)
    recorded_definition = get_pathway(first.pathway, first.version)
    try:
        rebuild = _Rebuild(definition, first)
    except UnknownDefinition:
        raise
    except InvalidInput as err:  # the other version refuses the enrolment itself
        count = 1 + sum(1 for _ in iterator)
        state = recorded_definition.state_name(first.config_after)
        return count, WhatIfChange(patient_id, state, state, first.seq, first.seq, first.pathway, str(err))
    except StatesError as err:
        raise ReplayDiverged(patient_id, first.seq, f"{REPLAY_DIVERGED}: {err}", first.pathway) from None
    count, recorded, diverged, stopped, because = 1, first.config_after, None, None, None
    for entry in iterator:
        count += 1
        if entry.event in (MIGRATE_EVENT, CORRECT_EVENT):
            continue
        recorded = entry.config_after
        if stopped is not None:
            continue
        try:
            step = rebuild.step(entry)
        except UnknownDefinition:
            raise
        except (EventNotAllowed, InvalidInput) as err:
            stopped, because = entry.seq, str(err)
            diverged = diverged or entry.seq
            continue
        except StatesError as err:
            raise ReplayDiverged(patient_id, entry.seq, f"{REPLAY_DIVERGED}: {err}", entry.pathway) from None
        if step.changed:
            rebuild.advance(entry, step)
        if diverged is None and list(rebuild.configuration) != entry.config_after:
            diverged = entry.seq
    if diverged is None:
        return count, None
    definition = rebuild.definition
    recorded_state = recorded_definition.state_name(recorded)
    change = WhatIfChange(patient_id, recorded_state, rebuild.state, diverged, stopped, definition.name, because)
    return count, change


# -- reading a recorded decision ------------------------------------------------------------------


def describe_decision(entry: AuditEntry) -> list[str]:
    """Why an entry moved the patient, from the audit row alone: one line per rule checked.

    The row records the inputs the rules read and the thresholds in force; each checked rule's
    conditions are shown against those recorded values (not today's policy), e.g.
    "reassess.escalate_to_second_line held: weeks_in_line 4 >= 4 (first_line_early_weeks) and
    improvement 0.125 < 0.3 (moderate_improvement)".
    """
    record = entry.decision
    if not record:
        return []
    definition = get_pathway(entry.pathway, entry.version)
    rules = {rule.name: rule for rule in definition.rules}
    policy = definition.policy.model_copy(update=record.get("thresholds", {}))
    lines = []
    for name, _won in record.get("checked", []):
        result = evaluate_rule(rules[name], record.get("inputs", {}), policy)
        clauses = [" and ".join(_condition_text(c) for c in clause) for clause in result.clauses]
        why = " or ".join(f"({c})" if len(clauses) > 1 else c for c in clauses) or "always"
        lines.append(f"{name} {'held' if result.holds else 'did not hold'}: {why}")
    return lines


def _condition_text(result: ConditionResult) -> str:
    condition = result.condition
    named = f" ({condition.policy_field})" if condition.policy_field else ""
    if condition.op == "nonempty":
        text = f"{condition.input} {_show(result.value)} not empty"
    else:
        text = f"{condition.input} {_show(result.value)} {condition.op} {_show(result.threshold)}{named}"
    return text if result.holds else f"{text} [no]"


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple, set, frozenset)):
        return "[" + ", ".join(sorted(map(str, value))) + "]"
    return "not recorded" if value is None else str(value)
