"""A second pathway for the tests: a copy of piriformis under another name, registered here only.

It lets the tests put one patient on two pathways (two enrolments) without a second real
definition: same chart and rules, its own name, so its own snapshot, chain and due date.
"""

from __future__ import annotations

from states import register
from states.piriformis import PiriformisPathway

__all__ = ["SECOND", "PiriformisTestCopy"]

SECOND = "piriformis_test_copy"


@register
class PiriformisTestCopy(PiriformisPathway):
    """Definition `piriformis_test_copy`, version 1 (tests only)."""

    name = SECOND
    version = 1
