"""One Engine shared by the threads of an embedding service loses and duplicates nothing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from pathway import Engine
from persistence import GENESIS, entry_hash
from tests.conftest import T0
from tests.helpers import assess_data, reassess_data


def test_threads_sharing_an_engine_keep_every_event_and_the_chain(engine: Engine) -> None:
    """Eight threads reassessing four patients at once: every acknowledged event is stored once, chains intact."""
    patients = [f"p{i}" for i in range(4)]
    for pid in patients:
        engine.enroll(pid, T0, version=1)
        engine.send(pid, "assess", T0, assess_data(pain=8))
    at = T0 + timedelta(days=1)

    def visit(n: int) -> tuple[str, int]:
        pid = patients[n % len(patients)]
        result = engine.send(pid, "reassess", at, reassess_data(pain=7), idempotency_key=f"visit-{n}")
        assert result.entry is not None
        return pid, result.entry.seq

    with ThreadPoolExecutor(max_workers=8) as pool:
        acknowledged = list(pool.map(visit, range(40)))

    for pid in patients:
        history = engine.history(pid)
        assert [e.seq for e in history] == list(range(1, 13))
        assert {seq for p, seq in acknowledged if p == pid} == set(range(3, 13))
        previous = GENESIS
        for entry in history:
            assert entry.prev_hash == previous and entry_hash(entry.as_row()) == entry.hash
            previous = entry.hash
        assert engine.status(pid).revision == 12
