"""A second pathway for the tests: a copy of piriformis version 1 under another name, registered here only.

It lets the tests put one patient on two pathways (two enrolments) with known rules: the same
definition file, its own name, so its own snapshot, chain and due date.
"""

from __future__ import annotations

import yaml

from states import parse_definition, register
from states._registry import BUILTIN_DIR

__all__ = ["SECOND"]

SECOND = "piriformis_test_copy"

_data = yaml.safe_load((BUILTIN_DIR / "piriformis-v1.yaml").read_text())
_data["name"] = SECOND
register(parse_definition(_data))
