"""Server commands: serve, deliver, prune-outbox, token add, openapi."""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from .. import InvalidCommand, MissingExtra
from .app import JsonOption, app, emit_json, engine, settings
from .render import console

SECRET_ENV = "CAREPATH_WEBHOOK_SECRET"
# The longest retention the outbox commands take (a century): beyond it the cut is no date at all.
MAX_RETENTION_DAYS = 36_500

token_app = typer.Typer(help="Manage the API's bearer tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")

TokensOption = Annotated[
    Path | None,
    typer.Option("--tokens", help="Token file (default: $CAREPATH_TOKENS_FILE, else $CAREPATH_TOKENS as JSON)."),
]

PruneAfterDaysOption = Annotated[
    int | None,
    typer.Option(
        "--prune-after-days",
        min=1,
        max=MAX_RETENTION_DAYS,
        help="Also delete messages delivered more than this many days ago (at start, then hourly).",
    ),
]


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
    tokens: TokensOption = None,
    max_in_flight: Annotated[
        int, typer.Option("--max-in-flight", min=1, help="Requests served at once per process; more get 503.")
    ] = 16,
    webhook: Annotated[
        str | None, typer.Option("--webhook", help="Also deliver the outbox to this URL (see `deliver`).")
    ] = None,
    secret: Annotated[str | None, typer.Option("--secret", help="Webhook signing secret.", envvar=SECRET_ENV)] = None,
    prune_after_days: PruneAfterDaysOption = None,
) -> None:
    """Serve the HTTP API and the web view (needs the `server` extra).

    Example: carepath --db sqlite:///carepath.db serve --tokens tokens.json --port 8000
    """
    try:
        import fastapi  # noqa: F401  # checked here: the server processes would fail one by one
        import jinja2  # noqa: F401
        import uvicorn
    except ModuleNotFoundError as err:
        raise MissingExtra("carepath serve", err.name or "fastapi") from None
    from ..server import DB_ENV, IN_FLIGHT_ENV, TOKENS_FILE_ENV, load_tokens

    if prune_after_days is not None and webhook is None:
        raise InvalidCommand("--prune-after-days prunes what the deliverer delivered: give --webhook URL too")

    if tokens is not None:
        os.environ[TOKENS_FILE_ENV] = str(tokens.resolve())
    found = load_tokens(Path(os.environ[TOKENS_FILE_ENV]) if os.environ.get(TOKENS_FILE_ENV) else None)
    if not len(found):
        raise InvalidCommand("no tokens: give --tokens FILE (create one with `carepath token add`)")
    os.environ[DB_ENV] = settings().db
    os.environ[IN_FLIGHT_ENV] = str(max_in_flight)
    deliverer = None
    if webhook is not None:
        from ..server import Deliverer

        deliverer = Deliverer(settings().db, webhook, secret, prune_after_days=prune_after_days, log=_log)
        deliverer.start()
    try:
        uvicorn.run(
            "pathway.server:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
        )
    finally:
        if deliverer is not None:
            deliverer.stop()


@app.command()
def deliver(
    webhook: Annotated[str, typer.Option("--webhook", help="URL to POST each outbox message to.")],
    secret: Annotated[
        str | None,
        typer.Option("--secret", help="Signing secret (default: $CAREPATH_WEBHOOK_SECRET).", envvar=SECRET_ENV),
    ] = None,
    poll: Annotated[float, typer.Option("--poll", min=0.05, help="Seconds between looks at an empty outbox.")] = 1.0,
    drain: Annotated[bool, typer.Option("--drain", help="Stop once nothing is pending.")] = False,
    prune_after_days: PruneAfterDaysOption = None,
) -> None:
    """Deliver the outbox (enrolled, escalated, resolved, ended, due, overdue, flagged, migrated) to a webhook.

    In order, at least once, signed with HMAC-SHA256 (Carepath-Signature: t=...,v1=...), retried
    with back-off; a message delivered again after a crash carries the same id.

    Example: carepath deliver --webhook https://example.org/hooks/carepath --secret "$SECRET" --prune-after-days 30
    """
    from ..server import Deliverer

    deliverer = Deliverer(settings().db, webhook, secret, prune_after_days=prune_after_days, log=_log)
    try:
        count = deliverer.run(poll=poll, drain=drain)
    finally:
        deliverer.stop()
    console().print(f"delivered {count} messages")


@app.command("prune-outbox")
def prune_outbox(
    delivered_before_days: Annotated[
        int,
        typer.Option(
            "--delivered-before-days",
            min=1,
            max=MAX_RETENTION_DAYS,
            help="Delete the messages delivered more than this many days ago.",
        ),
    ],
    json_: JsonOption = False,
) -> None:
    """Delete outbox messages delivered more than N days ago (undelivered ones always stay).

    The audit log is untouched; a poller of GET /events further behind than N days misses the
    pruned messages.

    Example: carepath prune-outbox --delivered-before-days 30
    """
    opened = engine()
    before = opened.clock() - timedelta(days=delivered_before_days)
    pruned = opened.prune_outbox(before)
    if json_:
        emit_json({"pruned": pruned, "before": before})
    else:
        console().print(f"pruned {pruned} outbox messages delivered before {before.isoformat()}")


def _log(line: str) -> None:
    sys.stderr.write(f"carepath: {line}\n")


@token_app.command("add")
def token_add(
    principal: Annotated[str, typer.Argument(help="Who the token speaks for (the audit log's actor).")],
    role: Annotated[list[str], typer.Option("--role", help="clinician, scheduler, auditor or admin (repeatable).")],
    file: Annotated[Path, typer.Option("--file", help="Token file to add it to (created 0600).")] = Path("tokens.json"),
) -> None:
    """Create a bearer token; its SHA-256 is stored in the file, the token is printed once.

    Example: carepath token add dr-jones --role clinician --file tokens.json
    """
    from ..server import add_token

    token = add_token(file, principal, role)
    sys.stdout.write(token + "\n")
    sys.stderr.write(f"added a token for {principal} ({', '.join(role)}) to {file}; it is not shown again\n")


@app.command()
def openapi(
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write here (default: stdout).")] = None,
) -> None:
    """Print the API's OpenAPI document (the repository keeps it as openapi.json).

    Example: carepath openapi -o openapi.json
    """
    from ..server import openapi_document

    text = json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        console().print(f"wrote {output}")
