"""The `carepath` command line: `main(argv) -> int`, tested by calling it."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

import typer
from typer.exceptions import TyperException

from ..errors import exit_code
from . import audit, core, definitions, demo, exchange, inspect, ops, trust  # noqa: F401  # registers commands
from .app import app, reset_settings, settings

__all__ = ["app", "main", "run"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (0 ok, 1 verify problem, 2 input, 3 state, 4 patient,
    5 no carepath database or storage unavailable, 130 interrupted)."""
    reset_settings()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = app(args=args, prog_name="carepath", standalone_mode=False)
    except typer.Exit as done:
        return int(done.exit_code)
    except TyperException as err:  # usage errors: the framework's usage message, exit 2
        show = getattr(err, "show", None)
        if show is not None:
            show()
        else:
            sys.stderr.write(f"carepath: error: {err.format_message()}\n")
        return 2
    except typer.Abort:
        sys.stderr.write("aborted\n")
        return 130
    except Exception as err:  # every domain error becomes one line and an exit status
        if settings().debug:  # the traceback too; the exit status stays the error's
            traceback.print_exc()
        sys.stderr.write(f"carepath: error: {err}\n")
        return exit_code(err)
    finally:
        engine = settings()._engine
        if engine is not None:
            engine.close()
    return int(result) if isinstance(result, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
