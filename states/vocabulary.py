"""Clinical vocabulary of the piriformis pathway: the exact strings clinicians and scripts use.

Source: seed/piriformis-management.md ("Diagnostic Considerations", red flags screened before
treatment) as fixed by DESIGN.md section 2. Any other string is rejected by the payload models.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "DIAGNOSTIC_FINDINGS",
    "RADICULAR_FINDINGS",
    "SPECIAL_TESTS",
    "Fasciculations",
    "Finding",
    "Line",
    "RedFlag",
    "Urgency",
]


class Finding(StrEnum):
    """Examination findings recorded at assessment."""

    BUTTOCK_PAIN = "buttock_pain"
    SITTING_AGGRAVATION = "sitting_aggravation"
    SCIATIC_NOTCH_TENDERNESS = "sciatic_notch_tenderness"
    POSTERIOR_THIGH_RADIATION = "posterior_thigh_radiation"
    FAIR_TEST = "fair_test"
    PACE_SIGN = "pace_sign"
    MIDGLUTEAL_TENDERNESS = "midgluteal_tenderness"
    STRAIGHT_LEG_RAISE = "straight_leg_raise"
    DERMATOMAL_DEFICIT = "dermatomal_deficit"


# The supporting findings of the seed's "confirm the diagnosis" list (buttock pain aside).
DIAGNOSTIC_FINDINGS: frozenset[Finding] = frozenset(
    {
        Finding.SITTING_AGGRAVATION,
        Finding.SCIATIC_NOTCH_TENDERNESS,
        Finding.POSTERIOR_THIGH_RADIATION,
        Finding.FAIR_TEST,
        Finding.PACE_SIGN,
        Finding.MIDGLUTEAL_TENDERNESS,
    }
)
# The seed's "positive special tests".
SPECIAL_TESTS: frozenset[Finding] = frozenset({Finding.FAIR_TEST, Finding.PACE_SIGN, Finding.MIDGLUTEAL_TENDERNESS})
# Signs pointing to lumbar radiculopathy, the seed's first pitfall (DESIGN.md rule assess-2).
RADICULAR_FINDINGS: frozenset[Finding] = frozenset({Finding.STRAIGHT_LEG_RAISE, Finding.DERMATOMAL_DEFICIT})


class Fasciculations(StrEnum):
    """Gluteal fasciculations as observed at an assessment."""

    ABSENT = "absent"
    PRESENT = "present"
    IMPROVING = "improving"
    STABLE = "stable"
    WORSENING = "worsening"


class RedFlag(StrEnum):
    """Findings that take a patient off the pathway to urgent referral."""

    CAUDA_EQUINA = "cauda_equina"
    PROGRESSIVE_MOTOR_DEFICIT = "progressive_motor_deficit"
    INFECTION = "infection"
    CANCER = "cancer"
    TRAUMA = "trauma"
    FASCICULATIONS_WITH_WEAKNESS = "fasciculations_with_weakness"


class Urgency(StrEnum):
    """How fast an urgent referral must happen (cauda equina: same day)."""

    EMERGENCY = "emergency"
    URGENT = "urgent"


class Line(StrEnum):
    """The treatment lines of the seed's algorithm, in escalation order."""

    FIRST = "first_line"
    SECOND = "second_line"
    THIRD = "third_line"
