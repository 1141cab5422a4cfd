"""Webhook delivery of the outbox: in order, at least once, signed, retried with back-off.

Messages are posted one at a time in stream order (so in order per patient) and marked
delivered after the receiver answered 2xx. A crash between the answer and the mark means the
message is posted again on restart, with the same id (`Carepath-Event-Id` and the body's `id`):
receivers deduplicate on it. Run one deliverer per database. With `prune_after_days` it also
deletes the messages delivered more than that many days ago, at start and then at most once an hour.

Signature (when a secret is set): `Carepath-Signature: t=<unix seconds>,v1=<hex>`, where hex is
HMAC-SHA256(secret, "<t>." + raw body). `verify_signature` checks one.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson

from persistence import OutboxMessage, mark_outbox_delivered, pending_outbox

from .. import InvalidCommand

__all__ = ["SIGNATURE_HEADER", "Deliverer", "sign", "verify_signature"]

SIGNATURE_HEADER = "Carepath-Signature"
EVENT_ID_HEADER = "Carepath-Event-Id"
SECRET_ENV = "CAREPATH_WEBHOOK_SECRET"
# Signatures older than this are refused by `verify_signature` (replayed requests).
TOLERANCE_SECONDS = 300


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, header: str, body: bytes, *, now: float | None = None) -> bool:
    """Whether `header` is a valid signature of `body` under `secret`, made within the tolerance."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > TOLERANCE_SECONDS:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


@dataclass
class Deliverer:
    """Posts the outbox of the database at `url` to `webhook`."""

    url: str
    webhook: str
    secret: str | None = None
    batch: int = 100
    timeout: float = 10.0
    first_delay: float = 0.5
    max_delay: float = 30.0
    prune_after_days: int | None = None
    prune_every: float = 3600.0
    log: Callable[[str], None] = lambda _line: None
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if not self.webhook.startswith(("http://", "https://")):
            raise InvalidCommand(f"--webhook: {self.webhook!r} is not an http(s) URL")
        days = self.prune_after_days
        if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 1):
            raise InvalidCommand(f"--prune-after-days: give a whole number of days, 1 or more (got {days!r})")
        from .. import Engine

        self._engine = Engine(self.url)
        self._engine.store.ensure_schema()
        self.delivered = 0
        self.pruned = 0
        self._last_prune: float | None = None

    def run(self, *, poll: float = 1.0, drain: bool = False) -> int:
        """Deliver until stopped (or, with `drain`, until nothing is pending); returns how many were delivered."""
        while not self.stopping.is_set():
            self.prune_when_due()
            sent = self.deliver_pending()
            if sent == 0:
                if drain:
                    break
                self.stopping.wait(poll)
        return self.delivered

    def deliver_pending(self) -> int:
        """Deliver one batch of pending messages in order; returns how many were delivered."""
        sent = 0
        for message in pending_outbox(self._engine.store, self.batch):
            if not self._post_until_accepted(message):
                break  # stopping
            mark_outbox_delivered(self._engine.store, [message.id], datetime.now(UTC))
            sent += 1
            self.delivered += 1
        return sent

    def prune_when_due(self) -> int:
        """With `prune_after_days`, prune the messages delivered longer ago than that, unless the
        last prune was less than `prune_every` seconds ago; returns how many were pruned."""
        if self.prune_after_days is None:
            return 0
        now = time.monotonic()
        if self._last_prune is not None and now - self._last_prune < self.prune_every:
            return 0
        self._last_prune = now
        cut = self._engine.clock() - timedelta(days=self.prune_after_days)
        pruned = self._engine.prune_outbox(cut)
        self.pruned += pruned
        if pruned:
            self.log(f"pruned {pruned} messages delivered before {cut.isoformat()}")
        return pruned

    def _post_until_accepted(self, message: OutboxMessage) -> bool:
        body = orjson.dumps(message.to_json())
        delay = self.first_delay
        while not self.stopping.is_set():
            problem = self._post(message, body)
            if problem is None:
                return True
            self.log(f"delivery of {message.event_id} failed ({problem}); retrying in {delay:.1f} s")
            self.stopping.wait(delay)
            delay = min(delay * 2, self.max_delay)
        return False

    def _post(self, message: OutboxMessage, body: bytes) -> str | None:
        headers = {"Content-Type": "application/json", EVENT_ID_HEADER: message.event_id}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body, int(time.time()))
        request = urllib.request.Request(self.webhook, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status = int(response.status)
        except urllib.error.HTTPError as err:
            status = err.code
        except (OSError, ValueError) as err:
            return str(err)
        return None if 200 <= status < 300 else f"HTTP {status}"

    def start(self) -> threading.Thread:
        """Deliver in a daemon thread until `stop`."""
        thread = threading.Thread(target=self.run, name="carepath-deliver", daemon=True)
        thread.start()
        self._thread = thread
        return thread

    def stop(self) -> None:
        self.stopping.set()
        thread = getattr(self, "_thread", None)
        if thread is not None:
            thread.join(timeout=self.timeout + 1)
        self._engine.close()
