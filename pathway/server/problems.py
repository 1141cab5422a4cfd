"""Errors as RFC 9457 problem details: one function, `problem_for`, maps any exception to its
code, HTTP status and details, from the error model every carepath error shares
(`carepath.errors.Error`: `code`, `http_status`, `details()`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from carepath import Error

__all__ = ["MEDIA_TYPE", "PROBLEM_TYPE", "Problem", "problem_for"]

# Problem types are relative URIs naming the stable code: "/problems/unknown_patient".
PROBLEM_TYPE = "/problems/"
MEDIA_TYPE = "application/problem+json"


@dataclass(frozen=True)
class Problem:
    """One problem document: RFC 9457's members plus the stable `code` and structured details."""

    status: int
    code: str
    title: str
    detail: str
    details: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "type": PROBLEM_TYPE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if self.details:
            document["details"] = self.details
        return document


def problem_for(exc: BaseException) -> Problem:
    """The problem document of an error: its code, HTTP status, a title from the code, the message
    as detail and its structured details; anything not carepath's is a 500 that says nothing of
    the internals."""
    if isinstance(exc, Error):
        return Problem(exc.http_status, exc.code, _title(exc.code), str(exc), exc.details())
    return Problem(500, "internal_error", "Internal error", "the server could not complete the request")


def _title(code: str) -> str:
    return re.sub(r"_+", " ", code).capitalize()
