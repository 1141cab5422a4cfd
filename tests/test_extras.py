"""The core needs no optional package; a feature whose extra is missing says which extra to install."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pathway.console import CLI_MISSING

ROOT = Path(__file__).resolve().parent.parent
CORE_USAGE = ROOT / "tests" / "scripts" / "core_usage.py"
OPTIONAL = ("matplotlib", "typer", "rich", "graphviz", "psycopg", "cryptography")


def _python(code: str, *, blocked: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run `code` in a new interpreter in which the `blocked` packages cannot be imported."""
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_importing_the_library_loads_no_optional_package() -> None:
    """Importing pathway, states, persistence and the store loads none of the optional packages."""
    done = _python(
        f"""
        import pathway, states, persistence, persistence._store, pathway._replay
        print(sorted(name for name in {OPTIONAL!r} if name in sys.modules))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_core_usage_works_with_every_optional_package_missing() -> None:
    """Enrol, send, tick and verify on SQLite work when no optional package can be imported."""
    done = _python(f"import runpy; runpy.run_path({str(CORE_USAGE)!r}, run_name='__main__')", blocked=OPTIONAL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok: ")


def test_timeline_without_matplotlib_names_the_plots_extra(tmp_path: Path) -> None:
    """Drawing a timeline without matplotlib raises MissingExtra naming carepath[plots]."""
    done = _python(
        f"""
        from datetime import UTC, datetime
        from pathway import Engine, FakeClock
        from pathway._extras import MissingExtra
        from pathway._timeline import plot_timeline
        from states import get_pathway
        at = datetime(2026, 1, 5, 9, tzinfo=UTC)
        engine = Engine("sqlite:///{tmp_path / "t.db"}", FakeClock(at))
        engine.enroll("p1", at, version=1)
        try:
            plot_timeline(engine.history("p1"), get_pathway("piriformis", 1), "{tmp_path / "t.png"}")
        except MissingExtra as err:
            print(err)
        """,
        blocked=("matplotlib",),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "drawing a timeline needs the matplotlib package, which is not installed: pip install 'carepath[plots]'"
    )


def test_cohort_plot_without_matplotlib_names_the_plots_extra() -> None:
    """Drawing a cohort plot without matplotlib raises MissingExtra naming carepath[plots]."""
    done = _python(
        """
        from pathlib import Path
        from pathway._cohort_plot import plot_cohort
        from pathway._extras import MissingExtra
        try:
            plot_cohort(None, Path("never.png"))
        except MissingExtra as err:
            print(err.extra, err.package)
        """,
        blocked=("matplotlib",),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "plots matplotlib"


def test_svg_diagram_without_graphviz_names_the_diagrams_extra() -> None:
    """An SVG diagram without the graphviz package names carepath[diagrams]; Mermaid still renders."""
    done = _python(
        """
        from pathway._diagram import render
        from pathway._extras import MissingExtra
        from states import get_pathway
        definition = get_pathway("piriformis")
        print(render(definition, "mermaid").decode().splitlines()[0])
        try:
            render(definition, "svg")
        except MissingExtra as err:
            print(err)
        """,
        blocked=("graphviz",),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "stateDiagram-v2",
        "rendering a diagram as svg needs the graphviz package, which is not installed: "
        "pip install 'carepath[diagrams]'",
    ]


def test_postgresql_url_without_psycopg_names_the_postgres_extra() -> None:
    """A PostgreSQL URL without psycopg fails with StorageUnavailable naming carepath[postgres]."""
    done = _python(
        """
        from persistence import StorageUnavailable
        from persistence._store import Store
        try:
            Store("postgresql://carepath@127.0.0.1:1/none")
        except StorageUnavailable as err:
            print(err)
        """,
        blocked=("psycopg",),
    )
    assert done.returncode == 0, done.stderr
    assert "PostgreSQL needs the psycopg package: pip install 'carepath[postgres]'" in done.stdout


@pytest.mark.parametrize("missing", ["typer", "rich"])
def test_command_line_without_its_extra_prints_one_line(missing: str) -> None:
    """The carepath script without typer or rich prints one line naming carepath[cli] and exits 2."""
    done = _python("from pathway.console import run\nrun()", blocked=(missing,))
    assert done.returncode == 2
    assert done.stderr == CLI_MISSING + "\n"
    assert "pip install 'carepath[cli]'" in CLI_MISSING


@pytest.mark.slow
def test_core_install_without_extras_runs_the_library(tmp_path: Path) -> None:
    """`pip install carepath` without extras, in a fresh virtual environment, enrols, sends, ticks and verifies."""
    source = tmp_path / "src"
    for name in ("carepath", "pathway", "states", "persistence"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", str(source)])
    listed = _run([str(python), "-m", "pip", "list", "--format", "freeze"]).stdout.lower()
    installed = {line.split("==")[0].replace("_", "-") for line in listed.splitlines()}
    assert not installed & {"matplotlib", "typer", "rich", "graphviz", "psycopg", "psycopg-binary", "cryptography"}
    done = _run([str(python), str(CORE_USAGE)], cwd=tmp_path)
    assert done.stdout.startswith("ok: ")
    script = subprocess.run([str(venv / "bin" / "carepath")], capture_output=True, text=True, timeout=60, check=False)
    assert (script.returncode, script.stderr) == (2, CLI_MISSING + "\n")


def _run(command: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run a set-up command, failing the test with its output when it fails."""
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=300, check=False)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done
