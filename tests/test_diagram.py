"""Statechart diagrams: DOT and Mermaid text from the chart class, SVG/PNG through local Graphviz."""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pathway import Engine
from pathway._diagram import DiagramError, GraphvizMissing, UnknownFormat, render, to_dot, to_mermaid
from pathway.cli import main
from states import Pathway, get_pathway, parse_definition
from tests.conftest import T0
from tests.helpers import assess_data

ROOT = Path(__file__).resolve().parent.parent
PIRIFORMIS = get_pathway("piriformis", 1)
SECOND_LINE = ["treatment", "line", "second_line", "monitoring", "due"]
needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None, reason="Graphviz 'dot' is not installed (apt install graphviz)"
)


def _png_has_content(data: bytes) -> None:
    """A PNG signature, a sensible size and more than a blank canvas."""
    import io

    from matplotlib.image import imread

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    pixels = imread(io.BytesIO(data), format="png")
    assert pixels.std() > 0.05
    assert len({tuple(p) for p in pixels.reshape(-1, pixels.shape[-1])[::7]}) > 20


def test_dot_shows_compound_and_parallel_regions_as_clusters() -> None:
    """treatment is a parallel cluster holding the line and monitoring regions, each a cluster."""
    dot = to_dot(PIRIFORMIS)
    assert "compound=true" in dot
    assert 'subgraph "cluster_treatment"' in dot and 'label="treatment (parallel)"' in dot
    treatment = dot.index('"cluster_treatment"')
    assert treatment < dot.index('"cluster_line"') < dot.index('"cluster_monitoring"')
    for state_id in PIRIFORMIS.chart.states_map:
        assert f'"{state_id}"' in dot or f'"cluster_{state_id}"' in dot


def test_edges_carry_events_and_the_names_of_the_rules_deciding_them() -> None:
    """Every guarded rule appears on an edge of its event; chart aliases of events do not."""
    dot = to_dot(PIRIFORMIS)
    assert 'label="reassess [escalate_to_second_line]"' in dot
    assert 'label="assess [red_flag_emergency, red_flag]"' in dot
    for rule in PIRIFORMIS.rules:
        if rule.guard is not None:
            assert rule.name.split(".", 1)[1] in dot, rule.name
    assert "leave_treatment" not in dot and "escalate [" not in dot


def test_active_states_are_highlighted_and_only_those() -> None:
    """The patient's states are filled and outlined; the others are not."""
    dot = to_dot(PIRIFORMIS, SECOND_LINE)
    assert '"second_line" [label="second_line", fillcolor="#ffd54f"' in dot
    assert '"first_line" [label="first_line", fillcolor="white"]' in dot
    assert dot.count('fillcolor="#ffd54f"') == 2  # the two active leaves
    plain = to_dot(PIRIFORMIS)
    assert "#ffd54f" not in plain


def test_mermaid_has_composite_and_concurrent_states() -> None:
    """Mermaid output nests line and monitoring in treatment, separated as concurrent regions."""
    text = to_mermaid(PIRIFORMIS, SECOND_LINE)
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "stateDiagram-v2"
    assert "state treatment {" in lines and "state line {" in lines and "--" in lines
    assert "first_line --> second_line : reassess [escalate_to_second_line]" in lines
    assert "[*] --> assessment" in lines and "urgent_referral --> [*]" in lines
    assert "class treatment,line,second_line,monitoring,due active" in lines


def test_unknown_active_state_and_format_are_refused() -> None:
    """Highlighting a state the chart lacks, or an unknown format, raises a diagram error."""
    with pytest.raises(DiagramError, match="fourth_line"):
        to_dot(PIRIFORMIS, ["fourth_line"])
    with pytest.raises(UnknownFormat):
        render(PIRIFORMIS, "gif")


# A second pathway, never registered: only what the diagram reads.
_TOY = Pathway(
    parse_definition(
        {
            "name": "toy",
            "version": 3,
            "states": [
                {"id": "idle", "initial": True},
                {"id": "busy", "states": [{"id": "working", "initial": True}, {"id": "paused"}]},
                {"id": "done", "final": True},
            ],
            "events": {"start": {"inputs": {"ready": {"context": "ready"}}}, "pause": {}, "finish": {}},
            "context": {"ready": True},
            "rules": [
                {
                    "name": "start.ready",
                    "event": "start",
                    "from": ["idle"],
                    "to": "busy",
                    "when": {"all": [{"input": "ready", "op": "==", "value": True}]},
                },
                {"name": "pause", "event": "pause", "from": ["working"], "to": "paused"},
                {"name": "finish", "event": "finish", "from": ["busy"], "to": "done"},
            ],
        }
    )
)


def test_a_second_pathway_gets_its_diagram_from_its_chart() -> None:
    """Nothing in the diagram code is piriformis-specific."""
    dot = to_dot(_TOY, ["busy", "paused"])
    assert 'digraph "toy v3"' in dot and '"cluster_busy"' in dot
    assert 'label="start [ready]"' in dot and 'label="pause"' in dot
    assert "state busy {" in to_mermaid(_TOY)


@needs_dot
def test_svg_is_a_real_svg_document() -> None:
    """SVG output parses as XML with an <svg> root and names the states."""
    data = render(PIRIFORMIS, "svg", SECOND_LINE)
    root = ET.fromstring(data)
    assert root.tag.endswith("svg")
    assert len(data) > 5_000
    assert b"second_line" in data and b"monitoring (compound)" in data


@needs_dot
def test_png_is_an_image_with_content() -> None:
    """PNG output has the signature, a sensible size and visible drawing."""
    _png_has_content(render(PIRIFORMIS, "png", SECOND_LINE))


def test_missing_graphviz_is_reported_clearly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without `dot` on PATH, svg raises GraphvizMissing and the CLI suggests mermaid, exit 2."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GraphvizMissing):
        render(PIRIFORMIS, "svg")
    assert render(PIRIFORMIS, "mermaid").startswith(b"stateDiagram-v2")


def test_cli_without_graphviz_suggests_mermaid(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`diagram --format svg` without Graphviz exits 2 naming the fix."""
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["--db", sqlite_url, "diagram", "--format", "svg"]) == 2
    err = capsys.readouterr().err
    assert "Graphviz" in err and "--format mermaid" in err


@needs_dot
def test_cli_writes_a_patient_diagram_to_a_file(sqlite_engine: Engine, sqlite_url: str, tmp_path: Path) -> None:
    """With --patient and -o FILE.png the format follows the suffix and the patient's states are drawn."""
    sqlite_engine.enroll("p1", T0, version=1)
    sqlite_engine.send("p1", "assess", T0, assess_data())
    out = tmp_path / "p1.png"
    assert main(["--db", sqlite_url, "diagram", "--patient", "p1", "-o", str(out)]) == 0
    _png_has_content(out.read_bytes())


def test_cli_text_formats_go_to_stdout(
    sqlite_engine: Engine, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Mermaid is the default; dot on request; the patient's states are highlighted."""
    sqlite_engine.enroll("p1", T0, version=1)
    assert main(["--db", sqlite_url, "diagram", "--patient", "p1"]) == 0
    assert "class assessment active" in capsys.readouterr().out
    assert main(["--db", sqlite_url, "diagram", "--format", "dot"]) == 0  # without a patient: the latest approved
    assert capsys.readouterr().out.startswith('digraph "piriformis v2"')


def test_cli_bad_requests(sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """PNG to stdout and unknown formats exit 2; an unknown patient exits 4."""
    assert main(["--db", sqlite_url, "diagram", "--format", "png"]) == 2
    assert main(["--db", sqlite_url, "diagram", "--format", "gif"]) == 2
    assert main(["--db", sqlite_url, "diagram", "-o", str(tmp_path / "x.jpeg")]) == 2
    assert main(["--db", sqlite_url, "diagram", "--patient", "nobody"]) == 5  # no database yet
    assert main(["--db", sqlite_url, "migrate"]) == 0
    assert main(["--db", sqlite_url, "diagram", "--patient", "nobody"]) == 4
    assert "nobody" in capsys.readouterr().err


def test_cli_diagram_as_a_subprocess(sqlite_url: str) -> None:
    """The command works from a separate process and its help has an example."""
    done = subprocess.run(
        [sys.executable, "-m", "pathway", "--db", sqlite_url, "diagram", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "Example: carepath diagram" in " ".join(done.stdout.split())
