"""carepath benchmarks: each figure printed beside its floor and the ratio (>= 1 meets the floor).

Writes bench/results.json: {"machine": {...}, "results": [{"name", "value", "unit", "floor", "ratio"}]}.
Run with `make bench`. Sizes can be reduced for a quick look with CAREPATH_BENCH_SCALE=0.1.
The floors are absolute; the machine line printed first (a pure-Python reference and a raw SQLite
commit) says how fast the machine is, so runs on different machines can be told apart.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from statemachine.orderedset import OrderedSet

from pathway import Engine, FakeClock, bulk_allocation
from persistence import GENESIS
from persistence._store import patients as patients_table
from states import get_pathway

ROOT = Path(__file__).resolve().parent
SCALE = float(os.environ.get("CAREPATH_BENCH_SCALE", "1"))
T0 = datetime(2026, 1, 5, 9, tzinfo=UTC)
FINDINGS = ["buttock_pain", "sitting_aggravation", "fair_test", "pace_sign"]
TREATMENT = ["treatment", "line", "first_line", "monitoring", "scheduled"]


@dataclass
class Result:
    name: str
    value: float
    unit: str
    floor: float
    higher_is_better: bool = True
    note: str = ""

    @property
    def ratio(self) -> float:
        if self.higher_is_better:
            return self.value / self.floor
        return self.floor / self.value if self.value else float("inf")

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": round(self.value, 3),
            "unit": self.unit,
            "floor": round(self.floor, 3),
            "ratio": round(self.ratio, 3),
            "note": self.note,
        }


def scaled(n: int) -> int:
    return max(10, int(n * SCALE))


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def assess(pain: float = 8) -> dict[str, Any]:
    return {"findings": FINDINGS, "pain": pain, "fasciculations": "present", "red_flags": []}


def reassess(pain: float) -> dict[str, Any]:
    return {"pain": pain, "fasciculations": "stable", "red_flags": []}


# -- floor: restore the chart + one transition + raw sqlite3 UPDATE + INSERT, committed ---------------


class _Model:
    state: Any = None


def floor_send(workdir: Path, n: int) -> float:
    """Events/s of the bare minimum a durable send does, measured like for like in this run."""
    definition = get_pathway("piriformis")
    payload = definition.validate("reassess", reassess(7))
    decision = definition.decide(
        TREATMENT,
        {"line_baseline": 8.0, "line_started_at": T0.isoformat()},
        "reassess",
        payload,
        T0 + timedelta(days=10),
    )
    db = sqlite3.connect(workdir / "floor.db", isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=" + _store_synchronous(), "busy_timeout=30000"):
        db.execute(f"PRAGMA {pragma}")
    db.execute("CREATE TABLE p (id TEXT PRIMARY KEY, configuration TEXT, revision INT)")
    db.execute("CREATE TABLE a (id INTEGER PRIMARY KEY, patient TEXT, seq INT, payload TEXT, config TEXT)")
    db.execute("INSERT INTO p VALUES ('p', '[]', 0)")

    model = _Model()
    model.state = OrderedSet(TREATMENT)
    machine = definition.chart(model=model)

    def run() -> None:
        for i in range(n):
            # Restore the stored configuration on a reused chart (no entry actions), take one transition.
            machine.current_state_value = OrderedSet(TREATMENT)
            machine.send("reassess", decision=decision)
            configuration = json.dumps(list(machine.configuration_values))
            db.execute("BEGIN IMMEDIATE")
            db.execute("UPDATE p SET configuration = ?, revision = revision + 1 WHERE id = 'p'", (configuration,))
            db.execute(
                "INSERT INTO a (patient, seq, payload, config) VALUES ('p', ?, ?, ?)",
                (i, json.dumps(payload.model_dump(mode="json")), configuration),
            )
            db.execute("COMMIT")

    rate = n / timed(run)
    db.close()
    return rate


def _store_synchronous() -> str:
    from persistence import _store as store

    return str(store.SQLITE_SYNCHRONOUS)


# -- carepath figures ------------------------------------------------------------------------------------


def send_sqlite(workdir: Path, n: int, patients: int = 100) -> float:
    return send_rate(f"sqlite:///{workdir / 'send.db'}", n, patients)


def send_rate(url: str, n: int, patients: int = 100) -> float:
    """Durable single-event sends per second (each its own transaction) over `patients` patients."""
    clock = FakeClock(T0 + timedelta(days=400))
    engine = Engine(url, clock)
    ids = [f"p{i}" for i in range(patients)]
    for pid in ids:
        engine.enroll(pid, T0, version=1)
        engine.send(pid, "assess", T0, assess())

    def run() -> None:
        for i in range(n):
            engine.send(ids[i % patients], "reassess", T0 + timedelta(days=1, seconds=i), reassess(7))

    rate = n / timed(run)
    engine.store.dispose()
    return rate


def send_loop_rss(workdir: Path, n: int) -> float:
    """Peak RSS (MiB) of a new process that runs a send loop like `send_sqlite` (imports included)."""
    out = subprocess.run(
        [sys.executable, __file__, "--send-loop", str(workdir / "rss.db"), str(n)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def _send_loop_main(path: str, n: int) -> None:
    send_rate(f"sqlite:///{path}", n)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def cohort_lines(patients: int, visits: int) -> Iterator[str]:
    for i in range(patients):
        pid = f"p{i:07d}"
        yield json.dumps(
            {"patient": pid, "event": "enroll", "at": T0.isoformat(), "version": 1, "factors": {"age": 40 + i % 40}}
        )
        yield json.dumps({"patient": pid, "event": "assess", "at": T0.isoformat(), "data": assess()})
        for k in range(1, visits + 1):
            at = T0 + timedelta(days=14 * k, hours=i % 24)
            yield json.dumps(
                {
                    "patient": pid,
                    "event": "reassess",
                    "at": at.isoformat(),
                    "data": reassess(round(8 - 0.3 * k - (i % 3), 1)),
                }
            )


def bulk_sqlite(workdir: Path, patients: int, visits: int) -> tuple[float, Path]:
    path = workdir / "bulk.db"
    return bulk_rate(f"sqlite:///{path}", patients, visits), path


def bulk_rate(url: str, patients: int, visits: int) -> float:
    engine = Engine(url, FakeClock(T0 + timedelta(days=400)))
    lines = list(cohort_lines(patients, visits))
    report = None

    def run() -> None:
        nonlocal report
        with bulk_allocation():  # as `carepath import` does
            report = engine.ingest(lines, workers=os.cpu_count() or 1)

    seconds = timed(run)
    assert report is not None and not report.rejected, report
    engine.store.dispose()
    return len(lines) / seconds


def replay_rate(path: Path) -> tuple[float, str]:
    engine = Engine(f"sqlite:///{path}")
    events = engine.store.count_entries()
    outcome: Any = None

    def run() -> None:
        nonlocal outcome
        with bulk_allocation():  # as `carepath verify` does
            outcome = engine.verify(workers="auto")

    seconds = timed(run)
    engine.store.dispose()
    return events / seconds, f"verify ok={outcome.ok} over {events} events"


def seed_cohort(path: Path | str, total: int, due_fraction: float) -> datetime:
    """`total` patients in first line, a `due_fraction` of them due for a reassessment at the returned time."""
    engine = Engine(path if isinstance(path, str) else f"sqlite:///{path}")
    engine.store.migrate()
    sweep_at = T0 + timedelta(weeks=10)
    due_every = round(1 / due_fraction)
    context = get_pathway("piriformis").start(get_pathway("piriformis").validate_enrollment({}), T0)[1]
    with engine.store.engine.begin() as conn:
        batch: list[dict[str, Any]] = []
        for i in range(total):
            assessed = sweep_at - timedelta(days=15) if i % due_every == 0 else sweep_at - timedelta(days=3)
            ctx = dict(
                context,
                line_baseline=8.0,
                line_started_at=assessed.isoformat(),
                last_assessed_at=assessed.isoformat(),
                last_pain=8.0,
            )
            batch.append(
                {
                    "patient_id": f"c{i:07d}",
                    "pathway": "piriformis",
                    "version": 1,
                    "configuration": TREATMENT,
                    "context": ctx,
                    "state": "first_line",
                    "state_since": assessed,
                    "revision": 2,
                    "next_due_at": assessed + timedelta(weeks=2),
                    "last_event_at": assessed,
                    "last_seq": 2,
                    "last_hash": GENESIS,
                    "created_at": T0,
                    "updated_at": T0,
                }
            )
            if len(batch) == 20_000:
                conn.execute(patients_table.insert(), batch)
                batch = []
        if batch:
            conn.execute(patients_table.insert(), batch)
    if engine.store.dialect == "postgresql":
        # Planner statistics, as autovacuum would have gathered for a table this size by now.
        with engine.store.engine.begin() as conn:
            conn.exec_driver_sql(f"ANALYZE {patients_table.name}")
    engine.store.dispose()
    return sweep_at


def sweep(path: Path | str, sweep_at: datetime, workers: int | None = None) -> tuple[float, float, int]:
    """Time to find the due patients (median of 5) and rate of advancing them."""
    url = path if isinstance(path, str) else f"sqlite:///{path}"
    engine = Engine(url, FakeClock(sweep_at + timedelta(days=1)))
    engine.store.due_ids(sweep_at)  # warm the page cache once, as a running service would be
    finds = []
    for _ in range(5):
        start = time.perf_counter()
        due = engine.store.due_ids(sweep_at)
        finds.append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    # The default batch, and one process per core as `carepath tick` uses for a cohort this size.
    with bulk_allocation():  # as `carepath tick` does
        report = engine.tick(sweep_at, workers=workers or os.cpu_count() or 1)
    seconds = time.perf_counter() - start
    assert report.advanced == len(due), (report, len(due))
    engine.close()
    return statistics.median(finds), report.advanced / seconds, len(due)


def sweep_memory(path: Path, sweep_at: datetime) -> float:
    """Peak Python heap (MB) while advancing the same cohort (tracemalloc slows it, so a separate run)."""
    engine = Engine(f"sqlite:///{path}", FakeClock(sweep_at + timedelta(days=1)))
    tracemalloc.start()
    engine.tick(sweep_at)
    peak_mb = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    engine.close()
    return peak_mb


def cold_start(path: Path, patient: str) -> float:
    from states import write_builtin_caches

    write_builtin_caches()  # as `make install` leaves them (a venv installed before they existed has none)
    exe = Path(sys.executable).with_name("carepath")
    walls = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run(
            [str(exe), "--db", f"sqlite:///{path}", "status", patient, "--json"], check=True, stdout=subprocess.DEVNULL
        )
        walls.append(time.perf_counter() - start)
    return statistics.median(walls)


# PostgreSQL figures run when this server answers (each in a throw-away schema).
PG_URL = os.environ.get("CAREPATH_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextmanager
def pg_schema() -> Iterator[str | None]:
    """A URL on a fresh PostgreSQL schema, dropped afterwards; None when no server answers."""
    try:
        import psycopg

        libpq = PG_URL.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(libpq, autocommit=True, connect_timeout=3) as conn:
            schema = f"bench_{uuid.uuid4().hex[:12]}"
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except Exception:  # no server, no driver, no rights: the PostgreSQL figures are left out
        yield None
        return
    separator = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def postgres_results(n_send: int) -> list[Result]:
    """send, bulk import and a two-worker due sweep on PostgreSQL (empty when no server answers)."""
    results: list[Result] = []
    with pg_schema() as url:
        if url is None:
            print(f"PostgreSQL figures skipped: nothing answers at {PG_URL}", file=sys.stderr)
            return results
        results.append(
            Result("send_postgres", send_rate(url, n_send), "events/s", 500, note="durable single-event send")
        )
    with pg_schema() as url:
        assert url is not None
        results.append(
            Result(
                "bulk_postgres",
                bulk_rate(url, scaled(4_000), 9),
                "events/s",
                10_000,
                note="carepath import: 1,000 per transaction, one process per core",
            )
        )
    with pg_schema() as url:
        assert url is not None
        total = scaled(200_000)
        sweep_at = seed_cohort(url, total, 0.01)
        find_ms, advance, due = sweep(url, sweep_at, workers=2)
        results.append(
            Result("sweep_find_ms_postgres", find_ms, "ms", 20, higher_is_better=False, note=f"{due} due among {total}")
        )
        results.append(Result("sweep_advance_postgres", advance, "patients/s", 5_000, note=f"{due} ticks, 2 workers"))
    return results


def python_reference_ms() -> float:
    """Best of five runs of a fixed pure-Python workload (dicts, strings, calls): how fast this
    interpreter runs on this machine, so figures taken on different machines can be compared."""

    def work() -> None:
        table: dict[str, int] = {}
        for i in range(100_000):
            key = f"p{i % 997:04d}"
            table[key] = table.get(key, 0) + len(key)

    return min(timed(work) for _ in range(5)) * 1000


def sqlite_commit_us() -> float:
    """Median CPU microseconds of one raw sqlite3 BEGIN IMMEDIATE + one-row INSERT + COMMIT (WAL,
    synchronous=NORMAL): what a durable write transaction costs this machine's kernel and SQLite."""
    with tempfile.TemporaryDirectory(prefix="carepath-calibrate-") as tmp:
        db = sqlite3.connect(Path(tmp) / "c.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        costs = []
        for _ in range(2000):
            start = time.process_time()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t (body) VALUES (?)", ("x" * 200,))
            db.execute("COMMIT")
            costs.append(time.process_time() - start)
        db.close()
    return statistics.median(costs) * 1e6


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "sqlite": sqlite3.sqlite_version,
        "scale": SCALE,
        "python_reference_ms": round(python_reference_ms(), 2),
        "sqlite_commit_cpu_us": round(sqlite_commit_us(), 1),
    }


def main() -> int:
    host = machine()  # first, on a machine not yet warmed by the figures
    print(
        f"machine: {host['cpus']} x {host['cpu_model'] or 'unknown CPU'}, Python {host['python']}, "
        f"SQLite {host['sqlite']}; Python reference {host['python_reference_ms']:.1f} ms, "
        f"SQLite commit {host['sqlite_commit_cpu_us']:.1f} us CPU (lower is a faster machine)"
    )
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="carepath-bench-") as tmp:
        workdir = Path(tmp)
        n_send = scaled(3_000)
        floor_rate = floor_send(workdir, n_send)
        results.append(
            Result(
                "send_floor_sqlite",
                floor_rate,
                "events/s",
                floor_rate,
                note="restore chart configuration + 1 transition + raw sqlite3 UPDATE+INSERT committed",
            )
        )
        results.append(
            Result(
                "send_sqlite",
                send_sqlite(workdir, n_send),
                "events/s",
                0.6 * floor_rate,
                note="durable single-event send; floor = 60 % of send_floor_sqlite",
            )
        )
        results.append(
            Result(
                "send_loop_peak_rss_mib",
                send_loop_rss(workdir, n_send),
                "MiB",
                80,
                higher_is_better=False,
                note="peak RSS of a new process running the send loop (imports included)",
            )
        )
        bulk, bulk_db = bulk_sqlite(workdir, scaled(4_000), 9)
        results.append(
            Result(
                "bulk_sqlite",
                bulk,
                "events/s",
                15_000,
                note="carepath import: 1,000 per transaction, one process per core",
            )
        )
        rate, note = replay_rate(bulk_db)
        results.append(Result("replay", rate, "events/s", 15_000, note=note))
        cohort_db = workdir / "cohort.db"
        total = scaled(1_000_000)
        sweep_at = seed_cohort(cohort_db, total, 0.01)
        twin_db = workdir / "cohort-twin.db"
        shutil.copyfile(cohort_db, twin_db)
        find_ms, advance, due = sweep(cohort_db, sweep_at)
        peak_mb = sweep_memory(twin_db, sweep_at)
        results.append(
            Result("sweep_find_ms", find_ms, "ms", 20, higher_is_better=False, note=f"{due} due among {total} patients")
        )
        results.append(Result("sweep_advance", advance, "patients/s", 5_000, note=f"{due} ticks"))
        results.append(
            Result(
                "sweep_peak_memory_mb",
                peak_mb,
                "MB",
                64,
                higher_is_better=False,
                note="Python heap peak while advancing (tracemalloc)",
            )
        )
        results.append(
            Result(
                "status_cold_start_s",
                cold_start(bulk_db, "p0000001"),
                "s",
                0.3,
                higher_is_better=False,
                note="carepath status --json in a new process",
            )
        )
    results.extend(postgres_results(n_send))
    print(f"{'name':22} {'value':>12} {'unit':11} {'floor':>10} {'ratio':>7}")
    for r in results:
        mark = "ok " if r.ratio >= 1 else "LOW"
        print(f"{r.name:22} {r.value:12.2f} {r.unit:11} {r.floor:10.2f} {r.ratio:7.2f} {mark} {r.note}")
    out = ROOT / "results.json"
    out.write_text(json.dumps({"machine": host, "results": [r.as_json() for r in results]}, indent=2) + "\n")
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--send-loop"]:
        _send_loop_main(sys.argv[2], int(sys.argv[3]))
        sys.exit(0)
    sys.exit(main())
