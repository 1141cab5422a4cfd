"""The registry of definitions: built-in files, installed packages, and files named at run time.

Definitions come from
- the package's own files in `states/pathways/`;
- installed packages, through the entry-point group `carepath.pathways` (an entry point names a
  file or folder path, a `PathwayModel`, a list of them, or a function returning any of these);
- files or folders named in `CAREPATH_PATHWAYS` (separated by the path separator) or passed
  to `load_pathways` (the CLI's `--pathways`).
Every definition passes its checks when registered; the package's own files are checked by the
test suite and `carepath check` instead of on every start. Built-in files are read, one pathway
(or one version) at a time, on first use, so importing `states` stays cheap.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from ._checks import check_model
from ._definition import Pathway
from ._errors import DefinitionError, RetiredDefinition, UnapprovedDefinition, UnknownDefinition
from ._load import definition_files, load_file, write_cache
from ._model import PathwayModel

__all__ = [
    "BUILTIN_DIR",
    "ENTRY_POINT_GROUP",
    "ENV_VAR",
    "definition_for_enrolment",
    "get_pathway",
    "known_events",
    "latest_pathway",
    "load_pathways",
    "pathways",
    "register",
    "write_builtin_caches",
]

BUILTIN_DIR = Path(__file__).with_name("pathways")
ENTRY_POINT_GROUP = "carepath.pathways"
ENV_VAR = "CAREPATH_PATHWAYS"

_MODELS: dict[tuple[str, int], PathwayModel] = {}
_INSTANCES: dict[tuple[str, int], Pathway] = {}
_PENDING: list[Path] = []  # built-in files not read yet
_KNOWN_EVENTS: frozenset[str] = frozenset()
_LOADED = False
_LOCK = threading.RLock()
# The package's own files are named NAME-vVERSION.yaml, so one pathway's files are read alone.
_FILE_NAME = re.compile(r"^(?P<name>[a-z][a-z0-9_-]*)-v(?P<version>[0-9]+)$")


def register(model: PathwayModel) -> Pathway:
    """Add a definition under (name, version) once it passes its checks; the same one twice is a no-op.

    Raises DefinitionError listing every problem, or when another definition already holds the
    same name and version.
    """
    with _LOCK:
        _add(model, checked=True)
        return _instance((model.name, model.version))


def _add(model: PathwayModel, *, checked: bool) -> bool:
    """Record a model (checked and compiled now, or compiled on first use); False when it was registered already."""
    global _KNOWN_EVENTS
    key = (model.name, model.version)
    existing = _MODELS.get(key)
    if existing is not None:
        if existing.model_dump(exclude={"schema_"}) != model.model_dump(exclude={"schema_"}):
            raise DefinitionError(model.name, model.version, ["another definition is registered as this version"])
        return False
    if checked:
        check_model(model)
        _INSTANCES[key] = Pathway(model)
    _MODELS[key] = model
    _KNOWN_EVENTS = _KNOWN_EVENTS | frozenset(model.events)
    return True


def load_pathways(paths: Iterable[str | Path]) -> list[Pathway]:
    """Register every definition in these files or folders."""
    _ensure_loaded()
    return [register(load_file(file)) for path in paths for file in definition_files(path)]


def _ensure_loaded() -> None:
    """Find every source once: built-in files are listed (read on demand), the others registered."""
    global _LOADED
    if _LOADED:
        return
    with _LOCK:
        if _LOADED:
            return
        _LOADED = True  # set first: registering below calls back here
        _PENDING.extend(definition_files(BUILTIN_DIR))
        for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
            _register_any(entry_point.load(), f"entry point {entry_point.name}")
        for path in filter(None, os.environ.get(ENV_VAR, "").split(os.pathsep)):
            for file in definition_files(path):
                register(load_file(file))


def _read_pending(name: str | None = None, version: int | None = None) -> None:
    """Read the built-in files of pathway `name` (all of them when None; one version when given)."""
    with _LOCK:
        for file in list(_PENDING):
            match = _FILE_NAME.match(file.stem)
            other = match is not None and name is not None and match["name"] != name
            if other or (match is not None and version is not None and int(match["version"]) != version):
                continue
            _PENDING.remove(file)
            # The package's own definitions are checked by its test suite and by `carepath check`,
            # not again on every start (that alone would cost a command-line start about 0.2 s).
            _add(load_file(file, cached=True), checked=False)


def write_builtin_caches() -> None:
    """Write the JSON copies the built-in definitions are read through (`load.write_cache`)."""
    for file in definition_files(BUILTIN_DIR):
        write_cache(file)


def _register_any(value: Any, where: str) -> None:
    if callable(value) and not isinstance(value, (PathwayModel, type)):
        value = value()
    if isinstance(value, PathwayModel):
        register(value)
    elif isinstance(value, (str, Path)):
        for file in definition_files(value):
            register(load_file(file))
    elif isinstance(value, (list, tuple)):
        for item in value:
            _register_any(item, where)
    else:
        raise DefinitionError(where, 0, [f"{where} gave {type(value).__name__}, not a definition or a path"])


def _instance(key: tuple[str, int]) -> Pathway:
    """The compiled definition, compiled on first use."""
    instance = _INSTANCES.get(key)
    if instance is None:
        with _LOCK:
            instance = _INSTANCES.get(key)
            if instance is None:
                instance = _INSTANCES[key] = Pathway(_MODELS[key])
    return instance


def get_pathway(name: str, version: int | None = None) -> Pathway:
    """A registered definition (the latest approved version when none is given)."""
    _ensure_loaded()
    if version is None:
        return latest_pathway(name)
    key = (name, version)
    if key not in _MODELS:
        _read_pending(name, version)  # that version's built-in file
        if key not in _MODELS:
            raise UnknownDefinition(name, version, _versions(name))
    return _instance(key)


def latest_pathway(name: str, *, approved_only: bool = True) -> Pathway:
    """The newest approved version of `name` (or the newest of any status)."""
    _ensure_loaded()
    versions = _versions(name)
    if not versions:
        raise UnknownDefinition(name, None, [], _names())
    chosen = [v for v in versions if _MODELS[(name, v)].review.status == "approved"] if approved_only else versions
    if not chosen:
        raise UnapprovedDefinition(name, max(versions), _MODELS[(name, max(versions))].review.status)
    return _instance((name, max(chosen)))


def definition_for_enrolment(name: str, version: int | None = None, *, allow_unapproved: bool = False) -> Pathway:
    """The definition a new enrolment gets: the latest approved, or the named version if it may enrol.

    Raises UnknownDefinition, RetiredDefinition (no new enrolments), or UnapprovedDefinition
    (a draft or a version under review, unless `allow_unapproved`).
    """
    _ensure_loaded()
    if version is None:
        versions = _versions(name)
        if not versions:
            raise UnknownDefinition(name, None, [], _names())
        live = [v for v in versions if _MODELS[(name, v)].review.status != "retired"]
        approved = [v for v in live if _MODELS[(name, v)].review.status == "approved"]
        if approved:
            return _instance((name, max(approved)))
        if allow_unapproved and live:
            return _instance((name, max(live)))
        newest = max(live or versions)
        status = _MODELS[(name, newest)].review.status
        if status == "retired":
            raise RetiredDefinition(name, newest)
        raise UnapprovedDefinition(name, newest, status)
    definition = get_pathway(name, version)
    status = definition.review.status
    if status == "retired":
        raise RetiredDefinition(name, version)
    if status != "approved" and not allow_unapproved:
        raise UnapprovedDefinition(name, version, status)
    return definition


def _names() -> list[str]:
    _read_pending()
    return sorted({n for n, _ in _MODELS})


def _versions(name: str) -> list[int]:
    _read_pending(name)
    return sorted(v for n, v in _MODELS if n == name)


def known_events() -> frozenset[str]:
    """Every event name some registered definition accepts."""
    _ensure_loaded()
    if _PENDING:
        _read_pending()
    return _KNOWN_EVENTS


def pathways() -> list[tuple[str, int]]:
    """Every registered (name, version)."""
    _ensure_loaded()
    _read_pending()
    return sorted(_MODELS)
