"""A private PostgreSQL server killed (SIGKILL, every server process) in the middle of a parallel
import: the import ends with exit 5 and a report of what it did; once the server is back, running
the file again applies exactly the lines not yet applied, and the log verifies.

The server is started on a free port in a temporary folder from the server binaries of this
machine (as the `postgres` user when the tests run as root); without them the test skips, saying why.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from pathway import Engine, FakeClock, verify
from tests.conftest import NOW, T0
from tests.helpers import assess_data, reassess_data

pytestmark = pytest.mark.slow

PATIENTS = 1500  # 7,500 lines: several seconds of import, so the kill lands in the middle
CARE = [sys.executable, "-m", "pathway"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}


def _events(patients: int) -> list[str]:
    """Each patient enrolled and assessed at T0, then reassessed weekly three times."""
    lines = []
    for i in range(patients):
        patient = f"p{i:04d}"
        lines.append(json.dumps({"patient": patient, "event": "enroll", "at": T0.isoformat(), "version": 1}))
        lines.append(json.dumps({"patient": patient, "event": "assess", "at": T0.isoformat(), "data": assess_data()}))
        for week in range(1, 4):
            at = (T0 + timedelta(weeks=week)).isoformat()
            lines.append(json.dumps({"patient": patient, "event": "reassess", "at": at, "data": reassess_data()}))
    return lines


def _server_binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = found[-1] if found else shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_server_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as `postgres` then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrivateServer:
    """One PostgreSQL server in its own folder and session, killed and restarted at will."""

    def __init__(self, binaries: Path, folder: Path) -> None:
        self.binaries, self.folder, self.port = binaries, folder, _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / "server.log"

    def init(self) -> None:
        command = [str(self.binaries / "initdb"), "-D", str(self.folder / "data"), "-A", "trust", "-U", "postgres"]
        done = subprocess.run(_as_server_user([*command, "--no-sync", "--locale=C", "-E", "UTF8"]), capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"initdb failed: {done.stderr.decode().strip().splitlines()[-1:]}")

    def start(self) -> None:
        command = [
            str(self.binaries / "postgres"),
            *("-D", str(self.folder / "data"), "-p", str(self.port), "-k", str(self.folder)),
            *("-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=40"),
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(_as_server_user(command), stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 30
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"the private PostgreSQL server did not start: {self.log.read_text()[-300:]}")
            time.sleep(0.1)

    def answers(self, database: str = "postgres") -> bool:
        import psycopg

        try:
            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/{database}", connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def kill(self) -> None:
        """SIGKILL to every process of the server (postmaster and backends alike)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the last backend is reaped (a restart checks its pid)
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise AssertionError("the server's processes did not go away")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"


@pytest.fixture
def server() -> Iterator[PrivateServer]:
    """A fresh private server with an empty database `carepath`, killed at the end whatever happens."""
    binaries = _server_binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL server binaries (initdb) on this machine")
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run a server as")
        if shutil.which("runuser") is None:
            pytest.skip("running as root and there is no runuser to run a server as `postgres`")
    folder = Path(tempfile.mkdtemp(prefix="carepath-pg-"))
    if os.geteuid() == 0:
        os.chown(folder, user.pw_uid, user.pw_gid)
    private = PrivateServer(binaries, folder)
    try:
        private.init()
        private.start()
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{private.port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE carepath")
        yield private
    finally:
        if private.process is not None and private.process.poll() is None:
            os.killpg(private.process.pid, signal.SIGKILL)
            private.process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def _report(path: Path) -> dict[int, str]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {row["line"]: row["outcome"] for row in rows if row["line"] is not None}


def test_server_killed_mid_import_then_rerun_applies_exactly_the_rest(server: PrivateServer, tmp_path: Path) -> None:
    """The server is SIGKILLed once the import has written some lines: the import ends (exit 5,
    'import stopped' on stderr, a report line per line it did and a final 'stopped' row); after a
    restart the same file applies exactly the other lines, every line is recorded once (as many
    entries as a quiet import writes) and the log verifies."""
    url = server.url("carepath")
    lines = _events(PATIENTS)
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(lines) + "\n")
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    command = [*CARE, "--db", url, "import", str(source), "--workers", "2", "--batch", "50"]
    process = subprocess.Popen(
        [*command, "--report", str(first)], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    import psycopg

    deadline = time.monotonic() + 60
    written = 0
    while written < len(lines) // 10 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{server.port}/carepath") as conn:
                row = conn.execute("SELECT count(*) FROM carepath_audit").fetchone()
                written = row[0] if row else 0
        except psycopg.Error:  # the tables are not there yet
            continue
    assert process.poll() is None, "the import finished before the server could be killed"
    server.kill()
    _, err = process.communicate(timeout=120)
    assert process.returncode == 5, err.decode()
    assert "import stopped" in err.decode()
    rows = [json.loads(line) for line in first.read_text().splitlines()]
    assert rows[-1]["outcome"] == "stopped"
    done_first = _report(first)
    assert set(done_first.values()) <= {"applied"}, set(done_first.values())
    assert 0 < len(done_first) < len(lines)

    server.start()
    rerun = subprocess.run([*command, "--report", str(second)], env=_env(), capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()
    done_second = _report(second)
    assert sorted(done_second) == list(range(1, len(lines) + 1))
    applied_now = {line for line, outcome in done_second.items() if outcome == "applied"}
    assert applied_now.isdisjoint(done_first), "a line applied before the kill was applied again"
    assert all(done_second[line] == "already applied" for line in done_first)
    # Lines committed just as the server died, whose acknowledgement was lost, show as already applied.
    assert set(done_second.values()) <= {"applied", "already applied"}

    engine = Engine(url, FakeClock(NOW))
    quiet = Engine(f"sqlite:///{tmp_path / 'quiet.db'}", FakeClock(NOW))
    assert quiet.ingest(lines, batch=500).rejected == []
    assert engine.store.count_entries() == quiet.store.count_entries()
    assert verify(engine.store, workers=1).ok
    engine.close()
    quiet.close()
