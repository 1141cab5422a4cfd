"""Pages (WAL frames) each commit writes, and the COMMIT's CPU, on the peer workload (bench/peers), as
shipped and with one index or unique constraint left out: what each costs a command's commit.

Measurement only: the variants alter throw-away copies of the schema, never carepath's own.
`python bench/commit_pages.py [patients]` (default 1000).
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
os.environ.setdefault("PEER_PATIENTS", sys.argv[1] if len(sys.argv) > 1 else "1000")

import common
from peer_carepath import commands
from profile_send import run_command

from pathway import Engine, FakeClock
from persistence._store import Transaction

FRAME_BYTES = 4096 + 24  # a page and its WAL frame header

Edit = str | tuple[str, Callable[[str], str]]  # a statement, or (table, a change to its CREATE TABLE)


def _without(text: str) -> Callable[[str], str]:
    return lambda sql: sql.replace(text, "")


AUDIT_SEQ = ("carepath_audit", _without(", \n\tCONSTRAINT uq_carepath_audit_seq UNIQUE (patient_id, pathway, seq)"))
OUTBOX_EVENT_ID = ("carepath_outbox", _without(", \n\tUNIQUE (event_id)"))
VARIANTS: dict[str, list[Edit]] = {
    "as shipped": [],
    "- ix_carepath_patients_state": ["DROP INDEX ix_carepath_patients_state"],
    "- ix_carepath_patients_due": ["DROP INDEX ix_carepath_patients_due"],
    "- ix_carepath_outbox_delivered": ["DROP INDEX ix_carepath_outbox_delivered"],
    "- outbox UNIQUE (event_id)": [OUTBOX_EVENT_ID],
    "- audit UNIQUE (patient, pathway, seq)": [AUDIT_SEQ],
    "- all five": [
        "DROP INDEX ix_carepath_patients_state",
        "DROP INDEX ix_carepath_patients_due",
        "DROP INDEX ix_carepath_outbox_delivered",
        OUTBOX_EVENT_ID,
        AUDIT_SEQ,
    ],
}

_commit_cpu: list[int] = []


def _timed_control(original: Callable[[Transaction, str], None]) -> Callable[[Transaction, str], None]:
    def control(tx: Transaction, sql: str) -> None:
        start = time.thread_time_ns()
        original(tx, sql)
        if sql == "COMMIT":
            _commit_cpu.append(time.thread_time_ns() - start)

    return control


def _alter(path: str, edits: list[Edit]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    for edit in edits:
        if isinstance(edit, str):
            conn.execute(edit)
            continue
        table, change = edit
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()
        indexes = [
            row[0]
            for row in conn.execute(
                "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND type = 'index' AND sql IS NOT NULL", (table,)
            )
        ]
        conn.execute(f"DROP TABLE {table}")
        conn.execute(change(sql))
        for index in indexes:
            conn.execute(index)
    conn.close()


def run(cmds: list[Any], edits: list[Edit]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        db = f"{tmp}/pages.db"
        clock = FakeClock(cmds[0][1])
        engine = Engine(f"sqlite:///{db}?synchronous=normal", clock)
        engine.store.migrate()
        _alter(db, edits)
        fairy = engine.store._checkout()
        fairy.dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")  # the WAL only grows: frames = size
        fairy.dbapi_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.store._checkin(fairy)
        frames: dict[str, list[float]] = defaultdict(list)
        cpu: dict[str, list[int]] = defaultdict(list)
        for pid, at, cmd in cmds:
            clock.set(at)
            before, commits = os.path.getsize(db + "-wal"), len(_commit_cpu)
            kind = run_command(engine, pid, at, cmd).removesuffix(" accepted")
            if kind == "send rejected":
                continue  # nothing written
            frames[kind].append((os.path.getsize(db + "-wal") - before) / FRAME_BYTES)
            cpu[kind].extend(_commit_cpu[commits:])
        engine.close()
    return " | ".join(f"{kind}: {_summary(frames[kind], cpu[kind])}" for kind in ("enroll", "send"))


def _summary(frames: list[float], cpu: list[int]) -> str:
    median_us = sorted(cpu)[len(cpu) // 2] / 1000
    return f"{sum(frames) / len(frames):5.2f} pages, COMMIT {median_us:5.1f} us"


def main() -> None:
    Transaction.control = _timed_control(Transaction.control)  # type: ignore[method-assign]
    cmds = commands(common.scenario())
    print("per committed command: WAL pages written, median COMMIT CPU")
    for name, edits in VARIANTS.items():
        print(f"{name:40} {run(cmds, edits)}")


if __name__ == "__main__":
    main()
