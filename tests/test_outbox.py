"""The outbox: transitions a backend may act on are written with their event, read in order by
cursor (GET /events), and delivered to a webhook in order, at least once, signed, surviving a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pathway import Engine
from persistence import count_outbox_pending, read_outbox
from states import EventNotAllowed
from tests.conftest import T0
from tests.helpers import assess_data, reassess_data
from tests.v2_helpers import assess_v2, reassess_v2


def kinds(engine: Engine, patient: str | None = None) -> list[tuple[str, int, str]]:
    return [
        (m.patient_id, m.seq, m.kind)
        for m in read_outbox(engine.store, 0, 1000)
        if patient is None or m.patient_id == patient
    ]


def test_transitions_are_classified_from_the_definition(engine: Engine) -> None:
    """Enrolment, escalation between stages, an overdue reassessment and a red-flag referral each leave a notice."""
    engine.enroll("p-1", T0, version=2)
    engine.send("p-1", "assess", T0, assess_v2())
    engine.send("p-1", "reassess", T0 + timedelta(weeks=6), reassess_v2(pain=8))
    engine.tick(T0 + timedelta(weeks=20))
    engine.enroll("p-2", T0, version=1)
    engine.send("p-2", "assess", T0, assess_data(red_flags=["cauda_equina"]))
    assert kinds(engine) == [
        ("p-1", 1, "enrolled"),
        ("p-1", 3, "escalated"),
        ("p-1", 4, "overdue"),
        ("p-2", 1, "enrolled"),
        ("p-2", 2, "ended"),
    ]
    ended = read_outbox(engine.store, 0, 1000)[-1].to_json()
    assert ended["state_after"] == "urgent_referral" and ended["state_before"] == "assessment"
    assert "data" not in ended and "payload" not in ended


def test_a_rejected_event_leaves_no_notice(engine: Engine) -> None:
    """Notices commit with their event: an event refused inside its transaction writes none."""
    engine.enroll("p-1", T0, version=1)
    before = kinds(engine)
    with pytest.raises(EventNotAllowed):
        engine.send("p-1", "reassess", T0, reassess_data())
    assert kinds(engine) == before == [("p-1", 1, "enrolled")]


def test_polling_by_cursor_over_http(engine: Engine) -> None:
    """GET /events?after=CURSOR pages through the stream in order, each message once, with stable ids."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    import httpx

    from tests.server_helpers import serving

    for n in range(5):
        engine.enroll(f"p-{n}", T0, version=1)
    with serving(engine) as running, httpx.Client(base_url=running.base_url, timeout=60) as http:
        seen: list[dict[str, Any]] = []
        cursor = 0
        while True:
            page = http.get("/events", params={"after": cursor, "limit": 2}, headers=running.headers("auditor")).json()
            if not page["events"]:
                break
            seen += page["events"]
            cursor = page["next"]
        again = http.get("/events", params={"after": 0}, headers=running.headers("auditor")).json()["events"]
        assert http.get("/events").status_code == 401
    assert [e["patient_id"] for e in seen] == [f"p-{n}" for n in range(5)]
    assert [e["cursor"] for e in seen] == sorted(e["cursor"] for e in seen)
    assert [e["id"] for e in again] == [e["id"] for e in seen]


def test_signatures_verify_and_refuse_tampering() -> None:
    """A signed body verifies under its secret; another body, secret or an old timestamp does not."""
    from pathway.server import sign, verify_signature

    now = time.time()
    header = sign("s3cret", b'{"a":1}', int(now))
    assert verify_signature("s3cret", header, b'{"a":1}', now=now)
    assert not verify_signature("s3cret", header, b'{"a":2}', now=now)
    assert not verify_signature("other", header, b'{"a":1}', now=now)
    assert not verify_signature("s3cret", header, b'{"a":1}', now=now + 3600)


class Receiver:
    """A webhook receiver on 127.0.0.1 that records every delivery and answers slowly."""

    def __init__(self, secret: str, fail_first: int = 0) -> None:
        from pathway.server import verify_signature

        self.received: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.failures_left = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if outer.failures_left > 0:
                    outer.failures_left -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                if not verify_signature(secret, self.headers.get("Carepath-Signature", ""), body):
                    outer.bad_signatures += 1
                time.sleep(0.02)
                document = json.loads(body)
                assert self.headers["Carepath-Event-Id"] == document["id"]
                outer.received.append(document)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver("hook-secret")
    yield found
    found.close()


def _deliver(db_url: str, webhook: str, *extra: str) -> subprocess.Popen[bytes]:
    command = "from pathway.console import run; run()"
    argv = [sys.executable, "-c", command, "--db", db_url, "deliver", "--webhook", webhook, "--poll", "0.1", *extra]
    env = {**os.environ, "CAREPATH_WEBHOOK_SECRET": "hook-secret"}
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_a_killed_deliverer_loses_nothing_and_keeps_ids(engine: Engine, db_url: str, receiver: Receiver) -> None:
    """kill -9 mid-stream, restart: the receiver saw every message, in order per patient, none with a new id."""
    for n in range(30):
        engine.enroll(f"p-{n:02d}", T0, version=1)
        engine.send(f"p-{n:02d}", "assess", T0, assess_data(red_flags=["cauda_equina"] if n % 3 == 0 else []))
    expected = {m.event_id: m for m in read_outbox(engine.store, 0, 1000)}
    assert len(expected) == 40

    first = _deliver(db_url, receiver.url)
    deadline = time.monotonic() + 120
    while len(receiver.received) < 10 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert 10 <= len(receiver.received) < len(expected), "the kill did not land mid-stream"
    assert count_outbox_pending(engine.store) > 0

    second = _deliver(db_url, receiver.url, "--drain")
    _out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err.decode()
    ids = [document["id"] for document in receiver.received]
    assert set(ids) == set(expected)  # every message, and no id the outbox does not hold
    assert receiver.bad_signatures == 0
    for document in receiver.received:
        assert document["cursor"] == expected[document["id"]].id and document["kind"] == expected[document["id"]].kind
    for patient in {m.patient_id for m in expected.values()}:
        firsts = list(dict.fromkeys(d["cursor"] for d in receiver.received if d["patient_id"] == patient))
        assert firsts == sorted(firsts)
    assert count_outbox_pending(engine.store) == 0


def test_failures_are_retried_with_back_off(engine: Engine) -> None:
    """A receiver failing twice gets the same first message again, and everything after it in order."""
    from pathway.server import Deliverer

    flaky = Receiver("hook-secret", fail_first=2)
    try:
        for n in range(3):
            engine.enroll(f"p-{n}", T0, version=1)
        deliverer = Deliverer(engine.url, flaky.url, "hook-secret", first_delay=0.01)
        try:
            assert deliverer.run(drain=True) == 3
        finally:
            deliverer.stop()
    finally:
        flaky.close()
    assert [d["patient_id"] for d in flaky.received] == ["p-0", "p-1", "p-2"]
    assert flaky.failures_left == 0 and flaky.bad_signatures == 0


@pytest.mark.slow
def test_serve_delivers_its_outbox_to_a_webhook(sqlite_url: str, receiver: Receiver, tmp_path: Any) -> None:
    """`carepath serve --webhook`: an enrolment over HTTP reaches the receiver, signed, as `enrolled`."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    import httpx

    from pathway.server import add_token
    from tests.server_helpers import free_port

    tokens = tmp_path / "tokens.json"
    token = add_token(tokens, "dr-jones", ["clinician"])
    port = free_port()
    command = "from pathway.console import run; run()"
    argv = [sys.executable, "-c", command, "--db", sqlite_url, "serve", "--port", str(port), "--tokens", str(tokens)]
    env = {**os.environ, "CAREPATH_WEBHOOK_SECRET": "hook-secret"}
    server = subprocess.Popen([*argv, "--webhook", receiver.url], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                response = httpx.post(
                    f"http://127.0.0.1:{port}/enrolments",
                    json={"patient_id": "p-1", "at": T0.isoformat()},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=60,
                )
                break
            except httpx.ConnectError:
                assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        assert response.status_code == 201
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    assert [(d["kind"], d["patient_id"]) for d in receiver.received] == [("enrolled", "p-1")]
    assert receiver.bad_signatures == 0
