"""The read-only web view: a page per patient and a cohort page, rendered on the server.

Pages are Jinja2 templates (autoescaped, no scripts, no build step). The browser authenticates
with the same bearer tokens as the API: the sign-in form at /login (or /login?token=...) sets
an HttpOnly, SameSite=Strict cookie that the gate reads like an Authorization header.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import DictLoader, Environment, select_autoescape

from . import door
from .app import Reader

if TYPE_CHECKING:
    from .. import Engine

__all__ = ["COOKIE", "add_web_routes"]

COOKIE = "carepath_token"
# Pages load their pictures from this origin only, and run no script at all.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{% block title %}carepath{% endblock %}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
table { border-collapse: collapse; margin: .5rem 0 1.2rem; }
th, td { border-bottom: 1px solid #ddd; padding: .25rem .6rem; text-align: left; vertical-align: top; }
td { font-size: .9rem; }
th { background: #f3f3f3; }
.state { padding: .1rem .5rem; border-radius: .3rem; }
.muted { color: #777; } .overdue { color: #b71c1c; font-weight: bold; }
.recommended { color: #2e7d32; } .caution { color: #f57f17; } .contraindicated { color: #b71c1c; font-weight: bold; }
.not_indicated { color: #777; } .decides { font-weight: bold; } .flag { color: #e65100; font-weight: bold; }
img { max-width: 100%; border: 1px solid #eee; }
nav a { margin-right: 1rem; }
</style></head>
<body><nav><a href="/ui">cohort</a><span class="muted">signed in as {{ principal }}</span></nav>
{% block body %}{% endblock %}</body></html>
"""

_LOGIN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>carepath: sign in</title></head>
<body><h1>carepath</h1>
{% if problem %}<p role="alert">{{ problem }}</p>{% endif %}
<form method="post" action="/login">
<input type="hidden" name="next" value="{{ next }}">
<label>Token <input type="password" name="token" autocomplete="off" required></label>
<button type="submit">Sign in</button></form></body></html>
"""

_PATIENT = """{% extends "base.html" %}
{% block title %}{{ s.patient_id }} on {{ s.pathway }}{% endblock %}
{% block body %}
<h1 id="patient">{{ s.patient_id }}</h1>
<p>{{ s.pathway }} v{{ s.version }}: state
<span class="state" id="state" style="background: {{ colour }}">{{ words(s.state) }}</span>
since {{ day(s.state_since) }}, revision {{ s.revision }};
next due {{ day(s.next_due_at) if s.next_due_at else "-" }}</p>
{% if others %}<p>Other enrolments: {% for p in others %}
<a href="/ui/patients/{{ quote(s.patient_id) }}?pathway={{ quote(p) }}">{{ p }}</a> {% endfor %}</p>{% endif %}
{% for line in why %}<p>why here: {{ line }}</p>{% endfor %}
{% if flags %}<p class="flag">flags: {{ flags | join(", ") }}</p>{% endif %}
{% if outcome %}<p>outcome: {{ outcome }}</p>{% endif %}
<h2>Plan</h2>
<table id="plan"><tr><th>status</th><th>item</th><th>reasons</th><th>source</th></tr>
{% for item in s.plan %}<tr><td class="{{ item.status }}">{{ words(item.status) }}</td><td>{{ item.text }}</td>
<td>{{ item.reasons | join("; ") }}</td><td class="muted">{{ item.source }}</td></tr>{% endfor %}</table>
<h2>Statechart</h2>
<img id="diagram" alt="statechart of {{ s.pathway }} with the active states highlighted"
 src="/patients/{{ quote(s.patient_id) }}/diagram.svg?pathway={{ quote(s.pathway) }}">
<h2>Timeline</h2>
<img id="timeline" alt="timeline of {{ s.patient_id }}"
 src="/patients/{{ quote(s.patient_id) }}/timeline.png?pathway={{ quote(s.pathway) }}">
<h2>What would move the patient next</h2>
{% if not x.transitions %}<p class="muted">final state: no rule leaves it</p>{% endif %}
<ul id="explain">{% for t in x.transitions %}
<li class="{{ 'decides' if t.decides_now else '' }}">{{ "now: " if t.decides_now else "" }}{{ t.sentence }}
<span class="muted">({{ t.rule }})</span>
{% for need in t.needs_words %}<br><span class="muted">needs {{ need }}</span>{% endfor %}</li>{% endfor %}</ul>
<h2>History</h2>
<table id="history"><tr><th>seq</th><th>event</th><th>at</th><th>actor</th><th>state after</th><th>rule</th>
<th>hash</th></tr>
{% for e in history %}<tr><td>{{ e.seq }}</td><td>{{ e.event }}{{ " (late)" if e.late else "" }}</td>
<td>{{ e.at }}</td><td>{{ e.actor or "" }}</td><td>{{ words(e.state_after) }}</td>
<td>{{ (e.decision or {}).get("rule") or "" }}</td><td class="muted">{{ e.hash[:12] }}</td></tr>{% endfor %}
</table>
{% endblock %}
"""

_COHORT = """{% extends "base.html" %}
{% macro rows_table(rows, id) %}
<table id="{{ id }}"><tr><th>patient</th><th>pathway</th><th>state</th><th>since</th><th>dwell (weeks)</th>
<th>next due</th><th>reassessment</th><th>flags</th></tr>
{% for r in rows %}<tr><td><a href="/ui/patients/{{ quote(r.patient_id) }}?pathway={{ quote(r.pathway) }}">
{{ r.patient_id }}</a></td><td>{{ r.pathway }}</td><td>{{ words(r.state) }}</td><td>{{ r.state_since[:10] }}</td>
<td>{{ r.dwell_weeks }}</td><td>{{ (r.next_due_at or "-")[:16] }}</td>
<td>{% if r.overdue %}<span class="overdue">overdue</span>{% elif r.tick %}tick: {{ words(r.tick) }}{% endif %}</td>
<td class="flag">{{ r.flags | map("replace", "_", " ") | join(", ") }}</td></tr>{% endfor %}</table>
{% endmacro %}
{% block title %}carepath cohort{% endblock %}
{% block body %}
<h1>Cohort at {{ day(at) }}</h1>
<p id="counts">{% for state, n in counts %}{{ words(state) }}: {{ n }}{{ ", " if not loop.last else "" }}{% endfor %}
 (total {{ listed.total }}, overdue {{ listed.overdue }})</p>
<form method="get" action="/ui"><label>state <input name="state" value="{{ state or '' }}"></label>
<button type="submit">filter</button></form>
<h2>Patients{{ " in " ~ words(state) if state else "" }}</h2>
{{ rows_table(listed.patients, "patients") }}
<h2>Due now ({{ due.count }})</h2>
<p>{% for action, n in due.actions.items() %}{{ n }} would move to {{ words(action) }}
{{- "; " if not loop.last else "" }}{% else %}nothing to do{% endfor %}</p>
{{ rows_table(due.patients, "due") }}
{% endblock %}
"""

_environment = Environment(
    loader=DictLoader({"base.html": _BASE, "login.html": _LOGIN, "patient.html": _PATIENT, "cohort.html": _COHORT}),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


def _page(template: str, **values: Any) -> HTMLResponse:
    from .. import term_text

    html = _environment.get_template(template).render(
        words=term_text, quote=lambda text: quote(str(text), safe=""), day=_day, **values
    )
    return HTMLResponse(html, headers=_SECURITY_HEADERS)


def _day(value: datetime | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.strftime("%Y-%m-%d %H:%M")


def _safe_next(target: str | None) -> str:
    """Only a path of this site (no scheme, no host, no //) is followed after signing in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/ui"
    return target


def add_web_routes(app: FastAPI, engine: Engine) -> None:
    """Add /login, /ui (cohort) and /ui/patients/{id} to `app`."""

    @app.get("/login", include_in_schema=False)
    def login_form(
        token: Annotated[str | None, Query()] = None, next: Annotated[str | None, Query()] = None
    ) -> Response:
        if token is not None:
            return _signed_in(app, token, next)
        return _login_page(next, None)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        return _signed_in(app, (form.get("token") or [""])[0], next(iter(form.get("next") or []), None))

    @app.get("/ui", response_class=HTMLResponse, include_in_schema=False)
    def cohort_page(
        who: Reader,
        state: Annotated[str | None, Query()] = None,
        at: Annotated[datetime | None, Query()] = None,
    ) -> HTMLResponse:
        from .. import clinical_time

        when = clinical_time(at) if at is not None else engine.clock()
        listed = door.cohort_json(engine, when, state or None)
        due = door.due_json(engine, when)
        counts = sorted(listed["counts"].items(), key=lambda item: (-item[1], item[0]))
        return _page("cohort.html", principal=who.name, at=when, state=state, listed=listed, due=due, counts=counts)

    @app.get("/ui/patients/{patient_id}", response_class=HTMLResponse, include_in_schema=False)
    def patient_page(patient_id: str, who: Reader, pathway: Annotated[str | None, Query()] = None) -> HTMLResponse:
        from .. import NEUTRAL_COLOUR, outcome_text, term_text, why_here

        status = engine.status(patient_id, pathway)
        entries = engine.history(patient_id, status.pathway)
        now = engine.clock()
        return _page(
            "patient.html",
            principal=who.name,
            s=status,
            others=[e.pathway for e in engine.enrolments(patient_id) if e.pathway != status.pathway],
            colour=status.definition.presentation.colours.get(status.state, NEUTRAL_COLOUR),
            why=why_here(status, entries, max(now, status.last_event_at)),
            flags=[term_text(flag) for flag in status.flags],
            outcome=outcome_text(status.outcome) if status.outcome else None,
            x=engine.explain(patient_id, max(now, status.last_event_at), pathway=status.pathway),
            history=[entry.to_json() for entry in entries],
        )


def _login_page(next_path: str | None, problem: str | None) -> HTMLResponse:
    html = _environment.get_template("login.html").render(next=_safe_next(next_path), problem=problem)
    return HTMLResponse(html, status_code=401 if problem else 200, headers=_SECURITY_HEADERS)


def _signed_in(app: FastAPI, token: str, next_path: str | None) -> Response:
    tokens = app.state.tokens
    if not token or tokens.principal(token) is None:
        return _login_page(next_path, "That token is not valid.")
    response = RedirectResponse(_safe_next(next_path), status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
    return response
