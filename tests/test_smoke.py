"""End-to-end smoke test of the core path on every backend."""

from __future__ import annotations

from datetime import timedelta

from pathway import Engine
from tests.conftest import T0
from tests.helpers import assess_data, reassess_data


def test_enrolled_patient_is_assessed_into_first_line_and_escalates(engine: Engine) -> None:
    """A typical patient enters first line, then escalates after 4 weeks with < 30 % improvement."""
    engine.enroll("p1", T0, version=1)
    assert engine.send("p1", "assess", T0, assess_data(pain=8)).status.state == "first_line"
    result = engine.send("p1", "reassess", T0 + timedelta(weeks=4), reassess_data(pain=7))
    assert result.status.state == "second_line"
    assert [e.seq for e in engine.history("p1")] == [1, 2, 3]
