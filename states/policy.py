"""Policy thresholds of the piriformis pathway, one model, stored with the definition version.

Provenance of the defaults (DESIGN.md section 2, policy version 1):
- 30 % / 50 % improvement: IMMPACT moderate and substantial improvement in pain
  (Dworkin RH et al., J Pain 2008;9:105-121).
- 4-6 weeks of a line before escalating, reassessment every 2-4 weeks: seed document.
- 6 / 12 weeks in second line, 12 weeks in third line, pain <= 2 for resolution, 3 supporting
  findings with at least one special test, pain >= 1 at diagnosis: DESIGN.md defaults (the
  seed gives no number for these).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["POLICY_V1", "Policy"]


class Policy(BaseModel):
    """Every number the rules compare against; a patient keeps the policy it was enrolled on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = 1
    reassessment_due_weeks: float = Field(2.0, gt=0)
    reassessment_overdue_weeks: float = Field(4.0, gt=0)
    first_line_early_weeks: float = Field(4.0, ge=0)
    first_line_late_weeks: float = Field(6.0, ge=0)
    second_line_early_weeks: float = Field(6.0, ge=0)
    second_line_late_weeks: float = Field(12.0, ge=0)
    third_line_refractory_weeks: float = Field(12.0, ge=0)
    moderate_improvement: float = Field(0.30, ge=0, le=1)
    substantial_improvement: float = Field(0.50, ge=0, le=1)
    resolved_max_pain: float = Field(2.0, ge=0, le=10)
    min_diagnostic_findings: int = Field(3, ge=0)
    min_special_tests: int = Field(1, ge=0)
    min_diagnostic_pain: float = Field(1.0, ge=0, le=10)


POLICY_V1 = Policy()
