"""Validating event payloads: unknown fields, unknown terms, out-of-range numbers and naive times
are rejected with messages that name the field. Each definition generates its payload models
(`compile.py`) on the strict `Payload` base."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ConfigDict, ValidationError

from ._errors import InvalidPayload, NaiveTime, Problem

__all__ = ["Payload", "parse_payload", "require_aware", "stored_payload"]


class Payload(BaseModel):
    """Base of every payload: no extra fields, frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


P = TypeVar("P", bound=Payload)


def parse_payload(event: str, model: type[P], data: object) -> P:
    """Validate `data` against `model`, turning pydantic's errors into one `InvalidPayload`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidPayload(event, [Problem((), "model_type", f"must be a JSON object, got {type(data).__name__}")])
    try:
        # `model_validate` without its wrapper (this runs for every command): the same call, no options.
        return cast(P, model.__pydantic_validator__.validate_python(data))
    except ValidationError as err:
        raise InvalidPayload(event, Problem.from_validation(err.errors())) from None


def stored_payload(payload: Payload) -> dict[str, Any]:
    """A validated payload as the audit log stores it: `payload.model_dump(mode="json")`, calling the
    serializer without the wrapper's keyword plumbing (this runs for every accepted command)."""
    return cast(dict[str, Any], payload.__pydantic_serializer__.to_python(payload, mode="json"))


def require_aware(value: datetime, field: str = "at") -> datetime:
    """Return `value` if it carries a zone; naive clinical times are ambiguous and refused."""
    if not isinstance(value, datetime):
        raise NaiveTime(field, value)
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveTime(field, value.isoformat())
    return value
