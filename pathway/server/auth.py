"""Bearer tokens: each names a principal and its roles; only the token's SHA-256 is kept at rest.

The token file is JSON: {"tokens": [{"principal": "dr-jones", "roles": ["clinician"],
"sha256": "<hex digest of the token>"}]}. `carepath token add` appends one and prints the
token once. CAREPATH_TOKENS may hold the same document instead of a file.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import InvalidCommand

__all__ = [
    "ROLES",
    "Principal",
    "TokenStore",
    "add_token",
    "hash_token",
    "load_tokens",
]

# What each role may do; `admin` may do everything.
ROLES = ("clinician", "scheduler", "auditor", "admin")
TOKENS_ENV = "CAREPATH_TOKENS"
MAX_PRINCIPAL = 200


@dataclass(frozen=True)
class Principal:
    """Who a request speaks for, and the roles its token grants."""

    name: str
    roles: frozenset[str]

    def may(self, *roles: str) -> bool:
        """Whether any of `roles` (or admin) is granted."""
        return "admin" in self.roles or any(role in self.roles for role in roles)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """Token digests -> principals; looked up in constant time per entry."""

    def __init__(self, entries: list[tuple[str, Principal]]) -> None:
        self._entries = list(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def principal(self, token: str) -> Principal | None:
        digest = hash_token(token)
        found = None
        for known, principal in self._entries:
            if hmac.compare_digest(known, digest):
                found = principal
        return found


def load_tokens(path: Path | None = None) -> TokenStore:
    """The tokens of `path`, else of $CAREPATH_TOKENS (a JSON document); none when neither is set."""
    if path is not None:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise InvalidCommand(f"--tokens: cannot read {str(path)!r}: {err.strerror}") from None
        except json.JSONDecodeError as err:
            raise InvalidCommand(f"--tokens: not valid JSON ({err.msg} at line {err.lineno})") from None
        return TokenStore(_entries(document, f"--tokens {path}"))
    text = os.environ.get(TOKENS_ENV)
    if not text:
        return TokenStore([])
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidCommand(f"${TOKENS_ENV}: not valid JSON ({err.msg})") from None
    return TokenStore(_entries(document, f"${TOKENS_ENV}"))


def _entries(document: Any, where: str) -> list[tuple[str, Principal]]:
    if not isinstance(document, dict) or not isinstance(document.get("tokens"), list):
        raise InvalidCommand(f'{where}: expected {{"tokens": [...]}}')
    entries = []
    for n, item in enumerate(document["tokens"], 1):
        if not isinstance(item, dict):
            raise InvalidCommand(f"{where}: token {n} is not an object")
        digest, name, roles = item.get("sha256"), item.get("principal"), item.get("roles")
        if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise InvalidCommand(f"{where}: token {n}: sha256 must be 64 lower-case hex digits")
        _check_principal(name, f"{where}: token {n}")
        if not isinstance(roles, list) or not roles or any(role not in ROLES for role in roles):
            raise InvalidCommand(f"{where}: token {n}: roles must be a non-empty list of {', '.join(ROLES)}")
        entries.append((digest, Principal(str(name), frozenset(roles))))
    return entries


def _check_principal(name: object, where: str) -> None:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_PRINCIPAL or not name.isprintable():
        raise InvalidCommand(f"{where}: principal must be a printable name of at most {MAX_PRINCIPAL} characters")


def add_token(path: Path, principal: str, roles: list[str]) -> str:
    """Create a token for `principal` with `roles`, store its digest in `path` (created 0600), return it."""
    _check_principal(principal, "principal")
    unknown = [role for role in roles if role not in ROLES]
    if not roles or unknown:
        raise InvalidCommand(f"--role must be one of {', '.join(ROLES)} (got {', '.join(unknown) or 'none'})")
    document: dict[str, Any] = {"tokens": []}
    if path.exists():
        document = json.loads(path.read_text(encoding="utf-8"))
        _entries(document, str(path))
    token = "cp_" + secrets.token_urlsafe(32)
    document["tokens"].append({"principal": principal, "roles": sorted(set(roles)), "sha256": hash_token(token)})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(document, indent=2) + "\n")
    return token
