"""The HTTP API over real HTTP on 127.0.0.1, on both backends: resources, tokens and roles,
problem details, and a bounded concurrent load followed by a clean verify."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed (pip install 'carepath[server]')")
import httpx

from pathway import Engine
from tests.conftest import T0
from tests.helpers import assess_data, reassess_data
from tests.second_pathway import SECOND
from tests.server_helpers import Running, serving

PROBLEM = "application/problem+json"


def enrol(client: httpx.Client, server: Running, patient: str, **extra: Any) -> httpx.Response:
    body = {"patient_id": patient, "at": T0.isoformat(), "version": 1, **extra}
    return client.post("/enrolments", json=body, headers=server.headers("clinician"))


def send(
    client: httpx.Client, server: Running, patient: str, event: str, data: dict[str, Any], at: Any = T0, **headers: str
) -> httpx.Response:
    body = {"event": event, "at": at.isoformat(), "data": data}
    return client.post(f"/patients/{patient}/events", json=body, headers={**server.headers("clinician"), **headers})


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    document: dict[str, Any] = response.json()
    assert document["status"] == status and document["code"] == code
    assert document["type"].endswith(code) and document["title"] and document["detail"]
    return document


def test_enrol_send_and_read_back_with_the_principal_as_actor(client: httpx.Client, server: Running) -> None:
    """Enrol and assess over HTTP: 201s, the CLI's JSON shapes, and the token's principal as the audit actor."""
    created = enrol(client, server, "p-1")
    assert created.status_code == 201 and created.json()["state"] == "assessment"
    sent = send(client, server, "p-1", "assess", assess_data())
    assert sent.status_code == 201
    assert sent.json()["state"] == "first_line" and sent.json()["entry"]["actor"] == "dr-jones"
    status = client.get("/patients/p-1", headers=server.headers("auditor")).json()
    assert status["state"] == "first_line" and status["revision"] == 2 and status["plan"]
    history = client.get("/patients/p-1/history", headers=server.headers("auditor")).json()
    assert [e["event"] for e in history] == ["enroll", "assess"]
    assert {e["actor"] for e in history} == {"dr-jones"}


def test_an_actor_in_the_body_is_refused(client: httpx.Client, server: Running) -> None:
    """The body cannot name the actor: an `actor` field is an invalid payload, nothing is written."""
    response = enrol(client, server, "p-1", actor="someone-else")
    document = assert_problem(response, 422, "invalid_payload")
    assert "actor" in document["detail"]
    assert_problem(client.get("/patients/p-1", headers=server.headers("auditor")), 404, "unknown_patient")


def test_idempotency_key_repeats_return_the_first_result(client: httpx.Client, server: Running) -> None:
    """The same Idempotency-Key and event: 200 duplicate with the same seq; a different event: 409 conflict."""
    enrol(client, server, "p-1")
    first = send(client, server, "p-1", "assess", assess_data(), **{"Idempotency-Key": "visit-1"})
    again = send(client, server, "p-1", "assess", assess_data(), **{"Idempotency-Key": "visit-1"})
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["duplicate"] is True and again.json()["entry"]["seq"] == first.json()["entry"]["seq"]
    other = send(client, server, "p-1", "assess", assess_data(pain=3), **{"Idempotency-Key": "visit-1"})
    assert_problem(other, 409, "idempotency_conflict")


def test_errors_are_problem_details_with_stable_codes(client: httpx.Client, server: Running) -> None:
    """Unknown patient 404, unknown event and bad data 422, event not allowed and duplicate enrolment 409."""
    assert_problem(client.get("/patients/nobody", headers=server.headers("auditor")), 404, "unknown_patient")
    enrol(client, server, "p-1")
    assert_problem(enrol(client, server, "p-1"), 409, "duplicate_enrolment")
    assert_problem(send(client, server, "p-1", "dance", {}), 422, "unknown_event")
    bad = assert_problem(send(client, server, "p-1", "assess", {"pain": 99}), 422, "invalid_payload")
    assert bad["details"]["problems"]
    assert_problem(send(client, server, "p-1", "reassess", reassess_data()), 409, "event_not_allowed")
    naive = client.post(
        "/patients/p-1/events",
        json={"event": "assess", "at": "2026-01-05T09:00:00", "data": assess_data()},
        headers=server.headers("clinician"),
    )
    assert_problem(naive, 422, "naive_time")
    assert_problem(client.get("/nowhere", headers=server.headers("admin")), 404, "not_found")


def test_no_token_gets_nothing_but_401(client: httpx.Client, server: Running) -> None:
    """Without a token, or with a wrong one, every path answers 401 as a problem, even unknown ones."""
    enrol(client, server, "p-1")
    for path in ("/patients/p-1", "/enrolments", "/verify", "/nowhere", "/openapi.json", "/docs"):
        document = assert_problem(client.get(path), 401, "unauthenticated")
        assert "p-1" not in str(document)
    wrong = client.get("/patients/p-1", headers={"Authorization": "Bearer not-a-token"})
    assert_problem(wrong, 401, "unauthenticated")
    assert wrong.headers["www-authenticate"] == "Bearer"


def test_roles_decide_what_a_token_may_do(client: httpx.Client, server: Running) -> None:
    """An auditor cannot enrol, a clinician cannot tick nor verify the database, a scheduler can tick; admin all."""
    denied = client.post(
        "/enrolments", json={"patient_id": "p-1", "at": T0.isoformat()}, headers=server.headers("auditor")
    )
    assert_problem(denied, 403, "forbidden")
    enrol(client, server, "p-1")
    tick = {"at": (T0 + timedelta(days=60)).isoformat()}
    assert_problem(client.post("/tick", json=tick, headers=server.headers("clinician")), 403, "forbidden")
    assert_problem(client.get("/verify", headers=server.headers("auditor")), 403, "forbidden")
    assert_problem(client.get("/patients/p-1", headers=server.headers("scheduler")), 403, "forbidden")
    assert client.post("/tick", json=tick, headers=server.headers("scheduler")).status_code == 200
    assert client.get("/patients/p-1/verify", headers=server.headers("auditor")).json()["ok"] is True
    assert client.get("/verify", headers=server.headers("admin")).json()["ok"] is True
    admin_enrol = client.post(
        "/enrolments", json={"patient_id": "p-2", "at": T0.isoformat(), "version": 1}, headers=server.headers("admin")
    )
    assert admin_enrol.status_code == 201


def test_views_of_a_patient(client: httpx.Client, server: Running) -> None:
    """Explain, replay (until), FHIR bundle, cohort list and due views answer in the CLI's JSON shapes."""
    enrol(client, server, "p-1")
    send(client, server, "p-1", "assess", assess_data())
    auditor = server.headers("auditor")
    explained = client.get("/patients/p-1/explain", headers=auditor).json()
    assert explained["state"] == "first_line" and explained["transitions"]
    replayed = client.get("/patients/p-1/replay", params={"until": T0.isoformat()}, headers=auditor).json()
    assert replayed["state"] == "first_line" and replayed["until"] == T0.isoformat()
    bundle = client.get("/patients/p-1/fhir", headers=auditor).json()
    assert bundle["resourceType"] == "Bundle"
    listed = client.get("/enrolments", params={"state": "first_line"}, headers=auditor).json()
    assert [row["patient_id"] for row in listed["patients"]] == ["p-1"] and listed["total"] == 1
    due = client.get("/enrolments/due", params={"at": (T0 + timedelta(weeks=8)).isoformat()}, headers=auditor)
    assert [row["patient_id"] for row in due.json()["patients"]] == ["p-1"]
    assert client.get("/patients/p-1/enrolments", headers=auditor).json()[0]["pathway"] == "piriformis"


def test_definitions_are_listed_and_served(client: httpx.Client, server: Running) -> None:
    """Definitions: the list, one as data, the JSON Schema of definition files, and 404 for an unknown one."""
    auditor = server.headers("auditor")
    rows = client.get("/definitions", headers=auditor).json()
    assert ("piriformis", 1) in {(row["pathway"], row["version"]) for row in rows}
    one = client.get("/definitions/piriformis/1", headers=auditor).json()
    assert one["name"] == "piriformis" and one["version"] == 1
    assert "$schema" in client.get("/definitions/schema", headers=auditor).json()
    assert_problem(client.get("/definitions/nothing/1", headers=auditor), 404, "unknown_definition")
    events = client.get("/definitions/piriformis/1/events", headers=auditor).json()
    assert {"enroll", "assess", "reassess"} <= set(events) and events["assess"]["type"] == "object"
    assert_problem(client.get("/definitions/piriformis/99/events", headers=auditor), 404, "unknown_definition")


def test_pictures_of_a_patient(client: httpx.Client, server: Running) -> None:
    """The statechart is SVG and the timeline PNG (the SVG needs Graphviz's dot)."""
    import shutil

    enrol(client, server, "p-1")
    send(client, server, "p-1", "assess", assess_data())
    png = client.get("/patients/p-1/timeline.png", headers=server.headers("auditor"))
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed: the SVG diagram is not checked")
    svg = client.get("/patients/p-1/diagram.svg", headers=server.headers("auditor"))
    assert svg.headers["content-type"].startswith("image/svg+xml") and b"<svg" in svg.content


def test_back_pressure_answers_503_with_retry_after(engine: Engine) -> None:
    """Past the in-flight limit, requests are refused at once with 503 and Retry-After, not queued."""
    with serving(engine, max_in_flight=1) as running, httpx.Client(base_url=running.base_url, timeout=120) as http:
        headers = running.headers("admin")
        for n in range(4):
            http.post("/enrolments", json={"patient_id": f"p-{n}", "at": T0.isoformat()}, headers=headers)

        def read(_: int) -> httpx.Response:
            return http.get("/verify", headers=headers)

        with ThreadPoolExecutor(max_workers=8) as pool:
            responses = list(pool.map(read, range(40)))
    statuses = {r.status_code for r in responses}
    assert statuses <= {200, 503}
    busy = [r for r in responses if r.status_code == 503]
    assert busy, "eight clients against a limit of one were never refused"
    assert busy[0].headers["retry-after"] == "1" and busy[0].json()["code"] == "busy"


def test_eight_clients_two_thousand_requests_then_a_clean_verify(engine: Engine) -> None:
    """A bounded load: 8 concurrent clients, 2,000 requests in all; no error but the expected 4xx; verify is clean."""
    patients = [f"load-{n:02d}" for n in range(40)]
    with serving(engine, max_in_flight=64) as running:
        clinician, auditor = running.headers("clinician"), running.headers("auditor")

        def client_work(worker: int) -> list[tuple[str, int]]:
            seen: list[tuple[str, int]] = []
            mine = patients[worker::8]
            with httpx.Client(base_url=running.base_url, timeout=120) as http:
                for pid in mine:
                    r = http.post(
                        "/enrolments", json={"patient_id": pid, "at": T0.isoformat(), "version": 1}, headers=clinician
                    )
                    seen.append(("enrol", r.status_code))
                    r = http.post(
                        f"/patients/{pid}/events",
                        headers=clinician,
                        json={"event": "assess", "at": T0.isoformat(), "data": assess_data()},
                    )
                    seen.append(("assess", r.status_code))
                n = 0
                while len(seen) < 250:
                    pid = mine[n % len(mine)]
                    at = (T0 + timedelta(minutes=n + 1)).isoformat()
                    kind = n % 5
                    if kind == 0:
                        r = http.post(
                            f"/patients/{pid}/events",
                            headers={**clinician, "Idempotency-Key": f"k{n}"},
                            json={"event": "reassess", "at": at, "data": reassess_data(pain=7)},
                        )
                        seen.append(("reassess", r.status_code))
                    elif kind == 1:
                        seen.append(("status", http.get(f"/patients/{pid}", headers=auditor).status_code))
                    elif kind == 2:
                        seen.append(("history", http.get(f"/patients/{pid}/history", headers=auditor).status_code))
                    elif kind == 3:
                        r = http.get(f"/patients/{pid}-missing", headers=auditor)
                        seen.append(("missing", r.status_code))
                    else:
                        seen.append(("list", http.get("/enrolments", headers=auditor).status_code))
                    n += 1
            return seen

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = [item for part in pool.map(client_work, range(8)) for item in part]
        verify = httpx.get(f"{running.base_url}/verify", headers=running.headers("admin"), timeout=300).json()
    assert len(results) == 2000
    unexpected = [(what, status) for what, status in results if status >= 400 and what != "missing"]
    assert unexpected == []
    assert {status for what, status in results if what == "missing"} == {404}
    assert verify["ok"] is True and verify["enrolments"] == len(patients)


def test_verify_of_a_patient_on_several_pathways(client: httpx.Client, server: Running) -> None:
    """A patient on several pathways is verified one enrolment at a time (as `verify PATIENT --pathway`)."""
    enrol(client, server, "p-1")
    enrol(client, server, "p-1", pathway=SECOND)
    auditor = server.headers("auditor")
    assert_problem(client.get("/patients/p-1/verify", headers=auditor), 422, "ambiguous_enrolment")
    for pathway in ("piriformis", SECOND):
        report = client.get("/patients/p-1/verify", params={"pathway": pathway}, headers=auditor).json()
        assert report["ok"] is True and report["enrolments"] == 1
    assert_problem(client.get("/patients/p-9/verify", headers=auditor), 404, "unknown_patient")


def test_an_oversized_body_is_refused_unread(client: httpx.Client, server: Running) -> None:
    """A body over the limit is a 413 problem; nothing is enrolled."""
    from pathway.server import MAX_BODY_BYTES

    body = {"patient_id": "p-1", "at": T0.isoformat(), "factors": {"note": "x" * MAX_BODY_BYTES}}
    response = client.post("/enrolments", json=body, headers=server.headers("clinician"))
    assert_problem(response, 413, "payload_too_large")
    assert_problem(client.get("/patients/p-1", headers=server.headers("auditor")), 404, "unknown_patient")


def test_a_body_without_a_length_is_refused_unread(client: httpx.Client, server: Running) -> None:
    """A chunked body (no Content-Length, so no size known before reading) is a 411 problem; nothing is enrolled."""
    body = json.dumps({"patient_id": "p-1", "at": T0.isoformat(), "factors": {}}).encode()

    def chunks() -> Iterator[bytes]:
        yield body[:10]
        yield body[10:]

    headers = {**server.headers("clinician"), "Content-Type": "application/json"}
    response = client.post("/enrolments", content=chunks(), headers=headers)
    assert_problem(response, 411, "length_required")
    assert_problem(client.get("/patients/p-1", headers=server.headers("auditor")), 404, "unknown_patient")


def test_token_add_stores_only_a_digest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`carepath token add` prints a new token once and keeps its SHA-256 in a 0600 file; a bad role is exit 2."""
    from pathway.cli import main
    from pathway.server import hash_token, load_tokens

    file = tmp_path / "tokens.json"
    assert main(["token", "add", "dr-jones", "--role", "clinician", "--file", str(file)]) == 0
    token = capsys.readouterr().out.strip()
    assert token and token not in file.read_text()
    assert hash_token(token) in file.read_text()
    assert file.stat().st_mode & 0o777 == 0o600
    principal = load_tokens(file).principal(token)
    assert principal is not None and principal.name == "dr-jones" and principal.roles == {"clinician"}
    assert main(["token", "add", "dr-x", "--role", "surgeon", "--file", str(file)]) == 2
    assert "surgeon" in capsys.readouterr().err
