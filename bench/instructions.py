"""Instructions per event of the peer workload (bench/peers) on carepath, counted by valgrind's
callgrind: the same count from run to run whatever else the machine is doing, so two versions of
the code can be compared on a shared machine where CPU seconds vary by 10 % or more.

    python bench/instructions.py [small] [large]     (patients, default 50 and 150)

The workload runs at two sizes in parallel, each under callgrind; the difference divided by the
events between them is the cost of one event with start-up cancelled out, printed in all and by
shared object (the interpreter, SQLite, the C library, orjson...). Kernel time is not counted.
Needs valgrind (with callgrind_annotate); about 4 minutes on two cores.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(ROOT / "peers")]  # bench/profile_send.py and the peer workload
# "  1,234 (12.0%)  file:function [/path/to/object.so]" in callgrind_annotate's listing.
_LINE = re.compile(r"\s*([\d,]+)\s+\([^)]*\)\s+\S+\s+\[([^\]]+)\]")


def _events(patients: int) -> int:
    import common

    return len(common.scenario(patients))


def _run_workload(patients: int) -> None:
    """The peer workload on a fresh SQLite file (synchronous=NORMAL), as bench/profile_send.py runs it."""
    import common
    from peer_carepath import commands
    from profile_send import workload

    with tempfile.TemporaryDirectory() as tmp:
        workload(f"sqlite:///{tmp}/w.db?synchronous=normal", commands(common.scenario(patients)), None)


def _count(patients: int, out: Path) -> subprocess.Popen[bytes]:
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__]
    env = {**os.environ, "PYTHONHASHSEED": "0", "CAREPATH_INSTRUCTIONS_RUN": str(patients)}
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _by_object(out: Path) -> Counter[str]:
    listing = subprocess.run(["callgrind_annotate", "--threshold=100", str(out)], capture_output=True, text=True)
    totals: Counter[str] = Counter()
    for line in listing.stdout.splitlines():
        found = _LINE.match(line)
        if found:
            totals[found.group(2).rsplit("/", 1)[-1]] += int(found.group(1).replace(",", ""))
    return totals


def main() -> int:
    if shutil.which("valgrind") is None or shutil.which("callgrind_annotate") is None:
        print("instructions: valgrind (with callgrind_annotate) is not installed", file=sys.stderr)
        return 2
    small, large = (int(arg) for arg in (sys.argv[1:3] if len(sys.argv) > 2 else ("50", "150")))
    with tempfile.TemporaryDirectory() as tmp:
        outs = {n: Path(tmp) / f"callgrind.{n}" for n in (small, large)}
        runs = [_count(n, out) for n, out in outs.items()]
        if any(run.wait() != 0 for run in runs):
            print("instructions: a run under valgrind failed", file=sys.stderr)
            return 1
        before, after = _by_object(outs[small]), _by_object(outs[large])
    events = _events(large) - _events(small)
    per_event = {name: (after[name] - before[name]) / events for name in after}
    total = sum(per_event.values())
    print(f"{total / 1000:,.1f} thousand instructions per event ({events} events between {small} and {large} patients)")
    for name, count in sorted(per_event.items(), key=lambda item: -item[1])[:10]:
        print(f"  {count / 1000:9,.1f}  {count / total:6.1%}  {name}")
    return 0


if __name__ == "__main__":
    if "CAREPATH_INSTRUCTIONS_RUN" in os.environ:
        _run_workload(int(os.environ["CAREPATH_INSTRUCTIONS_RUN"]))
        sys.exit(0)
    sys.exit(main())
