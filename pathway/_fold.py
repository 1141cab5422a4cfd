"""The time model: an enrolment's state is a fold of its audit entries in clinical-time order.

Two times: `at`, the clinical time (when it happened to the patient), and `recorded_at`, the
record time (when carepath learnt it). The log is append-only in record order; the state is what
the entries say once put in clinical order:

- Clinical events (everything but ticks, migrations and corrections) are folded in clinical-time
  order, ties by seq. The fold starts at the enrolment and restarts its ordering at each
  migration (a migration is a barrier: nothing clinical may be dated before the last one).
- Ticks are the scheduler's observations, not clinical facts: they are re-derived in the fold at
  their own time, and a tick that changes nothing there (or is not allowed there) is left out.
  A clinical event dated before recorded ticks *supersedes* them.
- A correction (`correct`) marks an earlier entry as entered in error: the fold leaves it out,
  or uses the corrected payload the correction carries. Nothing is deleted or edited.
- A recorded clinical event the folded state no longer allows is *skipped* (kept in the log,
  listed in the entry that caused it).

When every entry is in order (the usual case) the fold is the sequential application the engine
does without reading the history, so its result equals the stored snapshot; the engine folds
only for an event dated before the enrolment's last event, and for corrections.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from persistence import AuditEntry, Snapshot
from persistence._crypto import EncryptedData, is_sealed
from states import MIGRATE_EVENT, EventNotAllowed, Pathway, Step, get_pathway
from states._payloads import Payload
from states._upcast import upcast

from ._engine import PAYLOAD_SCHEMA

__all__ = [
    "CORRECT_EVENT",
    "NON_CLINICAL",
    "TICK_EVENT",
    "Folded",
    "Rederived",
    "fold",
    "folded_snapshot",
    "is_clinical",
    "rederive",
    "stored_payload",
]

TICK_EVENT = "tick"
# The audit event of a correction: payload {"seq": N, "reason": text, "data": corrected payload or null}.
CORRECT_EVENT = "correct"
NON_CLINICAL = frozenset({TICK_EVENT, MIGRATE_EVENT, CORRECT_EVENT})


def is_clinical(event: str) -> bool:
    """Whether an event is a clinical fact (ticks, migrations and corrections are not)."""
    return event not in NON_CLINICAL


def stored_payload(definition: Pathway, entry: AuditEntry, data: Any = None, schema: int | None = None) -> Payload:
    """The entry's payload (or `data` stored under `schema`, a corrected one) upcast to the
    current schema and validated by the current code.

    Raises EncryptedData when the payload is encrypted and no configured data key opens it.
    """
    raw = entry.payload if data is None else data
    if is_sealed(raw):
        raise EncryptedData(f"the payload of {entry.patient_id!r} on {entry.pathway!r} seq {entry.seq}")
    version = entry.payload_schema if schema is None else schema
    # A payload of the current schema is read as it is (what `upcast` returns for it).
    upcasted = raw if version == PAYLOAD_SCHEMA else upcast(definition.name, entry.event, raw, version, PAYLOAD_SCHEMA)
    if entry.event == "enroll":
        return definition.validate_enrollment(dict(upcasted))
    return definition.validate(entry.event, dict(upcasted))


@dataclass(frozen=True)
class _Item:
    """One entry as the fold sees it: its payload possibly replaced by a correction."""

    entry: AuditEntry
    data: Any = None
    schema: int | None = None

    @property
    def seq(self) -> int:
        return self.entry.seq

    @property
    def event(self) -> str:
        return self.entry.event

    @property
    def at(self) -> datetime:
        return self.entry.at


def corrections(entries: Sequence[AuditEntry]) -> dict[int, AuditEntry]:
    """The correction in force for each corrected seq (the latest one wins)."""
    found: dict[int, AuditEntry] = {}
    for entry in entries:
        if entry.event == CORRECT_EVENT:
            if is_sealed(entry.payload):
                raise EncryptedData(f"the payload of {entry.patient_id!r} on {entry.pathway!r} seq {entry.seq}")
            found[int(entry.payload["seq"])] = entry
    return found


def _effective(entries: Sequence[AuditEntry]) -> list[_Item]:
    fixes = corrections(entries)
    items = []
    for entry in entries:
        if entry.event == CORRECT_EVENT:
            continue
        fix = fixes.get(entry.seq)
        if fix is None:
            items.append(_Item(entry))
        elif fix.payload.get("data") is not None:
            items.append(_Item(entry, fix.payload["data"], fix.payload_schema))
    return items


@dataclass
class Folded:
    """An enrolment's state as the fold of its entries (see the module docstring)."""

    definition: Pathway
    configuration: tuple[str, ...]
    context: dict[str, Any]
    state: str
    state_since: datetime
    last_event_at: datetime
    last_clinical_at: datetime
    # The enrolment's time, or its last migration's: nothing clinical may be dated before it.
    barrier: datetime
    # Steps taken in the fold, by seq (clinical events and the ticks that still change something).
    steps: dict[int, Step] = field(default_factory=dict)
    # Clinical entries the folded state did not allow, with the configuration that refused them.
    skipped: dict[int, tuple[str, ...]] = field(default_factory=dict)
    events: dict[int, AuditEntry] = field(default_factory=dict)

    def rule(self, seq: int) -> str | None:
        step = self.steps.get(seq)
        if step is None or step.decision is None or step.decision.rule is None:
            return None
        return step.decision.rule.name

    def _advance(self, configuration: tuple[str, ...], context: dict[str, Any], at: datetime) -> None:
        self.configuration, self.context = configuration, context
        state = self.definition.state_name(configuration)
        if state != self.state:
            self.state, self.state_since = state, at


def fold(entries: Sequence[AuditEntry], until: datetime | None = None) -> Folded:
    """The state an enrolment's entries (in seq order, the enrolment first) give, as of clinical
    time `until` when given. Raises StatesError (e.g. InvalidInput) and UnknownDefinition."""
    items = _effective(entries)
    first = items[0]
    if first.event != "enroll":
        raise ValueError(f"seq {first.seq} is {first.event!r}, not an enrolment")
    definition = get_pathway(first.entry.pathway, first.entry.version)
    enrollment = stored_payload(definition, first.entry, first.data, first.schema)
    configuration, context = definition.start(enrollment, first.at)
    configuration = tuple(configuration)
    folded = Folded(
        definition, configuration, context, definition.state_name(configuration), first.at, first.at, first.at, first.at
    )
    folded.events[first.seq] = first.entry
    segment: list[_Item] = []
    for item in items[1:]:
        if until is not None and item.at > until:
            continue
        folded.last_event_at = max(folded.last_event_at, item.at)
        if item.event == MIGRATE_EVENT:
            _run(folded, segment)
            segment = []
            target = get_pathway(item.entry.pathway, item.entry.version)
            configuration, context = target.migrate(
                folded.definition.version, folded.configuration, folded.context, item.at
            )
            folded.definition = target
            folded._advance(tuple(configuration), context, item.at)
            folded.barrier = item.at
            continue
        if is_clinical(item.event):
            folded.last_clinical_at = max(folded.last_clinical_at, item.at)
        segment.append(item)
    _run(folded, segment)
    return folded


def _run(folded: Folded, segment: list[_Item]) -> None:
    definition = folded.definition
    for item in sorted(segment, key=lambda i: (i.at, i.seq)):
        payload = stored_payload(definition, item.entry, item.data, item.schema)
        try:
            step = definition.apply(folded.configuration, folded.context, item.event, payload, item.at)
        except EventNotAllowed:
            if is_clinical(item.event):
                folded.skipped[item.seq] = folded.configuration
            continue
        if not step.changed:
            continue
        folded.steps[item.seq] = step
        folded.events[item.seq] = item.entry
        folded._advance(step.configuration_after, step.context, item.at)


def folded_snapshot(folded: Folded, entries: Sequence[AuditEntry]) -> Snapshot:
    """The snapshot of a fold over `entries` (their seqs, hashes and record times)."""
    first, last = entries[0], entries[-1]
    return Snapshot(
        patient_id=first.patient_id,
        pathway=folded.definition.name,
        version=folded.definition.version,
        configuration=list(folded.configuration),
        context=folded.context,
        state=folded.state,
        state_since=folded.state_since,
        revision=len(entries),
        next_due_at=folded.definition.next_due_at(folded.configuration, folded.context),
        last_event_at=folded.last_event_at,
        last_seq=last.seq,
        last_hash=last.hash,
        created_at=first.recorded_at,
        updated_at=max(e.recorded_at for e in entries),
    )


@dataclass(frozen=True)
class Rederived:
    """What re-deriving an enrolment for one new entry (a late event, one dated before recorded
    ticks, or a correction) gives: the state before and after, and what it changed."""

    before: Folded
    after: Folded
    entry: AuditEntry
    late: bool
    supersedes: list[int]
    changes: list[dict[str, Any]]

    @property
    def step(self) -> Step | None:
        """The new entry's own step at its clinical place (None for a correction)."""
        return self.after.steps.get(self.entry.seq)

    @property
    def record(self) -> dict[str, Any]:
        """What the entry's decision record says about the re-derivation."""
        record: dict[str, Any] = {
            "late": self.late,
            "supersedes": self.supersedes,
            "state_before": self.before.state,
            "state_after": self.after.state,
            "changes": self.changes,
            "skipped": sorted(self.after.skipped),
        }
        if self.entry.event == CORRECT_EVENT:
            record["corrects"] = int(self.entry.payload["seq"])
        return record

    @property
    def decision(self) -> dict[str, Any]:
        """The decision record the new entry is stored with: its own rule values, if it took a step,
        and the re-derivation under `rederived`."""
        step = self.step
        own = step.decision_record() if step is not None else None
        return {**(own or {}), "rederived": self.record}

    @property
    def transitions(self) -> list[dict[str, Any]]:
        step = self.step
        return [dict(t) for t in step.transitions] if step is not None else []


def rederive(prior: Sequence[AuditEntry], entry: AuditEntry, before: Folded | None = None) -> Rederived:
    """Fold `prior` with and without `entry` (the next seq) and compare what was decided."""
    if before is None:
        before = fold(prior)
    after = fold([*prior, entry])
    late = is_clinical(entry.event) and entry.at < before.last_clinical_at
    supersedes = sorted(e.seq for e in prior if e.event == TICK_EVENT and e.at > entry.at)
    changes = []
    seqs = sorted(set(before.steps) | set(after.steps) | set(before.skipped) | set(after.skipped))
    for seq in seqs:
        if seq == entry.seq:
            continue
        event = _find(prior, seq).event
        if not is_clinical(event):
            continue
        was, now = _verdict(before, seq), _verdict(after, seq)
        if was != now:
            at = _find(prior, seq).at
            changes.append({"seq": seq, "event": event, "at": at.isoformat(), "before": was, "after": now})
    return Rederived(before, after, entry, late, supersedes, changes)


def _verdict(folded: Folded, seq: int) -> str | None:
    """What the fold decided for one clinical entry: its rule, "not applied", or None (not in the fold)."""
    if seq in folded.skipped:
        return "not applied"
    if seq in folded.steps:
        return folded.rule(seq) or "no rule"
    return None


def _find(entries: Sequence[AuditEntry], seq: int) -> AuditEntry:
    return next(e for e in entries if e.seq == seq)
