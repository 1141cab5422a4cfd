"""A cohort's course read back from the audit log, and its plot.

Everything here is computed from the recorded entries (never from what a simulation meant to
do): each patient's state after each event, the time from entering the definition's stages to
its goal state, escalations between stages and schedules that became overdue. Which states are
stages, the goal, the order and the colours come from each definition's presentation hints (a
cohort may mix pathways and versions: their hints are merged, the first definition seen
first). matplotlib is imported only when a plot is drawn, so the CLI starts fast.
"""

from __future__ import annotations

import statistics
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from carepath.errors import Category
from persistence import AuditEntry
from states import Pathway, get_pathway

from ._errors import CarepathError
from ._extras import require
from ._hints import NEUTRAL_COLOUR, merged_colours, monitoring, state_order

if TYPE_CHECKING:
    from matplotlib.axes import Axes

if TYPE_CHECKING:
    from persistence import Store

__all__ = ["CohortHistory", "EmptyCohort", "plot_cohort", "read_history"]

WEEK = timedelta(weeks=1)


class EmptyCohort(CarepathError):
    """Raised when a cohort is read from an empty audit log without a time span to show."""

    code = "empty_cohort"
    category = Category.INVALID_INPUT


@dataclass
class CohortHistory:
    """What happened to every patient, from their audit entries."""

    start: datetime
    end: datetime
    # Per patient: the times of their events and the state after each (same length, time order).
    times: dict[str, list[datetime]]
    states: dict[str, list[str]]
    # Weeks from entering a definition's stages to its goal state, one per episode that reached it.
    resolution_weeks: list[float]
    # (stage entered, event that moved the patient there), for moves between stages.
    escalations: Counter[tuple[str, str]]
    overdue_episodes: int
    events: int
    # The definitions the entries were recorded under, in the order first seen.
    definitions: list[Pathway]

    @property
    def stages(self) -> list[str]:
        """The stages of every definition present, in their order (the first definition's first)."""
        return list(dict.fromkeys(stage for d in self.definitions for stage in d.presentation.stages))

    @property
    def goals(self) -> list[str]:
        return list(dict.fromkeys(d.presentation.goal for d in self.definitions if d.presentation.goal))

    @property
    def colours(self) -> dict[str, str]:
        return merged_colours(self.definitions)

    def state_order(self, states: Iterable[str] = ()) -> list[str]:
        """The definitions' state order, then any other of `states`."""
        return state_order(self.definitions, states)

    def state_at(self, patient_id: str, at: datetime) -> str | None:
        """A patient's state at `at`, or None before enrolment."""
        index = bisect_right(self.times[patient_id], at)
        return self.states[patient_id][index - 1] if index else None

    def counts_at(self, at: datetime) -> Counter[str]:
        """Patients per state at `at` (patients not yet enrolled are not counted)."""
        counts: Counter[str] = Counter()
        for patient_id in self.times:
            state = self.state_at(patient_id, at)
            if state is not None:
                counts[state] += 1
        return counts

    def median_weeks_to_resolution(self) -> float | None:
        return statistics.median(self.resolution_weeks) if self.resolution_weeks else None

    def escalated(self, stage: str, event: str | None = None) -> int:
        """Moves into `stage` from another stage (by `event`, or by any event when None)."""
        return sum(n for (target, by), n in self.escalations.items() if target == stage and event in (None, by))


def read_history(store: Store, start: datetime | None = None, end: datetime | None = None) -> CohortHistory:
    """Read every patient's course from the audit log (streamed); `start`/`end` default to the log's span."""
    reader = _Reader()
    for entry in store.iter_entries():
        reader.read(entry)
    if not reader.times and (start is None or end is None):
        raise EmptyCohort("the audit log is empty: there is no cohort to read")
    return CohortHistory(
        start=start or min(times[0] for times in reader.times.values()),
        end=end or max(times[-1] for times in reader.times.values()),
        times=reader.times,
        states=reader.states,
        resolution_weeks=reader.resolution_weeks,
        escalations=reader.escalations,
        overdue_episodes=reader.overdue_episodes,
        events=reader.events,
        definitions=list(reader.definitions.values()),
    )


class _Reader:
    """Folds audit entries, in patient then sequence order, into the cohort's figures."""

    def __init__(self) -> None:
        self.times: dict[str, list[datetime]] = {}
        self.states: dict[str, list[str]] = {}
        self.resolution_weeks: list[float] = []
        self.escalations: Counter[tuple[str, str]] = Counter()
        self.overdue_episodes = 0
        self.events = 0
        self.definitions: dict[tuple[str, int], Pathway] = {}
        self._hints: dict[tuple[str, int], _Hints] = {}
        self._staged_since: dict[str, datetime] = {}
        self._first_pathway: dict[str, str] = {}

    def _key(self, entry: AuditEntry) -> str:
        """A course per enrolment: the patient id, with the pathway beside it on any later pathway."""
        first = self._first_pathway.setdefault(entry.patient_id, entry.pathway)
        return entry.patient_id if entry.pathway == first else f"{entry.patient_id} ({entry.pathway})"

    def read(self, entry: AuditEntry) -> None:
        self.events += 1
        patient = self._key(entry)
        key = (entry.pathway, entry.version)
        hints = self._hints.get(key)
        if hints is None:
            definition = self.definitions[key] = get_pathway(*key)
            hints = self._hints[key] = _Hints.of(definition)
        self.times.setdefault(patient, []).append(entry.at)
        self.states.setdefault(patient, []).append(hints.definition.state_name(entry.config_after))
        before, after = set(entry.config_before), set(entry.config_after)
        staged_before = bool(hints.stages & before)
        if hints.stages & after and not staged_before:
            self._staged_since[patient] = entry.at
        if hints.goal in after and hints.goal not in before and patient in self._staged_since:
            self.resolution_weeks.append((entry.at - self._staged_since.pop(patient)) / WEEK)
        if staged_before:
            for stage in (hints.stages & after) - before:
                self.escalations[(stage, entry.event)] += 1
        if (hints.overdue & after) - before:
            self.overdue_episodes += 1


@dataclass(frozen=True)
class _Hints:
    """What the reader needs of one definition, looked up once."""

    definition: Pathway
    stages: frozenset[str]
    goal: str | None
    overdue: frozenset[str]

    @classmethod
    def of(cls, definition: Pathway) -> _Hints:
        hints = definition.presentation
        return cls(definition, frozenset(hints.stages), hints.goal, monitoring(definition).overdue)


def _daily(history: CohortHistory) -> list[datetime]:
    days = max(1, (history.end - history.start).days)
    return [history.start + timedelta(days=d) for d in range(days + 1)]


def plot_cohort(history: CohortHistory, path: Path, *, title: str | None = None) -> Path:
    """Write a PNG: patients per state over time (stacked), and the weeks to the goal state.

    `title` defaults to the titles (else names) of the pathways in the cohort.
    """
    require("matplotlib", "drawing a cohort plot")
    from matplotlib.figure import Figure  # lazily: matplotlib is slow to import

    fig = Figure(figsize=(13, 5.5), dpi=110, layout="constrained")
    states_ax, weeks_ax = fig.subplots(1, 2, width_ratios=[2.2, 1])
    _stacked_states(states_ax, history)
    _resolution_histogram(weeks_ax, history)
    if title is None:
        names = dict.fromkeys(d.presentation.title or d.model.title or d.name for d in history.definitions)
        title = " / ".join(names) or "cohort"
    fig.suptitle(f"{title}: {len(history.times)} patients, {history.events} audited events", fontsize=13)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _stacked_states(ax: Axes, history: CohortHistory) -> None:
    days = _daily(history)
    counts = [history.counts_at(day) for day in days]
    order = history.state_order({s for c in counts for s in c})
    order = [s for s in order if any(c[s] for c in counts)]
    colours = history.colours
    weeks = [(day - history.start) / WEEK for day in days]
    ax.set_title("patients per state")
    if not order:
        ax.text(0.5, 0.5, "no patient enrolled", ha="center", va="center", transform=ax.transAxes)
        return
    ax.stackplot(
        weeks,
        [[c[s] for c in counts] for s in order],
        labels=[s.replace("_", " ") for s in order],
        colors=[colours.get(s, NEUTRAL_COLOUR) for s in order],
        alpha=0.9,
    )
    ax.set_xlim(0, weeks[-1])
    ax.set_ylim(0, max(sum(c.values()) for c in counts) * 1.3)  # headroom for the legend
    ax.set_xlabel(f"weeks since {history.start:%Y-%m-%d}")
    ax.set_ylabel("patients")
    ax.legend(loc="upper center", fontsize=8, ncols=4, framealpha=0.85)
    ax.grid(alpha=0.3)


def _resolution_histogram(ax: Axes, history: CohortHistory) -> None:
    weeks = history.resolution_weeks
    goals = history.goals
    goal = " / ".join(g.replace("_", " ") for g in goals) or "goal"
    ax.set_title(f"weeks from the first stage to {goal}")
    ax.set_xlabel("weeks")
    ax.set_ylabel(f"episodes reaching {goal}")
    ax.grid(alpha=0.3)
    if not weeks:
        ax.text(0.5, 0.5, f"no patient reached {goal}", ha="center", va="center", transform=ax.transAxes)
        return
    bins = _bins(weeks)
    colour = history.colours.get(goals[0], NEUTRAL_COLOUR) if goals else NEUTRAL_COLOUR
    ax.hist(weeks, bins=bins, color=colour, edgecolor="white")
    median = statistics.median(weeks)
    ax.axvline(median, color="#264653", linestyle="--", label=f"median {median:.1f} weeks (n={len(weeks)})")
    ax.legend(loc="upper right", fontsize=8)


def _bins(values: Iterable[float]) -> list[float]:
    top = int(max(values)) + 2
    return [float(w) for w in range(0, top + 1)]
