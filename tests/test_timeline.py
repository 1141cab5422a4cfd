"""`timeline`: pain over time on state bands with events and thresholds, as an image file."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pathway import Engine, TimelineError
from pathway._timeline import plot_timeline
from pathway.cli import main
from states import get_pathway
from tests.conftest import T0
from tests.helpers import assess_data, reassess_data

ROOT = Path(__file__).resolve().parent.parent
WEEK = timedelta(weeks=1)
PIRIFORMIS = get_pathway("piriformis", 1)
STATE_COLOURS = PIRIFORMIS.presentation.colours


def _course(engine: Engine, patient: str = "p1") -> None:
    """First line, escalation at 6 weeks, then resolution in second line, with ticks in between."""
    engine.enroll(patient, T0, version=1)
    engine.send(patient, "assess", T0, assess_data(pain=8))
    engine.send(patient, "reassess", T0 + 3 * WEEK, reassess_data(pain=7))
    engine.tick(T0 + 5.5 * WEEK)
    engine.send(patient, "reassess", T0 + 6 * WEEK, reassess_data(pain=6))
    engine.send(patient, "reassess", T0 + 9 * WEEK, reassess_data(pain=4, fasciculations="improving"))
    engine.send(patient, "reassess", T0 + 12 * WEEK, reassess_data(pain=2, fasciculations="absent"))


def _pixels(path: Path) -> Any:
    from matplotlib.image import imread

    return imread(path)


def _assert_image_with_content(path: Path) -> Any:
    """A PNG of sensible size, with many colours: not a blank canvas. Returns its pixels."""
    import numpy as np

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000
    pixels = _pixels(path)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 600
    assert pixels.std() > 0.05
    sample = pixels[::4, ::4, :3].reshape(-1, 3)
    assert len(np.unique(sample, axis=0)) > 50
    return pixels


def _has_colour(pixels: Any, hex_colour: str, alpha: float = 0.45) -> bool:
    """Whether a state band's colour (blended on white at the band's alpha) covers part of the image."""
    import numpy as np

    rgb = np.array([int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    blended = alpha * rgb + (1 - alpha) * np.ones(3)
    return bool((np.abs(pixels[::2, ::2, :3] - blended).max(axis=-1) < 0.02).mean() > 0.01)


def test_plot_draws_a_readable_png(sqlite_engine: Engine, tmp_path: Path) -> None:
    """A full course draws a PNG with content, including the first- and second-line bands."""
    _course(sqlite_engine)
    path = plot_timeline(sqlite_engine.history("p1"), PIRIFORMIS, tmp_path / "p1.png")
    pixels = _assert_image_with_content(path)
    assert _has_colour(pixels, STATE_COLOURS["first_line"])
    assert _has_colour(pixels, STATE_COLOURS["second_line"])
    assert not _has_colour(pixels, STATE_COLOURS["third_line"])


def test_svg_follows_the_suffix(sqlite_engine: Engine, tmp_path: Path) -> None:
    """The format follows the file's suffix; the SVG names the thresholds in its legend."""
    _course(sqlite_engine)
    path = plot_timeline(sqlite_engine.history("p1"), PIRIFORMIS, tmp_path / "p1.svg")
    text = path.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    assert "resolved: pain &lt;= 2" in text
    assert "30% improvement on the line baseline" in text


def test_a_patient_without_observations_still_draws(sqlite_engine: Engine, tmp_path: Path) -> None:
    """An enrolled patient with no pain yet gets the assessment band and the enrolment event."""
    sqlite_engine.enroll("p1", T0, version=1)
    path = plot_timeline(sqlite_engine.history("p1"), PIRIFORMIS, tmp_path / "p1.png")
    assert _has_colour(_pixels(path), STATE_COLOURS["assessment"])


def test_no_entries_is_an_error(tmp_path: Path) -> None:
    """Nothing to draw raises TimelineError and writes no file."""
    with pytest.raises(TimelineError):
        plot_timeline([], PIRIFORMIS, tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()


def test_cli_writes_the_file(sqlite_engine: Engine, sqlite_url: str, tmp_path: Path) -> None:
    """`timeline PATIENT -o FILE.png` writes the image and exits 0."""
    _course(sqlite_engine)
    out = tmp_path / "p1.png"
    assert main(["--db", sqlite_url, "timeline", "p1", "-o", str(out)]) == 0
    _assert_image_with_content(out)


def test_cli_bad_requests(sqlite_engine: Engine, sqlite_url: str, tmp_path: Path) -> None:
    """An unknown patient exits 4; a missing -o is a usage error, exit 2."""
    _course(sqlite_engine)
    assert main(["--db", sqlite_url, "timeline", "nobody", "-o", str(tmp_path / "x.png")]) == 4
    assert main(["--db", sqlite_url, "timeline", "p1"]) == 2
    assert not (tmp_path / "x.png").exists()


def test_cli_import_stays_light() -> None:
    """Importing the CLI loads neither matplotlib nor graphviz (cold start)."""
    code = "import sys, pathway.cli; print(sorted(m for m in ('matplotlib', 'graphviz') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
