"""Keys of a clinic: audit keys (HMAC of the hash chain, anchors) and data keys (payloads at rest).

Both kinds are configured the same way, from the environment:

- `CAREPATH_AUDIT_KEY` / `CAREPATH_DATA_KEY`: one key, `[ID:]HEX` (64 hex digits, 32 random
  bytes); without an id the key is named by a fingerprint of itself;
- `CAREPATH_AUDIT_KEY_FILE` / `CAREPATH_DATA_KEY_FILE`: a file of `ID HEX` lines (blank lines and
  `#` comments ignored). Every key verifies or decrypts what was written under its id; the
  last line is the newest and is the one new entries are written under. `carepath rotate-key`
  appends a fresh line (creating the file, mode 0600, when it is missing).

The variable naming one key wins over the file when both are set.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from carepath.errors import Category

from ._errors import PersistenceError

__all__ = [
    "AUDIT_KEY_ENV",
    "AUDIT_KEY_FILE_ENV",
    "DATA_KEY_ENV",
    "DATA_KEY_FILE_ENV",
    "AuditKeys",
    "KeyConfigError",
    "KeyRing",
    "add_key",
    "load_audit_keys",
    "load_data_keys",
    "load_keys",
    "new_secret",
]

AUDIT_KEY_ENV = "CAREPATH_AUDIT_KEY"
AUDIT_KEY_FILE_ENV = "CAREPATH_AUDIT_KEY_FILE"
DATA_KEY_ENV = "CAREPATH_DATA_KEY"
DATA_KEY_FILE_ENV = "CAREPATH_DATA_KEY_FILE"

KEY_BYTES = 32
_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


class KeyConfigError(PersistenceError):
    """Raised when a configured key or key file cannot be used (the message says which and why)."""

    code = "invalid_key_config"
    category = Category.INTERNAL


@dataclass(frozen=True)
class KeyRing:
    """Keys by id, in the order configured; the last one writes."""

    keys: tuple[tuple[str, bytes], ...]
    source: str

    @property
    def current(self) -> str:
        return self.keys[-1][0]

    @property
    def ids(self) -> list[str]:
        return [key_id for key_id, _ in self.keys]

    def secret(self, key_id: str) -> bytes | None:
        for known, secret in self.keys:
            if known == key_id:
                return secret
        return None


class AuditKeys:
    """HMAC-SHA256 under the configured audit keys; one keyed object per key, copied per entry."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self.current = ring.current
        # hmac.new pads and hashes the key once; `copy` reuses that work for every entry.
        self._macs = {key_id: hmac.new(secret, digestmod=hashlib.sha256) for key_id, secret in ring.keys}

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._macs

    @property
    def ids(self) -> list[str]:
        return self.ring.ids

    def sign(self, key_id: str, material: bytes) -> str:
        mac = self._macs[key_id].copy()
        mac.update(material)
        return mac.hexdigest()


def new_secret() -> str:
    """A fresh key as 64 hex digits (32 bytes from the operating system's CSPRNG)."""
    import secrets  # only here: one-row commands import this module and start fast

    return secrets.token_hex(KEY_BYTES)


def fingerprint(secret: bytes) -> str:
    """The id of a key given without one: a short, one-way name of the key itself."""
    return "fp-" + hashlib.sha256(b"carepath key id\x00" + secret).hexdigest()[:12]


def _secret(text: str, where: str) -> bytes:
    if not _HEX.match(text):
        raise KeyConfigError(f"{where}: a key is 64 hex digits (32 bytes), e.g. from `carepath rotate-key`")
    return bytes.fromhex(text)


def _parse_one(value: str, variable: str) -> KeyRing:
    value = value.strip()
    key_id, _, text = value.rpartition(":")
    secret = _secret(text, variable)
    if not key_id:
        key_id = fingerprint(secret)
    elif not _ID.match(key_id):
        raise KeyConfigError(f"{variable}: key id {key_id!r} must be letters, digits, '.', '_' or '-'")
    return KeyRing(((key_id, secret),), variable)


def _parse_file(path: Path, variable: str) -> KeyRing:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise KeyConfigError(f"{variable}: cannot read key file {str(path)!r}: {err.strerror}") from None
    keys: list[tuple[str, bytes]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{path}:{number}"
        parts = line.split()
        if len(parts) != 2 or not _ID.match(parts[0]):
            raise KeyConfigError(f"{where}: expected 'ID HEX' (a key id, a space, 64 hex digits)")
        if any(known == parts[0] for known, _ in keys):
            raise KeyConfigError(f"{where}: key id {parts[0]!r} appears twice")
        keys.append((parts[0], _secret(parts[1], where)))
    if not keys:
        raise KeyConfigError(f"{variable}: key file {str(path)!r} holds no key")
    return KeyRing(tuple(keys), str(path))


def load_keys(one: str, file: str, environ: Mapping[str, str] | None = None) -> KeyRing | None:
    """The keys configured by the variable `one` or the file named by `file` (None: none)."""
    env = os.environ if environ is None else environ
    value = env.get(one, "").strip()
    if value:
        return _parse_one(value, one)
    path = env.get(file, "").strip()
    if path:
        return _parse_file(Path(path), file)
    return None


def load_audit_keys(environ: Mapping[str, str] | None = None) -> AuditKeys | None:
    ring = load_keys(AUDIT_KEY_ENV, AUDIT_KEY_FILE_ENV, environ)
    return AuditKeys(ring) if ring is not None else None


def load_data_keys(environ: Mapping[str, str] | None = None) -> KeyRing | None:
    return load_keys(DATA_KEY_ENV, DATA_KEY_FILE_ENV, environ)


def add_key(path: Path, key_id: str | None = None) -> str:
    """Append a fresh key to a key file (created 0600 when missing); returns its id.

    The id defaults to k1, k2, ... after the ids already in the file.
    """
    existing: Sequence[str] = []
    newline = ""
    if path.exists():
        text = path.read_text(encoding="utf-8")
        if text.strip():
            existing = _parse_file(path, str(path)).ids
        newline = "\n" if text and not text.endswith("\n") else ""
    if key_id is None:
        numbers = [int(m.group(1)) for m in (re.match(r"^k(\d+)$", known) for known in existing) if m]
        key_id = f"k{max(numbers, default=0) + 1}"
    if not _ID.match(key_id):
        raise KeyConfigError(f"key id {key_id!r} must be letters, digits, '.', '_' or '-'")
    if key_id in existing:
        raise KeyConfigError(f"key id {key_id!r} is already in {str(path)!r}")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8", closefd=False) as out:
            out.write(f"{newline}{key_id} {new_secret()}\n")
            out.flush()
            os.fsync(out.fileno())
    finally:
        os.close(fd)
    return key_id
