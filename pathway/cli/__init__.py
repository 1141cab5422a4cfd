"""The `carepath` command line: `main(argv) -> int`, tested by calling it."""

from __future__ import annotations

import copy
import json
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from types import FrameType
from typing import Any

import typer
from typer._click import Context
from typer.core import TyperGroup
from typer.exceptions import TyperException
from typer.models import CommandInfo

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
    stops: list[KeyboardInterrupt] = []
    previous = _stop_as_interrupt(stops)
    try:
        result = _command_for(args)(args=args, prog_name="carepath", standalone_mode=False)
        if stops:  # the framework answers either signal with its own exit 130, and no message
            return _stopped(stops[0])
    except typer.Exit as done:
        if stops:
            return _stopped(stops[0])
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
        return _stopped(stop)
    except Exception as err:  # every domain error becomes one line and an exit status
        if settings().debug:  # the traceback too; the exit status stays the error's
            traceback.print_exc()
        sys.stderr.write(f"carepath: error: {err}\n")
        if settings().json:  # and, for a caller reading --json output, the error as JSON on stdout
            sys.stdout.write(json.dumps({"error": error_document(err)}, indent=2, ensure_ascii=False) + "\n")
        return exit_code(err)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        engine = settings().opened
        if engine is not None:
            engine.close()
        stop_logging()
    return int(result) if isinstance(result, int) else 0


def _command_for(args: list[str]) -> Any:
    """The command-line group with only the command `args` name built (building every command's
    parameters would cost each start some 25 ms); the whole group for help, completion, no command
    or a name that is not a command, so their messages list every command."""
    bare = copy.copy(app)
    bare.registered_commands = []
    group = typer.main.get_command(bare)
    assert isinstance(group, TyperGroup)
    try:
        parser = group.make_parser(Context(group, info_name="carepath", resilient_parsing=True))
        options, rest, _order = parser.parse_args(args=list(args))
    except Exception:  # let the whole group report it
        return app
    wanted = next(iter(rest), None)
    found = [info for info in app.registered_commands if _name(info) == wanted]
    if len(found) != 1 or any(name in options for name in ("help", "install_completion", "show_completion")):
        return app
    command = typer.main.get_command_from_info(
        found[0], pretty_exceptions_short=app.pretty_exceptions_short, rich_markup_mode=app.rich_markup_mode
    )
    group.add_command(command)
    return group


def _name(info: CommandInfo) -> str | None:
    callback = info.callback
    return info.name or (typer.main.get_command_name(callback.__name__) if callback is not None else None)


def _stopped(stop: BaseException) -> int:
    terminated = isinstance(stop, Terminated) or isinstance(stop.__cause__, Terminated)
    sys.stderr.write(f"carepath: {'terminated' if terminated else 'interrupted'}\n")
    return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


# Exit statuses of a command stopped by a signal (the shell's 128 + signal number).
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C: the same clean-up runs (workers killed)."""


def _stop_as_interrupt(stops: list[KeyboardInterrupt]) -> dict[int, Any]:
    """Make SIGTERM raise Terminated and SIGINT KeyboardInterrupt in the main thread, each noted in
    `stops` first; returns the previous handlers (none off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handle(signum: int, _frame: FrameType | None) -> None:
        stop = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        stops.append(stop)
        raise stop

    return {signum: signal.signal(signum, handle) for signum in (signal.SIGTERM, signal.SIGINT)}


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
