"""Persistence adapter: snapshots and the hash-chained audit log on SQLite or PostgreSQL.

Knows configurations as lists of state ids and payloads as JSON; knows no statechart.
"""

from .chain import GENESIS, canonical_json, entry_hash
from .errors import (
    ConcurrentUpdate,
    DuplicatePatient,
    IdempotencyConflict,
    PersistenceError,
    StorageUnavailable,
    UnknownPatient,
)
from .records import AuditEntry, NewEntry, Snapshot, SnapshotUpdate
from .store import DEFAULT_URL, Store, Transaction, normalise_url

__all__ = [
    "DEFAULT_URL",
    "GENESIS",
    "AuditEntry",
    "ConcurrentUpdate",
    "DuplicatePatient",
    "IdempotencyConflict",
    "NewEntry",
    "PersistenceError",
    "Snapshot",
    "SnapshotUpdate",
    "StorageUnavailable",
    "Store",
    "Transaction",
    "UnknownPatient",
    "canonical_json",
    "entry_hash",
    "normalise_url",
]
