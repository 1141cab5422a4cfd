"""Every public error survives pickling: parallel import, tick and verify pass them between processes."""

from __future__ import annotations

import inspect
import pickle
from datetime import UTC, datetime
from typing import Any

import pytest

import pathway
import persistence
import states


def _exported_errors() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in (states, persistence, pathway):
        for name in package.__all__:
            value = getattr(package, name)
            if isinstance(value, type) and issubclass(value, BaseException):
                found[f"{package.__name__}.{name}"] = value
    return [found[name] for name in sorted(found)]


def _sample(parameter: inspect.Parameter) -> Any:
    annotation = str(parameter.annotation)
    if "datetime" in annotation:
        return datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    if annotation.startswith(("int", "float")):
        return 3
    if "list" in annotation or "Sequence" in annotation or "tuple" in annotation:
        return ["a", "b"]
    if "dict" in annotation or "Mapping" in annotation:
        return {"a": 1}
    return f"{parameter.name}-value"


def _instance(kind: type[BaseException]) -> BaseException:
    signature = inspect.signature(kind.__init__)
    parameters = [p for p in list(signature.parameters.values())[1:] if p.kind is not p.VAR_KEYWORD]
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return kind("something went wrong")
    return kind(*(_sample(p) for p in parameters if p.default is p.empty))


def test_every_package_exports_errors() -> None:
    """The round trip below covers the errors of all three packages."""
    modules = {kind.__module__.split(".")[0] for kind in _exported_errors()}
    assert modules == {"states", "persistence", "pathway"}


@pytest.mark.parametrize("kind", _exported_errors(), ids=lambda kind: kind.__name__)
def test_error_round_trips_through_pickle(kind: type[BaseException]) -> None:
    """The unpickled error has the same class, message and attributes."""
    error = _instance(kind)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is kind
    assert str(copy) == str(error)
    assert copy.args == error.args
    assert vars(copy) == vars(error)
