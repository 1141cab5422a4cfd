"""Named functions: inputs a definition file cannot express as data, registered in Python.

A definition names a function (`inputs: {x: {function: name}}`); the function receives the
validated payload, the context and the event time, and returns the input's value. Only
registered names can be used, so a definition file never carries code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from carepath.errors import Category

from ._errors import StatesError

__all__ = ["InputFunction", "UnknownFunction", "input_function", "named_function", "registered_functions"]

InputFunction = Callable[[BaseModel, Mapping[str, Any], datetime], Any]

_FUNCTIONS: dict[str, InputFunction] = {}


class UnknownFunction(StatesError):
    """Raised when a definition names a function that is not registered."""

    code = "unknown_function"
    category = Category.INVALID_INPUT

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no function named {name!r} is registered")


def input_function(name: str) -> Callable[[InputFunction], InputFunction]:
    """Decorator registering `fn` under `name` for definitions to use as an input."""

    def register(fn: InputFunction) -> InputFunction:
        if name in _FUNCTIONS and _FUNCTIONS[name] is not fn:
            raise ValueError(f"a function named {name!r} is already registered")
        _FUNCTIONS[name] = fn
        return fn

    return register


def named_function(name: str) -> InputFunction:
    try:
        return _FUNCTIONS[name]
    except KeyError:
        raise UnknownFunction(name) from None


def registered_functions() -> frozenset[str]:
    return frozenset(_FUNCTIONS)
