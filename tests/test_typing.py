"""The public API's types are real: mypy (strict) catches a misspelt attribute of a result."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

USE = """
from typing import reveal_type

from pathway import Engine


def current_state(engine: Engine) -> str:
    status = engine.status("p-001")
    reveal_type(status.state)
    reveal_type(status.next_due_at)
    return str(status.stat)
"""


def test_mypy_reports_a_misspelt_status_attribute(tmp_path: Path) -> None:
    """`status.stat` is an error, and `state` / `next_due_at` have their declared types, not Any."""
    source = tmp_path / "uses_status.py"
    source.write_text(USE, encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), str(source)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    errors = [line for line in run.stdout.splitlines() if ": error: " in line]
    assert len(errors) == 1 and '"Status" has no attribute "stat"' in errors[0]
    assert 'Revealed type is "str"' in run.stdout
    assert 'Revealed type is "datetime.datetime | None"' in run.stdout
