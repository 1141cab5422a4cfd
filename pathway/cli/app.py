"""The typer application, its global options and the helpers every command shares."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from persistence import DEFAULT_URL

from .. import InvalidCommand

if TYPE_CHECKING:
    from .. import Engine

__all__ = [
    "AtOption",
    "JsonOption",
    "PathwayOption",
    "Settings",
    "app",
    "emit_json",
    "engine",
    "parse_data",
    "parse_time",
    "read_json_file",
    "reading",
    "settings",
    "start_logging",
    "stop_logging",
]

app = typer.Typer(
    name="carepath",
    help="carepath: statechart-driven care pathways with a hash-chained audit log.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@dataclass
class Settings:
    """Global options of one invocation."""

    db: str = DEFAULT_URL
    debug: bool = False
    json: bool = False  # the command took --json: an error is also printed as a JSON document
    # The engine of this invocation once a command opened one (closed when the command ends).
    opened: Engine | None = field(default=None, repr=False)
    # The log handler --log-format / --log-level installed (removed when the command ends).
    log_handler: logging.Handler | None = field(default=None, repr=False)


_settings = Settings()


def settings() -> Settings:
    return _settings


def reset_settings() -> None:
    global _settings
    _settings = Settings()


@app.callback()
def _global(
    db: Annotated[
        str | None, typer.Option("--db", help="Database URL (default: $CAREPATH_DB, else sqlite:///carepath.db).")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    log_format: Annotated[
        str | None,
        typer.Option("--log-format", help="Log each command to stderr: text, or json (one JSON object a line)."),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level", help="Least level logged: debug, info, warning or error (default: info with --log-format)."
        ),
    ] = None,
    pathways: Annotated[
        list[str] | None,
        typer.Option(
            "--pathways",
            help="Definition file or folder to register besides the built-in ones and $CAREPATH_PATHWAYS.",
        ),
    ] = None,
) -> None:
    """carepath: statechart-driven care pathways with a hash-chained audit log.

    Example: carepath --db sqlite:///demo.db status p-001 --json
    """
    _settings.db = db or os.environ.get("CAREPATH_DB") or DEFAULT_URL
    _settings.debug = debug
    if log_format is not None or log_level is not None:
        _settings.log_handler = start_logging(log_format or "text", log_level or "info")
    if pathways:
        from states import load_pathways

        load_pathways(pathways)


def engine() -> Engine:
    """The engine of a writing command, created on first use (it creates the schema on first use).

    An in-memory SQLite database (`--db sqlite://`) is refused: it would keep nothing.
    """
    if _settings.opened is None:
        from persistence import is_private_memory

        from .. import Engine

        if is_private_memory(_settings.db):
            raise InvalidCommand(
                f"--db {_settings.db}: an in-memory database keeps nothing once the command ends; "
                "give a file (sqlite:///carepath.db) or a PostgreSQL URL"
            )
        _settings.opened = Engine(_settings.db)
    return _settings.opened


def reading() -> Engine:
    """The engine of a command that only reads: it creates nothing (no file, schema or table) and
    fails with NoDatabase (exit 5) where there is no carepath database."""
    if _settings.opened is None:
        from .. import Engine

        _settings.opened = Engine(_settings.db, read_only=True)
    return _settings.opened


LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


def start_logging(fmt: str, level: str) -> logging.Handler:
    """Send the `carepath` logger's records at `level` and above to stderr, as text or JSON lines."""
    from .. import JsonFormatter

    if fmt not in LOG_FORMATS:
        raise InvalidCommand(f"--log-format {fmt!r}: give one of {', '.join(LOG_FORMATS)}")
    if level.lower() not in LOG_LEVELS:
        raise InvalidCommand(f"--log-level {level!r}: give one of {', '.join(LOG_LEVELS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("carepath")
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


def stop_logging() -> None:
    """Remove the handler `start_logging` installed for this invocation."""
    handler = _settings.log_handler
    if handler is not None:
        root = logging.getLogger("carepath")
        root.removeHandler(handler)
        root.setLevel(logging.NOTSET)
        _settings.log_handler = None


def parse_time(text: str, option: str = "--at") -> datetime:
    """An ISO 8601 instant; naive times are refused downstream with a clear message."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InvalidCommand(f"{option}: {text!r} is not an ISO 8601 time (e.g. 2026-01-05T09:00:00+00:00)") from None


def parse_data(text: str | None, option: str = "--data") -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidCommand(f"{option}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(value, dict):
        raise InvalidCommand(f"{option}: must be a JSON object, got {type(value).__name__}")
    return value


def read_json_file(path: Path, option: str) -> Any:
    """The JSON document in a file an option names; unreadable or malformed is a one-line input error."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InvalidCommand(f"{option}: cannot read {str(path)!r}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise InvalidCommand(f"{option}: not valid JSON ({err.msg} at line {err.lineno})") from None


def emit_json(document: Any) -> None:
    """Print one JSON document to stdout."""
    sys.stdout.write(json.dumps(document, indent=2, default=_default, ensure_ascii=False) + "\n")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _note_json(value: bool) -> bool:
    _settings.json = _settings.json or value
    return value


JsonOption = Annotated[
    bool,
    typer.Option(
        "--json",
        help='Print one JSON document to stdout (on an error: {"error": {code, message, details}}).',
        callback=_note_json,
    ),
]
PathwayOption = Annotated[
    str | None,
    typer.Option(
        "--pathway",
        help="Which of the patient's enrolments (needed when the patient is on several pathways).",
    ),
]
AtOption = Annotated[
    str, typer.Option("--at", help="Clinical time, ISO 8601 with a zone, e.g. 2026-01-05T09:00:00+00:00.")
]
