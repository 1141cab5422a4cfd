"""The HTTP API: the engine's commands and views as resources, behind bearer tokens.

Engine calls are synchronous and run in the server's thread pool (FastAPI runs `def` endpoints
there); at most `max_in_flight` requests are served at once, the next ones get 503 with
Retry-After instead of queueing without bound. Every error is a problem document (RFC 9457).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from carepath import Error
from persistence import UnknownPatient

from .. import DEFAULT_PATHWAY
from . import door
from .auth import Principal, TokenStore
from .problems import MEDIA_TYPE, Problem, problem_for

if TYPE_CHECKING:
    from .. import Engine

__all__ = ["API_TITLE", "ApiProblem", "create_app"]

API_TITLE = "carepath"
API_VERSION = "1"
DEFAULT_IN_FLIGHT = 16
# Request bodies larger than this are refused before they are read (413).
MAX_BODY_BYTES = 1_000_000
# Paths anyone may reach without a token: the web view's sign-in form.
OPEN_PATHS = frozenset({"/login"})
READERS = ("clinician", "auditor")
# The largest cursor the outbox's 64-bit ids (SQLite INTEGER, PostgreSQL BIGINT) can hold.
MAX_CURSOR = 2**63 - 1
ISO_EXAMPLE = "2026-01-05T09:00:00+00:00"


class ApiProblem(Exception):
    """A problem the API itself raises (authentication, roles, limits, bad query values)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


def problem_response(problem: Problem) -> JSONResponse:
    return JSONResponse(problem.to_json(), status_code=problem.status, media_type=MEDIA_TYPE, headers=problem.headers)


# -- request bodies ------------------------------------------------------------------------------


def _iso_time(value: object) -> object:
    """Only an ISO 8601 string is a time: pydantic alone reads 0 or "1767600000" as Unix seconds,
    so a number would become a clinical time nobody wrote (the CLI's `--at` parses the same way)."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"expected an ISO 8601 time as a string, e.g. {ISO_EXAMPLE}")


IsoTime = Annotated[datetime, BeforeValidator(_iso_time)]


class Enrolment(BaseModel):
    """A new enrolment of a patient on a pathway."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"patient_id": "p-001", "at": ISO_EXAMPLE, "factors": {"age": 70}}]},
    )

    patient_id: str = Field(description="Patient id (1-200 printable characters).")
    at: IsoTime = Field(description="Clinical time, ISO 8601 with a zone.")
    pathway: str = Field(default=DEFAULT_PATHWAY, description="Pathway definition.")
    # Strict: "1" is not a version nor "yes" a boolean, as the document's types say.
    version: int | None = Field(
        default=None, ge=1, strict=True, description="Definition version (default: latest approved)."
    )
    allow_unapproved: bool = Field(default=False, strict=True, description="Allow a draft or a version under review.")
    handover_from: str | None = Field(default=None, description="Hand over from the patient's enrolment on this one.")
    factors: dict[str, Any] | None = Field(default=None, description="Patient factors.")


class Event(BaseModel):
    """One event for a patient's enrolment."""

    model_config = ConfigDict(extra="forbid")

    event: str = Field(description="Event name (assess, reassess, relapse, ...).")
    at: IsoTime = Field(description="Clinical time, ISO 8601 with a zone.")
    data: dict[str, Any] = Field(default_factory=dict, description="Event data.")
    pathway: str | None = Field(default=None, description="Which enrolment (needed for a patient on several).")
    late: bool = Field(default=False, strict=True, description="Record an event dated before the last clinical event.")


class Tick(BaseModel):
    """A sweep of every enrolment due at a time."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"at": ISO_EXAMPLE}]})

    at: IsoTime = Field(description="Clinical time, ISO 8601 with a zone.")


# -- the application -------------------------------------------------------------------------------


def create_app(
    engine: Engine,
    tokens: TokenStore,
    *,
    max_in_flight: int = DEFAULT_IN_FLIGHT,
    web: bool = True,
) -> FastAPI:
    """The API on `engine`, authenticating with `tokens`, serving at most `max_in_flight` requests at once."""
    app = FastAPI(
        title=API_TITLE,
        version=API_VERSION,
        description="Care pathways as statecharts, with a hash-chained audit log. Errors are RFC 9457 problems.",
    )
    app.state.engine = engine
    app.state.tokens = tokens
    in_flight = 0

    @app.middleware("http")
    async def gate(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        nonlocal in_flight
        if request.url.path not in OPEN_PATHS:
            principal = tokens.principal(_token_of(request) or "") if len(tokens) else None
            if principal is None:
                return problem_response(_unauthorised(request))
            request.state.principal = principal
        if "transfer-encoding" in request.headers:  # a body of unknown length could be any size
            detail = f"a request body must come with a Content-Length (at most {MAX_BODY_BYTES} bytes)"
            return problem_response(Problem(411, "length_required", "Length required", detail))
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            detail = f"the request body must be at most {MAX_BODY_BYTES} bytes, with a Content-Length"
            return problem_response(Problem(413, "payload_too_large", "Payload too large", detail))
        if in_flight >= max_in_flight:
            detail = f"the server is serving {in_flight} requests; retry shortly"
            return problem_response(Problem(503, "busy", "Busy", detail, headers={"Retry-After": "1"}))
        in_flight += 1
        try:
            return await call_next(request)
        finally:
            in_flight -= 1

    @app.exception_handler(ApiProblem)
    async def api_problem(_request: Request, exc: ApiProblem) -> JSONResponse:
        return problem_response(exc.problem)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [_validation_problem(error) for error in exc.errors()]
        detail = "invalid request: " + "; ".join(
            f"{'.'.join(map(str, p['location']))}: {p['message']}" for p in problems
        )
        return problem_response(Problem(422, "invalid_payload", "Invalid payload", detail, {"problems": problems}))

    @app.exception_handler(StarletteHTTPException)
    async def http_problem(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        title = code.replace("_", " ").capitalize()
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # RFC 9110: Allow lists the path's methods, of all its routes
            headers["Allow"] = _allowed_methods(app, request.url.path) or headers.get("Allow", "")
        return problem_response(Problem(exc.status_code, code, title, str(exc.detail), headers=headers))

    async def domain_problem(_request: Request, exc: Exception) -> JSONResponse:
        return problem_response(problem_for(exc))

    # carepath's errors (handled here; anything else is a 500 the server logs).
    for kind in (Error, Exception):
        app.add_exception_handler(kind, domain_problem)

    _routes(app, engine)
    app.openapi = partial(_openapi, app)  # type: ignore[method-assign]
    if web:
        from .web import add_web_routes

        add_web_routes(app, engine)
    return app


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details, with a stable snake_case `code` and structured `details`.",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "description": "/problems/<code>"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "examples": ["unknown_patient", "event_not_allowed", "invalid_payload"]},
        "details": {"type": "object"},
    },
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the problem schema and the bearer scheme every operation needs."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = document.setdefault("components", {})
        components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"bearer": []}]
        app.openapi_schema = document
    return app.openapi_schema


def _allowed_methods(app: FastAPI, path: str) -> str:
    """The methods of every route matching `path` (Starlette's own Allow names only the first route's)."""
    from starlette.routing import Route

    methods: set[str] = set()
    for route in app.routes:
        if isinstance(route, Route) and route.methods and route.path_regex.fullmatch(path):
            methods |= route.methods
    return ", ".join(sorted(methods))


def _token_of(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    from .web import COOKIE

    return request.cookies.get(COOKIE) or None


def _unauthorised(request: Request) -> Problem:
    given = _token_of(request) is not None
    detail = "the token is not valid" if given else "a bearer token is required (Authorization: Bearer TOKEN)"
    return Problem(401, "unauthenticated", "Unauthenticated", detail, headers={"WWW-Authenticate": "Bearer"})


def _validation_problem(error: Any) -> dict[str, Any]:
    """A request validation error as the error model's problems read: location, type, message."""
    location = [part for part in error.get("loc", ()) if part != "body"]
    return {"location": location, "type": str(error.get("type", "invalid")), "message": str(error.get("msg", ""))}


def requires(*roles: str) -> Callable[[Request], Principal]:
    """A dependency granting the request's principal when it holds one of `roles` (or admin); else 403."""

    def check(request: Request) -> Principal:
        principal: Principal = request.state.principal
        if not principal.may(*roles):
            needed = " or ".join(dict.fromkeys((*roles, "admin")))
            raise ApiProblem(Problem(403, "forbidden", "Forbidden", f"{principal.name} lacks the role {needed}"))
        return principal

    return check


Reader = Annotated[Principal, Depends(requires(*READERS))]
Clinician = Annotated[Principal, Depends(requires("clinician"))]
Scheduler = Annotated[Principal, Depends(requires("scheduler"))]
Auditor = Annotated[Principal, Depends(requires("auditor"))]
Admin = Annotated[Principal, Depends(requires("admin"))]
PathwayQuery = Annotated[str | None, Query(description="Which enrolment (needed for a patient on several).")]
AtQuery = Annotated[IsoTime | None, Query(description="Time to evaluate at (default: now).")]
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", description="Repeat-safe key: a repeat returns the first result.")
]
PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    for status, text in (
        (401, "No valid bearer token"),
        (403, "The token's roles do not allow this"),
        (404, "Unknown patient or enrolment"),
        (409, "Not allowed in the enrolment's state, or a conflict"),
        (422, "Invalid input"),
        (500, "The set-up or the stored record is at fault (e.g. Graphviz missing for a diagram)"),
        (503, "Busy (see Retry-After) or storage unavailable"),
    )
}


def _routes(app: FastAPI, engine: Engine) -> None:
    from .. import clinical_time

    def at_or_now(at: datetime | None, name: str = "at") -> datetime:
        return clinical_time(at, name) if at is not None else engine.clock()

    @app.post("/enrolments", status_code=201, responses=PROBLEMS, tags=["enrolments"])
    def enrol(body: Enrolment, principal: Clinician, idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
        """Enrol a patient on a pathway; the audit entry's actor is the authenticated principal."""
        status = engine.enroll(
            body.patient_id,
            body.at,
            pathway=body.pathway,
            version=body.version,
            allow_unapproved=body.allow_unapproved,
            handover_from=body.handover_from,
            factors=body.factors,
            actor=principal.name,
            idempotency_key=idempotency_key,
        )
        return status.to_json()

    @app.get("/enrolments", responses=PROBLEMS, tags=["enrolments"])
    def list_enrolments(
        _who: Reader,
        state: Annotated[str | None, Query(description="Only enrolments in this state.")] = None,
        at: AtQuery = None,
    ) -> dict[str, Any]:
        """Enrolments with state, dwell time, next due time and overdue flag; counts per state (`list --json`)."""
        return door.cohort_json(engine, at_or_now(at), state)

    @app.get("/enrolments/due", responses=PROBLEMS, tags=["enrolments"])
    def due_enrolments(request: Request, at: AtQuery = None) -> dict[str, Any]:
        """Enrolments a tick at `at` could change, and what it would do (`due --json`)."""
        requires(*READERS, "scheduler")(request)
        return door.due_json(engine, at_or_now(at))

    @app.get("/patients/{patient_id}/enrolments", responses=PROBLEMS, tags=["enrolments"])
    def patient_enrolments(patient_id: str, _who: Reader) -> list[dict[str, Any]]:
        """Every enrolment of a patient (empty when not enrolled)."""
        return [status.to_json() for status in engine.enrolments(patient_id)]

    @app.get("/patients/{patient_id}", responses=PROBLEMS, tags=["enrolments"])
    def status(patient_id: str, _who: Reader, pathway: PathwayQuery = None) -> dict[str, Any]:
        """State, configuration, revision, next due time, outcome and plan of one enrolment (`status --json`)."""
        return engine.status(patient_id, pathway).to_json()

    @app.post("/patients/{patient_id}/events", responses=PROBLEMS, tags=["events"])
    def send(
        patient_id: str, body: Event, request: Request, response: Response, idempotency_key: IdempotencyKey = None
    ) -> dict[str, Any]:
        """Apply one event (`send --json`): 201 when an entry was written, 200 for a repeat or no change."""
        principal = requires("scheduler" if body.event == "tick" else "clinician")(request)
        result = engine.send(
            patient_id,
            body.event,
            body.at,
            body.data,
            pathway=body.pathway,
            actor=principal.name,
            idempotency_key=idempotency_key,
            late=body.late,
        )
        if result.changed and not result.duplicate:
            response.status_code = 201
        document: dict[str, Any] = result.status.to_json()
        document["changed"] = result.changed
        document["duplicate"] = result.duplicate
        document["entry"] = door.entry_json(result.entry) if result.entry else None
        document["rederived"] = result.rederived.to_json() if result.rederived else None
        return document

    @app.post("/tick", responses=PROBLEMS, tags=["events"])
    def tick(body: Tick, _who: Scheduler) -> dict[str, Any]:
        """Sweep every enrolment due at `at`: advance its monitoring."""
        report = engine.tick(body.at)
        return {
            "at": report.at.isoformat(),
            "advanced": report.advanced,
            "unchanged": report.unchanged,
            "skipped": report.skipped,
        }

    @app.get("/patients/{patient_id}/history", responses=PROBLEMS, tags=["audit"])
    def history(patient_id: str, _who: Reader, pathway: PathwayQuery = None) -> list[dict[str, Any]]:
        """The enrolment's audit entries in order (`history --json`)."""
        return door.history_json(engine, patient_id, pathway)

    @app.get("/patients/{patient_id}/explain", responses=PROBLEMS, tags=["views"])
    def explain(patient_id: str, _who: Reader, at: AtQuery = None, pathway: PathwayQuery = None) -> dict[str, Any]:
        """Every outgoing rule of the current state with its conditions and current values (`explain --json`)."""
        return door.explain_json(engine, patient_id, clinical_time(at) if at else None, pathway)

    @app.get("/patients/{patient_id}/replay", responses=PROBLEMS, tags=["audit"])
    def replay(
        patient_id: str,
        _who: Reader,
        until: Annotated[IsoTime | None, Query(description="Clinical time: the state then, as known now.")] = None,
        as_of: Annotated[IsoTime | None, Query(description="Record time: what the record said then.")] = None,
        pathway: PathwayQuery = None,
    ) -> dict[str, Any]:
        """Rebuild the enrolment from its audit log, checking every step (`replay --json`)."""
        return door.replay_json(
            engine,
            patient_id,
            clinical_time(until, "until") if until else None,
            clinical_time(as_of, "as_of") if as_of else None,
            pathway,
        )

    @app.get("/patients/{patient_id}/verify", responses=PROBLEMS, tags=["audit"])
    def verify_patient(patient_id: str, _who: Auditor, pathway: PathwayQuery = None) -> dict[str, Any]:
        """Check one patient's hash chains, replay and snapshots (`verify PATIENT --json`)."""
        # An unknown patient or enrolment is a 404, not an empty report; without a pathway, as `verify PATIENT`.
        if pathway is not None:
            engine.resolve(patient_id, pathway)
        elif not engine.enrolments(patient_id):
            raise UnknownPatient(patient_id)
        return door.verify_json(engine, patient_id, pathway)

    @app.get("/verify", responses=PROBLEMS, tags=["audit"])
    def verify_all(_who: Admin) -> dict[str, Any]:
        """Check every enrolment of the database (`verify --json`); admin only."""
        return door.verify_json(engine, None, None)

    @app.get(
        "/patients/{patient_id}/diagram.svg",
        responses={**PROBLEMS, 200: {"content": {"image/svg+xml": {}}}},
        response_class=Response,
        tags=["views"],
    )
    def diagram(patient_id: str, _who: Reader, pathway: PathwayQuery = None) -> Response:
        """The statechart with the enrolment's active states highlighted (SVG)."""
        return Response(door.diagram_svg(engine, patient_id, pathway), media_type="image/svg+xml")

    @app.get(
        "/patients/{patient_id}/timeline.png",
        responses={**PROBLEMS, 200: {"content": {"image/png": {}}}},
        response_class=Response,
        tags=["views"],
    )
    def timeline(patient_id: str, _who: Reader, pathway: PathwayQuery = None) -> Response:
        """The plotted measure over time with the states as bands (PNG)."""
        return Response(door.timeline_png(engine, patient_id, pathway), media_type="image/png")

    @app.get("/patients/{patient_id}/fhir", responses=PROBLEMS, tags=["views"])
    def fhir(patient_id: str, _who: Reader, pathway: PathwayQuery = None) -> dict[str, Any]:
        """The enrolment as a FHIR R4 Bundle (`export-fhir`)."""
        return door.export_fhir(engine, patient_id, pathway)

    @app.get("/events", responses=PROBLEMS, tags=["events"])
    def events(
        _who: Reader,
        after: Annotated[
            int,
            Query(ge=0, le=MAX_CURSOR, description="Cursor: the `cursor` of the last message seen (0: the start)."),
        ] = 0,
        limit: Annotated[int, Query(ge=1, le=1000, description="At most this many messages.")] = 100,
    ) -> dict[str, Any]:
        """The outbox as a stream for polling: the messages webhooks carry, after a cursor, in order."""
        from persistence import read_outbox

        messages = read_outbox(engine.store, after, limit)
        return {"events": [m.to_json() for m in messages], "next": messages[-1].id if messages else after}

    @app.get("/definitions", responses=PROBLEMS, tags=["definitions"])
    def definitions(_who: Reader) -> list[dict[str, Any]]:
        """The registered pathway definitions (`pathways --json`)."""
        return door.definitions_json()

    @app.get("/definitions/schema", responses=PROBLEMS, tags=["definitions"])
    def definition_schema(_who: Reader) -> dict[str, Any]:
        """The JSON Schema of definition files (`carepath schema`)."""
        from states import json_schema

        return json_schema()

    @app.get("/definitions/{name}/{version}", responses=PROBLEMS, tags=["definitions"])
    def definition(name: str, version: int, _who: Reader) -> dict[str, Any]:
        """One definition as data, as its file states it."""
        with _not_found_when_unknown():
            return door.definition_json(name, version)

    @app.get("/definitions/{name}/{version}/events", responses=PROBLEMS, tags=["definitions"])
    def event_schemas(name: str, version: int, _who: Reader) -> dict[str, Any]:
        """The JSON Schema of each event's data (and of an enrolment's `factors` document) in one definition."""
        with _not_found_when_unknown():
            return door.event_schemas(name, version)


@contextmanager
def _not_found_when_unknown() -> Iterator[None]:
    """An unknown definition named in the path is a 404 (as input elsewhere it is a 422)."""
    from states import UnknownDefinition

    try:
        yield
    except UnknownDefinition as err:
        problem = problem_for(err)
        raise ApiProblem(Problem(404, problem.code, problem.title, problem.detail, problem.details)) from None
