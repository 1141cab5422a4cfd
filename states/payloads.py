"""Strict schemas of event payloads: unknown fields, unknown terms, out-of-range numbers and
naive times are rejected with messages that name the field."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from .errors import InvalidPayload, NaiveTime
from .vocabulary import Fasciculations, Finding, Line, RedFlag

__all__ = [
    "AssessPayload",
    "EnrollPayload",
    "OverridePayload",
    "PatientFactors",
    "Payload",
    "ReassessPayload",
    "RelapsePayload",
    "TickPayload",
    "WithdrawPayload",
    "parse_payload",
    "require_aware",
]

# 0-10 numeric rating scale or VAS in cm (LOINC 72514-3).
Pain = Annotated[float, Field(ge=0, le=10, allow_inf_nan=False, strict=True)]  # strict: no "7" or true
# Lower Extremity Functional Scale (Binkley 1999), 0-80.
FunctionScore = Annotated[int, Field(ge=0, le=80, strict=True)]
Text = Annotated[str, Field(min_length=1, max_length=500)]


class Payload(BaseModel):
    """Base of every payload: no extra fields, frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _unique(values: list[Any], field: str) -> list[Any]:
    seen = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{value} is listed twice in {field}")
        seen.add(value)
    return values


class PatientFactors(Payload):
    """Patient factors recorded at enrolment; all optional, absent means not known to apply."""

    age: Annotated[int, Field(ge=0, le=130, strict=True)] | None = None
    pregnancy_weeks: Annotated[int, Field(ge=0, le=45, strict=True)] | None = None
    anticoagulant: StrictBool = False
    peptic_ulcer: StrictBool = False
    severe_renal_impairment: StrictBool = False
    heart_failure: StrictBool = False
    cardiac_conduction_disease: StrictBool = False
    recent_myocardial_infarction: StrictBool = False
    maoi: StrictBool = False
    glaucoma: StrictBool = False
    urinary_retention: StrictBool = False
    infection_at_injection_site: StrictBool = False
    neuromuscular_disease: StrictBool = False
    breastfeeding: StrictBool = False
    uncontrolled_diabetes: StrictBool = False


class EnrollPayload(Payload):
    """Enrolment: the patient factors the plan's cautions are computed from."""

    factors: PatientFactors = PatientFactors()


class AssessPayload(Payload):
    """Initial assessment: findings, pain, fasciculations and the red-flag screen."""

    findings: list[Finding]
    pain: Pain
    fasciculations: Fasciculations
    red_flags: list[RedFlag]

    @field_validator("findings", "red_flags")
    @classmethod
    def _no_repeats(cls, values: list[Any], info: Any) -> list[Any]:
        return _unique(values, info.field_name)


class ReassessPayload(Payload):
    """Reassessment during treatment (every 2-4 weeks per the seed)."""

    pain: Pain
    fasciculations: Fasciculations
    red_flags: list[RedFlag]
    function: FunctionScore | None = None
    documented_compression: StrictBool | None = None

    @field_validator("red_flags")
    @classmethod
    def _no_repeats(cls, values: list[Any], info: Any) -> list[Any]:
        return _unique(values, info.field_name)


class TickPayload(Payload):
    """Time passes; no data."""


class RelapsePayload(Payload):
    """Symptoms return after resolution."""

    pain: Pain
    fasciculations: Fasciculations


class OverridePayload(Payload):
    """A clinician moves the patient to a named line, with the reason recorded."""

    to: Line
    reason: Text
    clinician: Text


class WithdrawPayload(Payload):
    """The patient leaves the pathway (declined, moved, died)."""

    reason: Text


P = TypeVar("P", bound=Payload)


def parse_payload(event: str, model: type[P], data: object) -> P:
    """Validate `data` against `model`, turning pydantic's errors into one `InvalidPayload`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidPayload(event, [f"data must be a JSON object, got {type(data).__name__}"])
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise InvalidPayload(event, [_describe(e) for e in err.errors()]) from None


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "data"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown field"
    if error["type"] == "missing":
        return f"{where}: required field missing"
    return f"{where}: {error['msg']} (got {error.get('input')!r})"


def require_aware(value: datetime, field: str = "at") -> datetime:
    """Return `value` if it carries a zone; naive clinical times are ambiguous and refused."""
    if not isinstance(value, datetime):
        raise NaiveTime(field, value)
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveTime(field, value.isoformat())
    return value
