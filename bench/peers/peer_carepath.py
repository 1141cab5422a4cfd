"""Peer 7: carepath itself (our engine), through its public library API `pathway.Engine`.

Per event: one `Engine.enroll` / `Engine.send` call = one SQLite transaction (BEGIN IMMEDIATE;
load the snapshot; validate the payload with pydantic; decide the rule and step the chart;
append a hash-chained audit row; revision-checked UPDATE; COMMIT). Mapping: `confirm` ->
`assess` (qualifying findings, pain = VAS), `reassess` -> `reassess` (pain = VAS,
fasciculations "improving" while the VAS is below the confirm VAS of 7, else "stable").
carepath's rules are its own (4/6-week windows, 30 %/50 % improvement, resolution needs pain
<= 2 and fasciculations settled, the line baseline resets on escalation), so common.py's
reference check does not apply: correctness is `pathway.verify(store).ok` plus the row counts,
and the final-state histogram is reported apart. An event the state does not allow (a
reassessment after `resolved` or `rediagnose`) raises `EventNotAllowed` and writes nothing;
it counts as processed but rejected. Replay = `verify` (hash chain + replay of every step +
snapshot check), timed in one process (like the other peers) and with carepath's default
workers (one process per core from 2,000 patients). Needs carepath's interpreter
(CAREPATH_PYTHON in run_all.sh).
"""

import json
import os
import platform
import resource
import sqlite3
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from statistics import median

from pathway import Engine, FakeClock
from states import EventNotAllowed

import common

FINDINGS = ["buttock_pain", "sitting_aggravation", "fair_test", "pace_sign"]  # meets assess.criteria_met
CONFIRM_VAS = 7
# The workload's pragma is synchronous=NORMAL; carepath ships FULL and takes the setting in its URL.
SYNCHRONOUS = os.environ.get("CAREPATH_SYNCHRONOUS", "NORMAL")


def url(db):
    return f"sqlite:///{db}?synchronous={SYNCHRONOUS.lower()}"


def command(name, payload):
    """The scenario's (event, payload) as carepath's (event, data)."""
    vas = payload["vas"]
    if name == "confirm":
        return "assess", {"findings": FINDINGS, "pain": vas, "fasciculations": "present", "red_flags": []}
    fasciculations = "improving" if vas < CONFIRM_VAS else "stable"
    return "reassess", {"pain": vas, "fasciculations": fasciculations, "red_flags": []}


def commands(events):
    """Engine call arguments, built before the timed loop (epoch seconds -> aware datetimes)."""
    out = []
    for t, pid, _seq, name, payload in events:
        at = datetime.fromtimestamp(t, UTC)
        out.append((pid, at, None) if name == "enroll" else (pid, at, command(name, payload)))
    return out


def run(db, cmds):
    """Returns (seconds in the event loop, rejections by state); schema creation excluded."""
    clock = FakeClock(cmds[0][1])
    engine = Engine(url(db), clock)
    engine.store.migrate()
    rejected = Counter()
    t0 = time.perf_counter()
    for pid, at, cmd in cmds:
        clock.set(at)  # recorded_at = clinical time (sends later than now + 5 min are refused)
        if cmd is None:
            engine.enroll(pid, at, version=1, factors={})  # the workload speaks v1's vocabulary
            continue
        try:
            engine.send(pid, cmd[0], at, cmd[1])
        except EventNotAllowed as err:  # nothing written; the peers audit these as no-op rows
            rejected[err.configuration[0]] += 1
    elapsed = time.perf_counter() - t0
    engine.close()
    return elapsed, rejected


def timed_verify(db, workers=None):
    engine = Engine(f"sqlite:///{db}")
    t0 = time.perf_counter()
    report = engine.verify(workers="auto" if workers is None else workers)  # None: as `carepath verify`
    seconds = time.perf_counter() - t0
    engine.close()
    return seconds, report


def main():
    events = common.scenario()
    cmds = commands(events)
    expected = common.reference_states(events)
    rss_before = common.rss_mib()
    peer = "carepath" if SYNCHRONOUS == "NORMAL" else f"carepath[{SYNCHRONOUS}]"
    secs, cpu, errors, db = [], [], [], None
    load = os.getloadavg()[0]
    for i in range(common.RUNS):
        db = common.fresh_db(peer, i)
        c0 = time.process_time()
        seconds, rejected = run(db, cmds)
        cpu.append(time.process_time() - c0)  # as common.main: CPU s of the whole run() call
        secs.append(seconds)
        vs, report = timed_verify(db)  # carepath's default: one process per core here
        engine = Engine(f"sqlite:///{db}")
        audit_rows = engine.store.count_entries()
        states = {s.patient_id: s.state for s in engine.patients()}
        engine.close()
        n_rejected = sum(rejected.values())
        if not report.ok:
            errors.append(f"run {i}: verify found {report.problem_count} problems, first {report.problems[0]}")
        if audit_rows + n_rejected != len(events) or report.events != audit_rows:
            errors.append(f"run {i}: {audit_rows} audit rows + {n_rejected} rejected != {len(events)} events "
                          f"(verify saw {report.events})")
    rs, single = timed_verify(db, workers=1)  # like for like with the other peers' replay
    if not single.ok:
        errors.append(f"verify (1 process): {single.problem_count} problems")
    hist = Counter(states.values())
    result = {
        "peer": peer,
        "library": f"carepath (pathway.Engine, SQLite synchronous={SYNCHRONOUS})",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "patients": common.N_PATIENTS,
        "events": len(events),
        "runs_s": [round(s, 3) for s in secs],
        "events_per_s": round(len(events) / median(secs)),
        "cpu_s": [round(c, 3) for c in cpu],
        "events_per_cpu_s": round(len(events) / median(cpu)),
        "own_rules": True,  # report.py: carepath's histogram is not compared with the reference
        "hist": dict(sorted(hist.items())),
        "expected_hist": common.histogram(expected),
        "same_state_as_reference": sum(states.get(p) == s for p, s in expected.items()),
        "rejected": n_rejected,
        "rejected_by_state": dict(rejected),
        "audit_rows": audit_rows,
        "verify_ok": report.ok and single.ok,
        "db_mib": round(sum(os.path.getsize(f) for f in (f"{db}", f"{db}-wal") if os.path.exists(f)) / 2**20, 1),
        "replay_s": round(rs, 3),
        "replay_events_per_s": round(single.events / rs),
        "replay_parallel_s": round(vs, 3),
        "replay_parallel_events_per_s": round(report.events / vs),
        "loadavg": [round(load, 1), round(os.getloadavg()[0], 1)],
        "rss_before_runs_mib": round(rss_before, 1),
        "peak_rss_mib": round(common.rss_mib(), 1),
        "verify_workers_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "ok": not errors,
        "errors": errors,
    }
    print(f"[{peer}] final states: {result['hist']}; rejected {n_rejected}", file=sys.stderr)
    print(json.dumps(result))
    common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (common.RESULTS_DIR / f"{peer}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
