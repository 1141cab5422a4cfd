"""Persistence adapter: snapshots and the hash-chained audit log on SQLite or PostgreSQL.

Knows configurations as lists of state ids and payloads as JSON; knows no statechart.
"""

from typing import TYPE_CHECKING, Any

from ._chain import GENESIS, canonical_json, entry_hash
from ._errors import (
    ConcurrentUpdate,
    DuplicateEnrolment,
    DuplicatePatient,
    IdempotencyConflict,
    NoDatabase,
    PersistenceError,
    StorageUnavailable,
    UnknownPatient,
)
from ._keys import (
    AUDIT_KEY_ENV,
    AUDIT_KEY_FILE_ENV,
    DATA_KEY_ENV,
    DATA_KEY_FILE_ENV,
    AuditKeys,
    KeyConfigError,
    KeyRing,
    add_key,
)
from ._records import AuditEntry, EnrolmentKey, IdRange, NewEntry, Snapshot, SnapshotUpdate
from ._urls import DEFAULT_URL, is_private_memory, normalise_url

if TYPE_CHECKING:
    from ._anchors import AnchorError
    from ._crypto import EncryptedData
    from ._outbox import (
        OutboxMessage,
        count_outbox_pending,
        mark_outbox_delivered,
        pending_outbox,
        prune_outbox,
        read_outbox,
    )
    from ._store import Store, Transaction

# Loaded on first use, by the module defining each name.
_LAZY = {"Store": "_store", "Transaction": "_store", "AnchorError": "_anchors", "EncryptedData": "_crypto"}
# The outbox of transitions for webhooks and polling (persistence/_outbox.py).
_LAZY.update(
    dict.fromkeys(
        (
            "OutboxMessage",
            "count_outbox_pending",
            "mark_outbox_delivered",
            "pending_outbox",
            "prune_outbox",
            "read_outbox",
        ),
        "_outbox",
    )
)


def __getattr__(name: str) -> Any:
    # The store loads SQLAlchemy and SQLModel; importing it only when first used keeps
    # short commands (one snapshot read) fast to start.
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AUDIT_KEY_ENV",
    "AUDIT_KEY_FILE_ENV",
    "DATA_KEY_ENV",
    "DATA_KEY_FILE_ENV",
    "DEFAULT_URL",
    "GENESIS",
    "AnchorError",
    "AuditEntry",
    "AuditKeys",
    "IdRange",
    "ConcurrentUpdate",
    "DuplicateEnrolment",
    "DuplicatePatient",
    "EncryptedData",
    "EnrolmentKey",
    "IdempotencyConflict",
    "KeyRing",
    "KeyConfigError",
    "NewEntry",
    "NoDatabase",
    "OutboxMessage",
    "PersistenceError",
    "Snapshot",
    "SnapshotUpdate",
    "StorageUnavailable",
    "Store",
    "Transaction",
    "UnknownPatient",
    "add_key",
    "canonical_json",
    "count_outbox_pending",
    "mark_outbox_delivered",
    "pending_outbox",
    "prune_outbox",
    "read_outbox",
    "entry_hash",
    "is_private_memory",
    "normalise_url",
]
