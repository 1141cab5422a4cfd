"""Clinical data encrypted at rest: AES-256-GCM under a data key (persistence/_keys.py).

Encrypted are the columns that hold clinical values: an audit entry's `payload` (findings,
factors, pain...) and `decision` (the inputs the rules read), and a snapshot's `context`. Ids,
pathway, version, states (configurations, transitions) and times stay in clear, so a database
without the data key shows who is on which pathway in which state since when, nothing clinical.

Each value is stored as a JSON envelope {"$enc": "A256GCM", "kid": ID, "ct": base64(nonce +
ciphertext)}, with the row it belongs to (table, patient, pathway, seq, column) as associated
data, so a ciphertext moved to another row does not decrypt. The hash chain is computed over the
envelope as stored: verifying the chain and anchors needs no data key.

`cryptography` is an optional dependency (the `crypto` extra); it is imported only when a data
key is configured.
"""

from __future__ import annotations

import base64
import os
from dataclasses import replace
from typing import Any

import orjson

from carepath.errors import Category

from ._errors import PersistenceError
from ._keys import DATA_KEY_ENV, DATA_KEY_FILE_ENV, KeyConfigError, KeyRing
from ._records import AuditEntry, Snapshot

__all__ = ["ENVELOPE", "DataCipher", "EncryptedData", "is_sealed"]

ENVELOPE = "$enc"
ALGORITHM = "A256GCM"
NONCE_BYTES = 12


class EncryptedData(PersistenceError):
    """Raised when encrypted data is needed in clear and no configured data key opens it."""

    code = "encrypted_data"
    category = Category.INTERNAL

    def __init__(self, what: str, key_id: object = None) -> None:
        self.key_id = key_id
        under = f" under data key {key_id!r}" if key_id is not None else ""
        super().__init__(
            f"{what} is encrypted{under} and no configured data key opens it "
            f"(set {DATA_KEY_ENV} or {DATA_KEY_FILE_ENV})"
        )


def is_sealed(value: Any) -> bool:
    """Whether a stored JSON value is an encrypted envelope."""
    return type(value) is dict and ENVELOPE in value


def _entry_aad(patient_id: str, pathway: str, seq: int, column: str) -> bytes:
    return f"carepath audit\x1f{patient_id}\x1f{pathway}\x1f{seq}\x1f{column}".encode()


def _snapshot_aad(patient_id: str, pathway: str) -> bytes:
    return f"carepath snapshot\x1f{patient_id}\x1f{pathway}\x1fcontext".encode()


class DataCipher:
    """Encrypts under the newest data key, decrypts under any configured one."""

    def __init__(self, ring: KeyRing) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError:
            raise KeyConfigError(
                f"a data key is configured ({ring.source}) but the `cryptography` package is missing: "
                "install carepath[crypto]"
            ) from None
        self.current = ring.current
        self._aead = {key_id: AESGCM(secret) for key_id, secret in ring.keys}

    # -- values -----------------------------------------------------------------------------

    def seal(self, value: Any, aad: bytes) -> dict[str, str]:
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = self._aead[self.current].encrypt(nonce, orjson.dumps(value), aad)
        return {ENVELOPE: ALGORITHM, "kid": self.current, "ct": base64.b64encode(nonce + ciphertext).decode()}

    def open(self, envelope: dict[str, Any], aad: bytes) -> Any:
        """The clear value of an envelope (raises EncryptedData when no key opens it)."""
        from cryptography.exceptions import InvalidTag

        key_id = envelope.get("kid")
        aead = self._aead.get(key_id) if isinstance(key_id, str) else None
        if aead is None or envelope.get(ENVELOPE) != ALGORITHM:
            raise EncryptedData("a stored value", key_id)
        try:
            raw = base64.b64decode(str(envelope.get("ct", "")), validate=True)
            return orjson.loads(aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad))
        except (InvalidTag, ValueError, orjson.JSONDecodeError):
            raise EncryptedData("a stored value (altered or moved ciphertext)", key_id) from None

    # -- rows -------------------------------------------------------------------------------

    def seal_entry(self, row: dict[str, Any]) -> dict[str, Any]:
        """The stored form of a new audit row: payload and decision encrypted."""
        pid, pathway, seq = row["patient_id"], row["pathway"], row["seq"]
        stored = dict(row)
        stored["payload"] = self.seal(row["payload"], _entry_aad(pid, pathway, seq, "payload"))
        if row["decision"] is not None:
            stored["decision"] = self.seal(row["decision"], _entry_aad(pid, pathway, seq, "decision"))
        return stored

    def open_entry(self, entry: AuditEntry) -> AuditEntry:
        """The entry with payload and decision in clear; left as stored when no key opens it."""
        pid, pathway, seq = entry.patient_id, entry.pathway, entry.seq
        try:
            payload = self.open(entry.payload, _entry_aad(pid, pathway, seq, "payload"))
            decision = entry.decision
            if is_sealed(decision):
                assert decision is not None
                decision = self.open(decision, _entry_aad(pid, pathway, seq, "decision"))
        except EncryptedData:
            return entry
        sealed = {"payload": entry.payload, "decision": entry.decision}
        return replace(entry, payload=payload, decision=decision, sealed=sealed)

    def seal_context(self, snapshot: Snapshot) -> dict[str, Any]:
        return self.seal(snapshot.context, _snapshot_aad(snapshot.patient_id, snapshot.pathway))

    def open_snapshot(self, snapshot: Snapshot) -> Snapshot:
        """The snapshot with its context in clear; left as stored when no key opens it."""
        try:
            context = self.open(snapshot.context, _snapshot_aad(snapshot.patient_id, snapshot.pathway))
        except EncryptedData:
            return snapshot
        return replace(snapshot, context=context)
