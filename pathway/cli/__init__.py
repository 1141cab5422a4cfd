"""The `carepath` command line: `main(argv) -> int`, tested by calling it."""

from __future__ import annotations

import json
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from types import FrameType
from typing import Any

import typer
from typer.exceptions import TyperException

from carepath import error_document

from .. import exit_code
from . import audit, core, definitions, demo, exchange, inspect, ops, serve, trust  # noqa: F401  # registers commands
from .app import app, reset_settings, settings, stop_logging

__all__ = ["EXIT_INTERRUPTED", "EXIT_TERMINATED", "Terminated", "app", "main", "run"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (0 ok, 1 verify problem, 2 input, 3 state, 4 patient,
    5 no carepath database or storage unavailable, 130 interrupted)."""
    reset_settings()
    args = list(sys.argv[1:] if argv is None else argv)
    previous = _terminate_as_interrupt()
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
    except (typer.Abort, KeyboardInterrupt) as stop:
        # Ctrl-C or SIGTERM (click turns them into Abort): parallel workers were killed on the way out.
        terminated = isinstance(stop, Terminated) or isinstance(stop.__cause__, Terminated)
        sys.stderr.write(f"carepath: {'terminated' if terminated else 'interrupted'}\n")
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except Exception as err:  # every domain error becomes one line and an exit status
        if settings().debug:  # the traceback too; the exit status stays the error's
            traceback.print_exc()
        sys.stderr.write(f"carepath: error: {err}\n")
        if settings().json:  # and, for a caller reading --json output, the error as JSON on stdout
            sys.stdout.write(json.dumps({"error": error_document(err)}, indent=2, ensure_ascii=False) + "\n")
        return exit_code(err)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        engine = settings().opened
        if engine is not None:
            engine.close()
        stop_logging()
    return int(result) if isinstance(result, int) else 0


# Exit statuses of a command stopped by a signal (the shell's 128 + signal number).
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C: the same clean-up runs (workers killed)."""


def _terminate_as_interrupt() -> Any:
    """Make SIGTERM raise Terminated in the main thread; returns the previous handler (None off it)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handle(_signum: int, _frame: FrameType | None) -> None:
        raise Terminated()

    return signal.signal(signal.SIGTERM, handle)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
