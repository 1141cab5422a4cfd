"""Runtime tuning for bulk work (imports, sweeps, verification)."""

from __future__ import annotations

import gc
import os
import select
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["bulk_allocation", "parallel_map", "stop_processes", "tie_to_parent", "worker_context"]

T = TypeVar("T")

# The bulk paths allocate many short-lived, acyclic objects (rows, dicts, records) that reference
# counting frees at once; at the default threshold the cycle collector ran every 700 allocations
# and cost about 15 % of an import.
_BULK_THRESHOLD = (50_000, 20, 20)


# The thresholds are the whole process's: blocks entered from several threads share one setting,
# taken on the first entry and given back on the last exit.
_bulk_lock = threading.Lock()
_bulk_depth = 0
_bulk_previous: tuple[int, int, int] = gc.get_threshold()


@contextmanager
def bulk_allocation() -> Iterator[None]:
    """Run the cycle collector less often for the duration of a bulk operation.

    This changes the whole process, so the library never does it on its own: a program doing
    bulk work (the command line's import, tick, verify, what-if and demo) opts in. Nested and
    concurrent blocks are safe; the thresholds found before the first come back after the last.
    """
    global _bulk_depth, _bulk_previous
    with _bulk_lock:
        if _bulk_depth == 0:
            _bulk_previous = gc.get_threshold()
            gc.set_threshold(*_BULK_THRESHOLD)
        _bulk_depth += 1
    try:
        yield
    finally:
        with _bulk_lock:
            _bulk_depth -= 1
            if _bulk_depth == 0:
                gc.set_threshold(*_bulk_previous)


# What a fork server imports once, so that the workers it forks start with it loaded.
_PRELOAD = ["pathway._engine", "pathway._ingest", "pathway._replay"]


def worker_context() -> Any:
    """Where to start worker processes: they open their own database connections and use nothing
    else inherited.

    A process with one thread forks them, so they start with every module imported. A process
    with other threads (a service sending events while it sweeps) must not: a fork copies SQLite's
    per-process lock records as another thread left them mid-transaction, and the worker would
    then wait forever for a write lock that no process holds. Its workers come from a fork
    server, a fresh process that has never opened a database (or are spawned where there is none).
    """
    import multiprocessing  # here, like the other process machinery: one-row commands never need it

    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)
        return context
    return multiprocessing.get_context("spawn")


_PR_SET_PDEATHSIG = 1


def tie_to_parent(parent: int | None = None) -> None:
    """Make this worker process die with its parent: never an orphan writing on its own.

    `parent` is the command's process when that is not this process's parent: workers started by
    a fork server are its children, and the fork server itself only ends once they have. On Linux
    the kernel sends SIGKILL when the direct parent dies (prctl PR_SET_PDEATHSIG); a daemon thread
    ends the process when the command's process is gone (waiting on a pidfd where there is one,
    else noticing the process is re-parented or no longer exists).
    """
    direct = os.getppid()
    parent = direct if parent is None else parent
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the watchdog below serves
            pass
    if os.getppid() != direct or direct == 1 or not _exists(parent):  # died before the watch began
        os._exit(1)
    pidfd = None
    if parent != direct and hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(parent)
        except ProcessLookupError:
            os._exit(1)
        except OSError:  # pragma: no cover - a kernel without pidfds: the polling below serves
            pidfd = None

    def watch() -> None:
        if pidfd is not None:
            select.select([pidfd], [], [])  # readable once the process has ended
            os._exit(1)
        while os.getppid() == direct and _exists(parent):
            threading.Event().wait(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="carepath-parent-watch", daemon=True).start()


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process reuses the id
        return False
    return True


def stop_processes(processes: Sequence[Any], queues: Sequence[Any] = ()) -> None:
    """Kill worker processes at once and make sure no queue's feeder thread can block our exit."""
    for queue in queues:
        queue.cancel_join_thread()
    for process in processes:
        if process.is_alive():
            process.kill()
    for process in processes:
        process.join(timeout=5)
    for queue in queues:
        queue.close()


def parallel_map(work: Callable[..., T], calls: Sequence[tuple[Any, ...]], workers: int) -> Iterator[T]:
    """`work(*call)` for each call, in worker processes tied to this one, results in call order.

    The first failure, in whichever worker (or an interrupt), kills every worker at once and is
    raised: no worker outlives the command, none is left computing for a result nobody will read.
    """
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=worker_context(), initializer=tie_to_parent, initargs=(os.getpid(),)
    )
    try:
        futures = [pool.submit(work, *call) for call in calls]
        pending, given = set(futures), 0
        while given < len(futures):
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                if future.exception() is not None:
                    future.result()  # raises it, without waiting for the calls before it
            while given < len(futures) and futures[given].done():
                yield futures[given].result()
                given += 1
    except BaseException:
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        stop_processes(processes)
        raise
    pool.shutdown(wait=True)
