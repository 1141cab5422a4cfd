"""Faults: commands killed at random, workers orphaned, sweeps and verifies beside live writers.

Seeded and bounded in time; each kill is followed by a verify, and the work by an idempotent re-run.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from pathway import Engine, FakeClock, verify
from persistence import UnknownPatient
from tests import send_loop
from tests.conftest import NOW, T0
from tests.helpers import assess_data, reassess_data

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("CAREPATH_FAULT_SEED", "20260105"))
KILLS = 20
CARE = [sys.executable, "-m", "pathway"]


def _line(patient: str, event: str, at: object, **fields: object) -> str:
    return json.dumps({"patient": patient, "event": event, "at": str(at), **fields})


def _events(patients: int) -> list[str]:
    lines = []
    for i in range(patients):
        pid = f"p{i:04d}"
        lines.append(_line(pid, "enroll", T0.isoformat(), version=1, factors={"age": 40}))
        lines.append(_line(pid, "assess", T0.isoformat(), data=assess_data(pain=8)))
        for week in range(1, 4):
            at = (T0 + timedelta(weeks=week)).isoformat()
            lines.append(_line(pid, "reassess", at, data=reassess_data(pain=7)))
    return lines


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pids: list[int], seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [pid for pid in pids if _alive(pid)]
        if not left:
            return []
        time.sleep(0.05)
    return [pid for pid in pids if _alive(pid)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}


ORPHAN_COMMANDS = {
    "import": ["import", "EVENTS", "--workers", "2", "--batch", "50"],
    "tick": ["tick", "--at", (T0 + timedelta(weeks=3)).isoformat(), "--workers", "2", "--batch", "50"],
    "verify": ["verify", "--workers", "2"],
}


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find child processes")
@pytest.mark.parametrize("name", sorted(ORPHAN_COMMANDS))
def test_no_worker_survives_its_parent(db_url: str, tmp_path: Path, name: str) -> None:
    """kill -9 of a parallel import, sweep or verify leaves none of its processes behind (gone
    within a few seconds), and the log verifies."""
    source = tmp_path / "events.jsonl"
    if name == "import":
        source.write_text("\n".join(_events(3000)) + "\n")
    else:  # 3,000 patients assessed, due three weeks later
        engine = Engine(db_url, FakeClock(NOW))
        assert engine.ingest([line for line in _events(3000) if '"reassess"' not in line], batch=500).rejected == []
        engine.close()
    args = [arg.replace("EVENTS", str(source)) for arg in ORPHAN_COMMANDS[name]]
    parent = subprocess.Popen([*CARE, "--db", db_url, *args], env=_env(), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    workers: list[int] = []
    while time.monotonic() < deadline and len(workers) < 2 and parent.poll() is None:
        workers = _descendants(parent.pid)
        time.sleep(0.01)
    assert len(workers) >= 2, "the command started no workers"
    time.sleep(0.2)
    parent.kill()
    parent.wait(timeout=10)
    assert _wait_gone(workers) == []
    assert verify(Engine(db_url, FakeClock(NOW)).store, workers=1).ok


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find child processes")
def test_no_worker_survives_a_threaded_parent(sqlite_url: str, tmp_path: Path) -> None:
    """A service process sweeping with workers=2 from a thread gets its workers from a fork
    server; kill -9 of the service leaves neither the fork server nor a worker behind."""
    engine = Engine(sqlite_url, FakeClock(NOW))
    assert engine.ingest([line for line in _events(3000) if '"reassess"' not in line], batch=500).rejected == []
    engine.close()
    script = (
        "import sys, threading\n"
        "from datetime import datetime\n"
        "from pathway import Engine, FakeClock\n"
        "from tests.conftest import NOW\n"
        "def sweep():\n"
        f"    Engine({sqlite_url!r}, FakeClock(NOW)).tick(datetime.fromisoformat({SWEEP!r}), batch=20, workers=2)\n"
        "if __name__ == '__main__':\n"
        "    sweeper = threading.Thread(target=sweep)\n"
        "    sweeper.start()\n"
        "    sweeper.join()\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], env=_env(), cwd=tmp_path, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    workers: list[int] = []
    while time.monotonic() < deadline and len(workers) < 3 and parent.poll() is None:
        workers = _descendants(parent.pid)  # the fork server and its two workers
        time.sleep(0.01)
    assert len(workers) >= 3, f"expected a fork server and two workers, found {workers}"
    parent.kill()
    parent.wait(timeout=10)
    assert _wait_gone(workers, seconds=10) == []


def _descendants(pid: int) -> list[int]:
    """Children, their children, and so on (a fork server's workers are the command's grandchildren)."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        frontier = [child for parent in frontier for child in _children(parent)]
        found += frontier
    return found


def _sent_keys(engine: Engine) -> list[str]:
    """The idempotency keys recorded for the send loop's patients, one per entry."""
    keys: list[str] = []
    for i in range(send_loop.PATIENTS):
        try:
            history = engine.history(f"s{i:03d}")
        except UnknownPatient:
            continue
        keys += [entry.idempotency_key for entry in history if entry.idempotency_key is not None]
    return keys


def _assert_acknowledged_once(engine: Engine, acks: Path) -> None:
    acknowledged = set(acks.read_text().split()) if acks.exists() else set()
    recorded = _sent_keys(engine)
    assert len(recorded) == len(set(recorded)), "an event was recorded twice"
    assert acknowledged <= set(recorded), f"acknowledged but lost: {sorted(acknowledged - set(recorded))}"


def test_random_kills_then_verify_and_rerun(db_url: str, tmp_path: Path) -> None:
    """Imports (one and two workers), send loops, parallel sweeps and workers are SIGKILLed at random
    moments, 20 times in all (4 of each, in a seeded order); after each kill no process of the
    command is left, the log verifies, and every event a `send` acknowledged (exit 0) is recorded
    once. In the end the file and the send loop run again complete the work exactly, and every
    send retried with its key changes nothing."""
    rng = random.Random(SEED)
    lines = _events(400)
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(lines) + "\n")
    acks = tmp_path / "acks.txt"
    engine = Engine(db_url, FakeClock(NOW))
    engine.store.ensure_schema()
    sweep_at = (T0 + timedelta(weeks=5)).isoformat()
    commands = {
        "import-2": [*CARE, "--db", db_url, "import", str(source), "--workers", "2", "--batch", "20"],
        "import-1": [*CARE, "--db", db_url, "import", str(source), "--workers", "1", "--batch", "20"],
        "send-loop": [sys.executable, "-m", "tests.send_loop", db_url, str(acks)],
        "sweep-2": [*CARE, "--db", db_url, "tick", "--at", sweep_at, "--workers", "2", "--batch", "20"],
        "worker": [*CARE, "--db", db_url, "worker", "--at", sweep_at, "--interval", "0"],
    }
    rotation = sorted(commands) * (KILLS // len(commands))
    rng.shuffle(rotation)
    started = time.monotonic()
    for name in rotation:
        process = subprocess.Popen(commands[name], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.5))
        workers = _descendants(process.pid)
        process.kill()
        process.wait(timeout=10)
        assert _wait_gone(workers) == [], name
        report = verify(engine.store, workers=1)
        assert report.ok, (name, report.to_json())
        _assert_acknowledged_once(engine, acks)
        assert time.monotonic() - started < 240
    finished = subprocess.run(commands["send-loop"], env=_env(), capture_output=True, timeout=300)
    assert finished.returncode == 0, finished.stderr.decode()
    final = engine.ingest(lines, batch=50)
    assert final.rejected == [] or all("before" in r.error or "not allowed" in r.error for r in final.rejected)
    assert final.accepted + final.already_applied + len(final.rejected) == len(lines)
    assert sorted(_sent_keys(engine)) == sorted(event.key for event in send_loop.send_events())
    _assert_acknowledged_once(engine, acks)
    assert verify(engine.store, workers=1).ok
    assert engine.ingest(lines, batch=50).accepted == 0
    entries = sum(len(engine.history(f"s{i:03d}")) for i in range(send_loop.PATIENTS))
    for event in send_loop.send_events():  # every send retried with its key: nothing new is written
        if event.event == "enroll":
            engine.enroll(event.patient, event.at, version=1, idempotency_key=event.key)
        else:
            engine.send(event.patient, event.event, event.at, event.data, idempotency_key=event.key)
    assert sum(len(engine.history(f"s{i:03d}")) for i in range(send_loop.PATIENTS)) == entries
    engine.close()


def _sender(url: str, stop: threading.Event, errors: list[BaseException], patients: int = 60) -> None:
    engine = Engine(url, FakeClock(NOW))
    rng = random.Random(SEED)
    at = T0 + timedelta(days=1)
    try:
        while not stop.is_set():
            at += timedelta(seconds=1)
            pid = f"p{rng.randrange(patients):04d}"
            engine.send(pid, "reassess", at, reassess_data(pain=rng.choice([6, 7])))
    except BaseException as err:  # pragma: no cover - reported by the test
        errors.append(err)
    finally:
        engine.close()


def _cohort(engine: Engine, size: int) -> None:
    report = engine.ingest([line for line in _events(size) if '"reassess"' not in line], batch=100)
    assert report.rejected == []


def _course(engine: Engine, patient: str) -> list[tuple[str, object, list[str]]]:
    return [(e.event, e.at, e.config_after) for e in engine.history(patient)]


SWEEPS = [T0 + timedelta(weeks=week, days=1) for week in (2, 3, 4)]


def test_parallel_tick_beside_a_live_sender_and_a_worker(engine: Engine, tmp_path: Path) -> None:
    """A parallel sweep and a worker beside a sender writing in a tight loop to half the patients:
    every sweep completes, the other half advance exactly as in a quiet single sweep, nothing is lost.

    (On SQLite the sweep's workers come from a fork server: forked from this process, where the
    sender thread holds the write lock, they would wait forever for a lock nobody holds.)"""
    _cohort(engine, 60)
    quiet = Engine(f"sqlite:///{tmp_path / 'quiet.db'}", FakeClock(NOW))
    _cohort(quiet, 60)
    stop, errors = threading.Event(), []
    sender = threading.Thread(target=_sender, args=(engine.url, stop, errors, 30))
    sender.start()
    try:
        worker = subprocess.Popen(
            [*CARE, "--db", engine.url, "worker", "--once", "--batch", "5", "--at", SWEEPS[0].isoformat()],
            env=_env(),
            stdout=subprocess.DEVNULL,
        )
        for at in SWEEPS:
            report = engine.tick(at, batch=5, workers=2)
            assert report.skipped == {}
            quiet.tick(at, batch=5)
        assert worker.wait(timeout=120) == 0
    finally:
        stop.set()
        sender.join(timeout=30)
    assert not errors, errors
    for i in range(30, 60):
        pid = f"p{i:04d}"
        assert _course(engine, pid) == _course(quiet, pid), pid
    assert all(int(patient[1:]) < 30 for patient, _ in engine.store.due_ids(SWEEPS[-1]))
    assert any(e.event == "tick" for e in engine.history("p0059"))
    assert verify(engine.store, workers=1).ok
    quiet.close()


def test_verify_during_live_writes_raises_no_false_alarm(engine: Engine) -> None:
    """Verifying again and again while a sender writes never reports a problem."""
    _cohort(engine, 60)
    stop, errors = threading.Event(), []
    sender = threading.Thread(target=_sender, args=(engine.url, stop, errors))
    sender.start()
    try:
        deadline = time.monotonic() + 8
        runs = 0
        while time.monotonic() < deadline:
            report = verify(engine.store, workers=1)
            assert report.ok, report.to_json()
            runs += 1
    finally:
        stop.set()
        sender.join(timeout=30)
    assert runs >= 2 and not errors


@pytest.fixture(scope="module")
def big_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """4,000 patients assessed at T0 (due three weeks later), in a file shared by the signal tests."""
    url = f"sqlite:///{tmp_path_factory.mktemp('big') / 'carepath.db'}"
    engine = Engine(url, FakeClock(NOW))
    lines = [line for line in _events(4000) if '"reassess"' not in line]
    assert engine.ingest(lines, batch=500, workers=2).rejected == []
    engine.close()
    return url


def _copy(url: str, tmp_path: Path) -> str:
    import sqlite3

    target = tmp_path / "copy.db"
    source, copy = sqlite3.connect(url.removeprefix("sqlite:///")), sqlite3.connect(target)
    source.backup(copy)  # the WAL's pages too, consistently
    source.close()
    copy.close()
    return f"sqlite:///{target}"


SWEEP = (T0 + timedelta(weeks=3)).isoformat()


def _start_and_wait_for_workers(command: list[str]) -> tuple[subprocess.Popen[bytes], list[int]]:
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    workers: list[int] = []
    while time.monotonic() < deadline and len(workers) < 2 and process.poll() is None:
        workers = _children(process.pid)
        time.sleep(0.01)
    return process, workers


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find child processes")
@pytest.mark.parametrize(
    ("command", "sig", "status"),
    [
        (["import", "EVENTS", "--workers", "2", "--batch", "20"], "SIGINT", 130),
        (["import", "EVENTS", "--workers", "2", "--batch", "20"], "SIGTERM", 143),
        (["tick", "--at", SWEEP, "--workers", "2", "--batch", "20"], "SIGTERM", 143),
        (["verify", "--workers", "2"], "SIGTERM", 143),
    ],
    ids=["import-int", "import-term", "tick-term", "verify-term"],
)
def test_a_signal_stops_a_parallel_command_and_its_workers(
    big_db: str, tmp_path: Path, command: list[str], sig: str, status: int
) -> None:
    """SIGTERM or Ctrl-C: the command kills its workers and exits 143 or 130 within seconds,
    leaving a log that verifies."""
    import signal

    url = _copy(big_db, tmp_path)
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(line for line in _events(4000) if '"reassess"' in line) + "\n")
    args = [arg.replace("EVENTS", str(source)) for arg in command]
    process, workers = _start_and_wait_for_workers([*CARE, "--db", url, *args])
    assert workers, "the command started no workers"
    signalled = time.monotonic()
    process.send_signal(getattr(signal, sig))
    _, err = process.communicate(timeout=30)
    took = time.monotonic() - signalled
    assert process.returncode == status, err.decode()
    assert err.decode().strip() == f"carepath: {'terminated' if sig == 'SIGTERM' else 'interrupted'}"
    assert took < 10, took
    assert _wait_gone(workers) == []
    assert verify(Engine(url, FakeClock(NOW)).store, workers=1).ok


def _poison_upper_half(url: str, sql: str) -> str:
    """Run `sql` (with :low) on the patients of the second of two id ranges; returns where it starts."""
    engine = Engine(url, FakeClock(NOW))
    low = engine.store.id_boundaries(2)[0]
    engine.store.execute_raw(sql, {"low": low})
    engine.close()
    return low


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find child processes")
def test_a_failing_sweep_worker_stops_the_other_at_once(big_db: str, tmp_path: Path) -> None:
    """One worker of `tick --workers 2` fails on its first patient (a version this process does not
    know): the command exits 2 naming it at once, the other worker stopped before the end of its
    range (some of its patients are still due), no process is left, and nothing was half-applied."""
    url = _copy(big_db, tmp_path)
    low = _poison_upper_half(url, "UPDATE carepath_patients SET version = 99 WHERE patient_id >= :low")
    process, workers = _start_and_wait_for_workers(
        [*CARE, "--db", url, "tick", "--at", SWEEP, "--workers", "2", "--batch", "20"]
    )
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2, err.decode()
    assert "99" in err.decode() and len(err.decode().strip().splitlines()) == 1, err.decode()
    assert _wait_gone(workers) == []
    engine = Engine(url, FakeClock(NOW))
    lower_due = [patient for patient, _ in engine.store.due_ids(datetime.fromisoformat(SWEEP)) if patient < low]
    assert lower_due, "the other worker ran to the end of its range"
    engine.store.execute_raw("UPDATE carepath_patients SET version = 1 WHERE patient_id >= :low", {"low": low})
    assert verify(engine.store, workers=1).ok
    engine.close()
