"""Snapshots kept between the read-first commands of one SQLite store, so an enrolment that did not
change is neither read nor decoded again.

Exact, not time-based: SQLite's `PRAGMA data_version` changes when another connection (of this
process or another) commits, and a connection's `total_changes` counts its own writes on any path.
Each driver connection remembers both as of the last time it checked the cache; when either moved,
the whole cache is dropped before the connection reads from it.

Threads share the cache, so entries carry no per-connection state and a put is refused when it
may be older than what is cached or known: every clear and every commit moves an epoch, and a
snapshot read under an earlier epoch is not kept (the next command reads it again). A command's
own commit replaces the enrolments it wrote, or, when the epoch moved meanwhile, drops them.
Writes stay revision-checked, so a snapshot that went stale inside one command's window costs a
ConcurrentUpdate and a retry, never a lost update.

Entries hold the snapshot's JSON columns as JSON text, as the table does: every hit decodes its
own configuration and context, so no caller ever shares (or mutates) a cached value.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, MutableMapping
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import orjson

from ._columns import PATIENTS
from ._records import Snapshot
from ._rows import RowCodec

__all__ = ["CacheView", "SnapshotCache"]

# The snapshot's JSON columns (kept as one JSON text) and time columns (normalised as the table stores them).
_JSON_FIELDS = tuple(f.name for f in PATIENTS.fields if f.kind == "json")
_TIME_FIELDS = tuple(f.name for f in PATIENTS.fields if f.kind == "time")
assert _JSON_FIELDS == ("configuration", "context"), "persistence/_cache.py names the JSON columns"
_times = itemgetter(*_TIME_FIELDS)
# Where a driver connection's record keeps (data_version, total_changes) as of its last check.
_SEEN = "carepath_cache_seen"

# A snapshot as kept: its fields (the JSON ones None), and its configuration and context as JSON text.
_Entry = tuple[dict[str, Any], bytes]


class _Patient:
    """The cached enrolments of one patient; `complete`: they are all of them (a missing one is not enrolled)."""

    __slots__ = ("complete", "enrolments")

    def __init__(self, complete: bool) -> None:
        self.complete = complete
        self.enrolments: dict[str, _Entry] = {}


class SnapshotCache:
    """Up to `capacity` patients' snapshots; the patient least recently read from the database or
    written is dropped first. Lookups take no lock (each is one atomic dict operation)."""

    def __init__(self, codec: RowCodec, capacity: int = 2048) -> None:
        self._codec = codec
        self.capacity = capacity
        self._patients: OrderedDict[str, _Patient] = OrderedDict()
        self._lock = threading.Lock()
        self._epoch = 0

    def __len__(self) -> int:
        """The number of enrolments held."""
        with self._lock:
            return sum(len(patient.enrolments) for patient in self._patients.values())

    def view(self, info: MutableMapping[str, Any], versions: Callable[[], tuple[int, int]]) -> CacheView:
        """The cache for one command on the connection whose record is `info`; `versions` reads the
        connection's (PRAGMA data_version, total_changes), once, before the command's first lookup."""
        return CacheView(self, info, versions)

    def _validate(self, info: MutableMapping[str, Any], data_version: int, total_changes: int) -> int:
        """Empty the cache when another connection committed, or this one wrote, since this connection
        last checked; the epoch the checking command reads and puts under."""
        seen = (data_version, total_changes)
        if info.get(_SEEN) != seen:
            with self._lock:
                self._clear()
                info[_SEEN] = seen
        # Read after the clear: a thread clearing later only makes this command's puts refused.
        return self._epoch

    def clear(self) -> None:
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        self._patients.clear()
        self._epoch += 1

    # -- used through CacheView -------------------------------------------------------------

    def _patient(self, patient_id: str) -> _Patient | None:
        # One atomic lookup, no lock: puts and commits (which move a patient to the end) keep the order.
        return self._patients.get(patient_id)

    def _remember(self, epoch: int, patient_id: str, snapshots: Iterable[Snapshot], complete: bool) -> None:
        entries = [(snap.pathway, _freeze(snap)) for snap in snapshots]  # read: stored values already
        with self._lock:
            if epoch != self._epoch:
                return  # read before a clear or a commit: perhaps older than what they left
            patient = self._patients.get(patient_id)
            if patient is None or complete:
                patient = self._patients[patient_id] = _Patient(complete)
            patient.enrolments.update(entries)
            self._patients.move_to_end(patient_id)
            if len(self._patients) > self.capacity:
                self._patients.popitem(last=False)

    def _committed(
        self, epoch: int, snapshots: Iterable[Snapshot], info: MutableMapping[str, Any], seen: tuple[int, int] | None
    ) -> None:
        entries = [(snap.patient_id, snap.pathway, _freeze(snap, self._codec)) for snap in snapshots]
        with self._lock:
            current = epoch == self._epoch
            self._epoch += 1  # snapshots read before this commit are not kept
            for patient_id, pathway, entry in entries:
                patient = self._patients.get(patient_id)
                if current:
                    if patient is None:
                        patient = self._patients[patient_id] = _Patient(complete=False)
                    patient.enrolments[pathway] = entry
                    self._patients.move_to_end(patient_id)
                elif patient is not None:
                    # Cleared or written meanwhile: what is cached may predate this commit.
                    del self._patients[patient_id]
            if seen is not None:
                info[_SEEN] = seen
            while len(self._patients) > self.capacity:
                self._patients.popitem(last=False)


def _freeze(snap: Snapshot, codec: RowCodec | None = None) -> _Entry:
    """The snapshot as a table round trip would give it back (with `codec`, its times are normalised
    as stored: UTC), with its JSON columns as JSON text."""
    fields = snap.__dict__.copy()
    text = orjson.dumps((fields["configuration"], fields["context"]))
    fields["configuration"] = fields["context"] = None
    if codec is not None:
        for value in _times(fields):
            # A time reads back from the table as it is when it is a plain datetime in UTC.
            if value is not None and (value.__class__ is not datetime or value.tzinfo is not UTC):
                _normalise_times(fields, codec)
                break
    return fields, text


def _normalise_times(fields: dict[str, Any], codec: RowCodec) -> None:
    for name in _TIME_FIELDS:
        if fields[name] is not None:
            fields[name] = codec.time_in(codec.time(fields[name]))


def _thaw(entry: _Entry) -> Snapshot:
    """A new snapshot of the entry, with JSON values of its own (filled as `quick_init` fills records)."""
    fields, text = entry
    snap: Snapshot = object.__new__(Snapshot)
    values = snap.__dict__
    values.update(fields)
    values["configuration"], values["context"] = orjson.loads(text)
    return snap


class CacheView:
    """The cache as one command sees it. It is validated on the command's first lookup, so a command
    that looks nothing up (an enrolment, which reads the database) runs no PRAGMA."""

    __slots__ = ("_cache", "_data_version", "_epoch", "_info", "_start_changes", "_versions")

    def __init__(
        self, cache: SnapshotCache, info: MutableMapping[str, Any], versions: Callable[[], tuple[int, int]]
    ) -> None:
        self._cache = cache
        self._info = info
        self._versions = versions
        self._epoch = cache._epoch  # puts of database reads made before the first lookup go under it
        self._data_version: int | None = None
        self._start_changes: int | None = None

    def _validated(self) -> None:
        if self._data_version is None:
            data_version, total_changes = self._versions()
            self._epoch = self._cache._validate(self._info, data_version, total_changes)
            self._data_version = data_version

    def enrolments(self, patient_id: str) -> list[Snapshot] | None:
        """Every enrolment of the patient, when all are known (possibly none), else None."""
        self._validated()
        patient = self._cache._patient(patient_id)
        if patient is None or not patient.complete:
            return None
        return [_thaw(entry) for entry in list(patient.enrolments.values())]  # one atomic copy

    def enrolment(self, patient_id: str, pathway: str) -> tuple[bool, Snapshot | None]:
        """(known, snapshot): whether the cache knows the enrolment, and it (None: not enrolled)."""
        self._validated()
        patient = self._cache._patient(patient_id)
        if patient is None:
            return False, None
        entry = patient.enrolments.get(pathway)
        if entry is None:
            return patient.complete, None
        return True, _thaw(entry)

    def remember(self, patient_id: str, snapshots: Iterable[Snapshot], *, complete: bool) -> None:
        """Keep snapshots just read: one enrolment, or (complete) every enrolment of the patient."""
        self._cache._remember(self._epoch, patient_id, snapshots, complete)

    def writing(self, total_changes: int) -> None:
        """The connection's total_changes as its write transaction starts (before this command's writes)."""
        self._start_changes = total_changes

    def committed(self, snapshots: Iterable[Snapshot], total_changes: int) -> None:
        """Keep the snapshots this command has just committed; `total_changes` counts its writes.

        The connection's check is moved past this command's writes: to the data_version read by
        its validation, or, for a command that looked nothing up, kept at the one last checked,
        so another connection's commit since is still seen (and unless this connection wrote on
        another path since that check, in which case the next check empties the cache)."""
        if self._data_version is not None:
            seen: tuple[int, int] | None = (self._data_version, total_changes)
        else:
            last = self._info.get(_SEEN)
            seen = (last[0], total_changes) if last is not None and last[1] == self._start_changes else None
        self._cache._committed(self._epoch, snapshots, self._info, seen)
