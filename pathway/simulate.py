"""A seeded synthetic cohort on the piriformis pathway, run through the public Engine API.

Each simulated patient has an archetype (how they respond to each line of treatment, and
which event, if any, interrupts their course). The simulation only *sends events*: visits
with the patient's pain and fasciculations, weekly `tick` sweeps, a few overrides,
withdrawals and relapses. Which state a patient ends up in is decided by the engine's rules
alone; the simulated patient reads its state back (as a care backend would) to know which
treatment it is on and whether to book another visit.

The archetype mix and every number below are illustrative choices for a demonstration, not
epidemiology.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from typing import Any

from .clock import FakeClock
from .engine import Engine, Status
from .errors import CarepathError

# The simulated patients speak the events of piriformis version 1 (no side, documented_compression
# on reassess), so they are enrolled on that version.
SIMULATED_VERSION = 1

__all__ = [
    "ARCHETYPE_MIX",
    "DEFAULT_PATIENTS",
    "DEFAULT_SEED",
    "DEFAULT_START",
    "DEFAULT_WEEKS",
    "Archetype",
    "Profile",
    "cohort_start",
    "SimulationError",
    "SimulationResult",
    "make_profiles",
    "simulate",
]

DEFAULT_PATIENTS = 300
DEFAULT_SEED = 7
DEFAULT_WEEKS = 26  # six months
# A Monday at midnight; the weekly sweep runs then, before the clinic opens.
DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC)
WEEK = timedelta(weeks=1)
ENROLMENT_DAYS = 21  # patients join during the first three weeks
LINES = ("first_line", "second_line", "third_line")
MISSED_VISIT_CHANCE = 0.08
CAUDA_EQUINA_SHARE = 0.4
# Supporting findings and the special tests among them (DESIGN.md section 2 vocabulary).
SUPPORTING = ("sitting_aggravation", "sciatic_notch_tenderness", "posterior_thigh_radiation")
SPECIAL_TESTS = ("fair_test", "pace_sign", "midgluteal_tenderness")
RADICULAR = ("straight_leg_raise", "dermatomal_deficit")
OTHER_RED_FLAGS = ("progressive_motor_deficit", "infection", "cancer", "trauma", "fasciculations_with_weakness")
WITHDRAW_REASONS = ("declined further treatment", "moved out of the area")
OVERRIDE_REASON = "clinician judgement: start second-line treatment early"


class SimulationError(CarepathError):
    """Raised when a simulation cannot run as asked (an engine without a fake clock, no patients)."""


class Archetype(StrEnum):
    """How a simulated patient's course goes."""

    RESPONDER = "responder"
    PARTIAL_RESPONDER = "partial_responder"
    NON_RESPONDER = "non_responder"
    RED_FLAG_AT_ASSESSMENT = "red_flag_at_assessment"
    RED_FLAG_AT_REASSESSMENT = "red_flag_at_reassessment"
    WORSENING_FASCICULATIONS = "worsening_fasciculations"
    RADICULAR_SIGNS = "radicular_signs"
    CRITERIA_NOT_MET = "criteria_not_met"
    MISSED_REASSESSMENTS = "missed_reassessments"
    CLINICIAN_OVERRIDE = "clinician_override"
    WITHDRAWAL = "withdrawal"
    RELAPSE = "relapse"


# Share of the cohort per archetype (sums to 1).
ARCHETYPE_MIX: dict[Archetype, float] = {
    Archetype.RESPONDER: 0.36,
    Archetype.PARTIAL_RESPONDER: 0.18,
    Archetype.NON_RESPONDER: 0.14,
    Archetype.RED_FLAG_AT_ASSESSMENT: 0.03,
    Archetype.RED_FLAG_AT_REASSESSMENT: 0.02,
    Archetype.WORSENING_FASCICULATIONS: 0.04,
    Archetype.RADICULAR_SIGNS: 0.06,
    Archetype.CRITERIA_NOT_MET: 0.05,
    Archetype.MISSED_REASSESSMENTS: 0.05,
    Archetype.CLINICIAN_OVERRIDE: 0.02,
    Archetype.WITHDRAWAL: 0.03,
    Archetype.RELAPSE: 0.02,
}


@dataclass(frozen=True)
class Profile:
    """Who a simulated patient is and how their symptoms respond to each line of treatment."""

    patient_id: str
    archetype: Archetype
    enrolled_at: datetime
    factors: dict[str, Any]
    findings: list[str]
    pain: int
    # Fraction of the pain at line entry relieved once a line has worked for `onset_weeks`.
    effects: dict[str, float]
    onset_weeks: float
    # The reassessment (1-based) at which the archetype's event happens, if it has one.
    event_visit: int = 0
    red_flags: list[str] = field(default_factory=list)


@dataclass
class SimulationResult:
    """What a simulation did: the profiles it ran, and the number of commands it sent."""

    start: datetime
    end: datetime
    profiles: dict[str, Profile]
    sent: int = 0
    sweeps: int = 0
    advanced_by_sweeps: int = 0

    def archetype(self, patient_id: str) -> Archetype:
        return self.profiles[patient_id].archetype


Progress = Callable[[int, int], None]


def simulate(
    engine: Engine,
    *,
    patients: int = DEFAULT_PATIENTS,
    seed: int = DEFAULT_SEED,
    start: datetime = DEFAULT_START,
    weeks: int = DEFAULT_WEEKS,
    progress: Progress | None = None,
) -> SimulationResult:
    """Run a seeded cohort for `weeks` on `engine`, whose clock must be a FakeClock at or before `start`.

    The clock follows the simulated time, so each record is stamped when its event happens.
    `progress(week, weeks)` is called after each weekly sweep.
    """
    clock = engine.clock
    if not isinstance(clock, FakeClock):
        raise SimulationError("the simulation moves time forward: give the engine a FakeClock")
    if clock.now > start:
        raise SimulationError(f"the engine's clock ({clock.now.isoformat()}) is after the start {start.isoformat()}")
    profiles = make_profiles(patients, seed, start)
    end = start + weeks * WEEK
    result = SimulationResult(start, end, {p.patient_id: p for p in profiles})
    courses = {p.patient_id: _Course(p, random.Random(f"{seed}:{p.patient_id}:course")) for p in profiles}
    agenda = _Agenda()
    for week in range(1, weeks + 1):
        agenda.push(start + week * WEEK, None)
    for profile in profiles:
        agenda.push(profile.enrolled_at, profile.patient_id)
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
        if following is not None:
            agenda.push(following, patient_id)
    return result


def cohort_start(now: datetime, weeks: int = DEFAULT_WEEKS) -> datetime:
    """A start `weeks` before the last Monday midnight (UTC) at or before `now`: a cohort that ends this week."""
    today = now.astimezone(UTC).date()
    monday = datetime.combine(today - timedelta(days=today.weekday()), time(0), tzinfo=UTC)
    return monday - weeks * WEEK


def make_profiles(patients: int, seed: int, start: datetime = DEFAULT_START) -> list[Profile]:
    """The cohort's profiles: archetypes in the mix's proportions, shuffled by the seed."""
    if patients < 1:
        raise SimulationError(f"a cohort needs at least one patient, got {patients}")
    rng = random.Random(f"{seed}:cohort")
    archetypes = _allocate(patients)
    rng.shuffle(archetypes)
    width = len(str(patients))
    return [
        _profile(f"p-{i + 1:0{width}d}", archetype, start, random.Random(f"{seed}:{i}:profile"))
        for i, archetype in enumerate(archetypes)
    ]


def _allocate(patients: int) -> list[Archetype]:
    """Archetypes in the mix's proportions (largest remainder), so a cohort matches the mix exactly."""
    exact = {kind: share * patients for kind, share in ARCHETYPE_MIX.items()}
    counts = {kind: int(value) for kind, value in exact.items()}
    by_remainder = sorted(exact, key=lambda kind: exact[kind] - counts[kind], reverse=True)
    for kind in by_remainder[: patients - sum(counts.values())]:
        counts[kind] += 1
    return [kind for kind, count in counts.items() for _ in range(count)]


def _profile(patient_id: str, archetype: Archetype, start: datetime, rng: random.Random) -> Profile:
    enrolled_at = start + timedelta(days=rng.randrange(ENROLMENT_DAYS), hours=8 + rng.random() * 9)
    effects, onset = _response(archetype, rng)
    event_visit = 0
    if archetype in _INTERRUPTED:
        event_visit = 1 if archetype is Archetype.CLINICIAN_OVERRIDE else rng.randint(1, 3)
    red_flags: list[str] = []
    if archetype in (Archetype.RED_FLAG_AT_ASSESSMENT, Archetype.RED_FLAG_AT_REASSESSMENT):
        red_flags = ["cauda_equina"] if rng.random() < CAUDA_EQUINA_SHARE else [rng.choice(OTHER_RED_FLAGS)]
    return Profile(
        patient_id=patient_id,
        archetype=archetype,
        enrolled_at=enrolled_at.replace(microsecond=0),
        factors=_factors(rng),
        findings=_findings(archetype, rng),
        pain=rng.randint(5, 9),
        effects=effects,
        onset_weeks=onset,
        event_visit=event_visit,
        red_flags=red_flags,
    )


_INTERRUPTED = frozenset(
    {
        Archetype.RED_FLAG_AT_REASSESSMENT,
        Archetype.WORSENING_FASCICULATIONS,
        Archetype.MISSED_REASSESSMENTS,
        Archetype.WITHDRAWAL,
        Archetype.CLINICIAN_OVERRIDE,
    }
)


def _response(archetype: Archetype, rng: random.Random) -> tuple[dict[str, float], float]:
    """Relief reached on each line, and the weeks a line takes to reach it."""
    u = rng.uniform
    if archetype in (Archetype.RESPONDER, Archetype.RELAPSE):
        return {"first_line": u(0.75, 0.95), "second_line": u(0.6, 0.9), "third_line": u(0.4, 0.8)}, u(3, 8)
    if archetype in (Archetype.PARTIAL_RESPONDER, Archetype.CLINICIAN_OVERRIDE):
        return {"first_line": u(0.0, 0.2), "second_line": u(0.6, 0.9), "third_line": u(0.4, 0.8)}, u(4, 8)
    if archetype is Archetype.NON_RESPONDER:
        # Most do not respond to the third line either (refractory); some improve partly.
        third = u(0.0, 0.2) if rng.random() < 0.6 else u(0.35, 0.5)
        return {"first_line": u(0.0, 0.15), "second_line": u(0.0, 0.2), "third_line": third}, u(4, 8)
    return {"first_line": u(0.1, 0.6), "second_line": u(0.3, 0.8), "third_line": u(0.3, 0.8)}, u(3, 10)


def _findings(archetype: Archetype, rng: random.Random) -> list[str]:
    if archetype is Archetype.CRITERIA_NOT_MET:
        # Buttock pain with supporting findings but no special test positive.
        return ["buttock_pain", *rng.sample(SUPPORTING, rng.randint(1, 3))]
    findings = [
        "buttock_pain",
        *rng.sample(SPECIAL_TESTS, rng.randint(1, 3)),
        *rng.sample(SUPPORTING, rng.randint(2, 3)),
    ]
    if archetype is Archetype.RADICULAR_SIGNS:
        findings += rng.sample(RADICULAR, rng.randint(1, 2))
    return findings


def _factors(rng: random.Random) -> dict[str, Any]:
    """Patient factors, varied so the plans show their cautions and contraindications."""
    age = max(18, min(90, round(rng.gauss(47, 15))))
    factors: dict[str, Any] = {"age": age}
    chances = {
        "anticoagulant": 0.15 if age >= 65 else 0.04,
        "peptic_ulcer": 0.04,
        "severe_renal_impairment": 0.02,
        "heart_failure": 0.06 if age >= 65 else 0.01,
        "cardiac_conduction_disease": 0.02,
        "recent_myocardial_infarction": 0.01,
        "maoi": 0.01,
        "glaucoma": 0.03,
        "urinary_retention": 0.02,
        "infection_at_injection_site": 0.01,
        "neuromuscular_disease": 0.01,
        "uncontrolled_diabetes": 0.05,
    }
    factors.update({name: True for name, chance in chances.items() if rng.random() < chance})
    if 18 <= age <= 42 and rng.random() < 0.05:
        factors["pregnancy_weeks"] = rng.randint(8, 36)
    elif 18 <= age <= 42 and rng.random() < 0.03:
        factors["breastfeeding"] = True
    return factors


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
    """One simulated patient: attends visits and reports symptoms; the engine decides the state."""

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        self.profile = profile
        self.rng = rng
        self.state: str | None = None  # as the engine last reported it
        self.visits = 0
        self.relapsed = False
        self.line_started: datetime | None = None
        self.line_pain = float(profile.pain)
        self.last_pain = float(profile.pain)
        self._sent = 0

    def take_sent(self) -> int:
        sent, self._sent = self._sent, 0
        return sent

    def act(self, engine: Engine, at: datetime) -> datetime | None:
        """Do what the patient does at `at`; return when they come back, or None."""
        if self.state is None:
            self._record(
                engine.enroll(self.profile.patient_id, at, factors=self.profile.factors, version=SIMULATED_VERSION), at
            )
            return self._assess(engine, at)
        if self.state == "assessment":
            return self._assess(engine, at)
        if self.state == "resolved":
            return self._relapse(engine, at)
        return self._visit(engine, at)

    # -- visits ---------------------------------------------------------------------

    def _assess(self, engine: Engine, at: datetime) -> datetime | None:
        profile = self.profile
        red_flags = profile.red_flags if profile.archetype is Archetype.RED_FLAG_AT_ASSESSMENT else []
        data = {"findings": profile.findings, "pain": self.last_pain, "fasciculations": "present"}
        self._send(engine, "assess", at, {**data, "red_flags": red_flags})
        return self._next_visit(at)

    def _visit(self, engine: Engine, at: datetime) -> datetime | None:
        kind = self.profile.archetype
        if kind is Archetype.MISSED_REASSESSMENTS and self.visits >= self.profile.event_visit:
            return None  # stops coming; the weekly sweeps mark the reassessment due, then overdue
        if self.rng.random() < MISSED_VISIT_CHANCE:
            return at + timedelta(days=self.rng.randint(7, 14))  # did not attend; rebooked
        self.visits += 1
        if kind is Archetype.WITHDRAWAL and self.visits == self.profile.event_visit:
            self._send(engine, "withdraw", at, {"reason": self.rng.choice(WITHDRAW_REASONS)})
            return None
        self._send(engine, "reassess", at, self._reassessment(at))
        if kind is Archetype.CLINICIAN_OVERRIDE and self.visits == self.profile.event_visit == 1:
            self._override(engine, at)
        if self.state == "resolved" and kind is Archetype.RELAPSE and not self.relapsed:
            return at + timedelta(weeks=self.rng.uniform(3, 6))
        return self._next_visit(at)

    def _override(self, engine: Engine, at: datetime) -> None:
        """At the first reassessment a clinician moves a patient still on first line to second line."""
        if self.state == "first_line":
            data = {"to": "second_line", "reason": OVERRIDE_REASON, "clinician": "dr-demo"}
            self._send(engine, "override", at, data, actor="dr-demo")

    def _relapse(self, engine: Engine, at: datetime) -> datetime | None:
        self.relapsed = True
        self.last_pain = float(self.rng.randint(5, 7))
        self._send(engine, "relapse", at, {"pain": self.last_pain, "fasciculations": "present"})
        return at + timedelta(days=self.rng.randint(3, 10))  # seen again for a new assessment

    def _reassessment(self, at: datetime) -> dict[str, Any]:
        """Pain and fasciculations at a reassessment, from the line the engine has the patient on."""
        profile = self.profile
        assert self.line_started is not None and self.state in LINES
        weeks = (at - self.line_started) / WEEK
        relief = profile.effects[self.state] * min(1.0, weeks / profile.onset_weeks)
        pain = float(max(0, min(10, round(self.line_pain * (1 - relief) + self.rng.gauss(0, 0.6)))))
        fasciculations = _fasciculations(pain, self.last_pain)
        red_flags: list[str] = []
        if self.visits == profile.event_visit:
            if profile.archetype is Archetype.WORSENING_FASCICULATIONS:
                fasciculations = "worsening"
            if profile.archetype is Archetype.RED_FLAG_AT_REASSESSMENT:
                red_flags = profile.red_flags
        self.last_pain = pain
        return {"pain": pain, "fasciculations": fasciculations, "red_flags": red_flags}

    def _next_visit(self, at: datetime) -> datetime | None:
        if self.state not in LINES:
            return None
        return at + timedelta(weeks=self.rng.uniform(2, 4), hours=self.rng.uniform(-3, 3))

    # -- talking to the engine -------------------------------------------------------------

    def _send(self, engine: Engine, event: str, at: datetime, data: dict[str, Any], actor: str = "clinic") -> None:
        result = engine.send(self.profile.patient_id, event, at, data, actor=actor)
        self._record(result.status, at)

    def _record(self, status: Status, at: datetime) -> None:
        """Note the state the engine reports; a newly entered line starts its clock at the last pain."""
        self._sent += 1
        if status.state in LINES and status.state != self.state:
            self.line_started = at
            self.line_pain = self.last_pain
        self.state = status.state


def _fasciculations(pain: float, previous: float) -> str:
    if pain <= 2:
        return "absent" if pain <= 1 else "improving"
    if pain < previous:
        return "improving"
    return "stable" if pain == previous else "present"
