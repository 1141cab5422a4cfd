"""Reading definition files: YAML or JSON into a `PathwayModel`, with every problem located.

The only input this package reads is a definition file a person names; nothing else is read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ._errors import DefinitionError
from ._model import PathwayModel

__all__ = ["DEFINITION_SUFFIXES", "definition_files", "json_schema", "load_file", "parse_definition"]

DEFINITION_SUFFIXES = (".yaml", ".yml", ".json")


def _read(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    import yaml  # loaded only when a YAML definition is read

    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml when built with it


def load_file(path: str | Path) -> PathwayModel:
    """The model in one file; raises DefinitionError naming each problem with its place in the file."""
    path = Path(path)
    try:
        data = _read(path)
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
