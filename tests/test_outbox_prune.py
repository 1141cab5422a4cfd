"""Pruning the outbox: only messages delivered before the cut go, in batches; undelivered ones,
the newest id, the audit log and the polling cursor are kept."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from freezegun import freeze_time

from pathway import Engine, InvalidCommand
from pathway.cli import main
from persistence import count_outbox_pending, mark_outbox_delivered, prune_outbox, read_outbox
from states import NaiveTime
from tests.conftest import NOW, T0
from tests.test_outbox import Receiver


def enrol(engine: Engine, count: int, first: int = 0) -> list[int]:
    """Enrol `count` patients (one `enrolled` message each); returns the new messages' ids."""
    seen = set(ids(engine))
    for n in range(first, first + count):
        engine.enroll(f"p-{n:02d}", T0, version=1)
    return [found for found in ids(engine) if found not in seen]


def ids(engine: Engine) -> list[int]:
    return [m.id for m in read_outbox(engine.store, 0, 1000)]


def test_only_messages_delivered_before_the_cut_are_pruned(engine: Engine) -> None:
    """Delivered before the cut: pruned; delivered at or after it, or never delivered (however
    old): kept. The count returned is the number deleted, and the audit log still verifies."""
    old, at_cut, recent, undelivered, fifth, newest = enrol(engine, 6)
    cut = NOW - timedelta(days=30)
    mark_outbox_delivered(engine.store, [old], cut - timedelta(days=10))
    mark_outbox_delivered(engine.store, [at_cut], cut)
    mark_outbox_delivered(engine.store, [recent, fifth, newest], cut + timedelta(seconds=1))
    entries = engine.count_entries()

    assert engine.prune_outbox(cut) == 1
    assert old not in ids(engine) and {at_cut, recent, undelivered, newest} <= set(ids(engine))
    assert engine.prune_outbox(cut) == 0
    assert engine.prune_outbox(NOW + timedelta(days=1)) == 3  # every delivered one but the newest id
    assert ids(engine) == [undelivered, newest] and count_outbox_pending(engine.store) == 1
    assert engine.count_entries() == entries
    assert engine.verify().ok


def test_a_large_prune_goes_in_batches_and_keeps_the_newest_id(engine: Engine) -> None:
    """Batches smaller than the prune delete everything due; the newest message stays so that SQLite
    never hands its id to a later message (a poller past it would skip that one)."""
    every = enrol(engine, 7)
    mark_outbox_delivered(engine.store, every, T0)
    assert prune_outbox(engine.store, NOW, batch=2) == 6
    assert ids(engine) == [every[-1]]
    assert prune_outbox(engine.store, NOW, batch=2) == 0
    later = enrol(engine, 1, first=7)
    assert later[0] > every[-1]


def test_an_empty_outbox_prunes_nothing(engine: Engine) -> None:
    assert engine.prune_outbox(NOW) == 0


def test_a_naive_or_implausible_cut_is_refused(engine: Engine) -> None:
    enrol(engine, 2)
    mark_outbox_delivered(engine.store, ids(engine), T0)
    with pytest.raises(NaiveTime):
        engine.prune_outbox(datetime(2026, 1, 1))  # naive on purpose
    with pytest.raises(InvalidCommand):
        engine.prune_outbox(datetime(1800, 1, 1, tzinfo=UTC))
    assert len(ids(engine)) == 2


def test_a_prune_is_logged_and_counted(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    enrol(engine, 3)
    mark_outbox_delivered(engine.store, ids(engine), T0)
    caplog.set_level(logging.INFO, logger="carepath")
    engine.prune_outbox(NOW)
    [record] = [r for r in caplog.records if r.name == "carepath.engine"]
    assert (record.command, record.outcome, record.pruned) == ("prune_outbox", "accepted", 2)  # type: ignore[attr-defined]


def run_cli(db_url: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with freeze_time(NOW):
        code = main(["--db", db_url, *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_prune_outbox_command(engine: Engine, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`carepath prune-outbox --delivered-before-days N --json` prints how many went and the cut."""
    old, recent, _newest = enrol(engine, 3)
    mark_outbox_delivered(engine.store, [old], NOW - timedelta(days=31))
    mark_outbox_delivered(engine.store, [recent], NOW - timedelta(days=29))
    code, out, err = run_cli(db_url, capsys, "prune-outbox", "--delivered-before-days", "30", "--json")
    assert code == 0, err
    assert json.loads(out) == {"pruned": 1, "before": (NOW - timedelta(days=30)).isoformat()}
    assert old not in ids(engine) and recent in ids(engine)
    code, out, _err = run_cli(db_url, capsys, "prune-outbox", "--delivered-before-days", "1")
    assert code == 0 and out.startswith("pruned 1 outbox messages delivered before")


@pytest.mark.parametrize(
    "args",
    [
        ("prune-outbox", "--delivered-before-days", "0"),
        ("prune-outbox", "--delivered-before-days", "-5"),
        ("prune-outbox", "--delivered-before-days", "thirty"),
        ("prune-outbox", "--delivered-before-days", "36501"),
        ("prune-outbox", "--json"),
        ("deliver", "--webhook", "http://127.0.0.1:9/hook", "--prune-after-days", "0", "--drain"),
        ("serve", "--webhook", "http://127.0.0.1:9/hook", "--prune-after-days", "0"),
        ("serve", "--prune-after-days", "30"),  # nothing delivers, so nothing to prune
    ],
)
def test_bad_retention_exits_2_and_prunes_nothing(
    engine: Engine, db_url: str, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    enrol(engine, 3)
    mark_outbox_delivered(engine.store, ids(engine), T0)
    before = read_outbox(engine.store, 0, 1000)
    code, _out, err = run_cli(db_url, capsys, *args)
    assert code == 2
    assert "--delivered-before-days" in err or "--prune-after-days" in err
    assert read_outbox(engine.store, 0, 1000) == before


def test_the_deliverer_prunes_at_start_then_at_most_hourly(engine: Engine) -> None:
    """`deliver --prune-after-days N`: delivered messages older than N days go at start; the next
    look within the hour prunes nothing; what it delivers now is kept."""
    from pathway.server import Deliverer

    receiver = Receiver("hook-secret")
    try:
        old = enrol(engine, 3)
        mark_outbox_delivered(engine.store, old, datetime.now(UTC) - timedelta(days=40))
        fresh = enrol(engine, 2, first=3)
        deliverer = Deliverer(engine.url, receiver.url, "hook-secret", prune_after_days=30)
        try:
            assert deliverer.run(drain=True) == 2
            assert deliverer.pruned == 3
            assert deliverer.prune_when_due() == 0
        finally:
            deliverer.stop()
    finally:
        receiver.close()
    assert ids(engine) == fresh
    assert [d["cursor"] for d in receiver.received] == fresh
    with pytest.raises(InvalidCommand, match="--prune-after-days"):
        Deliverer(engine.url, receiver.url, prune_after_days=0)


def test_polling_after_a_prune_resumes_after_the_pruned_ids(engine: Engine) -> None:
    """GET /events: from the start, the stream begins after the pruned ids; a poller whose cursor
    was in the pruned range gets the rest in order, with the same cursors and ids as before."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    import httpx

    from tests.server_helpers import serving

    every = enrol(engine, 5)
    mark_outbox_delivered(engine.store, every[:3], T0)
    assert engine.prune_outbox(NOW) == 3
    enrol(engine, 1, first=5)
    expected = [m.to_json() for m in read_outbox(engine.store, 0, 1000)]

    def poll(http: httpx.Client, headers: dict[str, str], after: int) -> dict[str, Any]:
        page: dict[str, Any] = http.get("/events", params={"after": after}, headers=headers).json()
        return page

    with serving(engine) as running, httpx.Client(base_url=running.base_url, timeout=60) as http:
        headers = running.headers("auditor")
        from_start = poll(http, headers, 0)
        from_pruned = poll(http, headers, every[1])
        at_end = poll(http, headers, from_start["next"])
    assert from_start["events"] == from_pruned["events"] == expected
    assert [e["cursor"] for e in expected] == [*every[3:], expected[-1]["cursor"]]
    assert expected[-1]["cursor"] > every[-1]
    assert at_end["events"] == []
