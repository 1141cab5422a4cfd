"""The synthetic cohort and `carepath demo`: deterministic, every archetype's outcome, files written."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from PIL import Image

from pathway import Engine, FakeClock, Status
from pathway._simulate import (
    DEFAULT_START,
    SimulationError,
    SimulationResult,
    cohort_start,
    load_scenario,
    make_profiles,
    simulate,
)
from pathway.cli import main
from persistence import AuditEntry, Store

ARCHETYPE_MIX = load_scenario("piriformis").mix
SCIATICA_MIX = load_scenario("sciatica").mix
STATES = (
    "assessment",
    "first_line",
    "second_line",
    "third_line",
    "neuro_review",
    "resolved",
    "rediagnose",
    "urgent_referral",
    "withdrawn",
)
SCIATICA_STATES = ("package", "injection_considered", "surgical_opinion", "improved")


def _run(url: str, patients: int, seed: int) -> tuple[Engine, SimulationResult]:
    engine = Engine(url, FakeClock(DEFAULT_START))
    return engine, simulate(engine, patients=patients, seed=seed)


def _log(engine: Engine) -> list[tuple[str, int, str, str]]:
    return [(e.patient_id, e.seq, e.event, e.hash) for e in engine.store.iter_entries()]


# -- the simulation --------------------------------------------------------------------------


def test_same_seed_gives_the_same_cohort(tmp_path: Path) -> None:
    """Two runs with one seed end in the same states with byte-identical audit logs."""
    first, _ = _run(f"sqlite:///{tmp_path / 'a.db'}", 40, 11)
    second, _ = _run(f"sqlite:///{tmp_path / 'b.db'}", 40, 11)
    try:
        states = [(s.patient_id, s.configuration, s.outcome) for s in first.patients()]
        assert states == [(s.patient_id, s.configuration, s.outcome) for s in second.patients()]
        assert _log(first) == _log(second)
    finally:
        first.store.dispose()
        second.store.dispose()


def test_another_seed_gives_another_cohort(tmp_path: Path) -> None:
    """A different seed changes the simulated course (the seed is really used)."""
    first, _ = _run(f"sqlite:///{tmp_path / 'a.db'}", 20, 1)
    second, _ = _run(f"sqlite:///{tmp_path / 'b.db'}", 20, 2)
    try:
        assert _log(first) != _log(second)
    finally:
        first.store.dispose()
        second.store.dispose()


def test_profiles_follow_the_archetype_mix() -> None:
    """The default cohort has every archetype, in the mix's proportions."""
    profiles = make_profiles(300, 7)
    counts = {kind: sum(p.archetype == kind for p in profiles) for kind in ARCHETYPE_MIX}
    assert len(profiles) == 300
    assert all(abs(counts[kind] - share * 300) < 1 for kind, share in ARCHETYPE_MIX.items())
    assert len({p.patient_id for p in profiles}) == 300


def test_simulation_needs_a_fake_clock(sqlite_url: str) -> None:
    """An engine on the system clock is refused: the simulation must move time itself."""
    engine = Engine(sqlite_url)
    try:
        with pytest.raises(SimulationError, match="FakeClock"):
            simulate(engine, patients=3)
        assert engine.store.count_patients() == 0
    finally:
        engine.store.dispose()


def test_simulation_refuses_a_clock_past_the_start(sqlite_url: str) -> None:
    """A clock already after the start would make the first events look backwards; refused up front."""
    engine = Engine(sqlite_url, FakeClock(DEFAULT_START.replace(year=2027)))
    try:
        with pytest.raises(SimulationError, match="after the start"):
            simulate(engine, patients=3)
    finally:
        engine.store.dispose()


def test_cohort_start_ends_the_six_months_this_week() -> None:
    """The demo's cohort starts 26 weeks before the last Monday midnight UTC, whatever the zone of now."""
    wednesday = datetime(2026, 11, 25, 14, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert cohort_start(wednesday) == datetime(2026, 11, 23, tzinfo=UTC) - timedelta(weeks=26)
    monday = datetime(2026, 11, 23, tzinfo=UTC)
    assert cohort_start(monday, weeks=1) == datetime(2026, 11, 16, tzinfo=UTC)


def test_empty_cohort_is_refused() -> None:
    """A cohort of no patients is an error, not an empty demo."""
    with pytest.raises(SimulationError, match="at least one patient"):
        make_profiles(0, 7)


@dataclass(frozen=True)
class Cohort:
    engine: Engine
    result: SimulationResult
    statuses: dict[str, Status]
    histories: dict[str, list[AuditEntry]]
    # Patients handed over to another pathway: their enrolment there.
    handed_over: dict[str, Status]

    def of(self, kind: str) -> list[tuple[Status, list[AuditEntry]]]:
        ids = [pid for pid, profile in self.result.profiles.items() if profile.archetype == kind]
        return [(self.statuses[pid], self.histories[pid]) for pid in ids]


def _cohort(engine: Engine, result: SimulationResult, pathway: str) -> Cohort:
    statuses = {s.patient_id: s for s in engine.patients() if s.pathway == pathway}
    histories = {pid: engine.history(pid, pathway) for pid in statuses}
    handed = {s.patient_id: s for s in engine.patients() if s.pathway != pathway}
    return Cohort(engine, result, statuses, histories, handed)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cohort]:
    """The default cohort (300 patients on piriformis version 2, seed 7), simulated once for the archetype checks."""
    url = f"sqlite:///{tmp_path_factory.mktemp('cohort') / 'carepath.db'}"
    engine, result = _run(url, 300, 7)
    yield _cohort(engine, result, "piriformis")
    engine.store.dispose()


@pytest.fixture(scope="module")
def sciatica_cohort(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cohort]:
    """The sciatica scenario's cohort (120 patients, seed 7; version 1 is under review)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('sciatica') / 'carepath.db'}"
    engine = Engine(url, FakeClock(DEFAULT_START))
    result = simulate(engine, scenario=load_scenario("sciatica"), patients=120, seed=7)
    yield _cohort(engine, result, "sciatica")
    engine.store.dispose()


def _visited(entries: list[AuditEntry], state: str) -> bool:
    return any(state in e.config_after for e in entries)


def _outcome(status: Status, state: str, **expected: str) -> bool:
    outcome = status.outcome or {}
    return status.state == state and all(outcome.get(k) == v for k, v in expected.items())


def _treated_after_relapse(entries: list[AuditEntry]) -> bool:
    events = [e.event for e in entries]
    return "relapse" in events and _visited(entries[events.index("relapse") + 1 :], "treatment")


OUTCOMES: dict[str, list[tuple[str, Callable[[Status, list[AuditEntry]], bool]]]] = {
    "responder": [("resolved on first line", lambda s, h: s.state == "resolved" and not _visited(h, "second_line"))],
    "partial_responder": [
        ("escalated to second line, then resolved", lambda s, h: s.state == "resolved" and _visited(h, "second_line"))
    ],
    "non_responder": [
        ("escalated to third line", lambda s, h: _visited(h, "third_line")),
        ("refractory", lambda s, h: _outcome(s, "rediagnose", reason="refractory_to_treatment")),
    ],
    "red_flag_at_assessment": [
        ("cauda equina: emergency", lambda s, h: _outcome(s, "urgent_referral", urgency="emergency")),
        ("other red flag: urgent", lambda s, h: _outcome(s, "urgent_referral", urgency="urgent")),
    ],
    "red_flag_at_reassessment": [
        ("referred from treatment", lambda s, h: s.state == "urgent_referral" and _visited(h, "treatment"))
    ],
    "worsening_fasciculations": [("in neurological review", lambda s, h: s.state == "neuro_review")],
    "radicular_signs": [
        ("rediagnosed", lambda s, h: _outcome(s, "rediagnose", reason="suspected_lumbar_radiculopathy"))
    ],
    "criteria_not_met": [("rediagnosed", lambda s, h: _outcome(s, "rediagnose", reason="criteria_not_met"))],
    "missed_reassessments": [
        ("overdue by the sweeps", lambda s, h: "overdue" in s.configuration and h[-1].actor == "scheduler")
    ],
    "clinician_override": [
        (
            "moved to second line by a clinician",
            lambda s, h: any(e.event == "override" and "second_line" in e.config_after for e in h),
        )
    ],
    "withdrawal": [
        ("withdrawn with a reason", lambda s, h: s.state == "withdrawn" and bool((s.outcome or {}).get("reason")))
    ],
    "relapse": [("relapsed after resolution and treated again", lambda s, h: _treated_after_relapse(h))],
}


SCIATICA_OUTCOMES: dict[str, list[tuple[str, Callable[[Status, list[AuditEntry]], bool]]]] = {
    "responder": [
        ("improved in the package", lambda s, h: s.state == "improved" and not _visited(h, "injection_considered"))
    ],
    "severe_non_responder": [("injection considered", lambda s, h: _visited(h, "injection_considered"))],
    "red_flag": [
        ("cauda equina: emergency", lambda s, h: _outcome(s, "urgent_referral", urgency="emergency")),
        ("other red flag: urgent", lambda s, h: _outcome(s, "urgent_referral", urgency="urgent")),
    ],
    "not_radicular": [("rediagnosed", lambda s, h: _outcome(s, "rediagnose", reason="not_radicular"))],
    "withdrawal": [
        ("withdrawn with a reason", lambda s, h: _outcome(s, "withdrawn") and bool((s.outcome or {})["reason"]))
    ],
}


def test_every_archetype_has_expected_outcomes() -> None:
    """The checks below cover exactly the scenarios' archetypes."""
    assert set(OUTCOMES) == set(ARCHETYPE_MIX)
    assert set(SCIATICA_OUTCOMES) == set(SCIATICA_MIX)


@pytest.mark.parametrize("kind", list(SCIATICA_MIX), ids=str)
def test_sciatica_cohort_shows_each_archetype_outcome(sciatica_cohort: Cohort, kind: str) -> None:
    """Each archetype of the sciatica cohort reaches its expected outcome at least once, by the engine's rules."""
    members = sciatica_cohort.of(kind)
    assert members, f"no {kind} patient in the sciatica cohort"
    for description, holds in SCIATICA_OUTCOMES[kind]:
        assert any(holds(status, entries) for status, entries in members), f"{kind}: never {description}"


def test_radicular_patients_are_handed_over_to_sciatica(cohort: Cohort) -> None:
    """Each patient re-diagnosed with suspected lumbar radiculopathy is enrolled on sciatica, hand-over recorded."""
    radicular = {s.patient_id for s, _ in cohort.of("radicular_signs")}
    assert radicular and set(cohort.handed_over) == radicular
    assert sorted(p for p, _, _ in cohort.result.handovers) == sorted(radicular)
    for patient, status in cohort.handed_over.items():
        assert status.pathway == "sciatica" and status.state in {*SCIATICA_STATES, "assessment", "rediagnose"}
        enrolled = cohort.engine.history(patient, "sciatica")[0]
        assert enrolled.payload["handover"]["reason"] == "suspected_lumbar_radiculopathy"
        assert enrolled.payload["handover"]["pathway"] == "piriformis"


@pytest.mark.parametrize("kind", list(ARCHETYPE_MIX), ids=str)
def test_default_cohort_shows_each_archetype_outcome(cohort: Cohort, kind: str) -> None:
    """Each archetype of the default cohort reaches its expected outcome at least once, by the engine's rules."""
    members = cohort.of(kind)
    assert members, f"no {kind} patient in the default cohort"
    for description, holds in OUTCOMES[kind]:
        assert any(holds(status, entries) for status, entries in members), f"{kind}: never {description}"


def test_default_cohort_sends_only_engine_events(cohort: Cohort) -> None:
    """Every audit entry is an event of the pathway, and sweeps are the only scheduler entries."""
    events = {e.event for entries in cohort.histories.values() for e in entries}
    assert events <= {"enroll", "assess", "reassess", "tick", "override", "relapse", "withdraw"}
    assert all(s.version == 2 for s in cohort.statuses.values())
    ticks = [e for entries in cohort.histories.values() for e in entries if e.event == "tick"]
    assert ticks and all(e.actor == "scheduler" for e in ticks)
    assert cohort.result.sweeps == 26


def test_every_state_reached_is_a_pathway_state(cohort: Cohort) -> None:
    """The cohort ends spread over the pathway's states, and the dashboard counts sum to the cohort."""
    counts = Counter(s.state for s in cohort.statuses.values())
    assert set(counts) <= set(STATES)
    assert sum(counts.values()) == 300
    assert {"resolved", "rediagnose", "urgent_referral", "withdrawn", "third_line", "neuro_review"} <= set(counts)


# -- the demo command --------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoRun:
    code: int
    stdout: str
    stderr: str
    directory: Path


def _demo(directory: Path, *args: str) -> DemoRun:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["demo", "--dir", str(directory), *args])
    return DemoRun(code, out.getvalue(), err.getvalue(), directory)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """`carepath demo` with 40 patients, run twice in one directory (the second run is inspected)."""
    directory = tmp_path_factory.mktemp("demo")
    _demo(directory, "--patients", "25", "--seed", "3")
    return _demo(directory, "--patients", "40")


def test_demo_succeeds_and_verifies(demo_run: DemoRun) -> None:
    """The demo exits 0, reports a clean verify, and shows its progress on stderr."""
    assert demo_run.code == 0, demo_run.stdout + demo_run.stderr
    assert "verify: ok" in demo_run.stdout
    assert "simulating 40 patients" in demo_run.stderr


def test_demo_dashboard_agrees_with_the_database(demo_run: DemoRun) -> None:
    """Each state's count on the dashboard, per pathway and in all, equals the recreated database's."""
    store = Store(f"sqlite:///{demo_run.directory / 'carepath.db'}")
    try:
        counts = store.count_by_state()
        snapshots = list(store.iter_snapshots())
    finally:
        store.dispose()
    patients = {s.patient_id for s in snapshots}
    assert len(patients) == 40  # recreated, not added to the first run's 25
    per_pathway = Counter((s.pathway, s.state) for s in snapshots)
    assert {s.pathway for s in snapshots} == {"piriformis", "sciatica"}
    assert re.search(r"┃ state\s+┃ piriformis ┃ sciatica ┃ all ┃", demo_run.stdout)
    for state in (*STATES, *SCIATICA_STATES):
        shown = re.search(rf"│ {state}\s+│\s*(\d*) │\s*(\d*) │\s+(\d+) │", demo_run.stdout)
        assert shown is not None, f"{state} missing from the dashboard"
        piriformis, sciatica, total = (int(n or 0) for n in shown.groups())
        assert total == counts.get(state, 0), state
        assert (piriformis, sciatica) == (per_pathway[("piriformis", state)], per_pathway[("sciatica", state)])
    total = re.search(r"│ total\s+│\s+(\d+) │\s+(\d+) │\s+(\d+) │", demo_run.stdout)
    assert total is not None and int(total.group(3)) == len(snapshots)


def test_demo_names_its_hand_overs(demo_run: DemoRun) -> None:
    """The dashboard names the hand-overs from piriformis to sciatica recorded in the database."""
    store = Store(f"sqlite:///{demo_run.directory / 'carepath.db'}")
    try:
        enrolments = Counter(s.patient_id for s in store.iter_snapshots())
    finally:
        store.dispose()
    handed = [p for p, n in enrolments.items() if n == 2]
    shown = re.search(
        r"hand-over: (\d+) patient\(s\) from piriformis to sciatica \(suspected lumbar radiculopathy\), e\.g\. (\S+)",
        " ".join(demo_run.stdout.split()),
    )
    assert handed and shown is not None, demo_run.stdout
    assert int(shown.group(1)) == len(handed) and shown.group(2) in handed


def test_demo_cohort_ends_in_the_current_week(demo_run: DemoRun) -> None:
    """The simulated six months end at most a week before now, and every event lies inside them."""
    span = re.search(r"from (\d{4}-\d\d-\d\d) to (\d{4}-\d\d-\d\d)", " ".join(demo_run.stdout.split()))
    assert span is not None
    start, end = (datetime.fromisoformat(day).replace(tzinfo=UTC) for day in span.groups())
    assert end - start == timedelta(weeks=26)
    assert datetime.now(UTC) - timedelta(days=7) <= end <= datetime.now(UTC)
    store = Store(f"sqlite:///{demo_run.directory / 'carepath.db'}")
    try:
        times = [entry.at for entry in store.iter_entries()]
    finally:
        store.dispose()
    assert start <= min(times) and max(times) <= end


def test_demo_writes_a_plot_with_content(demo_run: DemoRun) -> None:
    """The cohort plot is a valid PNG of sensible size that is not a blank canvas."""
    path = demo_run.directory / "cohort.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 20_000
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        assert rgb.width >= 800 and rgb.height >= 400
        colours = rgb.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50
        assert max(count for count, _ in colours) < 0.9 * rgb.width * rgb.height
    assert str(path.resolve()) in demo_run.stdout


def test_demo_writes_the_statechart(demo_run: DemoRun) -> None:
    """With Graphviz installed the statechart is an SVG naming the pathway's states, and its path is printed."""
    svg = demo_run.directory / "statechart.svg"
    if not svg.exists():
        pytest.skip("Graphviz 'dot' is not installed here (the Mermaid fallback is tested separately)")
    text = svg.read_text()
    assert "<svg" in text and "third_line" in text and "urgent_referral" in text
    assert str(svg.resolve()) in demo_run.stdout
    assert not (demo_run.directory / "statechart.mmd").exists()


def test_demo_suggests_next_commands(demo_run: DemoRun) -> None:
    """The demo ends with runnable status, explain and timeline commands on its database."""
    url = f"sqlite:///{(demo_run.directory / 'carepath.db').resolve()}"
    for command in ("status", "explain", "timeline"):
        assert f"carepath --db {url} {command} p-" in demo_run.stdout


def test_demo_falls_back_to_mermaid_without_graphviz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Graphviz the demo writes the statechart as Mermaid text and says so."""
    import pathway._diagram as diagram

    real_render = diagram.render

    def no_dot(definition: object, fmt: str, active: tuple[str, ...] = ()) -> bytes:
        if fmt in ("svg", "png"):
            raise diagram.GraphvizMissing(fmt)
        return real_render(definition, fmt, active)  # type: ignore[arg-type]  # the real definition passes through

    monkeypatch.setattr(diagram, "render", no_dot)
    run = _demo(tmp_path, "--patients", "8")
    assert run.code == 0, run.stdout + run.stderr
    mermaid = (tmp_path / "statechart.mmd").read_text()
    assert mermaid.startswith("stateDiagram") and "first_line" in mermaid
    assert not (tmp_path / "statechart.svg").exists()
    assert "Mermaid" in run.stdout and "not installed" in run.stdout


def test_demo_exits_1_when_verify_finds_a_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tampered audit row makes the demo print verify's problem and exit 1."""
    import pathway._replay as replay

    real_verify = replay.verify

    def tamper_then_verify(store: Store, patient_id: str | None = None, **kwargs: object) -> replay.VerifyReport:
        store.execute_raw("UPDATE carepath_audit SET actor = 'mallory' WHERE patient_id = 'p-1' AND seq = 2")
        return real_verify(store, patient_id, **kwargs)  # type: ignore[arg-type]  # progress passes through

    monkeypatch.setattr(replay, "verify", tamper_then_verify)
    run = _demo(tmp_path, "--patients", "5")
    assert run.code == 1
    assert "problem" in run.stdout and "p-1" in run.stdout and "seq 2" in run.stdout


def test_demo_rejects_an_empty_cohort(tmp_path: Path) -> None:
    """--patients 0 is a usage error (exit 2) and writes no database."""
    run = _demo(tmp_path, "--patients", "0")
    assert run.code == 2
    assert not (tmp_path / "carepath.db").exists()


def test_demo_runs_as_a_program(tmp_path: Path) -> None:
    """`python -m pathway demo` runs end to end in a subprocess and exits 0."""
    done = subprocess.run(
        [sys.executable, "-m", "pathway", "demo", "--dir", str(tmp_path), "--patients", "6", "--seed", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "verify: ok" in done.stdout
    assert (tmp_path / "cohort.png").stat().st_size > 0
