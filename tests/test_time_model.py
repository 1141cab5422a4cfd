"""The time model: clinical time and record time, ticks as observations, late events,
corrections, bitemporal replay, idempotent enrolment (README "Time model"), on both backends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from pathway import Engine, InvalidCommand, LateEvent, TimeWentBackwards, verify
from persistence import DuplicatePatient
from tests.conftest import NOW, T0
from tests.helpers import reassess_data
from tests.test_cli_core import STATUS_KEYS, Cli

WEEK = timedelta(weeks=1)
DAY = timedelta(days=1)


def assess(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "side": "left",
        "findings": ["buttock_pain", "sitting_aggravation", "fair_test", "midgluteal_tenderness"],
        "pain": 8,
        "fasciculations": "present",
        "red_flags": [],
    }
    data.update(overrides)
    return data


class Clock:
    """A clock the test moves: record time."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 1, 5, 10, tzinfo=UTC))


@pytest.fixture
def eng(db_url: str, clock: Clock) -> Iterator[Engine]:
    engine = Engine(db_url, clock)
    yield engine
    engine.close()


def _assessed(eng: Engine, patient: str) -> None:
    eng.enroll(patient, T0)
    eng.send(patient, "assess", T0, assess())


def _verified(eng: Engine) -> None:
    report = verify(eng.store, workers=1)
    assert report.ok, report.to_json()


# -- 1. sweeps never block charting -----------------------------------------------------------------


def test_back_dated_visit_after_a_sweep_is_accepted_and_ends_as_without_the_tick(eng: Engine, clock: Clock) -> None:
    """Assessed 5 January, swept 20 January (monitoring -> due), the 19 January reassessment charted
    afterwards: accepted, the tick superseded, the state the one without the tick, verify ok."""
    _assessed(eng, "p")
    clock.now = datetime(2026, 1, 20, 1, tzinfo=UTC)
    assert eng.tick(datetime(2026, 1, 20, tzinfo=UTC)).advanced == 1
    assert eng.status("p").configuration[-1] == "due"
    clock.now = datetime(2026, 1, 21, 9, tzinfo=UTC)
    visit = datetime(2026, 1, 19, 9, tzinfo=UTC)
    result = eng.send("p", "reassess", visit, reassess_data(pain=7))
    assert result.changed and result.rederived is not None
    assert result.rederived.late is False
    assert result.rederived.supersedes == [3]
    assert result.rederived.changes == []
    # The twin: the same assessment and visit, never ticked.
    _assessed(eng, "twin")
    twin_result = eng.send("twin", "reassess", visit, reassess_data(pain=7))
    mine, theirs = eng.status("p"), twin_result.status
    assert (mine.configuration, mine.context, mine.next_due_at) == (
        theirs.configuration,
        theirs.context,
        theirs.next_due_at,
    )
    assert mine.configuration[-1] == "scheduled"
    entry = eng.history("p")[-1]
    assert entry.decision is not None and entry.decision["rederived"]["supersedes"] == [3]
    _verified(eng)


def test_a_tick_before_the_last_event_is_still_refused(eng: Engine, clock: Clock) -> None:
    """Ticks stay in order: an earlier sweep has nothing to add."""
    _assessed(eng, "p")
    clock.now = T0 + 3 * WEEK
    eng.tick(T0 + 3 * WEEK)
    with pytest.raises(TimeWentBackwards):
        eng.send("p", "tick", T0 + 2 * WEEK)
    assert eng.tick(T0 + 2 * WEEK).advanced == 0


# -- 2. late and out-of-order clinical events ---------------------------------------------------------


def test_late_event_needs_late_and_is_recorded_as_late(eng: Engine, clock: Clock) -> None:
    _assessed(eng, "p")
    clock.now = T0 + 6 * WEEK
    eng.send("p", "reassess", T0 + 5 * WEEK, reassess_data(pain=7))
    with pytest.raises(LateEvent, match="--late"):
        eng.send("p", "reassess", T0 + 3 * WEEK, reassess_data(pain=5))
    assert len(eng.history("p")) == 3
    result = eng.send("p", "reassess", T0 + 3 * WEEK, reassess_data(pain=5), late=True)
    assert result.rederived is not None and result.rederived.late
    entry = eng.history("p")[-1]
    assert entry.seq == 4 and entry.at == T0 + 3 * WEEK
    assert entry.decision is not None and entry.decision["rederived"]["late"] is True
    _verified(eng)


def test_late_red_flag_reports_the_escalation_it_undoes(eng: Engine, clock: Clock) -> None:
    """A late red flag at week 3 puts the patient in urgent referral: the week-5 escalation is no
    longer applied, and the result, history and explain say so with before and after."""
    _assessed(eng, "p")
    clock.now = T0 + 6 * WEEK
    escalated = eng.send("p", "reassess", T0 + 5 * WEEK, reassess_data(pain=7))
    assert escalated.status.state == "second_line"
    result = eng.send("p", "reassess", T0 + 3 * WEEK, reassess_data(pain=6, red_flags=["cauda_equina"]), late=True)
    assert result.status.state == "urgent_referral"
    rederived = result.rederived
    assert rederived is not None
    assert (rederived.state_before, rederived.state_after, rederived.state_changed) == (
        "second_line",
        "urgent_referral",
        True,
    )
    assert rederived.changes == [
        {
            "seq": 3,
            "event": "reassess",
            "at": (T0 + 5 * WEEK).isoformat(),
            "before": "reassess.escalate_to_second_line",
            "after": "not applied",
        }
    ]
    assert rederived.skipped == [3]
    _verified(eng)
    assert eng.replay("p").state == "urgent_referral"

    explanation = eng.explain("p", T0 + 6 * WEEK)
    assert explanation.rederived[0]["changes"][0]["before"] == "reassess.escalate_to_second_line"


def test_late_event_before_enrolment_is_refused(eng: Engine, clock: Clock) -> None:
    _assessed(eng, "p")
    with pytest.raises(TimeWentBackwards, match="enrolment"):
        eng.send("p", "reassess", T0 - DAY, reassess_data(), late=True)


def test_replay_until_includes_late_entries(eng: Engine, clock: Clock) -> None:
    """--until is clinical time as known now: a late red flag shows at week 4."""
    _assessed(eng, "p")
    clock.now = T0 + 6 * WEEK
    eng.send("p", "reassess", T0 + 5 * WEEK, reassess_data(pain=7))
    assert eng.replay("p", until=T0 + 4 * WEEK).state == "first_line"
    eng.send("p", "reassess", T0 + 3 * WEEK, reassess_data(red_flags=["cauda_equina"]), late=True)
    assert eng.replay("p", until=T0 + 4 * WEEK).state == "urgent_referral"
    assert eng.replay("p", until=T0 + 2 * WEEK).state == "first_line"


# -- 3. corrections ---------------------------------------------------------------------------------


def test_corrected_pain_score_rederives_and_verifies(eng: Engine, clock: Clock) -> None:
    _assessed(eng, "p")
    clock.now = T0 + 5 * WEEK + DAY
    assert eng.send("p", "reassess", T0 + 5 * WEEK, reassess_data(pain=7)).status.state == "second_line"
    before_correction = clock.now
    clock.now += DAY
    result = eng.correct("p", 3, "pain was 2, typed 7", reassess_data(pain=2), actor="dr-lee")
    assert result.status.state == "first_line"
    assert result.rederived is not None and result.rederived.corrects == 3
    assert result.rederived.changes[0]["before"] == "reassess.escalate_to_second_line"
    entries = eng.history("p")
    assert [e.event for e in entries] == ["enroll", "assess", "reassess", "correct"]
    assert entries[2].payload["pain"] == 7  # nothing edited
    assert entries[3].payload["seq"] == 3 and entries[3].payload["reason"] == "pain was 2, typed 7"
    assert entries[3].payload["data"]["pain"] == 2
    assert entries[3].actor == "dr-lee"
    _verified(eng)
    # Bitemporal: what the record said before the correction, and now.
    assert eng.replay("p", as_of=before_correction).state == "second_line"
    assert eng.replay("p").state == "first_line"
    both = eng.replay("p", until=T0 + 6 * WEEK, as_of=before_correction)
    assert both.state == "second_line" and both.as_of == before_correction


def test_entry_for_the_wrong_patient_is_withdrawn(eng: Engine, clock: Clock) -> None:
    _assessed(eng, "p")
    clock.now = T0 + 6 * WEEK
    eng.send("p", "reassess", T0 + 5 * WEEK, reassess_data(pain=7))
    result = eng.correct("p", 3, "charted on the wrong patient")
    assert result.status.state == "first_line"
    assert result.rederived is not None
    assert result.rederived.changes[0]["after"] is None
    assert result.status.last_event_at == T0
    _verified(eng)


def test_enrolment_factors_are_corrected(eng: Engine, clock: Clock) -> None:
    eng.enroll("p", T0, factors={"age": 30})
    eng.send("p", "assess", T0, assess())
    result = eng.correct("p", 1, "age mistyped", {"factors": {"age": 70}})
    assert result.status.context["factors"]["age"] == 70
    with pytest.raises(InvalidCommand, match="data"):
        eng.correct("p", 1, "no data")
    _verified(eng)


def test_what_cannot_be_corrected(eng: Engine, clock: Clock) -> None:
    _assessed(eng, "p")
    clock.now = T0 + 3 * WEEK
    eng.tick(T0 + 3 * WEEK)
    with pytest.raises(InvalidCommand, match="tick"):
        eng.correct("p", 3, "a tick")
    with pytest.raises(InvalidCommand, match="no entry 9"):
        eng.correct("p", 9, "missing")
    with pytest.raises(InvalidCommand, match="reason"):
        eng.correct("p", 2, "  ")
    assert len(eng.history("p")) == 3


# -- 5. idempotent enrolment --------------------------------------------------------------------------


def test_enrolment_with_an_idempotency_key_repeats(eng: Engine) -> None:
    first = eng.enroll("p", T0, factors={"age": 70}, idempotency_key="referral-1")
    again = eng.enroll("p", T0, factors={"age": 70}, idempotency_key="referral-1")
    assert again.revision == first.revision == 1
    assert len(eng.history("p")) == 1
    with pytest.raises(DuplicatePatient):
        eng.enroll("p", T0, factors={"age": 71})
    from persistence import IdempotencyConflict

    with pytest.raises(IdempotencyConflict):
        eng.enroll("p", T0, factors={"age": 71}, idempotency_key="referral-1")
    _verified(eng)


# -- the command line -------------------------------------------------------------------------------


@pytest.fixture
def cli(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> Cli:
    import persistence._store  # noqa: F401
    from states import get_pathway

    get_pathway("piriformis", 2)  # tables and definitions built outside the frozen clock of the CLI runs
    return Cli(sqlite_url, capsys)


def test_cli_late_correct_replay_as_of_and_idempotent_enroll(cli: Cli) -> None:
    at = T0.isoformat()
    assert cli("enroll", "p", "--at", at, "--idempotency-key", "k1")[0] == 0
    assert cli("enroll", "p", "--at", at, "--idempotency-key", "k1")[0] == 0
    assert cli("enroll", "p", "--at", at, "--factors", '{"age": 70}')[0] == 2
    assert cli("send", "p", "assess", "--at", at, "--data", json.dumps(assess()))[0] == 0
    week5 = (T0 + 5 * WEEK).isoformat()
    code, out, _ = cli("send", "p", "reassess", "--at", week5, "--data", json.dumps(reassess_data(pain=7)))
    assert code == 0 and "second_line" in out
    week3 = (T0 + 3 * WEEK).isoformat()
    red = json.dumps(reassess_data(red_flags=["cauda_equina"]))
    code, _, err = cli("send", "p", "reassess", "--at", week3, "--data", red)
    assert code == 2 and "--late" in err
    document = cli.json("send", "p", "reassess", "--at", week3, "--data", red, "--late")
    assert document["rederived"]["state_before"] == "second_line"
    assert document["rederived"]["state_after"] == "urgent_referral"
    assert document["rederived"]["changes"][0]["after"] == "not applied"
    code, out, _ = cli("history", "p")
    assert code == 0 and "decision changed: seq 3" in out and "(late)" in out
    assert cli.json("history", "p")[-1]["late"] is True
    code, out, _ = cli("explain", "p", "--at", (T0 + 6 * WEEK).isoformat())
    assert code == 0 and "re-derived by seq 4" in out
    code, out, _ = cli("correct", "p", "--seq", "4", "--reason", "wrong patient")
    assert code == 0 and "urgent_referral -> second_line" in out
    assert cli("verify")[0] == 0
    # Recorded at NOW (the frozen clock): as of a moment before, nothing was recorded yet.
    document = cli.json("replay", "p", "--as-of", NOW.isoformat())
    assert STATUS_KEYS | {"as_of", "until", "seq"} <= set(document)
    assert document["state"] == "second_line"


def test_cli_correct_with_data(cli: Cli) -> None:
    at = T0.isoformat()
    cli("enroll", "p", "--at", at)
    cli("send", "p", "assess", "--at", at, "--data", json.dumps(assess()))
    week5 = (T0 + 5 * WEEK).isoformat()
    cli("send", "p", "reassess", "--at", week5, "--data", json.dumps(reassess_data(pain=7)))
    data = json.dumps(reassess_data(pain=2))
    document = cli.json("correct", "p", "--seq", "3", "--reason", "typo", "--data", data)
    assert document["state"] == "first_line" and document["rederived"]["corrects"] == 3
    code, _, err = cli("correct", "p", "--seq", "30", "--reason", "x")
    assert code == 2 and "no entry 30" in err
