"""Operations commands: the scheduler worker that advances due patients."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from persistence import StorageUnavailable

from .. import SweepReport
from .app import JsonOption, app, emit_json, engine, parse_time
from .render import console

__all__ = ["EXIT_ALL_SWEEPS_FAILED", "WorkerTotals", "worker"]

# Exit status of a worker none of whose sweeps succeeded (the database error's status).
EXIT_ALL_SWEEPS_FAILED = 5


@dataclass
class WorkerTotals:
    """What a worker did over all its sweeps."""

    sweeps: int = 0
    advanced: int = 0
    unchanged: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    errors: int = 0
    anchors: int = 0

    def add(self, report: SweepReport) -> None:
        self.sweeps += 1
        self.advanced += report.advanced
        self.unchanged += report.unchanged
        self.skipped.update(report.skipped)

    def to_json(self) -> dict[str, Any]:
        return {
            "sweeps": self.sweeps,
            "advanced": self.advanced,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "errors": self.errors,
            "anchors": self.anchors,
        }


@app.command()
def worker(
    batch: Annotated[int, typer.Option(min=1, help="Patients claimed per transaction.")] = 2000,
    once: Annotated[bool, typer.Option("--once", help="Run one sweep and exit.")] = False,
    at: Annotated[
        str | None, typer.Option("--at", help="Sweep as of this ISO 8601 time instead of the clock's time.")
    ] = None,
    interval: Annotated[float, typer.Option(min=0.0, help="Seconds to wait between sweeps.")] = 5.0,
    max_sweeps: Annotated[int | None, typer.Option(min=1, hidden=True)] = None,
    anchor_dir: Annotated[
        Path | None, typer.Option("--anchor-dir", help="Write an anchor (`carepath anchor`) into this folder...")
    ] = None,
    anchor_every: Annotated[
        float, typer.Option("--anchor-every", min=0.0, help="...every this many minutes (with --anchor-dir).")
    ] = 60.0,
    json_: JsonOption = False,
) -> None:
    """Scheduler: advance every due patient's monitoring, sweep after sweep, until interrupted.

    Several workers can share one PostgreSQL database without advancing a patient twice.

    Ctrl-C or SIGTERM stops after the current batch; a database outage is retried at the next sweep.

    With --anchor-dir it also writes an anchor of every chain head there, at start and then every
    --anchor-every minutes (needs an audit key; copy them somewhere writers cannot rewrite).

    Example: carepath --db postgresql+psycopg://postgres@127.0.0.1/test worker --batch 1000
    Example: carepath worker --anchor-dir /var/lib/carepath/anchors --anchor-every 15
    """
    fixed_at = parse_time(at) if at is not None else None
    sweeps = 1 if once else max_sweeps
    totals = WorkerTotals()
    anchored_at: float | None = None
    with _stop_on_signal() as stop:
        while not stop.is_set():
            _sweep(totals, fixed_at, batch, quiet=json_, keep_going=not once)
            if anchor_dir is not None and (anchored_at is None or time.monotonic() - anchored_at >= anchor_every * 60):
                _anchor(totals, anchor_dir, quiet=json_, keep_going=anchored_at is not None)
                anchored_at = time.monotonic()
            if sweeps is not None and totals.sweeps + totals.errors >= sweeps:
                break
            if totals.sweeps + totals.errors == 1:  # connected and swept once: tell the operator it runs
                sys.stderr.write(f"carepath: worker running (batch {batch}, every {interval:g} s); Ctrl-C to stop\n")
            stop.wait(interval)
    if json_:
        emit_json(totals.to_json())
    else:
        console().print(
            f"worker: {totals.sweeps} sweeps, {totals.advanced} advanced, {totals.unchanged} unchanged, "
            f"{len(totals.skipped)} skipped"
        )
    if totals.errors and not totals.sweeps:  # not one sweep got through: the operator must know
        raise typer.Exit(EXIT_ALL_SWEEPS_FAILED)


def _anchor(totals: WorkerTotals, folder: Path, *, quiet: bool, keep_going: bool) -> None:
    """Write one anchor; the first one must succeed (a missing key stops the worker at once)."""
    from .trust import anchor_to_folder

    try:
        path = anchor_to_folder(folder)
    except (StorageUnavailable, OSError) as err:
        if not keep_going:
            raise
        totals.errors += 1
        sys.stderr.write(f"carepath: worker: anchor not written: {err}; retrying\n")
        return
    totals.anchors += 1
    if not quiet:
        console().print(f"anchor written: {path}")


def _sweep(totals: WorkerTotals, fixed_at: datetime | None, batch: int, *, quiet: bool, keep_going: bool) -> None:
    """One sweep at the fixed time or the engine clock's time; in a loop an outage is survivable."""
    eng = engine()
    try:
        report = eng.tick(fixed_at if fixed_at is not None else eng.clock(), batch=batch)
    except StorageUnavailable as err:
        if not keep_going:
            raise
        totals.errors += 1
        sys.stderr.write(f"carepath: worker: {err}; retrying\n")
        return
    totals.add(report)
    if not quiet and (report.advanced or report.skipped):
        console().print(
            f"sweep at {report.at.isoformat()}: {report.advanced} advanced, {report.unchanged} unchanged, "
            f"{len(report.skipped)} skipped"
        )


@contextmanager
def _stop_on_signal() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM, so a sweep in progress finishes and commits first."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be installed from the main thread
        return

    def handle(_signum: int, _frame: FrameType | None) -> None:
        # Not stop.set() here: the handler runs in the main thread, which may be inside
        # stop.wait() holding the event's lock, and setting it would deadlock on that lock.
        threading.Thread(target=stop.set, daemon=True).start()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
