"""The read-only web view: sign-in with a token, the patient and cohort pages, escaping, and the
pages as a real headless Chromium renders them (screenshots kept under tests/artifacts/)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed (pip install 'carepath[server]')")
import httpx

from pathway import Engine
from tests.conftest import T0
from tests.helpers import assess_data
from tests.server_helpers import Running, serving, token_for

ARTIFACTS = Path(__file__).parent / "artifacts"
ODD_ID = "p<b>&1"  # an id that must come out escaped, never as markup


@pytest.fixture
def server(engine: Engine) -> Iterator[Running]:
    engine.enroll(ODD_ID, T0, version=1)
    engine.send(ODD_ID, "assess", T0, assess_data())
    engine.enroll("p-2", T0, version=1)
    with serving(engine) as running:
        yield running


def test_pages_need_a_token_and_the_sign_in_sets_a_cookie(server: Running) -> None:
    """Without a token /ui is a 401 problem; a wrong token gets the form again; a right one a cookie and the page."""
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        assert http.get("/ui").status_code == 401
        assert http.get("/login").status_code == 200
        wrong = http.post("/login", data={"token": "nope", "next": "/ui"})
        assert wrong.status_code == 401 and "not valid" in wrong.text
        signed = http.post("/login", data={"token": token_for("auditor"), "next": "/ui"})
        assert signed.status_code == 303 and signed.headers["location"] == "/ui"
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        page = http.get("/ui")
        assert page.status_code == 200 and "audit-office" in page.text
        assert "script-src" not in page.headers["content-security-policy"]


def test_sign_in_never_redirects_off_the_site(server: Running) -> None:
    """A `next` naming another site (//host, scheme) sends the browser to /ui instead."""
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
            response = http.post("/login", data={"token": token_for("auditor"), "next": target})
            assert response.headers["location"] == "/ui"


def test_patient_page_escapes_what_it_shows(server: Running) -> None:
    """The patient page shows state, plan, explain and history; an id with markup is escaped."""
    with httpx.Client(base_url=server.base_url, timeout=120, headers=server.headers("auditor")) as http:
        page = http.get(f"/ui/patients/{quote(ODD_ID, safe='')}")
    assert page.status_code == 200
    assert "p&lt;b&gt;&amp;1" in page.text and "<b>&1" not in page.text
    for part in ('id="plan"', 'id="explain"', 'id="history"', "first line", "escalates to second line"):
        assert part in page.text


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium installed (apt-get install chromium): the pages are not checked in a browser")


def _browse(binary: str, url: str, screenshot: Path) -> str:
    """The DOM Chromium builds for `url`, and a screenshot of it."""
    with tempfile.TemporaryDirectory() as profile:
        common = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=15000",
        ]
        dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, timeout=180, check=True).stdout
        subprocess.run(
            [*common, f"--screenshot={screenshot}", "--window-size=1280,2600", url],
            capture_output=True,
            timeout=180,
            check=True,
        )
    return dom.decode("utf-8", "replace")


@pytest.mark.slow
def test_pages_in_headless_chromium(server: Running, request: pytest.FixtureRequest) -> None:
    """Chromium signs in by URL and renders both pages: content checked, screenshots saved as artefacts."""
    binary = _chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    backend = request.node.callspec.params.get("db_url", "db")
    login = f"{server.base_url}/login?token={token_for('auditor')}&next="
    patient_path = quote(f"/ui/patients/{quote(ODD_ID, safe='')}", safe="")
    patient_shot = ARTIFACTS / f"patient-{backend}.png"
    cohort_shot = ARTIFACTS / f"cohort-{backend}.png"
    patient = _browse(binary, login + patient_path, patient_shot)
    cohort = _browse(binary, login + quote("/ui", safe=""), cohort_shot)
    assert "p&lt;b&gt;&amp;1" in patient and 'id="state"' in patient and "first line" in patient
    assert 'id="diagram"' in patient and 'id="timeline"' in patient and "escalates to second line" in patient
    assert "Cohort at" in cohort and "p-2" in cohort and 'id="due"' in cohort
    for shot in (patient_shot, cohort_shot):
        assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000
