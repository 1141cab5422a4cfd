"""The checked-in openapi.json is the document the code generates (regenerate: make openapi)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed (pip install 'carepath[server]')")

CHECKED_IN = Path(__file__).parent.parent / "openapi.json"


def test_openapi_json_matches_the_code() -> None:
    """openapi.json at the repository root equals the generated document; `make openapi` rewrites it."""
    from pathway.server import openapi_document

    generated = json.loads(json.dumps(openapi_document()))
    assert json.loads(CHECKED_IN.read_text(encoding="utf-8")) == generated, (
        "openapi.json is out of date with the API: run `make openapi` and commit it"
    )


def test_every_operation_documents_its_problems() -> None:
    """Each API operation lists the problem responses (401, 403, 422, 503) as application/problem+json."""
    document = json.loads(CHECKED_IN.read_text(encoding="utf-8"))
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status in ("401", "403", "422", "503"):
                assert "application/problem+json" in operation["responses"][status]["content"], (method, path, status)
