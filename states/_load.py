"""Reading definition files: YAML or JSON into a `PathwayModel`, with every problem located.

The only input this package reads is a definition file a person names; nothing else is read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ._errors import DefinitionError
from ._model import PathwayModel

__all__ = ["DEFINITION_SUFFIXES", "definition_files", "json_schema", "load_file", "parse_definition", "write_cache"]

DEFINITION_SUFFIXES = (".yaml", ".yml", ".json")


def _read(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    import yaml  # loaded only when a YAML definition is read

    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml when built with it


def _cache_path(path: Path) -> Path:
    return path.parent / "__pycache__" / f"{path.name}.json"


def _read_cached(path: Path) -> Any:
    """A YAML file's data through a JSON copy in `__pycache__` beside it, used while its digest
    matches the file's (parsing YAML costs a command-line start tens of milliseconds; JSON about
    one). A missing or stale copy is rewritten as Python writes bytecode: not when that is turned
    off (`write_cache` then makes it, as `make install` does)."""
    if path.suffix == ".json":
        return _read(path)
    raw = path.read_bytes()
    try:
        kept = json.loads(_cache_path(path).read_bytes())
        if isinstance(kept, dict) and kept.get("sha256") == hashlib.sha256(raw).hexdigest():
            return kept["data"]
    except (OSError, ValueError):
        pass
    if not sys.dont_write_bytecode:
        write_cache(path)
    return _read(path)


def write_cache(path: str | Path) -> bool:
    """Write the JSON copy of a YAML definition's data that `load_file(path, cached=True)` reads;
    False (and nothing written) when the folder is not writable or JSON cannot hold the data
    exactly (dates are kept as ISO text, so the copy must validate to the same model)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = _read(path)
        text = json.dumps({"sha256": hashlib.sha256(raw).hexdigest(), "data": data}, default=_iso)
        if PathwayModel.model_validate(json.loads(text)["data"]) != PathwayModel.model_validate(data):
            return False
        cache = _cache_path(path)
        cache.parent.mkdir(exist_ok=True)
        partial = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        partial.write_text(text, encoding="utf-8")
        partial.replace(cache)  # whole or not at all, whoever writes at the same time
    except (OSError, TypeError, ValueError):  # ValidationError is a ValueError
        return False
    return True


def _iso(value: Any) -> str:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def load_file(path: str | Path, *, cached: bool = False) -> PathwayModel:
    """The model in one file; raises DefinitionError naming each problem with its place in the file.

    `cached` reads a YAML file through a JSON copy of its data kept beside it (the package's own
    definitions); the copy is used only while the file is byte for byte the one it was made from."""
    path = Path(path)
    try:
        data = _read_cached(path) if cached else _read(path)
    except (OSError, ValueError) as err:
        raise DefinitionError(path.name, 0, [f"{path}: {err}".splitlines()[0]]) from None
    except Exception as err:  # a YAML syntax error: its message says where
        raise DefinitionError(path.name, 0, [f"{path}: {' '.join(str(err).split())}"]) from None
    return parse_definition(data, str(path))


def parse_definition(data: Any, where: str = "definition") -> PathwayModel:
    """Validate loaded data as a definition model."""
    try:
        return PathwayModel.model_validate(data)
    except ValidationError as err:
        name = data.get("name", where) if isinstance(data, dict) else where
        version = data.get("version", 0) if isinstance(data, dict) else 0
        problems = [f"{where}: {_location(e['loc'])}: {e['msg']}" for e in err.errors()]
        raise DefinitionError(str(name), version if isinstance(version, int) else 0, problems) from None


def _location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(("." if parts else "") + str(part))
    return "".join(parts) or "(top)"


def definition_files(path: str | Path) -> Iterator[Path]:
    """A definition file, or every definition file in a folder (sorted)."""
    path = Path(path)
    if path.is_dir():
        yield from sorted(p for p in path.iterdir() if p.suffix in DEFINITION_SUFFIXES)
    else:
        yield path


def json_schema() -> dict[str, Any]:
    """The JSON Schema of definition files, for editors to check a file as it is written."""
    schema = PathwayModel.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "carepath pathway definition"
    return schema
