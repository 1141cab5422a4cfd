"""Regressions found by fuzzing the HTTP API against its own OpenAPI document (schemathesis),
on both backends: each request below once got a 500, an undocumented answer, or was accepted
against the document's types."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed (pip install 'carepath[server]')")
import httpx

from tests.conftest import T0
from tests.server_helpers import Running
from tests.test_server import assert_problem


def enrol_body(**fields: Any) -> dict[str, Any]:
    return {"patient_id": "p-1", "at": T0.isoformat(), "version": 1, **fields}


def test_a_cursor_past_64_bits_is_invalid_not_a_server_error(client: httpx.Client, server: Running) -> None:
    """/events?after= larger than any outbox id is a 422 naming the bound; the largest id is a valid empty page."""
    huge = client.get("/events", params={"after": str(2**64 + 7)}, headers=server.headers("auditor"))
    document = assert_problem(huge, 422, "invalid_payload")
    assert document["details"]["problems"][0]["location"] == ["query", "after"]
    largest = client.get("/events", params={"after": str(2**63 - 1)}, headers=server.headers("auditor"))
    assert largest.status_code == 200 and largest.json() == {"events": [], "next": 2**63 - 1}


def test_a_405_names_the_allowed_methods(client: httpx.Client, server: Running) -> None:
    """A method a path does not have is a 405 problem with an Allow header (RFC 9110 15.5.6)."""
    response = client.request("TRACE", "/definitions", headers=server.headers("auditor"))
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET"
    posted = client.delete("/enrolments", headers=server.headers("admin"))
    assert_problem(posted, 405, "method_not_allowed")
    assert set(posted.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}


@pytest.mark.parametrize("at", [0, 1767600000, "1767600000", 1.5e9, True])
def test_a_number_is_not_a_clinical_time(client: httpx.Client, server: Running, at: Any) -> None:
    """An `at` that is a number (or a numeric string) is refused, not read as Unix seconds; nothing is enrolled."""
    response = client.post("/enrolments", json=enrol_body(at=at), headers=server.headers("clinician"))
    document = assert_problem(response, 422, "invalid_payload")
    assert document["details"]["problems"][0]["location"] == ["at"]
    assert "ISO 8601" in document["detail"]
    assert_problem(client.get("/patients/p-1", headers=server.headers("auditor")), 404, "unknown_patient")


def test_a_numeric_tick_time_is_refused(client: httpx.Client, server: Running) -> None:
    """POST /tick with {"at": 0} is an invalid payload, not a sweep at 1970-01-01."""
    response = client.post("/tick", json={"at": 0}, headers=server.headers("scheduler"))
    assert_problem(response, 422, "invalid_payload")


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/enrolments", "at"),
        ("/enrolments/due", "at"),
        ("/patients/p-1/replay", "until"),
        ("/patients/p-1/replay", "as_of"),
    ],
)
def test_a_numeric_time_in_a_query_is_refused(client: httpx.Client, server: Running, path: str, name: str) -> None:
    """A query time that is only digits is a 422 invalid_payload naming the parameter; ISO 8601 is read."""
    assert client.post("/enrolments", json=enrol_body(), headers=server.headers("clinician")).status_code == 201
    response = client.get(path, params={name: "1767600000"}, headers=server.headers("admin"))
    document = assert_problem(response, 422, "invalid_payload")
    assert document["details"]["problems"][0]["location"] == ["query", name]
    later = (server.engine.clock() + timedelta(days=1)).isoformat()  # after the enrolment in both times
    read = client.get(path, params={name: later}, headers=server.headers("admin"))
    assert read.status_code == 200, read.text


@pytest.mark.parametrize(("field", "value"), [("version", "1"), ("version", 1.0), ("allow_unapproved", "yes")])
def test_enrolment_scalars_have_their_documented_types(
    client: httpx.Client, server: Running, field: str, value: Any
) -> None:
    """A version given as a string or float, or a boolean as "yes", is refused and enrols nobody."""
    response = client.post("/enrolments", json=enrol_body(**{field: value}), headers=server.headers("clinician"))
    document = assert_problem(response, 422, "invalid_payload")
    assert document["details"]["problems"][0]["location"] == [field]
    assert_problem(client.get("/patients/p-1", headers=server.headers("auditor")), 404, "unknown_patient")


def test_an_event_late_flag_must_be_a_boolean(client: httpx.Client, server: Running) -> None:
    """`late: "true"` is refused before the engine is asked; the enrolment stays at revision 1."""
    assert client.post("/enrolments", json=enrol_body(), headers=server.headers("clinician")).status_code == 201
    body = {"event": "withdraw", "at": T0.isoformat(), "data": {}, "late": "true"}
    response = client.post("/patients/p-1/events", json=body, headers=server.headers("clinician"))
    assert_problem(response, 422, "invalid_payload")
    assert client.get("/patients/p-1", headers=server.headers("auditor")).json()["revision"] == 1


def test_the_document_declares_what_the_fuzzing_found(client: httpx.Client, server: Running) -> None:
    """openapi.json bounds the cursor, declares 500 problems, and gives an enrolment example that enrols."""
    document = client.get("/openapi.json", headers=server.headers("auditor")).json()
    after = next(p for p in document["paths"]["/events"]["get"]["parameters"] if p["name"] == "after")
    assert after["schema"]["maximum"] == 2**63 - 1
    assert "500" in document["paths"]["/patients/{patient_id}/diagram.svg"]["get"]["responses"]
    example = document["components"]["schemas"]["Enrolment"]["examples"][0]
    response = client.post("/enrolments", json=example, headers=server.headers("clinician"))
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("at", ["9999-12-31T23:59:59+00:00", "9999-12-31T00:00:01+00:00"])
def test_explain_at_the_end_of_the_calendar(client: httpx.Client, server: Running, at: str) -> None:
    """explain at the last representable day answers 200 (its one-day probe used to overflow into a 500)."""
    enrolled = client.post("/enrolments", json=enrol_body(version=2), headers=server.headers("clinician"))
    assert enrolled.status_code == 201, enrolled.text
    response = client.get("/patients/p-1/explain", params={"at": at}, headers=server.headers("auditor"))
    assert response.status_code == 200, response.text
    assert response.json()["transitions"]
