"""`carepath demo`: a handful of patients run through realistic reassessments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from .app import app
from .render import console, styled_state

FULL_PICTURE = ["buttock_pain", "sitting_aggravation", "sciatic_notch_tenderness", "fair_test", "pace_sign"]


def _course(pains: list[float], fasciculations: str = "improving") -> list[dict[str, Any]]:
    return [{"pain": p, "fasciculations": fasciculations, "red_flags": []} for p in pains]


@app.command()
def demo(
    directory: Annotated[Path, typer.Option("--dir", help="Where to write the demo database.")] = Path("carepath-demo"),
) -> None:
    """Simulate patients on the embedded SQLite default and print their states and plans.

    Example: carepath demo --dir /tmp/carepath-demo
    """
    from ..clock import FakeClock
    from ..engine import Engine

    directory.mkdir(parents=True, exist_ok=True)
    db = directory / "carepath.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    start = datetime(2026, 1, 5, 9, tzinfo=UTC)
    clock = FakeClock(start + timedelta(weeks=26))  # records are stamped when the simulation ends
    engine = Engine(f"sqlite:///{db}", clock)
    patients: dict[str, tuple[dict[str, Any], list[str], list[dict[str, Any]]]] = {
        "responder": ({"age": 34}, FULL_PICTURE, _course([5, 2])),
        "partial-responder": ({"age": 52}, FULL_PICTURE, _course([7, 6, 6, 4, 4], "stable")),
        "non-responder": ({"age": 70, "anticoagulant": True}, FULL_PICTURE, _course([8, 8, 8, 8, 8, 8, 8], "present")),
        "red-flag": ({}, FULL_PICTURE, [{"pain": 6, "fasciculations": "present", "red_flags": ["cauda_equina"]}]),
        "radiculopathy": ({}, [*FULL_PICTURE, "straight_leg_raise"], []),
    }
    for patient, (factors, findings, course) in patients.items():
        engine.enroll(patient, start, factors=factors)
        engine.send(patient, "assess", start, {"findings": findings, "pain": 8, "fasciculations": "present", "red_flags": []})
        at = start
        for visit in course:
            if engine.status(patient).state not in ("first_line", "second_line", "third_line"):
                break
            at += timedelta(weeks=3)
            engine.tick(at)
            engine.send(patient, "reassess", at, visit)
    out = console()
    for patient in patients:
        status = engine.status(patient)
        recommended = [item.text for item in status.plan if item.status in ("recommended", "caution")][:3]
        out.print(f"[bold]{patient:18}[/] {styled_state(status.state):30} " + " | ".join(recommended))
    out.print(f"\ndatabase: {db}  (try: carepath --db sqlite:///{db} status non-responder)")
