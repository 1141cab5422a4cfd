"""Persistence adapter: snapshots and the hash-chained audit log on SQLite or PostgreSQL.

Knows configurations as lists of state ids and payloads as JSON; knows no statechart.
"""

from typing import TYPE_CHECKING, Any

from .chain import GENESIS, canonical_json, entry_hash
from .errors import (
    ConcurrentUpdate,
    DuplicateEnrolment,
    DuplicatePatient,
    IdempotencyConflict,
    NoDatabase,
    PersistenceError,
    StorageUnavailable,
    UnknownPatient,
)
from .keys import (
    AUDIT_KEY_ENV,
    AUDIT_KEY_FILE_ENV,
    DATA_KEY_ENV,
    DATA_KEY_FILE_ENV,
    AuditKeys,
    KeyConfigError,
    KeyRing,
    add_key,
)
from .records import AuditEntry, EnrolmentKey, IdRange, NewEntry, Snapshot, SnapshotUpdate
from .urls import DEFAULT_URL, is_private_memory, normalise_url

if TYPE_CHECKING:
    from .anchors import AnchorError
    from .crypto import EncryptedData
    from .outbox import OutboxMessage, count_outbox_pending, mark_outbox_delivered, pending_outbox, read_outbox
    from .store import Store, Transaction

# Loaded on first use, by the module defining each name.
_LAZY = {"Store": "store", "Transaction": "store", "AnchorError": "anchors", "EncryptedData": "crypto"}
# The outbox of transitions for webhooks and polling (persistence/outbox.py).
_LAZY.update(
    dict.fromkeys(
        ("OutboxMessage", "count_outbox_pending", "mark_outbox_delivered", "pending_outbox", "read_outbox"), "outbox"
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
    "read_outbox",
    "entry_hash",
    "is_private_memory",
    "normalise_url",
]
