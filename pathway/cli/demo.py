"""`carepath demo`: a seeded synthetic cohort over six months, its dashboard, verify, diagram and plot.

Every figure the dashboard prints is read back from the database (snapshots and audit log),
not from what the simulation intended, so the demo shows what the engine's rules decided.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .. import DEFAULT_PATHWAY, bulk_allocation
from .app import app
from .render import console, styled_state

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import ProgressColumn
    from rich.table import Table

    from states import Pathway

    from .. import CohortHistory, Engine, Scenario, SimulationResult, VerifyReport

__all__ = ["DIAGRAM_STEM", "PLOT_NAME", "Dashboard", "demo"]

DATABASE_NAME = "carepath.db"
DIAGRAM_STEM = "statechart"
PLOT_NAME = "cohort.png"
_OUTPUTS = (
    DATABASE_NAME,
    f"{DATABASE_NAME}-wal",
    f"{DATABASE_NAME}-shm",
    f"{DIAGRAM_STEM}.svg",
    f"{DIAGRAM_STEM}.mmd",
    PLOT_NAME,
)


@app.command()
def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to write the database, diagram and plot (recreated each run).")
    ] = Path("carepath-demo"),
    patients: Annotated[int, typer.Option("--patients", min=1, help="Cohort size.")] = 300,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same cohort.")] = 7,
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            "--scenario",
            help="A pathway with a scenario beside its definition, or a scenario file; repeat for several cohorts "
            "(default: every pathway with a scenario, the default pathway first).",
        ),
    ] = None,
) -> None:
    """Simulate seeded cohorts for six months on SQLite, then show their dashboard, verify them, and draw them.

    The patients are shared among the scenarios by their cohort weights; hand-overs a scenario
    declares enrol patients on another pathway.

    Example: carepath demo --dir /tmp/carepath-demo --patients 300 --seed 7
    """
    from .. import Engine, FakeClock, cohort_start, load_scenario, pathway_scenarios, plot_cohort, system_clock

    directory.mkdir(parents=True, exist_ok=True)
    for name in _OUTPUTS:
        (directory / name).unlink(missing_ok=True)
    database = directory / DATABASE_NAME
    url = f"sqlite:///{database.resolve()}"
    # The six months end this week, so `status`, `explain` and `due` on the database read as current.
    start = cohort_start(system_clock())
    engine = Engine(url, FakeClock(start))
    out = console()
    with engine, bulk_allocation():
        scenarios = [load_scenario(name) for name in scenario or pathway_scenarios()]
        result = _simulate(engine, _cohorts(scenarios, patients), seed, start)
        history = engine.cohort_history(result.start, result.end)
        dashboard = Dashboard.read(engine, history)
        dashboard.print(out, result)
        report = _verify(engine)
        _print_verify(out, report)
        diagram = _write_diagram(engine, directory, result.definition)
        plot = plot_cohort(history, directory / PLOT_NAME, title=f"{result.definition.presentation.title}, seed {seed}")
        _print_files(out, database, diagram, plot)
        _print_next_steps(out, url, dashboard, directory)
    if not report.ok:
        raise typer.Exit(1)


# -- simulation and verify, with progress bars on stderr -----------------------------------------


def _progress() -> tuple[Console, list[ProgressColumn]]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    columns: list[ProgressColumn] = [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    return Console(stderr=True), columns


def _cohorts(scenarios: list[Scenario], patients: int) -> list[tuple[Scenario, int]]:
    """The patients shared among the scenarios by their cohort weights (at least one each, the first takes the rest)."""
    total = sum(s.cohort_weight for s in scenarios)
    sizes = [max(1, round(patients * s.cohort_weight / total)) for s in scenarios[1:]]
    first = max(1, patients - sum(sizes))
    return list(zip(scenarios, [first, *sizes], strict=True))


def _simulate(engine: Engine, cohorts: list[tuple[Scenario, int]], seed: int, start: datetime) -> SimulationResult:
    from rich.progress import Progress

    from .. import DEFAULT_WEEKS

    (scenario, first), *more = cohorts
    patients = sum(size for _, size in cohorts)

    stderr, columns = _progress()
    started = time.perf_counter()
    with Progress(*columns, console=stderr) as bar:
        task = bar.add_task(f"simulating {patients} patients, week", total=DEFAULT_WEEKS)
        result = engine.simulate(
            scenario,
            patients=first,
            seed=seed,
            start=start,
            progress=lambda week, _weeks: bar.update(task, completed=week),
            more=more,
        )
    seconds = time.perf_counter() - started
    rate = (result.sent + result.advanced_by_sweeps) / seconds if seconds else 0.0
    pathways = ", ".join(f"{s.pathway} v{d.version} {n}" for (s, n), d in zip(cohorts, result.definitions, strict=True))
    console().print(
        f"simulated [bold]{patients}[/] patients ({pathways}) "
        f"from {result.start:%Y-%m-%d} to {result.end:%Y-%m-%d} (seed {seed}): "
        f"{result.sent} commands and {result.sweeps} weekly sweeps ({result.advanced_by_sweeps} patients advanced) "
        f"in {seconds:.1f} s, {rate:.0f} audited events/s"
    )
    return result


def _verify(engine: Engine) -> VerifyReport:
    from rich.progress import Progress

    stderr, columns = _progress()
    with Progress(*columns, console=stderr) as bar:
        task = bar.add_task("verifying the audit log, events", total=engine.count_entries())
        return engine.verify(progress=lambda entries: bar.advance(task, entries), workers="auto")


def _print_verify(out: Console, report: VerifyReport) -> None:
    if report.ok:
        out.print(
            f"verify: [bold green]ok[/]: {report.events} events of {report.patients} patients; hash chains intact, "
            "replay reproduces every step and every snapshot"
        )
        return
    first = report.problems[0]
    out.print(
        f"verify: [bold red]{report.problem_count} problem(s)[/]; first: patient {first.patient_id} "
        f"seq {first.first_bad_seq}: {first.reason} {first.detail}".rstrip()
    )


# -- the dashboard ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Dashboard:
    """The cohort's figures, read from the snapshots and the audit log.

    Nothing here names a state of a pathway: states come in the definitions' order, the
    outcome of each state that has one is counted per value, schedules give due and overdue.
    """

    by_state: dict[str, int]
    due_now: int
    overdue_now: int
    # State -> ("key: value" -> patients), for patients whose state records an outcome.
    outcomes: dict[str, Counter[str]]
    history: CohortHistory
    example_patient: str | None
    example_state: str | None
    # (pathway, state) -> enrolments, and the pathways in the order they come (the default first).
    by_pathway: Counter[tuple[str, str]] = field(default_factory=Counter)
    example_pathway: str | None = None
    # Hand-overs recorded with enrolments: (patient, from pathway, to pathway, reason).
    handovers: list[tuple[str, str, str, str]] = field(default_factory=list)

    @property
    def pathways(self) -> list[str]:
        names = dict.fromkeys(pathway for pathway, _ in self.by_pathway)
        return sorted(names, key=lambda name: (name != DEFAULT_PATHWAY, name))

    @classmethod
    def read(cls, engine: Engine, history: CohortHistory) -> Dashboard:
        from .. import monitoring

        due = overdue = 0
        outcomes: dict[str, Counter[str]] = {}
        by_pathway: Counter[tuple[str, str]] = Counter()
        enrolments: dict[str, list[str]] = {}
        # The example: a patient as far along the stages as any (the last stage first).
        stages = history.stages
        example: tuple[int, str, str, str] | None = None
        for status in engine.patients():
            schedule = monitoring(status.definition)
            configuration = set(status.configuration)
            due += bool(schedule.due & configuration)
            overdue += bool(schedule.overdue & configuration)
            by_pathway[(status.pathway, status.state)] += 1
            enrolments.setdefault(status.patient_id, []).append(status.pathway)
            if status.outcome:
                counts = outcomes.setdefault(status.state, Counter())
                counts.update(_outcome_values(status.outcome))
            if status.state in stages and status.pathway == DEFAULT_PATHWAY:
                rank = stages.index(status.state)
                if example is None or rank > example[0]:
                    example = (rank, status.patient_id, status.state, status.pathway)
        handovers: list[tuple[str, str, str, str]] = []
        for patient, names in enrolments.items():
            if len(names) < 2:
                continue
            for name in names:
                enrolled = engine.history(patient, name)[0]
                came = enrolled.payload.get("handover") if enrolled.event == "enroll" else None
                if isinstance(came, dict):
                    handovers.append((patient, str(came.get("pathway")), name, str(came.get("reason") or "")))
        by_state = engine.count_by_state()
        return cls(
            by_state,
            due,
            overdue,
            outcomes,
            history,
            example[1] if example else None,
            example[2] if example else None,
            by_pathway,
            example[3] if example else None,
            sorted(handovers),
        )

    def print(self, out: Console, result: SimulationResult) -> None:
        from rich.columns import Columns

        out.print()
        out.print(Columns([self._states_table(), self._treatment_table()], padding=(0, 4)))
        order = self.history.state_order(self.outcomes)
        tables = [
            _counter_table(state.replace("_", " "), "outcome", self.outcomes[state])
            for state in order
            if state in self.outcomes
        ]
        if tables:
            out.print(Columns(tables, padding=(0, 4)))
        for line in self.handover_lines():
            out.print(line)
        archetypes = Counter(profile.archetype for profile in result.profiles.values())
        out.print(
            "[dim]simulated archetypes (the engine's rules decided every state above): "
            + ", ".join(f"{name} {count}" for name, count in archetypes.most_common())
            + "[/]"
        )

    def handover_lines(self) -> list[str]:
        """Hand-overs per route and reason, naming a patient handed over."""
        routes: Counter[tuple[str, str, str]] = Counter((f, t, r) for _, f, t, r in self.handovers)
        lines = []
        for (source, target, reason), count in sorted(routes.items()):
            patient = next(p for p, f, t, r in self.handovers if (f, t, r) == (source, target, reason))
            because = f" ({reason.replace('_', ' ')})" if reason else ""
            lines.append(f"hand-over: [bold]{count}[/] patient(s) from {source} to {target}{because}, e.g. {patient}")
        return lines

    def _states_table(self) -> Table:
        from rich.table import Table

        total = sum(self.by_state.values())
        pathways = self.pathways if len(self.pathways) > 1 else []
        table = Table(title="patients per state", title_justify="left", show_footer=True)
        table.add_column("state", footer="total")
        for pathway in pathways:
            count = sum(n for (name, _), n in self.by_pathway.items() if name == pathway)
            table.add_column(pathway, justify="right", footer=str(count))
        table.add_column("patients" if not pathways else "all", justify="right", footer=str(total))
        table.add_column("share", justify="right")
        for state in self.history.state_order(self.by_state):
            count = self.by_state.get(state, 0)
            share = f"{count / total:.0%}" if total else "-"
            per = [str(self.by_pathway.get((pathway, state), "")) for pathway in pathways]
            table.add_row(styled_state(state), *per, str(count), share)
        return table

    def _treatment_table(self) -> Table:
        from rich.table import Table

        history = self.history
        goal = " / ".join(g.replace("_", " ") for g in history.goals) or "goal"
        median = history.median_weeks_to_resolution()
        table = Table(title="course", title_justify="left")
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_row(f"episodes reaching {goal}", str(len(history.resolution_weeks)))
        table.add_row(f"median weeks to {goal}", "-" if median is None else f"{median:.1f}")
        stages = history.stages
        for (stage, event), count in sorted(
            history.escalations.items(), key=lambda item: (stages.index(item[0][0]), item[0][1])
        ):
            table.add_row(f"moved to {stage} on {event}", str(count))
        table.add_row("due at the last sweep", str(self.due_now))
        table.add_row("overdue at the last sweep", str(self.overdue_now))
        table.add_row("overdue episodes", str(history.overdue_episodes))
        return table


def _outcome_values(outcome: dict[str, object]) -> list[str]:
    """An outcome's values as "key: value" (each item of a list on its own)."""
    values: list[str] = []
    for key, value in outcome.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            values.append(f"{key}: {item}")
    return values


def _counter_table(title: str, key: str, counts: Counter[str]) -> Table:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column(key)
    table.add_column("patients", justify="right")
    for name, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        table.add_row(name, str(count))
    if not counts:
        table.add_row("[dim]none[/]", "0")
    return table


# -- files and what to try next ------------------------------------------------------------------


def _write_diagram(engine: Engine, directory: Path, definition: Pathway) -> Path:
    """The statechart as SVG through Graphviz, or as Mermaid text when Graphviz is missing."""
    from .. import GraphvizMissing, MissingExtra

    name, version = definition.name, definition.version
    try:
        path, data = directory / f"{DIAGRAM_STEM}.svg", engine.diagram("svg", pathway=name, version=version)
    except (GraphvizMissing, MissingExtra):
        path, data = directory / f"{DIAGRAM_STEM}.mmd", engine.diagram("mermaid", pathway=name, version=version)
    path.write_bytes(data)
    return path


def _print_files(out: Console, database: Path, diagram: Path, plot: Path) -> None:
    out.print()
    out.print(f"database      {database.resolve()}")
    if diagram.suffix == ".svg":
        out.print(f"statechart    {diagram.resolve()}  (SVG, drawn by Graphviz)")
    else:
        out.print(
            f"statechart    {diagram.resolve()}  (Mermaid text: Graphviz is not installed; "
            "paste it into any Mermaid viewer, or install Graphviz and carepath[diagrams] for SVG)"
        )
    out.print(f"cohort plot   {plot.resolve()}  (patients per state over time; weeks to resolution)")


def _print_next_steps(out: Console, url: str, dashboard: Dashboard, directory: Path) -> None:
    patient = dashboard.example_patient or next(iter(dashboard.history.times), "p-001")
    on = f" --pathway {dashboard.example_pathway}" if dashboard.example_pathway else ""
    db = f"--db {url}"
    out.print()
    out.print("try next:")
    handed = dashboard.handovers[0] if dashboard.handovers else None
    commands = (
        f"status {patient}{on}",
        f"explain {patient}{on}",
        f"timeline {patient}{on} -o {directory / (patient + '.png')}",
        *([f"list --state {dashboard.example_state}"] if dashboard.example_state else []),
        *([f"history {handed[0]} --pathway {handed[2]}"] if handed else []),
    )
    for command in commands:
        out.print(f"  carepath {db} {command}", soft_wrap=True)  # unbroken, so it can be copied
