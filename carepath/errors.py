"""The root of every carepath error.

Each error class declares a stable `code` (snake_case, unique, safe to match on) and a `category`,
which decides the command line's exit status and the HTTP status. `details()` gives the error's
structured fields as JSON; `to_dict()` gives `{"code", "message", "details"}`. Errors pickle with
their attributes (parallel import, tick and verify pass them between processes).

This module imports no carepath layer: `states`, `persistence` and `pathway` all build on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import Enum
from typing import Any, ClassVar

__all__ = [
    "Category",
    "Error",
    "Problem",
    "UNEXPECTED",
    "code_table",
    "error_classes",
    "error_document",
    "exit_code",
    "json_safe",
]


class Category(Enum):
    """What kind of failure an error is; it decides the exit status and the HTTP status."""

    INVALID_INPUT = "invalid_input"  # the request is malformed or names something unusable
    NOT_ALLOWED = "not_allowed"  # a valid event the patient's current state does not take
    CONFLICT = "conflict"  # clashes with what is recorded (duplicate, reused key, concurrent writer)
    NOT_FOUND = "not_found"  # no such patient or enrolment
    UNAVAILABLE = "unavailable"  # the database cannot be reached or is not a carepath database
    INTERNAL = "internal"  # the set-up or the stored record is at fault, not the request

    @property
    def exit_status(self) -> int:
        """The command line's exit status (README, "Command line")."""
        return _STATUSES[self][0]

    @property
    def http_status(self) -> int:
        """The HTTP status of a response reporting an error of this category."""
        return _STATUSES[self][1]


_STATUSES: dict[Category, tuple[int, int]] = {
    Category.INVALID_INPUT: (2, 422),
    Category.NOT_ALLOWED: (3, 409),
    Category.CONFLICT: (2, 409),
    Category.NOT_FOUND: (4, 404),
    Category.UNAVAILABLE: (5, 503),
    Category.INTERNAL: (2, 500),
}

_CODE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
# Every error class by its code: a code names exactly one class.
_BY_CODE: dict[str, type[Error]] = {}


class Error(Exception):
    """Root of every error carepath raises on purpose."""

    code: ClassVar[str] = "error"
    category: ClassVar[Category] = Category.INTERNAL

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _register(cls)

    @property
    def exit_status(self) -> int:
        """The command line's exit status for this error."""
        return self.category.exit_status

    @property
    def http_status(self) -> int:
        """The HTTP status of a response reporting this error."""
        return self.category.http_status

    def details(self) -> dict[str, Any]:
        """The error's structured fields (patient_id, pathway, event, at, ...) as JSON values."""
        return {name: json_safe(value) for name, value in vars(self).items() if not name.startswith("_")}

    def to_dict(self) -> dict[str, Any]:
        """`{"code", "message", "details"}`: the error as one JSON document."""
        return {"code": self.code, "message": str(self), "details": self.details()}

    def __reduce__(self) -> tuple[object, ...]:
        # An error's __init__ takes structured arguments, not the message pickle would pass back,
        # so it is rebuilt from its message and attributes directly.
        return (_restore, (type(self), self.args, dict(self.__dict__)))


def _register(cls: type[Error]) -> None:
    if cls.__name__.startswith("_"):
        return
    code = cls.__dict__.get("code")
    if not isinstance(code, str) or not _CODE.match(code):
        raise TypeError(f"{cls.__qualname__} must declare its own snake_case `code`, got {code!r}")
    if not isinstance(cls.category, Category):
        raise TypeError(f"{cls.__qualname__}.category must be a Category, got {cls.category!r}")
    known = _BY_CODE.get(code)
    if known is not None and _name(known) != _name(cls):
        raise TypeError(f"code {code!r} of {_name(cls)} is already the code of {_name(known)}")
    _BY_CODE[code] = cls


_BY_CODE[Error.code] = Error


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _restore(cls: type[BaseException], args: tuple[object, ...], state: dict[str, object]) -> BaseException:
    """Rebuild an error from its message and attributes, without calling its __init__ (see __reduce__)."""
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a document: where (`location`, as pydantic's `loc`), what kind
    (`type`, pydantic's error type) and a readable `message`."""

    location: tuple[str | int, ...]
    type: str
    message: str

    @property
    def path(self) -> str:
        """The location as a dotted path (`findings.0`); `data` for the document itself."""
        return ".".join(str(part) for part in self.location) or "data"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"location": list(self.location), "type": self.type, "message": self.message}

    @classmethod
    def from_validation(cls, errors: Iterable[Mapping[str, Any]]) -> list[Problem]:
        """The problems of pydantic's `ValidationError.errors()`, each with a readable message."""
        return [cls(tuple(e["loc"]), str(e["type"]), _describe(e)) for e in errors]


def _describe(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "missing":
        return "required field missing"
    if "input" in error:
        return f"{error['msg']} (got {error['input']!r})"
    return str(error["msg"])


def json_safe(value: Any) -> Any:
    """`value` as JSON data: times as ISO 8601, tuples and sets as lists, objects by their `to_dict`."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Enum):
        return json_safe(value.value)
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, set | frozenset):
        return sorted((json_safe(item) for item in value), key=repr)
    for method in ("to_dict", "to_json"):
        convert = getattr(value, method, None)
        if callable(convert):
            return json_safe(convert())
    return str(value)


def exit_code(error: BaseException) -> int:
    """The command line's exit status of an error: its category's for a carepath error, else 2
    (0 ok, 1 verify found a problem, 2 input, 3 not allowed, 4 unknown patient, 5 no carepath
    database or storage unavailable; README, "Command line")."""
    return error.exit_status if isinstance(error, Error) else 2


# The code of an exception that is not a carepath error (a bug): reported, never matched on.
UNEXPECTED = "unexpected_error"


def error_document(error: BaseException) -> dict[str, Any]:
    """`{"code", "message", "details"}` of any exception: `to_dict()` of a carepath error, else
    the `unexpected_error` code with the exception's type in the details."""
    if isinstance(error, Error):
        return error.to_dict()
    return {"code": UNEXPECTED, "message": str(error), "details": {"type": type(error).__name__}}


def error_classes() -> list[type[Error]]:
    """Every error class defined so far (import a package to include its errors), by code."""
    return [_BY_CODE[code] for code in sorted(_BY_CODE)]


def code_table() -> str:
    """The error codes as a Markdown table: code, category, exit status, HTTP status, meaning
    (the first paragraph of the class's docstring)."""
    lines = ["| code | category | exit | HTTP | meaning |", "|---|---|---|---|---|"]
    for cls in error_classes():
        meaning = " ".join((cls.__doc__ or "").split("\n\n")[0].split()).replace("|", "\\|")
        if meaning.startswith("Raised when "):
            meaning = meaning[len("Raised when ")].upper() + meaning[len("Raised when ") + 1 :]
        category = cls.category
        lines.append(
            f"| `{cls.code}` | {category.value} | {category.exit_status} | {category.http_status} | {meaning} |"
        )
    return "\n".join(lines) + "\n"
