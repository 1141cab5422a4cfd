"""A seeded synthetic cohort on a pathway, run through the public Engine API.

What the patients are like comes from a scenario file beside the pathway's definition
(`states/pathways/scenarios/<pathway>.yaml`, or any file named): archetypes with their share of
the cohort, how each responds on each stage of the pathway, patient factors, and the events
that interrupt a course. This module only drives them: it *sends events* (an intake, visits
with the plotted measure, weekly `tick` sweeps, and the archetypes' own events). Which state a
patient ends up in is decided by the engine's rules alone; the simulated patient reads its
state back (as a care backend would) to know which stage it is on and whether to book another
visit. Nothing here names a state, field or event of any pathway.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from carepath.errors import Category
from states import Pathway, get_pathway, pathways
from states._registry import BUILTIN_DIR

from ._clock import FakeClock
from ._engine import DEFAULT_PATHWAY, Engine, Status
from ._errors import CarepathError

__all__ = [
    "DEFAULT_PATIENTS",
    "DEFAULT_SEED",
    "DEFAULT_START",
    "DEFAULT_WEEKS",
    "SCENARIO_DIR",
    "Profile",
    "Scenario",
    "SimulationError",
    "SimulationResult",
    "cohort_start",
    "load_scenario",
    "make_profiles",
    "pathway_scenarios",
    "simulate",
]

DEFAULT_PATIENTS = 300
DEFAULT_SEED = 7
DEFAULT_WEEKS = 26  # six months
# A Monday at midnight; the weekly sweep runs then, before the clinic opens.
DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC)
WEEK = timedelta(weeks=1)
SCENARIO_DIR = BUILTIN_DIR / "scenarios"
_CLINIC_OPENS, _CLINIC_HOURS = 8, 9


class SimulationError(CarepathError):
    """Raised when a simulation cannot run as asked (an engine without a fake clock, no patients, a bad scenario)."""

    code = "invalid_simulation"
    category = Category.INVALID_INPUT


# -- the scenario format ----------------------------------------------------------------------------


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MeasureSpec(_Spec):
    """The plotted payload field the simulation moves (default: the definition's timeline input)."""

    field: str | None = None
    start: Any = Field(description="the value at intake (a value spec)")
    noise: float = 0.0


class SendSpec(_Spec):
    """An event sent with a payload template (values: see `_value`)."""

    event: str
    payload: dict[str, Any] = {}
    actor: str = "clinic"
    in_state: str | None = Field(None, description="sent only when the patient is in this state")


class VisitSpec(SendSpec):
    """The visit of a patient on a stage, every `every_weeks` (uniform), sometimes missed and rebooked."""

    every_weeks: tuple[float, float]
    missed_chance: float = 0.0
    rebook_days: tuple[int, int] = (7, 14)


class FollowRow(_Spec):
    """One row of a value that follows the measure: the first row that holds gives `value`."""

    at_most: float | None = None
    falling: bool = False
    steady: bool = False
    value: Any


class FactorSpec(_Spec):
    """A patient factor: `value` (default true) with `chance`, or `else_chance` when `when` does not hold."""

    value: Any = True
    chance: float | None = None
    when: dict[str, Any] | None = Field(None, description="{factor, min, max} the chance depends on")
    else_chance: float = 0.0
    unless: tuple[str, ...] = Field((), description="factors whose presence rules this one out")


class EventVisitSpec(_Spec):
    """What happens at an archetype's event visit: payload changes, a stop, another event instead or after."""

    payload: dict[str, Any] = {}
    stop: bool = False
    instead: SendSpec | None = None
    then: SendSpec | None = None


class RelapseSpec(SendSpec):
    """After the goal state: `event` after `after_weeks`, then the intake again after `return_days`."""

    after_weeks: tuple[float, float]
    return_days: tuple[int, int]


class HandoverSpec(_Spec):
    """Patients whose course ends with one of `reasons` are enrolled on the scenario `to`'s pathway
    (the hand-over recorded) after `after_days`, and carry on as a patient of that scenario."""

    to: str = Field(description="a scenario (by pathway name or file) whose pathway takes the hand-over")
    reasons: tuple[str, ...]
    after_days: tuple[int, int] = (3, 10)


class ArchetypeSpec(_Spec):
    share: float = Field(ge=0, le=1)
    profile: dict[str, Any] = {}
    response: dict[str, Any] | None = None
    onset_weeks: Any = None
    intake: dict[str, Any] = {}
    event_visit: Any = 0
    at_event_visit: EventVisitSpec = EventVisitSpec()
    relapse: RelapseSpec | None = None


class Scenario(_Spec):
    """A synthetic cohort for one pathway."""

    pathway: str
    version: int | None = Field(None, description="the definition version the payloads fit (default: the latest)")
    allow_unapproved: bool = Field(False, description="enrol on a version not approved (under review, draft)")
    id_prefix: str = Field("p", pattern=r"^[a-z]+$", description="patient ids are <prefix>-<number>")
    cohort_weight: float = Field(1.0, gt=0, description="share of a demo run over several scenarios")
    handover: HandoverSpec | None = None
    measure: MeasureSpec
    enrolment_days: int = Field(21, ge=1)
    intake: SendSpec
    visit: VisitSpec
    follow: dict[str, tuple[FollowRow, ...]] = {}
    profile: dict[str, Any] = {}
    factors: dict[str, Any] = {}
    response: dict[str, Any] = Field(description="stage -> relief reached (a value spec)")
    onset_weeks: Any
    archetypes: dict[str, ArchetypeSpec]

    @model_validator(mode="after")
    def _shares(self) -> Scenario:
        total = sum(a.share for a in self.archetypes.values())
        if not self.archetypes or abs(total - 1) > 1e-6:
            raise ValueError(f"the archetypes' shares sum to {total:g}, not 1")
        return self

    @property
    def mix(self) -> dict[str, float]:
        """Share of the cohort per archetype."""
        return {name: spec.share for name, spec in self.archetypes.items()}

    def problems(self, definition: Pathway) -> list[str]:
        """What does not fit the definition: unknown events, states, payload fields or factors."""
        model = definition.model
        states = set(model.state_ids())
        problems: list[str] = []
        sends: list[tuple[str, SendSpec]] = [("intake", self.intake), ("visit", self.visit)]
        for name, archetype in self.archetypes.items():
            for kind in ("instead", "then"):
                send = getattr(archetype.at_event_visit, kind)
                if send is not None:
                    sends.append((f"archetypes.{name}.at_event_visit.{kind}", send))
            if archetype.relapse is not None:
                sends.append((f"archetypes.{name}.relapse", archetype.relapse))
            problems += [
                f"archetypes.{name}.response: unknown state {s!r}" for s in archetype.response or {} if s not in states
            ]
        for where, send in sends:
            event = model.events.get(send.event)
            if event is None:
                problems.append(f"{where}: {definition.name} has no event {send.event!r}")
                continue
            problems += [
                f"{where}: {send.event} has no payload field {f!r}" for f in send.payload if f not in event.payload
            ]
            if send.in_state is not None and send.in_state not in states:
                problems.append(f"{where}: unknown state {send.in_state!r}")
        problems += [f"response: unknown state {s!r}" for s in self.response if s not in states]
        problems += [f"factors: {definition.name} has no factor {f!r}" for f in self.factors if f not in model.factors]
        if self.measure_field(definition) is None:
            problems.append("measure.field: not given, and the definition has no timeline input")
        return problems

    def measure_field(self, definition: Pathway) -> str | None:
        timeline = definition.presentation.timeline
        return self.measure.field or (timeline.input if timeline is not None else None)


def pathway_scenarios() -> list[str]:
    """The pathways with a scenario beside their definitions, the default pathway first."""
    names = {name for name, _ in pathways()}
    found = sorted(path.stem for path in SCENARIO_DIR.glob("*.yaml") if path.stem in names)
    return sorted(found, key=lambda name: name != DEFAULT_PATHWAY)


def load_scenario(source: str | Path = DEFAULT_PATHWAY) -> Scenario:
    """A scenario by pathway name (from SCENARIO_DIR) or from a YAML or JSON file."""
    path = Path(source)
    if not path.suffix:
        path = SCENARIO_DIR / f"{source}.yaml"
    if not path.is_file():
        raise SimulationError(f"no simulation scenario at {path}")
    try:
        return Scenario.model_validate(yaml.safe_load(path.read_text()))
    except (yaml.YAMLError, ValidationError) as error:
        raise SimulationError(f"{path}: {error}") from error


# -- values -------------------------------------------------------------------------------------------

_OPERATORS = frozenset({"uniform", "integer", "normal", "choice", "sample", "concat", "weighted"})


def _value(spec: Any, rng: random.Random, refs: Mapping[str, Any]) -> Any:
    """Draw a value from a spec: a literal, a reference ("$measure", "$profile.x", "$follow.x") or an operator."""
    if isinstance(spec, str) and spec.startswith("$"):
        if spec[1:] not in refs:
            raise SimulationError(f"unknown reference {spec!r}")
        return refs[spec[1:]]
    if isinstance(spec, list):
        return [_value(item, rng, refs) for item in spec]
    if not isinstance(spec, dict) or not (_OPERATORS & spec.keys()):
        return spec
    if "uniform" in spec:
        low, high = spec["uniform"]
        return rng.uniform(low, high)
    if "integer" in spec:
        low, high = spec["integer"]
        return rng.randint(low, high)
    if "normal" in spec:
        mean, sd = spec["normal"]
        drawn = round(rng.gauss(mean, sd))
        return max(spec.get("min", drawn), min(spec.get("max", drawn), drawn))
    if "choice" in spec:
        return _value(rng.choice(spec["choice"]), rng, refs)
    if "sample" in spec:
        low, high = spec.get("count", (1, 1))
        return rng.sample(list(spec["sample"]), rng.randint(low, high))
    if "concat" in spec:
        return [item for part in spec["concat"] for item in _value(part, rng, refs)]
    options = spec["weighted"]
    pick = rng.choices(options, weights=[option["weight"] for option in options])[0]
    return _value(pick["value"], rng, refs)


def _factors(specs: Mapping[str, Any], rng: random.Random) -> dict[str, Any]:
    """Patient factors in the scenario's order; a factor with a chance is present only when drawn."""
    factors: dict[str, Any] = {}
    for name, raw in specs.items():
        if not (isinstance(raw, dict) and "chance" in raw):
            factors[name] = _value(raw, rng, {})
            continue
        spec = FactorSpec.model_validate(raw)
        if any(other in factors for other in spec.unless):
            continue
        chance = spec.chance or 0.0
        if spec.when is not None:
            value = factors.get(spec.when["factor"])
            holds = value is not None and spec.when.get("min", value) <= value <= spec.when.get("max", value)
            chance = chance if holds else spec.else_chance
        if chance > 0 and rng.random() < chance:  # no draw for a factor that cannot occur
            factors[name] = _value(spec.value, rng, {})
    return factors


# -- profiles and the run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """Who a simulated patient is and how their measure responds on each stage."""

    patient_id: str
    archetype: str
    enrolled_at: datetime
    factors: dict[str, Any]
    # Values drawn once (e.g. findings), referenced in payloads as "$profile.<name>".
    values: dict[str, Any]
    measure: float
    # Fraction of the measure at stage entry relieved once a stage has worked for `onset_weeks`.
    effects: dict[str, float]
    onset_weeks: float
    # The visit (1-based) at which the archetype's event happens, if it has one.
    event_visit: int = 0


@dataclass
class SimulationResult:
    """What a simulation did: the profiles it ran, and the number of commands it sent."""

    start: datetime
    end: datetime
    profiles: dict[str, Profile]
    definition: Pathway
    sent: int = 0
    sweeps: int = 0
    advanced_by_sweeps: int = 0
    # Every definition the cohorts ran on (the first is `definition`).
    definitions: list[Pathway] = field(default_factory=list)
    # (patient, from pathway, to pathway) for each hand-over made.
    handovers: list[tuple[str, str, str]] = field(default_factory=list)

    def archetype(self, patient_id: str) -> str:
        return self.profiles[patient_id].archetype


Progress = Callable[[int, int], None]


def simulate(
    engine: Engine,
    *,
    scenario: Scenario | None = None,
    patients: int = DEFAULT_PATIENTS,
    seed: int = DEFAULT_SEED,
    start: datetime = DEFAULT_START,
    weeks: int = DEFAULT_WEEKS,
    progress: Progress | None = None,
    more: Sequence[tuple[Scenario, int]] = (),
) -> SimulationResult:
    """Run a seeded cohort for `weeks` on `engine`, whose clock must be a FakeClock at or before `start`.

    The scenario defaults to the default pathway's; `more` adds cohorts of other scenarios
    (scenario, patients) over the same weeks (their ids must not clash). A scenario's hand-over
    enrols the patients it names on the pathway of another scenario. The clock follows the
    simulated time, so each record is stamped when its event happens. `progress(week, weeks)`
    is called after each weekly sweep.
    """
    clock = engine.clock
    if not isinstance(clock, FakeClock):
        raise SimulationError("the simulation moves time forward: give the engine a FakeClock")
    if clock.now > start:
        raise SimulationError(f"the engine's clock ({clock.now.isoformat()}) is after the start {start.isoformat()}")
    cohorts = [(scenario or load_scenario(), patients), *more]
    prefixes = [s.id_prefix for s, _ in cohorts]
    if len(set(prefixes)) != len(prefixes):
        raise SimulationError(f"cohorts need distinct id prefixes, got {', '.join(prefixes)}")
    definitions = [_checked(s) for s, _ in cohorts]
    end = start + weeks * WEEK
    result = SimulationResult(start, end, {}, definitions[0], definitions=definitions)
    courses: dict[str, _Course] = {}
    agenda = _Agenda()
    for week in range(1, weeks + 1):
        agenda.push(start + week * WEEK, None)
    for (cohort, size), definition in zip(cohorts, definitions, strict=True):
        for p in make_profiles(size, seed, start, cohort):
            result.profiles[p.patient_id] = p
            courses[p.patient_id] = _Course(p, cohort, definition, random.Random(f"{seed}:{p.patient_id}:course"))
            agenda.push(p.enrolled_at, p.patient_id)
    handovers: dict[str, tuple[Scenario, Pathway]] = {}
    while agenda:
        at, patient_id = agenda.pop()
        if at > end:
            break
        clock.set(max(clock.now, at))
        if patient_id is None:
            report = engine.tick(at)
            result.sweeps += 1
            result.advanced_by_sweeps += report.advanced
            if progress is not None:
                progress(result.sweeps, weeks)
            continue
        course = courses[patient_id]
        following = course.act(engine, at)
        result.sent += course.take_sent()
        handover = course.scenario.handover
        if following is None and handover is not None and course.outcome_reason in handover.reasons:
            if handover.to not in handovers:
                target = load_scenario(handover.to)
                handovers[handover.to] = target, _checked(target)
            target, definition = handovers[handover.to]
            rng = random.Random(f"{seed}:{patient_id}:handover")
            when = at + timedelta(days=rng.randint(*handover.after_days))
            profile = _profile(patient_id, _allocate(target.mix, 1)[0], target, start, rng)
            profile = replace(profile, enrolled_at=when.replace(microsecond=0), factors={})
            courses[patient_id] = _Course(profile, target, definition, rng, handover_from=course.scenario.pathway)
            result.handovers.append((patient_id, course.scenario.pathway, target.pathway))
            following = profile.enrolled_at
        if following is not None:
            agenda.push(following, patient_id)
    return result


def _checked(scenario: Scenario) -> Pathway:
    definition = get_pathway(scenario.pathway, scenario.version)
    problems = scenario.problems(definition)
    if problems:
        raise SimulationError(
            f"the scenario does not fit {definition.name} v{definition.version}: " + "; ".join(problems)
        )
    return definition


def cohort_start(now: datetime, weeks: int = DEFAULT_WEEKS) -> datetime:
    """A start `weeks` before the last Monday midnight (UTC) at or before `now`: a cohort that ends this week."""
    today = now.astimezone(UTC).date()
    monday = datetime.combine(today - timedelta(days=today.weekday()), time(0), tzinfo=UTC)
    return monday - weeks * WEEK


def make_profiles(
    patients: int, seed: int, start: datetime = DEFAULT_START, scenario: Scenario | None = None
) -> list[Profile]:
    """The cohort's profiles: archetypes in the mix's proportions, shuffled by the seed."""
    if patients < 1:
        raise SimulationError(f"a cohort needs at least one patient, got {patients}")
    scenario = scenario or load_scenario()
    rng = random.Random(f"{seed}:cohort")
    archetypes = _allocate(scenario.mix, patients)
    rng.shuffle(archetypes)
    width = len(str(patients))
    prefix = scenario.id_prefix
    # The default prefix keeps the seeds of cohorts made before prefixes existed.
    tag = "" if prefix == "p" else f"{prefix}:"
    if tag:
        rng = random.Random(f"{seed}:{tag}cohort")
        archetypes = _allocate(scenario.mix, patients)
        rng.shuffle(archetypes)
    return [
        _profile(f"{prefix}-{i + 1:0{width}d}", archetype, scenario, start, random.Random(f"{seed}:{tag}{i}:profile"))
        for i, archetype in enumerate(archetypes)
    ]


def _allocate(mix: Mapping[str, float], patients: int) -> list[str]:
    """Archetypes in the mix's proportions (largest remainder), so a cohort matches the mix exactly."""
    exact = {kind: share * patients for kind, share in mix.items()}
    counts = {kind: int(value) for kind, value in exact.items()}
    by_remainder = sorted(exact, key=lambda kind: exact[kind] - counts[kind], reverse=True)
    for kind in by_remainder[: patients - sum(counts.values())]:
        counts[kind] += 1
    return [kind for kind, count in counts.items() for _ in range(count)]


def _profile(patient_id: str, archetype: str, scenario: Scenario, start: datetime, rng: random.Random) -> Profile:
    """Draw a profile; the draws follow one fixed order, so a seed always gives the same patient."""
    spec = scenario.archetypes[archetype]
    day = rng.randrange(scenario.enrolment_days)
    enrolled_at = start + timedelta(days=day, hours=_CLINIC_OPENS + rng.random() * _CLINIC_HOURS)
    response = spec.response if spec.response is not None else scenario.response
    effects = {stage: float(_value(relief, rng, {})) for stage, relief in response.items()}
    onset = float(_value(spec.onset_weeks if spec.onset_weeks is not None else scenario.onset_weeks, rng, {}))
    event_visit = int(_value(spec.event_visit, rng, {}))
    own = {name: _value(value, rng, {}) for name, value in spec.profile.items() if name not in scenario.profile}
    factors = _factors(scenario.factors, rng)
    shared = {name: _value(spec.profile.get(name, value), rng, {}) for name, value in scenario.profile.items()}
    return Profile(
        patient_id=patient_id,
        archetype=archetype,
        enrolled_at=enrolled_at.replace(microsecond=0),
        factors=factors,
        values={**shared, **own},
        measure=float(_value(scenario.measure.start, rng, {})),
        effects=effects,
        onset_weeks=onset,
        event_visit=event_visit,
    )


class _Agenda:
    """Simulated events in time order; ties keep the order they were pushed in."""

    def __init__(self) -> None:
        self._heap: list[tuple[datetime, int, str | None]] = []
        self._pushed = 0

    def __bool__(self) -> bool:
        return bool(self._heap)

    def push(self, at: datetime, patient_id: str | None) -> None:
        heapq.heappush(self._heap, (at, self._pushed, patient_id))
        self._pushed += 1

    def pop(self) -> tuple[datetime, str | None]:
        at, _, patient_id = heapq.heappop(self._heap)
        return at, patient_id


class _Course:
    """One simulated patient: attends visits and reports the measure; the engine decides the state."""

    def __init__(
        self,
        profile: Profile,
        scenario: Scenario,
        definition: Pathway,
        rng: random.Random,
        handover_from: str | None = None,
    ) -> None:
        self.profile = profile
        self.handover_from = handover_from
        self.outcome_reason: str | None = None
        self.scenario = scenario
        self.archetype = scenario.archetypes[profile.archetype]
        self.rng = rng
        hints = definition.presentation
        self.stages = frozenset(hints.stages)
        self.goal = hints.goal
        self.intake_state = next((s.id for s in definition.model.states if s.initial), definition.model.states[0].id)
        self.field = scenario.measure_field(definition) or ""
        self.scale = hints.timeline.scale if hints.timeline is not None else (0.0, 10.0)
        self.state: str | None = None  # as the engine last reported it
        self.visits = 0
        self.relapsed = False
        self.stage_started: datetime | None = None
        self.stage_measure = profile.measure
        self.measure = profile.measure
        self._sent = 0

    def take_sent(self) -> int:
        sent, self._sent = self._sent, 0
        return sent

    def act(self, engine: Engine, at: datetime) -> datetime | None:
        """Do what the patient does at `at`; return when they come back, or None."""
        if self.state is None:
            status = engine.enroll(
                self.profile.patient_id,
                at,
                pathway=self.scenario.pathway,
                version=self.scenario.version,
                allow_unapproved=self.scenario.allow_unapproved,
                handover_from=self.handover_from,
                # A patient handed over keeps the factors of the enrolment they come from.
                factors=None if self.handover_from else self.profile.factors,
                actor="clinic" if self.handover_from else None,
            )
            self._record(status, at)
            return self._intake(engine, at)
        if self.state == self.intake_state:
            return self._intake(engine, at)
        if self.state == self.goal:
            return self._relapse(engine, at)
        return self._visit(engine, at)

    # -- visits ---------------------------------------------------------------------

    def _intake(self, engine: Engine, at: datetime) -> datetime | None:
        self._send(engine, self.scenario.intake, at, self._payload(self.scenario.intake.payload, self.archetype.intake))
        return self._next_visit(at)

    def _visit(self, engine: Engine, at: datetime) -> datetime | None:
        visit, special = self.scenario.visit, self.archetype.at_event_visit
        if special.stop and self.visits >= self.profile.event_visit:
            return None  # stops coming; the weekly sweeps move the schedule on
        if self.rng.random() < visit.missed_chance:
            return at + timedelta(days=self.rng.randint(*visit.rebook_days))  # did not attend; rebooked
        self.visits += 1
        event_visit = self.visits == self.profile.event_visit
        if event_visit and special.instead is not None:
            self._send(engine, special.instead, at, self._payload(special.instead.payload))
            return None
        self._send(engine, visit, at, self._observation(at, special.payload if event_visit else {}))
        if event_visit and special.then is not None and special.then.in_state in (None, self.state):
            self._send(engine, special.then, at, self._payload(special.then.payload))
        relapse = self.archetype.relapse
        if self.state == self.goal and relapse is not None and not self.relapsed:
            return at + timedelta(weeks=self.rng.uniform(*relapse.after_weeks))
        return self._next_visit(at)

    def _relapse(self, engine: Engine, at: datetime) -> datetime | None:
        relapse = self.archetype.relapse
        if relapse is None:
            return None
        self.relapsed = True
        self._send(engine, relapse, at, self._payload(relapse.payload))
        return at + timedelta(days=self.rng.randint(*relapse.return_days))  # seen again for a new intake

    def _observation(self, at: datetime, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The visit's payload: the measure from the stage the engine has the patient on, and what follows it."""
        profile = self.profile
        assert self.stage_started is not None and self.state in self.stages
        weeks = (at - self.stage_started) / WEEK
        relief = profile.effects.get(self.state, 0.0) * min(1.0, weeks / profile.onset_weeks)
        low, high = self.scale
        noise = self.rng.gauss(0, self.scenario.measure.noise)
        measure = float(max(low, min(high, round(self.stage_measure * (1 - relief) + noise))))
        follow = {name: _follow(rows, measure, self.measure) for name, rows in self.scenario.follow.items()}
        refs = {"measure": measure, **{f"follow.{name}": value for name, value in follow.items()}}
        return self._payload(self.scenario.visit.payload, overrides, refs)

    def _payload(
        self, template: Mapping[str, Any], overrides: Mapping[str, Any] = {}, refs: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        refs = {"measure": self.measure, **{f"profile.{k}": v for k, v in self.profile.values.items()}, **(refs or {})}
        return {field: _value(spec, self.rng, refs) for field, spec in {**template, **overrides}.items()}

    def _next_visit(self, at: datetime) -> datetime | None:
        if self.state not in self.stages:
            return None
        low, high = self.scenario.visit.every_weeks
        return at + timedelta(weeks=self.rng.uniform(low, high), hours=self.rng.uniform(-3, 3))

    # -- talking to the engine -------------------------------------------------------------

    def _send(self, engine: Engine, send: SendSpec, at: datetime, data: dict[str, Any]) -> None:
        value = data.get(self.field)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self.measure = float(value)
        result = engine.send(
            self.profile.patient_id, send.event, at, data, pathway=self.scenario.pathway, actor=send.actor
        )
        self._record(result.status, at)

    def _record(self, status: Status, at: datetime) -> None:
        """Note the state the engine reports; a newly entered stage starts its clock at the last measure."""
        self._sent += 1
        reason = (status.outcome or {}).get("reason")
        self.outcome_reason = reason if isinstance(reason, str) else None
        if status.state in self.stages and status.state != self.state:
            self.stage_started = at
            self.stage_measure = self.measure
        self.state = status.state


def _follow(rows: tuple[FollowRow, ...], measure: float, previous: float) -> Any:
    for row in rows:
        if row.at_most is not None and measure > row.at_most:
            continue
        if row.falling and not measure < previous:
            continue
        if row.steady and measure != previous:
            continue
        return row.value
    return None
