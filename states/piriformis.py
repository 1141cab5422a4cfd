"""The piriformis syndrome pathway, definition `piriformis` version 1.

Source: seed/piriformis-management.md, encoded as fixed by DESIGN.md section 2. The chart
holds the structure (which events are allowed where, what each transition enters and exits);
the rules below hold the clinical conditions, evaluated in order (first that holds wins). Each
chart transition fires only for the rule that was decided, which keeps SCXML's
descendants-first priority from letting the parallel `monitoring` region's `reassess`
transition shadow an exit from `treatment`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict
from statemachine import State, StateChart

from .definition import Context, Pathway, register
from .guards import Condition, Decision, Guard, Rule
from .payloads import (
    AssessPayload,
    EnrollPayload,
    OverridePayload,
    PatientFactors,
    Payload,
    ReassessPayload,
    RelapsePayload,
    TickPayload,
    WithdrawPayload,
)
from .piriformis_plan import plan_for
from .plan import PlanItem
from .policy import POLICY_V1, Policy
from .vocabulary import (
    DIAGNOSTIC_FINDINGS,
    RADICULAR_FINDINGS,
    SPECIAL_TESTS,
    Fasciculations,
    Finding,
    Line,
    RedFlag,
    Urgency,
)

__all__ = ["LINES", "PiriformisChart", "PiriformisContext", "PiriformisPathway", "RULES"]

LINES = frozenset(line.value for line in Line)
TREATMENT_TARGETS = LINES | {"treatment"}
FINAL_STATES = ("rediagnose", "urgent_referral", "withdrawn")
WEEK = timedelta(weeks=1)


class PiriformisContext(BaseModel):
    """What the rules remember about a patient between events."""

    model_config = ConfigDict(extra="forbid")

    factors: PatientFactors = PatientFactors()
    line_baseline: float | None = None
    line_started_at: datetime | None = None
    last_assessed_at: datetime | None = None
    last_pain: float | None = None
    last_fasciculations: Fasciculations | None = None
    last_function: int | None = None
    # Consecutive reassessments with fasciculations present or stable (review alert at 2).
    persistent_fasciculations: int = 0
    documented_compression: bool = False
    outcome: dict[str, Any] | None = None
    last_override: dict[str, Any] | None = None


# -- rules (DESIGN.md section 2, policy version 1, in evaluation order) ---------------------


def _c(input: str, op: str, threshold: Any = None, *, policy: str | None = None) -> Condition:
    return Condition(input, op, threshold, policy)


_TREATMENT = frozenset({"treatment"})
_RED_FLAG_EMERGENCY = Guard.all_of(_c("red_flags", "contains", RedFlag.CAUDA_EQUINA.value))
_RED_FLAG = Guard.all_of(_c("red_flags", "nonempty"))


def _red_flag_rules(event: str, sources: frozenset[str]) -> list[Rule]:
    return [
        Rule(
            f"{event}.red_flag_emergency",
            event,
            sources,
            "urgent_referral",
            _RED_FLAG_EMERGENCY,
            {"reason": "red_flag", "urgency": Urgency.EMERGENCY.value},
            "cauda equina: same-day emergency referral",
        ),
        Rule(
            f"{event}.red_flag",
            event,
            sources,
            "urgent_referral",
            _RED_FLAG,
            {"reason": "red_flag", "urgency": Urgency.URGENT.value},
            "any red flag: urgent referral",
        ),
    ]


def _escalation(weeks_a: str, weeks_b: str) -> Guard:
    return Guard.any_of(
        [_c("weeks_in_line", ">=", policy=weeks_a), _c("improvement", "<", policy="moderate_improvement")],
        [_c("weeks_in_line", ">=", policy=weeks_b), _c("improvement", "<", policy="substantial_improvement")],
    )


RULES: tuple[Rule, ...] = (
    *_red_flag_rules("assess", frozenset({"assessment"})),
    Rule(
        "assess.radicular_signs",
        "assess",
        frozenset({"assessment"}),
        "rediagnose",
        Guard.all_of(_c("radicular_findings", ">=", 1)),
        {"reason": "suspected_lumbar_radiculopathy"},
        "straight leg raise or dermatomal deficit suggests lumbar radiculopathy",
    ),
    Rule(
        "assess.criteria_met",
        "assess",
        frozenset({"assessment"}),
        "treatment",
        Guard.all_of(
            _c("buttock_pain", "==", True),
            _c("pain", ">=", policy="min_diagnostic_pain"),
            _c("diagnostic_findings", ">=", policy="min_diagnostic_findings"),
            _c("special_tests", ">=", policy="min_special_tests"),
        ),
        {},
        "diagnosis confirmed: start first-line treatment",
    ),
    Rule(
        "assess.criteria_not_met",
        "assess",
        frozenset({"assessment"}),
        "rediagnose",
        None,
        {"reason": "criteria_not_met"},
        "diagnostic criteria not met",
    ),
    *_red_flag_rules("reassess", _TREATMENT),
    Rule(
        "reassess.worsening_fasciculations",
        "reassess",
        _TREATMENT,
        "rediagnose",
        Guard.all_of(_c("fasciculations", "==", Fasciculations.WORSENING.value)),
        {"reason": "worsening_fasciculations"},
        "worsening fasciculations: reconsider the diagnosis",
    ),
    Rule(
        "reassess.resolved",
        "reassess",
        _TREATMENT,
        "resolved",
        Guard.all_of(
            _c("pain", "<=", policy="resolved_max_pain"),
            _c("fasciculations", "in", frozenset({Fasciculations.ABSENT.value, Fasciculations.IMPROVING.value})),
        ),
        {},
        "pain low and fasciculations settled",
    ),
    Rule(
        "reassess.escalate_to_second_line",
        "reassess",
        frozenset({Line.FIRST.value}),
        Line.SECOND.value,
        _escalation("first_line_early_weeks", "first_line_late_weeks"),
        {},
        "insufficient response to first-line treatment",
    ),
    Rule(
        "reassess.escalate_to_third_line",
        "reassess",
        frozenset({Line.SECOND.value}),
        Line.THIRD.value,
        _escalation("second_line_early_weeks", "second_line_late_weeks"),
        {},
        "insufficient response to second-line treatment",
    ),
    Rule(
        "reassess.refractory",
        "reassess",
        frozenset({Line.THIRD.value}),
        "rediagnose",
        Guard.all_of(
            _c("weeks_in_line", ">=", policy="third_line_refractory_weeks"),
            _c("improvement", "<", policy="moderate_improvement"),
        ),
        {"reason": "refractory_to_treatment"},
        "refractory to third-line treatment",
    ),
    Rule("reassess.stay", "reassess", _TREATMENT, "treatment", None, {}, "continue the current line"),
    Rule(
        "tick.overdue",
        "tick",
        frozenset({"scheduled", "due"}),
        "overdue",
        Guard.all_of(_c("weeks_since_assessment", ">=", policy="reassessment_overdue_weeks")),
        {},
        "reassessment overdue",
    ),
    Rule(
        "tick.due",
        "tick",
        frozenset({"scheduled"}),
        "due",
        Guard.all_of(_c("weeks_since_assessment", ">=", policy="reassessment_due_weeks")),
        {},
        "reassessment due",
    ),
    *(
        Rule(
            f"override.{line.value}",
            "override",
            _TREATMENT,
            line.value,
            Guard.all_of(_c("to", "==", line.value)),
            {},
            f"clinician override to {line.value}",
        )
        for line in Line
    ),
    Rule("relapse", "relapse", frozenset({"resolved"}), "assessment", None, {}, "symptoms returned"),
    Rule(
        "withdraw",
        "withdraw",
        frozenset({"assessment", "treatment", "resolved"}),
        "withdrawn",
        None,
        {},
        "patient left the pathway",
    ),
)


# -- chart ------------------------------------------------------------------------------------


def _decided(*targets: str) -> Callable[..., bool]:
    """Guard of a chart transition: fires when the decided rule's target is one of `targets`."""
    wanted = frozenset(targets)

    def check(decision: Decision) -> bool:
        return decision.rule is not None and decision.rule.target in wanted

    check.__name__ = "decided_" + "_or_".join(sorted(wanted))
    return check


_STAYS = _decided(*TREATMENT_TARGETS)


class PiriformisChart(StateChart):  # type: ignore[type-arg]  # the chart keeps no typed model
    """Piriformis syndrome with gluteal fasciculations (seed/piriformis-management.md)."""

    allow_event_without_transition = False
    catch_errors_as_events = False

    assessment = State(initial=True)

    class treatment(State.Parallel):  # state ids are the class names
        class line(State.Compound):
            first_line = State(initial=True)
            second_line = State()
            third_line = State()

            escalate = first_line.to(second_line, event="reassess", cond=_decided("second_line")) | second_line.to(
                third_line, event="reassess", cond=_decided("third_line")
            )

        class monitoring(State.Compound):
            scheduled = State(initial=True)
            due = State()
            overdue = State()

            become_due = scheduled.to(due, event="tick", cond=_decided("due"))
            become_overdue = scheduled.to(overdue, event="tick", cond=_decided("overdue")) | due.to(
                overdue, event="tick", cond=_decided("overdue")
            )
            reassessed = (
                scheduled.to(scheduled, event="reassess", cond=_STAYS)
                | due.to(scheduled, event="reassess", cond=_STAYS)
                | overdue.to(scheduled, event="reassess", cond=_STAYS)
            )

        # Internal: an override re-enters a line without leaving `treatment`, so the
        # monitoring region is left as it is.
        override = (
            line.to(line.first_line, event="override", internal=True, cond=_decided("first_line"))  # type: ignore[operator]  # nested-state class typed as its factory
            | line.to(line.second_line, event="override", internal=True, cond=_decided("second_line"))
            | line.to(line.third_line, event="override", internal=True, cond=_decided("third_line"))
        )

    resolved = State()
    rediagnose = State(final=True)
    urgent_referral = State(final=True)
    withdrawn = State(final=True)

    assess = (
        assessment.to(urgent_referral, event="assess", cond=_decided("urgent_referral"))
        | assessment.to(rediagnose, event="assess", cond=_decided("rediagnose"))
        | assessment.to(treatment, event="assess", cond=_decided("treatment"))
    )
    leave_treatment = (
        treatment.to(urgent_referral, event="reassess", cond=_decided("urgent_referral"))  # type: ignore[operator]  # as above
        | treatment.to(rediagnose, event="reassess", cond=_decided("rediagnose"))
        | treatment.to(resolved, event="reassess", cond=_decided("resolved"))
    )
    relapse = resolved.to(assessment, event="relapse", cond=_decided("assessment"))
    withdraw = (
        assessment.to(withdrawn, event="withdraw", cond=_decided("withdrawn"))
        | treatment.to(withdrawn, event="withdraw", cond=_decided("withdrawn"))
        | resolved.to(withdrawn, event="withdraw", cond=_decided("withdrawn"))
    )


# -- the definition ------------------------------------------------------------------------------


def _weeks(later: datetime, earlier: datetime | None) -> float | None:
    if earlier is None:
        return None
    return (later - earlier) / WEEK


def _time(context: Context, key: str) -> datetime | None:
    value = context.get(key)
    return datetime.fromisoformat(value) if value is not None else None


def _improvement(baseline: float | None, pain: float) -> float | None:
    if baseline is None:
        return None
    if baseline == 0:
        return 0.0
    # Rounded so binary float error cannot move a boundary: 7 -> 4.9 is 30 %, not 29.99999 %.
    return round((baseline - pain) / baseline, 9)


@register
class PiriformisPathway(Pathway):
    """Definition `piriformis`, version 1."""

    name = "piriformis"
    version = 1
    chart = PiriformisChart
    rules = RULES
    payloads: ClassVar[Mapping[str, type[Payload]]] = {
        "assess": AssessPayload,
        "reassess": ReassessPayload,
        "tick": TickPayload,
        "relapse": RelapsePayload,
        "override": OverridePayload,
        "withdraw": WithdrawPayload,
    }
    idle_events: ClassVar[Mapping[str, str]] = {"tick": "treatment"}
    rule_inputs: ClassVar[Mapping[str, frozenset[str]]] = {
        "assess": frozenset(
            {"red_flags", "radicular_findings", "buttock_pain", "pain", "diagnostic_findings", "special_tests"}
        ),
        "reassess": frozenset(
            {"red_flags", "fasciculations", "pain", "weeks_in_line", "improvement", "line_baseline"}
        ),
        "tick": frozenset({"weeks_since_assessment"}),
        "override": frozenset({"to"}),
        "relapse": frozenset(),
        "withdraw": frozenset(),
    }
    enroll_payload = EnrollPayload

    policy: Policy

    @classmethod
    def default_policy(cls) -> Policy:
        return POLICY_V1

    def start(self, enrollment: Payload, at: datetime) -> tuple[tuple[str, ...], Context]:
        assert isinstance(enrollment, EnrollPayload)
        context = PiriformisContext(factors=enrollment.factors).model_dump(mode="json")
        # Only the factors that were given: every patient row stays small (absent = default).
        context["factors"] = enrollment.factors.model_dump(mode="json", exclude_defaults=True)
        return self.runner.initial_configuration(), context

    def inputs(self, event: str, payload: Payload, context: Context, at: datetime) -> dict[str, Any]:
        # Reads the few context fields the rules need straight from the stored JSON: this runs
        # for every event and every replayed event.
        if isinstance(payload, AssessPayload):
            found = set(payload.findings)
            return {
                "red_flags": [flag.value for flag in payload.red_flags],
                "radicular_findings": len(found & RADICULAR_FINDINGS),
                "buttock_pain": Finding.BUTTOCK_PAIN in found,
                "pain": payload.pain,
                "diagnostic_findings": len(found & DIAGNOSTIC_FINDINGS),
                "special_tests": len(found & SPECIAL_TESTS),
            }
        if isinstance(payload, ReassessPayload):
            return {
                "red_flags": [flag.value for flag in payload.red_flags],
                "fasciculations": payload.fasciculations.value,
                "pain": payload.pain,
                "weeks_in_line": _weeks(at, _time(context, "line_started_at")),
                "improvement": _improvement(context.get("line_baseline"), payload.pain),
                "line_baseline": context.get("line_baseline"),
            }
        if isinstance(payload, TickPayload):
            return {"weeks_since_assessment": _weeks(at, _time(context, "last_assessed_at"))}
        if isinstance(payload, OverridePayload):
            return {"to": payload.to.value}
        return {}

    def update_context(
        self,
        context: Context,
        event: str,
        payload: Payload,
        at: datetime,
        decision: Decision,
        before: tuple[str, ...],
        after: tuple[str, ...],
    ) -> Context:
        # Plain dict updates rather than a model round trip: this runs for every applied and
        # replayed event. Values stay JSON-shaped as PiriformisContext describes them.
        rule = decision.rule
        assert rule is not None  # the chart refused the event otherwise
        if isinstance(payload, TickPayload):
            return context  # a tick moves only the monitoring region
        ctx = dict(context)
        self._observe(ctx, payload, at)
        if rule.target in TREATMENT_TARGETS and rule.name != "reassess.stay":
            # A line entered (by diagnosis, escalation or override) starts its clock and baseline.
            ctx["line_baseline"] = ctx["last_pain"]
            ctx["line_started_at"] = at.isoformat()
        if isinstance(payload, OverridePayload):
            ctx["last_override"] = {
                "to": payload.to.value,
                "reason": payload.reason,
                "clinician": payload.clinician,
                "at": at.isoformat(),
            }
        if rule.target in FINAL_STATES:
            ctx["outcome"] = self._outcome(rule, payload)
        if isinstance(payload, RelapsePayload):
            ctx["line_baseline"] = ctx["line_started_at"] = None
            ctx["persistent_fasciculations"] = 0
        return ctx

    @staticmethod
    def _observe(ctx: Context, payload: Payload, at: datetime) -> None:
        if isinstance(payload, (AssessPayload, ReassessPayload, RelapsePayload)):
            ctx["last_pain"] = payload.pain
            ctx["last_fasciculations"] = payload.fasciculations.value
        if isinstance(payload, (AssessPayload, ReassessPayload)):
            ctx["last_assessed_at"] = at.isoformat()
        if isinstance(payload, ReassessPayload):
            persistent = payload.fasciculations in (Fasciculations.PRESENT, Fasciculations.STABLE)
            ctx["persistent_fasciculations"] = ctx["persistent_fasciculations"] + 1 if persistent else 0
            if payload.function is not None:
                ctx["last_function"] = payload.function
            if payload.documented_compression is not None:
                ctx["documented_compression"] = payload.documented_compression

    @staticmethod
    def _outcome(rule: Rule, payload: Payload) -> dict[str, Any]:
        outcome = dict(rule.outcome)
        if isinstance(payload, WithdrawPayload):
            outcome["reason"] = payload.reason
        if rule.target == "urgent_referral" and isinstance(payload, (AssessPayload, ReassessPayload)):
            outcome["red_flags"] = [flag.value for flag in payload.red_flags]
        return outcome

    def state_name(self, configuration: Sequence[str]) -> str:
        for state_id in configuration:
            if state_id in LINES:
                return state_id
        return configuration[0]

    def plan(self, configuration: Sequence[str], context: Context) -> list[PlanItem]:
        ctx = PiriformisContext.model_validate(context)
        return plan_for(
            self.state_name(configuration),
            "treatment" in configuration,
            ctx.factors,
            ctx.documented_compression,
            ctx.persistent_fasciculations,
            (ctx.outcome or {}).get("urgency"),
        )

    def outcome(self, configuration: Sequence[str], context: Context) -> dict[str, Any] | None:
        if configuration[0] not in FINAL_STATES:
            return None
        return context.get("outcome")

    def next_due_at(self, configuration: Sequence[str], context: Context) -> datetime | None:
        if "treatment" not in configuration:
            return None
        last = context.get("last_assessed_at")
        if last is None:
            return None
        assessed = datetime.fromisoformat(last)
        if "scheduled" in configuration:
            return assessed + self.policy.reassessment_due_weeks * WEEK
        if "due" in configuration:
            return assessed + self.policy.reassessment_overdue_weeks * WEEK
        return None
