"""Profile the peer workload (bench/peers) on carepath: CPU microseconds per call by outcome, and
the top functions under cProfile. `python bench/profile_send.py [patients] [sort]`."""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
os.environ.setdefault("PEER_PATIENTS", sys.argv[1] if len(sys.argv) > 1 else "500")

import common
from peer_carepath import commands

from pathway import Engine, FakeClock
from states import EventNotAllowed


def run_command(engine: Engine, pid: str, at: datetime, cmd: tuple[str, dict[str, Any]] | None) -> str:
    """One command of the workload: "enroll", "send accepted" or "send rejected" (nothing written)."""
    if cmd is None:
        engine.enroll(pid, at, version=1, factors={})
        return "enroll"
    try:
        engine.send(pid, cmd[0], at, cmd[1])
    except EventNotAllowed:
        return "send rejected"
    return "send accepted"


def workload(url: str, cmds: list[tuple], costs: dict[str, list[int]] | None) -> None:
    clock = FakeClock(cmds[0][1])
    engine = Engine(url, clock)
    engine.store.migrate()
    cpu = time.process_time_ns if costs is not None else int
    for pid, at, cmd in cmds:
        clock.set(at)
        start = cpu()
        kind = run_command(engine, pid, at, cmd)
        if costs is not None:
            costs[kind].append(cpu() - start)
    engine.close()


def main() -> None:
    cmds = commands(common.scenario())
    sort = sys.argv[2] if len(sys.argv) > 2 else "tottime"
    with tempfile.TemporaryDirectory() as tmp:
        costs: dict[str, list[int]] = defaultdict(list)
        workload(f"sqlite:///{tmp}/a.db?synchronous=normal", cmds, costs)
        for kind, ns in sorted(costs.items()):
            print(f"{kind:14} {len(ns):6} calls  {sum(ns) / len(ns) / 1000:7.0f} us CPU each")
        profile = cProfile.Profile()
        profile.enable()
        workload(f"sqlite:///{tmp}/b.db?synchronous=normal", cmds, None)
        profile.disable()
    pstats.Stats(profile).sort_stats(sort).print_stats(35)


if __name__ == "__main__":
    main()
