"""Anchors: authenticated checkpoints of every enrolment's chain head, kept outside the database.

A keyed chain stops anyone without the audit key from editing or forging an entry, but it cannot
show that entries are missing: dropping a chain's newest entries (and rewinding its snapshot),
or a whole enrolment, leaves chains that verify. An anchor records, at one time, each
enrolment's head (seq and hash), their number and a Merkle root over them, authenticated with
an HMAC under the audit key. Checked later (`verify --anchor FILE`) it fails when

- an anchored entry changed (the entry at the anchored seq has another hash),
- a chain is shorter than its anchored head (truncated, or an entry deleted and the rest
  renumbered),
- an anchored enrolment is missing (deleted),
- an enrolment that began before the anchor is not in it (fabricated and backdated).

Entries and enrolments added after the anchor are covered by the next one. Anchors are worth as
much as the place they are kept: anywhere the database's writers cannot rewrite (object storage
with a retention lock, a ticketing system, an e-mail to the auditor). The Merkle root alone is
enough to publish; the heads let verify name which enrolment went wrong.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from carepath.errors import Category

from ._chain import canonical_json, iso_utc
from ._errors import PersistenceError
from ._keys import AUDIT_KEY_ENV, AUDIT_KEY_FILE_ENV, AuditKeys

if TYPE_CHECKING:
    from ._store import Store

__all__ = [
    "ANCHOR_FORMAT",
    "ANCHOR_GRACE",
    "AnchorError",
    "AnchorProblem",
    "check_anchor",
    "make_anchor",
    "merkle_root",
]

ANCHOR_FORMAT = "carepath-anchor/1"
# Enrolments whose first entry was recorded this long before the anchor must be in it; younger
# ones may belong to a transaction still in flight while the heads were read.
ANCHOR_GRACE = timedelta(minutes=5)

# Reasons `verify --anchor` reports.
ANCHOR_NOT_AUTHENTIC = "anchor not authentic"
ANCHORED_ENTRY_CHANGED = "anchored entry changed"
CHAIN_SHORTER = "chain shorter than anchored head"
ANCHORED_ENROLMENT_MISSING = "anchored enrolment missing"
NOT_IN_ANCHOR = "enrolment missing from anchor"

Head = tuple[str, str, int, str]  # patient_id, pathway, seq, hash


class AnchorError(PersistenceError):
    """Raised when an anchor cannot be written (no audit key) or read (not an anchor)."""

    code = "invalid_anchor"
    category = Category.INVALID_INPUT


@dataclass(frozen=True)
class AnchorProblem:
    patient_id: str
    pathway: str
    seq: int
    reason: str
    detail: str = ""


def _leaf(head: Head) -> bytes:
    return hashlib.sha256(b"\x00" + canonical_json(list(head)).encode()).digest()


def merkle_root(heads: Iterable[Head]) -> str:
    """The Merkle root (SHA-256, leaves and nodes domain-separated) over heads in the order given."""
    level = [_leaf(head) for head in heads]
    if not level:
        return hashlib.sha256(b"").hexdigest()
    while len(level) > 1:
        paired = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])  # an odd node moves up unchanged
        level = paired
    return level[0].hex()


def _mac(keys: AuditKeys, key_id: str, document: dict[str, Any]) -> str:
    body = {name: value for name, value in document.items() if name != "mac"}
    return keys.sign(key_id, canonical_json(body).encode())


def _require(keys: AuditKeys | None) -> AuditKeys:
    if keys is None:
        raise AnchorError(f"anchors are authenticated with the audit key: set {AUDIT_KEY_ENV} or {AUDIT_KEY_FILE_ENV}")
    return keys


def make_anchor(store: Store, at: datetime, keys: AuditKeys | None = None) -> dict[str, Any]:
    """An anchor document of every enrolment's chain head as read now, stamped `at`."""
    keys = _require(keys if keys is not None else store.sealer.keys)
    heads: list[Head] = []
    last: Head | None = None
    for patient_id, pathway, seq, digest, _first in store.iter_links():
        if last is not None and (last[0], last[1]) != (patient_id, pathway):
            heads.append(last)
        last = (patient_id, pathway, seq, digest)
    if last is not None:
        heads.append(last)
    document: dict[str, Any] = {
        "format": ANCHOR_FORMAT,
        "created_at": iso_utc(at),
        "complete_before": iso_utc(at - ANCHOR_GRACE),
        "enrolments": len(heads),
        "merkle_root": merkle_root(heads),
        "heads": [list(head) for head in heads],
        "key_id": keys.current,
    }
    document["mac"] = _mac(keys, keys.current, document)
    return document


def _heads(document: dict[str, Any]) -> list[Head]:
    try:
        return [(str(p), str(w), int(s), str(h)) for p, w, s, h in document["heads"]]
    except (KeyError, TypeError, ValueError):
        raise AnchorError("not a carepath anchor: 'heads' must list [patient_id, pathway, seq, hash]") from None


def check_anchor(store: Store, document: dict[str, Any], keys: AuditKeys | None = None) -> list[AnchorProblem]:
    """What the database lost or changed since the anchor was taken (empty: nothing)."""
    keys = _require(keys if keys is not None else store.sealer.keys)
    if not isinstance(document, dict) or document.get("format") != ANCHOR_FORMAT:
        raise AnchorError(f"not a carepath anchor (format {ANCHOR_FORMAT!r} expected)")
    key_id = document.get("key_id")
    if not isinstance(key_id, str) or key_id not in keys:
        detail = f"written under key {key_id!r}, not one of the configured keys {keys.ids}"
        return [AnchorProblem("", "", 0, ANCHOR_NOT_AUTHENTIC, detail)]
    if _mac(keys, key_id, document) != document.get("mac"):
        return [AnchorProblem("", "", 0, ANCHOR_NOT_AUTHENTIC, "its HMAC does not match its content")]
    heads = _heads(document)
    if len(heads) != document.get("enrolments") or merkle_root(heads) != document.get("merkle_root"):
        return [AnchorProblem("", "", 0, ANCHOR_NOT_AUTHENTIC, "heads, count and Merkle root disagree")]
    try:
        complete_before = datetime.fromisoformat(str(document["complete_before"]))
    except (KeyError, ValueError):
        raise AnchorError("not a carepath anchor: 'complete_before' must be an ISO 8601 time") from None
    return list(_compare(store.iter_links(), heads, complete_before))


def _compare(
    links: Iterator[tuple[str, str, int, str, datetime | None]], heads: Sequence[Head], complete_before: datetime
) -> Iterator[AnchorProblem]:
    anchored = {(p, w): (s, h) for p, w, s, h in heads}
    current: tuple[str, str] | None = None
    last_seq, matched = 0, False
    first_recorded: datetime | None = None

    def close(key: tuple[str, str]) -> Iterator[AnchorProblem]:
        head = anchored.pop(key, None)
        if head is None:
            if first_recorded is not None and first_recorded < complete_before:
                yield AnchorProblem(
                    *key, 1, NOT_IN_ANCHOR, f"began {first_recorded.isoformat()}, before the anchor, but is not in it"
                )
        elif not matched and last_seq < head[0]:
            yield AnchorProblem(
                *key, last_seq + 1, CHAIN_SHORTER, f"anchored head seq {head[0]}, chain ends at seq {last_seq}"
            )

    with _closing(links) as stream:
        for patient_id, pathway, seq, digest, first in stream:
            key = (patient_id, pathway)
            if key != current:
                if current is not None:
                    yield from close(current)
                current, last_seq, matched, first_recorded = key, 0, False, None
            if seq == 1:
                first_recorded = first
            last_seq = seq
            head = anchored.get(key)
            if head is not None and seq == head[0]:
                matched = True
                if digest != head[1]:
                    yield AnchorProblem(
                        *key, seq, ANCHORED_ENTRY_CHANGED, f"anchored hash {head[1][:16]}, stored {digest[:16]}"
                    )
        if current is not None:
            yield from close(current)
    for (patient_id, pathway), (seq, _digest) in sorted(anchored.items()):
        yield AnchorProblem(patient_id, pathway, 1, ANCHORED_ENROLMENT_MISSING, f"anchored at seq {seq}, no entry left")


class _closing:
    def __init__(self, items: Iterator[Any]) -> None:
        self.items = items

    def __enter__(self) -> Iterator[Any]:
        return self.items

    def __exit__(self, *_exc: object) -> None:
        close = getattr(self.items, "close", None)
        if close is not None:
            close()
