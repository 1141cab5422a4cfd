"""The library without any extra: enrol, send, tick and verify on SQLite, then print "ok".

Run as a script (tests/test_extras.py runs it with every optional package blocked, and in a
fresh virtual environment holding only the core install); exits non-zero on any failure.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pathway import Engine, FakeClock, verify

T0 = datetime(2026, 1, 5, 9, tzinfo=UTC)
FINDINGS = ["buttock_pain", "sitting_aggravation", "fair_test", "pace_sign"]
ASSESS = {"findings": FINDINGS, "pain": 8, "fasciculations": "present", "red_flags": []}
OPTIONAL = ("matplotlib", "typer", "rich", "graphviz", "psycopg", "cryptography")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        clock = FakeClock(T0 + timedelta(weeks=12))
        engine = Engine(f"sqlite:///{Path(tmp) / 'core.db'}", clock)
        try:
            engine.enroll("p1", T0, version=1)
            engine.send("p1", "assess", T0, ASSESS)
            swept = engine.tick(T0 + timedelta(weeks=3))
            report = verify(engine.store)
            state = engine.status("p1").state
        finally:
            engine.close()
    loaded = sorted(name for name in OPTIONAL if sys.modules.get(name) is not None)
    if not report.ok or swept.advanced != 1 or loaded:
        print(f"failed: verify ok={report.ok}, ticked {swept.advanced}, optional packages loaded {loaded}")
        return 1
    print(f"ok: {state}, {report.events} entries verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
