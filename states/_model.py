"""The definition model: a pathway written as data (YAML, JSON or Python), validated by pydantic.

One `PathwayModel` holds everything a pathway is: its states and regions, its vocabulary, the
payload schema of each event, the named inputs its rules read, the rules themselves
(conditions on inputs against policy fields), the context it remembers and how each event
updates it, the schedules that make a patient due, the plan of each state with its
patient-factor rules, its review record and the hints views need (state order, colours, the
input plotted on a timeline, FHIR codes). `compile.py` turns a model into a running chart;
nothing else describes a pathway.

Conditions are data: an input name, an operator and a literal or a policy field. What data
cannot express is a named function registered in Python (`functions.py`), never code in a file.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "CodeSpec",
    "ConditionSpec",
    "EventSpec",
    "FhirHints",
    "FieldSpec",
    "GuardSpec",
    "InputSpec",
    "PlanItemSpec",
    "PolicyFieldSpec",
    "MigrationFact",
    "MigrationSpec",
    "PathwayModel",
    "ReferralSpec",
    "TermsBy",
    "Presentation",
    "Review",
    "ReviewStatus",
    "RuleSpec",
    "ScheduleSpec",
    "StateSpec",
    "StatusRuleSpec",
    "TimelineHints",
    "UpdateSpec",
    "OPERATORS",
]

OPERATORS = (">=", ">", "<", "<=", "==", "!=", "in", "contains", "nonempty", "empty")
ReviewStatus = Literal["draft", "under_review", "approved", "retired"]


class _Spec(BaseModel):
    """Base of every part of a definition: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class StateSpec(_Spec):
    """A state; with `states` it is compound (one active child) or, with `parallel`, has regions."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    initial: bool = False
    final: bool = False
    parallel: bool = False
    states: tuple[StateSpec, ...] = ()

    @model_validator(mode="after")
    def _shape(self) -> StateSpec:
        if self.parallel and not self.states:
            raise ValueError(f"parallel state {self.id!r} needs regions under `states`")
        if self.final and self.states:
            raise ValueError(f"final state {self.id!r} cannot have children")
        return self


class TermsBy(_Spec):
    """The vocabulary of a term chosen by another field: `terms[value of field]`."""

    field: str
    terms: dict[str, str]


class FieldSpec(_Spec):
    """One field of a payload or of the patient factors (`factors`: an object of patient factors)."""

    type: Literal["number", "integer", "boolean", "text", "term", "terms", "date", "factors"]
    terms: str | None = Field(None, description="vocabulary of a `term` or `terms` field")
    terms_by: TermsBy | None = Field(
        None, description="a `term` field whose vocabulary depends on the value of another field of the payload"
    )
    min: float | None = None
    max: float | None = None
    max_length: int | None = None
    required: bool = True
    default: Any = None
    description: str = ""

    @model_validator(mode="after")
    def _terms_given(self) -> FieldSpec:
        if self.type in ("term", "terms") and not self.terms:
            raise ValueError(f"a {self.type} field names its vocabulary in `terms`")
        return self


class InputSpec(_Spec):
    """A named value the rules read, computed from the event, the context and the time.

    Exactly one of the kinds is given:
    - `payload`: a payload field (with `otherwise`, the remembered value when it is not given);
    - `context`: a remembered value;
    - `count`: how many of the terms `of` a list field holds;
    - `classes`: how many of the term groups `of_classes` a list field touches;
    - `has`: whether a list field holds `term`;
    - `weeks_since`: weeks from a remembered time to the event, plus the weeks in context `plus`;
    - `improvement`: relative fall of payload field `value` against a remembered baseline,
      rounded; undefined below the policy field `min_baseline`;
    - `fall`: a remembered value minus payload field `value`;
    - `function`: a registered named function.
    - `rise`: payload field `value` minus a remembered value;
    - `holds`: whether every condition on the event's earlier inputs holds;
    - `streak`: how many consecutive events, this one included, had the boolean input `of` true
      (the context key lists their times);
    - `streak_weeks`: weeks from the first event of that run to this one (undefined when `of` is
      false);
    - `recent`: how many times listed in a context key fall within the policy field `within`
      weeks before the event.
    """

    payload: str | None = None
    context: str | None = None
    count: str | None = None
    classes: str | None = None
    has: str | None = None
    weeks_since: str | None = None
    improvement: str | None = None
    fall: str | None = None
    rise: str | None = None
    holds: tuple[ConditionSpec, ...] | None = None
    streak: str | None = None
    streak_weeks: str | None = None
    recent: str | None = None
    function: str | None = None
    of: str | tuple[str, ...] | None = Field(
        None, description="terms (or a named term set) for `count`; the boolean input of a `streak`"
    )
    within: str | None = Field(None, description="policy field: the weeks a `recent` input looks back")
    of_classes: tuple[tuple[str, ...], ...] | None = None
    term: str | None = None
    value: str | None = Field(None, description="payload field compared with the baseline")
    plus: str | None = None
    min_baseline: str | None = None
    otherwise: str | None = Field(None, description="for `payload`: the context key read when the field is not given")
    zero_baseline: float | None = Field(
        None, description="the improvement reported when the baseline is 0 (default: undefined)"
    )

    @property
    def kind(self) -> str:
        kinds = [k for k in _INPUT_KINDS if getattr(self, k) is not None]
        return kinds[0]

    @model_validator(mode="after")
    def _one_kind(self) -> InputSpec:
        kinds = [k for k in _INPUT_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"an input has exactly one of {', '.join(_INPUT_KINDS)} (got {kinds or 'none'})")
        kind = kinds[0]
        if kind == "count" and self.of is None:
            raise ValueError("a `count` input names the terms it counts in `of`")
        if kind == "classes" and not self.of_classes:
            raise ValueError("a `classes` input lists its term groups in `of_classes`")
        if kind == "has" and self.term is None:
            raise ValueError("a `has` input names its `term`")
        if kind in ("streak", "streak_weeks") and not isinstance(self.of, str):
            raise ValueError(f"a `{kind}` input names the boolean input it follows in `of`")
        if kind == "recent" and self.within is None:
            raise ValueError("a `recent` input names the policy field of its window in `within`")
        if kind in ("improvement", "fall", "rise") and self.value is None:
            raise ValueError(f"an `{kind}` input names the payload field it compares in `value`")
        return self


_INPUT_KINDS = (
    "payload",
    "context",
    "count",
    "classes",
    "has",
    "weeks_since",
    "improvement",
    "fall",
    "rise",
    "holds",
    "streak",
    "streak_weeks",
    "recent",
    "function",
)


class EventSpec(_Spec):
    """An event: its payload schema, the inputs its rules read, and whether it may change nothing."""

    description: str = ""
    payload: dict[str, FieldSpec] = {}
    inputs: dict[str, InputSpec] = {}
    idle_in: str | tuple[str, ...] | None = Field(
        None, description="in these states, when no rule holds, the event changes nothing (e.g. tick)"
    )

    def idle_states(self) -> tuple[str, ...]:
        if self.idle_in is None:
            return ()
        return (self.idle_in,) if isinstance(self.idle_in, str) else self.idle_in


class ConditionSpec(_Spec):
    """`input op value`, or `input op policy-field`; list and set thresholds are term lists."""

    input: str
    op: str
    value: Any = None
    policy: str | None = None

    @field_validator("op")
    @classmethod
    def _known_op(cls, op: str) -> str:
        if op not in OPERATORS:
            raise ValueError(f"unknown operator {op!r}; expected one of {', '.join(OPERATORS)}")
        return op


class GuardSpec(_Spec):
    """`all`: every condition holds; `any`: one of the clauses holds (each a list of conditions)."""

    all: tuple[ConditionSpec, ...] | None = None
    any: tuple[tuple[ConditionSpec, ...], ...] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> GuardSpec:
        if (self.all is None) == (self.any is None):
            raise ValueError("a guard has exactly one of `all` or `any`")
        return self

    def clauses(self) -> tuple[tuple[ConditionSpec, ...], ...]:
        return (self.all,) if self.all is not None else (self.any or ())


class RuleSpec(_Spec):
    """On `event` in any of `sources`, go to `target` when `when` holds (always when absent).

    The target may be a state the patient is already in (`treatment` from `treatment`): the
    patient stays. Outcome values naming `payload.<field>` are taken from the event.
    """

    name: str
    event: str
    sources: tuple[str, ...] = Field(alias="from")
    target: str = Field(alias="to")
    when: GuardSpec | None = None
    outcome: dict[str, Any] = {}
    description: str = ""


class UpdateSpec(_Spec):
    """How an event changes the remembered context, applied in order after the rule is decided.

    Filters: `events` (the events it applies to), `entering` (the decided rule moves the patient into one of these
    states; a rule that stays does not count), `rules` (the decided rule is one of these), `when`
    (conditions on the event's inputs).
    Changes: `set` (key -> `payload.<f>`, `at`, `context.<k>`, `input.<name>` or a literal;
    with `if_given`, missing values leave the key as it is), `count` (key -> a condition on the
    inputs: one more when it holds, else back to 0), `record` (key -> an object of expressions).
    """

    events: tuple[str, ...]
    entering: tuple[str, ...] | None = None
    rules: tuple[str, ...] | None = None
    when: tuple[ConditionSpec, ...] = ()
    set: dict[str, Any] = {}
    if_given: bool = False
    count: dict[str, ConditionSpec] = {}
    record: dict[str, dict[str, Any]] = {}
    streak: dict[str, str] = Field(
        {},
        description="context key -> boolean input: the event time joins the run when it holds, else the run ends",
    )
    append: dict[str, Any] = Field({}, description="context key (a list) -> an expression added to it")
    set_factors: str | None = Field(None, description="expression of an object of patient factors merged in")
    clear_factors: str | None = Field(None, description="expression of a list of patient factor names removed")


class ScheduleSpec(_Spec):
    """When a tick is due: a monitoring region's steps, or a plain timer on some states.

    With `region` (a region of a parallel state, or a compound state whose children are the
    steps): due `due[step]` weeks after the context time `since`. `reset_on`: events that return
    the region to its initial step while the patient stays in the state that holds it (a
    reassessment restarts the schedule).
    Without `region`: due `after` weeks (a policy field) after `since` while the patient is in
    one of `states` (or inside one), unless the context key `unless` is true.
    """

    region: str | None = None
    since: str
    due: dict[str, str] = Field({}, description="region state -> policy field with the weeks until the next step")
    reset_on: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    after: str | None = None
    unless: str | None = None

    @model_validator(mode="after")
    def _one_form(self) -> ScheduleSpec:
        if (self.region is None) == (self.after is None):
            raise ValueError("a schedule has either a `region` with `due` steps, or `after` with its `states`")
        if self.after is not None and not self.states:
            raise ValueError("a plain schedule names the `states` it runs in")
        return self


class PolicyFieldSpec(_Spec):
    """A number the rules compare against, with its default and where it comes from."""

    default: float | int
    min: float | None = None
    max: float | None = None
    description: str = ""
    source: str = ""


class CodeSpec(_Spec):
    """A coded concept in a terminology."""

    system: Literal["RxNorm", "CPT", "ICD-10-CM", "LOINC", "SNOMED CT"]
    code: str
    display: str


class StatusRuleSpec(_Spec):
    """A status an item takes for a patient when every condition on the facts holds (always when none)."""

    status: Literal["continue", "alert", "caution", "not_indicated", "avoid", "contraindicated", "do_not"]
    reason: str
    when: tuple[ConditionSpec, ...] = ()


class ReferralSpec(_Spec):
    """A referral an item asks for: to whom, how soon, and its request priority (FHIR ServiceRequest)."""

    specialty: str
    within: str = Field(description="time frame as people say it, e.g. 'same day', 'within 2 weeks'")
    priority: Literal["routine", "urgent", "asap", "stat"] = "routine"


class PlanItemSpec(_Spec):
    """A recommendation of a state, as written in its source; shown only when `show_when` holds."""

    id: str
    referral: ReferralSpec | None = None
    text: str
    category: str
    source: str
    codes: tuple[CodeSpec, ...] = ()
    rules: tuple[StatusRuleSpec, ...] = ()
    show_when: tuple[ConditionSpec, ...] = ()


class TimelineHints(_Spec):
    """What a timeline plots: one numeric payload field, and the context keys of the current stage."""

    input: str
    label: str
    scale: tuple[float, float] = (0, 10)
    baseline: str | None = Field(None, description="context key of the stage baseline")
    started: str | None = Field(None, description="context key of the stage start")
    episode_started: str | None = Field(
        None, description="context key of the start of the episode (the diagnosis), for the weeks since it"
    )
    levels: dict[str, str] = Field(
        {}, description="policy field -> label ('{value:g}' is its value) of a level drawn at that value"
    )
    improvements: dict[str, str] = Field(
        {},
        description="policy fraction -> label ('{value:.0%}') of a level drawn that fraction below the stage baseline",
    )


class FhirHints(_Spec):
    """Codes a FHIR export uses: the condition of the pathway, findings that add conditions, observations."""

    condition: CodeSpec
    extra_conditions: dict[str, CodeSpec] = Field(
        {}, description="payload field -> condition coded when that field is observed other than 'absent'"
    )
    observations: dict[str, CodeSpec] = Field({}, description="payload field -> observation code")
    observed_events: tuple[str, ...] = ()
    clinical_status: dict[str, Literal["active", "recurrence", "relapse", "inactive", "remission", "resolved"]] = Field(
        {}, description="state -> Condition.clinicalStatus (else active)"
    )
    verification_status: dict[
        str, Literal["unconfirmed", "provisional", "differential", "confirmed", "refuted", "entered-in-error"]
    ] = Field({}, description="state -> Condition.verificationStatus (else confirmed)")
    careplan_status: dict[
        str, Literal["draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"]
    ] = Field({}, description="state -> CarePlan.status (else active)")
    condition_by: dict[str, dict[str, CodeSpec]] = Field(
        {}, description="context key -> value -> the condition code used when the context holds that value"
    )
    refuted_reasons: tuple[str, ...] = Field(
        (), description="outcome reasons for which the condition is exported as refuted (else confirmed)"
    )
    do_not_perform: tuple[str, ...] = Field(
        (), description="item statuses exported with doNotPerform: true (default: contraindicated)"
    )
    confirmed_when: str | None = Field(
        None,
        description="context key set once the diagnostic criteria are met: the condition is confirmed only then "
        "(else its verification_status by state, or unconfirmed), and an extra condition is confirmed by its finding",
    )


class Presentation(_Spec):
    """Hints for views: nothing in them changes what happens to a patient."""

    title: str = ""
    state_order: tuple[str, ...] = ()
    stages: tuple[str, ...] = Field((), description="the states a patient escalates through, in order")
    goal: str | None = Field(
        None, description="the state a course through the stages aims for (weeks from the first stage to it count)"
    )
    colours: dict[str, str] = {}
    percent_inputs: tuple[str, ...] = ()
    flags: tuple[str, ...] = Field((), description="context keys shown as flags (status, lists, due) when true")
    timeline: TimelineHints | None = None
    fhir: FhirHints | None = None


class Review(_Spec):
    """Where a definition version stands in clinical review."""

    status: ReviewStatus = "draft"
    reviewer: str | None = None
    date: dt.date | None = None
    notes: str = ""


class VocabularySpec(_Spec):
    """A closed list of terms (exact strings) and where it comes from."""

    terms: tuple[str, ...]
    description: str = ""
    source: str = ""


class MigrationFact(_Spec):
    """Context set by a migration when every condition on the old context (`context.<key>`) holds."""

    when: tuple[ConditionSpec, ...]
    set: dict[str, Any]


class MigrationSpec(_Spec):
    """How live patients of an earlier version move to this one: state ids mapped, context kept."""

    from_version: int
    states: dict[str, str] = Field({}, description="old state id -> new state id (unlisted ids are kept)")
    keep_context: tuple[str, ...] | None = Field(None, description="context keys carried over (all when absent)")
    rename_context: dict[str, str] = {}
    set: dict[str, Any] = Field(
        {}, description="new context key -> `context.<old key>` or a literal (keys not given take their initial value)"
    )
    set_when: tuple[MigrationFact, ...] = Field((), description="context set when conditions on the old context hold")
    set_by_state: dict[str, dict[str, Any]] = Field(
        {}, description="old state id -> context set for patients in that state"
    )


class PathwayModel(_Spec):
    """A whole pathway definition, one version of it."""

    schema_: str | None = Field(None, alias="$schema")
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    version: int = Field(ge=1)
    title: str = ""
    description: str = ""
    sources: tuple[str, ...] = ()
    review: Review = Review()
    states: tuple[StateSpec, ...]
    status_regions: tuple[str, ...] = Field(
        (), description="regions whose active state is the state status reports (else the top-level state)"
    )
    vocabulary: dict[str, VocabularySpec] = {}
    term_sets: dict[str, tuple[str, ...]] = {}
    factors: dict[str, FieldSpec] = {}
    events: dict[str, EventSpec]
    policy: dict[str, PolicyFieldSpec] = {}
    context: dict[str, Any] = Field({}, description="remembered values and their initial values")
    rules: tuple[RuleSpec, ...]
    updates: tuple[UpdateSpec, ...] = ()
    schedules: tuple[ScheduleSpec, ...] = ()
    plan: dict[str, tuple[PlanItemSpec, ...]] = {}
    plan_carry: dict[str, tuple[str, ...]] = Field(
        {}, description="state -> earlier states whose items its plan carries forward with status `continue`"
    )
    derived: dict[str, InputSpec] = Field(
        {},
        description="context keys recomputed after every applied event from inputs that need no payload "
        "(the plan reads them as of the patient's last event)",
    )
    presentation: Presentation = Presentation()
    migrations: tuple[MigrationSpec, ...] = ()
    handover_from: tuple[str, ...] = Field((), description="pathways whose patients may be enrolled here with --from")

    def state_ids(self) -> list[str]:
        """Every state id, in document order."""
        found: list[str] = []

        def walk(states: tuple[StateSpec, ...]) -> None:
            for state in states:
                found.append(state.id)
                walk(state.states)

        walk(self.states)
        return found

    def find_state(self, state_id: str) -> StateSpec | None:
        def walk(states: tuple[StateSpec, ...]) -> StateSpec | None:
            for state in states:
                if state.id == state_id:
                    return state
                inner = walk(state.states)
                if inner is not None:
                    return inner
            return None

        return walk(self.states)

    def parents(self) -> dict[str, str | None]:
        """State id -> id of the state that holds it (None at top level)."""
        result: dict[str, str | None] = {}

        def walk(states: tuple[StateSpec, ...], parent: str | None) -> None:
            for state in states:
                result[state.id] = parent
                walk(state.states, state.id)

        walk(self.states, None)
        return result

    def migration_from(self, version: int) -> MigrationSpec | None:
        return next((m for m in self.migrations if m.from_version == version), None)


InputSpec.model_rebuild()
