"""A clinic's send loop for the fault tests: `carepath enroll`/`send` one event after another, each
with an idempotency key, writing the key to an acknowledgement file once the command exited 0.

    python -m tests.send_loop DB_URL ACKS

It resumes after the last acknowledged event (that one's retry is harmless: its key is recorded).
Exit 0 when all were acknowledged, 1 when one was refused for another reason than the database
being busy or unreachable (the refusal on stderr).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tests.conftest import T0
from tests.helpers import assess_data, reassess_data

PATIENTS = 6
# Later than anything the other commands of the rotation write or sweep: no sweep moves these patients.
START = T0 + timedelta(weeks=10)
RETRIES = 50  # a busy or unreachable database: exit 5, tried again shortly


@dataclass(frozen=True)
class Event:
    key: str
    patient: str
    event: str  # "enroll" or the event sent
    at: datetime
    data: dict[str, Any]

    def command(self) -> list[str]:
        """The `carepath` command line that records it."""
        if self.event == "enroll":
            args = ["enroll", self.patient, "--version", "1"]
        else:
            args = ["send", self.patient, self.event, "--data", json.dumps(self.data)]
        return [*args, "--at", self.at.isoformat(), "--idempotency-key", self.key]


def send_events() -> list[Event]:
    """Every event, in the order the clinic sends them."""
    events: list[Event] = []
    for i in range(PATIENTS):
        pid = f"s{i:03d}"
        events.append(Event(f"{pid}-enrol", pid, "enroll", START, {}))
        events.append(Event(f"{pid}-assess", pid, "assess", START + timedelta(hours=1), assess_data()))
        for week in (1, 2, 3):
            events.append(Event(f"{pid}-week{week}", pid, "reassess", START + timedelta(weeks=week), reassess_data()))
    return events


def run(url: str, acks: Path) -> int:
    from pathway.cli import main

    events = send_events()
    done = len(acks.read_text().split()) if acks.exists() else 0
    with acks.open("a") as out:
        for event in events[done:]:
            for _ in range(RETRIES):
                with contextlib.redirect_stdout(io.StringIO()):
                    status = main(["--db", url, *event.command()])
                if status != 5:
                    break
                time.sleep(0.05)
            if status != 0:
                sys.stderr.write(f"{event.key}: exit {status}\n")
                return 1
            out.write(event.key + "\n")
            out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], Path(sys.argv[2])))
