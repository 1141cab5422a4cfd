"""Core commands: enroll, send, tick, status, history, migrate."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from .. import DEFAULT_PATHWAY, bulk_allocation, entry_json
from .app import AtOption, JsonOption, PathwayOption, app, emit_json, engine, parse_data, parse_time, reading
from .render import console, print_history, print_status, rederivation_lines

if TYPE_CHECKING:
    from .. import SendResult


@app.command()
def enroll(
    patient: Annotated[str, typer.Argument(help="Patient id.")],
    at: AtOption,
    pathway: Annotated[str, typer.Option(help="Pathway definition.")] = DEFAULT_PATHWAY,
    version: Annotated[
        int | None, typer.Option(min=1, help="Definition version (default: the latest approved).")
    ] = None,
    allow_unapproved: Annotated[
        bool, typer.Option("--allow-unapproved", help="Allow a version that is a draft or under review.")
    ] = False,
    handover_from: Annotated[
        str | None,
        typer.Option("--from", help="Hand over from the patient's enrolment on this pathway (recorded)."),
    ] = None,
    factors: Annotated[str | None, typer.Option(help="Patient factors as JSON, e.g. '{\"age\": 70}'.")] = None,
    actor: Annotated[str | None, typer.Option(help="Who enrolled the patient.")] = None,
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key", help="Repeat-safe key.")] = None,
    json_: JsonOption = False,
) -> None:
    """Enrol a patient on a pathway: the latest approved version unless --version names another.

    A patient may be enrolled on several pathways, each once.

    Example: carepath enroll p-001 --at 2026-01-05T09:00:00+00:00 --factors '{"age": 70}'
    Hand-over: carepath enroll p-001 --pathway sciatica --from OTHER --allow-unapproved --at ...
    """
    status = engine().enroll(
        patient,
        parse_time(at),
        pathway=pathway,
        version=version,
        allow_unapproved=allow_unapproved,
        handover_from=handover_from,
        factors=parse_data(factors, "--factors") if factors is not None else None,
        actor=actor,
        idempotency_key=idempotency_key,
    )
    if json_:
        emit_json(status.to_json())
    else:
        console().print(f"enrolled [bold]{patient}[/] on {status.pathway} v{status.version}: {status.state}")


@app.command()
def send(
    patient: Annotated[str, typer.Argument(help="Patient id.")],
    event: Annotated[str, typer.Argument(help="assess, reassess, tick, relapse, override or withdraw.")],
    at: AtOption,
    data: Annotated[str | None, typer.Option(help="Event data as a JSON object.")] = None,
    actor: Annotated[str | None, typer.Option(help="Who recorded the event.")] = None,
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key", help="Repeat-safe key.")] = None,
    late: Annotated[
        bool, typer.Option("--late", help="Record an event dated before the last clinical event (re-derived).")
    ] = False,
    pathway: PathwayOption = None,
    json_: JsonOption = False,
) -> None:
    """Apply one event to a patient's enrolment.

    An event dated before ticks recorded after the last clinical event is folded in at its time;
    one dated before the last clinical event needs --late. Either way the state is re-derived
    and any decision that changes is shown with before and after.

    Example: carepath send p-001 reassess --pathway sciatica --at 2026-02-02T09:00:00+00:00
    --data '{"pain": 5, "fasciculations": "improving", "red_flags": []}'
    """
    result = engine().send(
        patient,
        event,
        parse_time(at),
        parse_data(data),
        pathway=pathway,
        actor=actor,
        idempotency_key=idempotency_key,
        late=late,
    )
    _print_result(patient, event, result, json_)


def _print_result(patient: str, event: str, result: SendResult, json_: bool) -> None:
    if json_:
        document: dict[str, Any] = result.status.to_json()
        document["changed"] = result.changed
        document["duplicate"] = result.duplicate
        document["entry"] = entry_json(result.entry) if result.entry else None
        document["rederived"] = result.rederived.to_json() if result.rederived else None
        emit_json(document)
        return
    status = result.status
    if result.duplicate:
        console().print(
            f"{patient}: already recorded as seq {result.entry.seq if result.entry else '?'}; nothing written"
        )
    elif not result.changed:
        console().print(f"{patient}: {event} changed nothing; nothing written")
    else:
        console().print(
            f"{patient}: {event} -> [bold]{status.state}[/] (seq {result.entry.seq if result.entry else '?'})"
        )
    if result.rederived is not None:
        for line in rederivation_lines(result.rederived.to_json()):
            console().print(f"  {line}")


@app.command()
def correct(
    patient: Annotated[str, typer.Argument(help="Patient id.")],
    seq: Annotated[int, typer.Option("--seq", min=1, help="The entry entered in error.")],
    reason: Annotated[str, typer.Option("--reason", help="Why it is corrected (recorded).")],
    data: Annotated[
        str | None, typer.Option(help="The corrected payload as JSON (leave out: the event did not happen).")
    ] = None,
    actor: Annotated[str | None, typer.Option(help="Who corrects it.")] = None,
    pathway: PathwayOption = None,
    json_: JsonOption = False,
) -> None:
    """Mark an entry as entered in error, optionally with its corrected payload, and re-derive the state.

    Appends a correction entry; nothing is deleted or edited. An enrolment is corrected with its
    data (--data '{"factors": {...}}').

    Example: carepath correct p-001 --seq 3 --reason "pain was 4, not 9"
    --data '{"pain": 4, "fasciculations": "stable", "red_flags": []}'
    """
    result = engine().correct(
        patient,
        seq,
        reason,
        parse_data(data) if data is not None else None,
        pathway=pathway,
        actor=actor,
    )
    _print_result(patient, "correct", result, json_)


@app.command()
def tick(
    at: AtOption,
    batch: Annotated[int, typer.Option(min=1, help="Patients per transaction.")] = 2000,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Processes sharing the sweep (default: one per core when over two batches are due)."),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Sweep every enrolment due at a time: advance its reassessment monitoring.

    Example: carepath tick --at 2026-03-01T00:00:00+00:00
    """
    with bulk_allocation():
        report = engine().tick(parse_time(at), batch=batch, workers=workers or "auto")
    if json_:
        emit_json(
            {"at": report.at, "advanced": report.advanced, "unchanged": report.unchanged, "skipped": report.skipped}
        )
    else:
        console().print(
            f"tick at {report.at.isoformat()}: {report.advanced} advanced, "
            f"{report.unchanged} unchanged, {len(report.skipped)} skipped"
        )


@app.command()
def status(
    patient: Annotated[str, typer.Argument(help="Patient id.")],
    pathway: PathwayOption = None,
    json_: JsonOption = False,
) -> None:
    """Show a patient's state, configuration, revision, next due time, outcome and plan (one enrolment).

    Example: carepath status p-001 --pathway sciatica --json
    """
    current = reading().status(patient, pathway)
    if json_:
        emit_json(current.to_json())
    else:
        print_status(current, reading().history(patient, current.pathway), reading().clock())


@app.command()
def history(
    patient: Annotated[str, typer.Argument(help="Patient id.")],
    pathway: PathwayOption = None,
    json_: JsonOption = False,
) -> None:
    """List the audit entries of a patient's enrolment in order.

    Example: carepath history p-001 --pathway sciatica --json
    """
    entries = reading().history(patient, pathway)
    if json_:
        emit_json([e.to_json() for e in entries])
    else:
        print_history(patient, entries)


@app.command()
def migrate() -> None:
    """Create or upgrade the schema (idempotent; safe from several processes).

    A database made by release 0.1.0 (one pathway per patient) is re-keyed by enrolment
    (patient and pathway); no audit row is changed or re-hashed.

    Example: carepath --db postgresql+psycopg://postgres@127.0.0.1/test migrate
    """
    for step in engine().migrate():
        console().print(f"upgraded {step}")
    console().print(f"schema ready on {engine().shown_url}")
