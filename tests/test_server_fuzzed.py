"""Regressions found by fuzzing the HTTP API against its own OpenAPI document (schemathesis),
on both backends: each request below once got a 500, an undocumented answer, or was accepted
against the document's types."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed (pip install 'carepath[server]')")
import httpx

from pathway import Engine
from tests.conftest import T0
from tests.server_helpers import Running, serving


@pytest.fixture
def server(engine: Engine) -> Iterator[Running]:
    with serving(engine) as running:
        yield running


@pytest.fixture
def client(server: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        yield http


def enrol_body(**fields: Any) -> dict[str, Any]:
    return {"patient_id": "p-1", "at": T0.isoformat(), "version": 1, **fields}


@pytest.mark.parametrize("at", ["9999-12-31T23:59:59+00:00", "9999-12-31T00:00:01+00:00"])
def test_explain_at_the_end_of_the_calendar(client: httpx.Client, server: Running, at: str) -> None:
    """explain at the last representable day answers 200 (its one-day probe used to overflow into a 500)."""
    enrolled = client.post("/enrolments", json=enrol_body(version=2), headers=server.headers("clinician"))
    assert enrolled.status_code == 201, enrolled.text
    response = client.get("/patients/p-1/explain", params={"at": at}, headers=server.headers("auditor"))
    assert response.status_code == 200, response.text
    assert response.json()["transitions"]
