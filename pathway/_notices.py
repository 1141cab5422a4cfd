"""Which transitions a backend may act on, read from the definition, never from a pathway's names.

Each appended audit entry is classified from the enrolment's snapshot before and after it:

- `enrolled`: the enrolment's first entry; `migrated`: a move to another version;
- `escalated`: from one of the presentation's `stages` to a later one;
- `resolved`: into the presentation's `goal` state;
- `ended`: into any other final state (an urgent referral, a rediagnosis, a withdrawal: the
  state's id says which, in `state_after`);
- `due` / `overdue`: into a state of a schedule region that time moved on (see hints.monitoring);
- `flagged`: a context flag the presentation lists (`flags`) turned on (`flag` names it).

These are the rows of the outbox (persistence/_outbox.py), delivered by webhooks and polling.
"""

from __future__ import annotations

from typing import Any

from persistence import AuditEntry, Snapshot
from states import MIGRATE_EVENT, Pathway, get_pathway

from ._hints import Monitoring, monitoring

__all__ = ["KINDS", "notices"]

KINDS = ("enrolled", "escalated", "resolved", "ended", "due", "overdue", "flagged", "migrated")

_MONITORING: dict[tuple[str, int], Monitoring] = {}
# The registry's definitions by (name, version), which never names another definition once
# registered: classifying runs for every appended entry, after the command looked it up already.
_DEFINITIONS: dict[tuple[str, int], Pathway] = {}


def notices(before: Snapshot, entry: AuditEntry, after: Snapshot) -> list[tuple[str, dict[str, Any]]]:
    """The (kind, details) of what `entry` did to the enrolment (empty when nothing to tell)."""
    event = entry.event
    if event == "enroll":
        return [("enrolled", {})]
    definition = _DEFINITIONS.get((after.pathway, after.version)) or _definition(after.pathway, after.version)
    if event == MIGRATE_EVENT:
        return [("migrated", {"from_version": before.version, "to_version": after.version})]
    flags = definition.presentation.flags
    configuration = after.configuration
    unmoved = after.state == before.state and configuration == before.configuration
    if unmoved and (not flags or after.context is before.context):
        return []  # the most common entry: no state entered, and no flag could have turned on
    found: list[tuple[str, dict[str, Any]]] = []
    if after.state != before.state:
        found += _state_change(definition, before.state, after.state)
    entered = set(configuration).difference(before.configuration)
    if entered:
        schedules = _monitoring(definition)
        found += [("due", {"state": state}) for state in sorted(entered & schedules.due)]
        found += [("overdue", {"state": state}) for state in sorted(entered & schedules.overdue)]
    if flags:
        raised = set(definition.flags(after.context)) - set(definition.flags(before.context))
        found += [("flagged", {"flag": flag}) for flag in sorted(raised)]
    return found


def _state_change(definition: Pathway, before: str, after: str) -> list[tuple[str, dict[str, Any]]]:
    presentation = definition.presentation
    if after == presentation.goal:
        return [("resolved", {})]
    spec = definition.model.find_state(after)
    if spec is not None and spec.final:
        return [("ended", {})]
    stages = list(presentation.stages)
    if before in stages and after in stages and stages.index(after) > stages.index(before):
        return [("escalated", {"from_stage": before, "to_stage": after})]
    return []


def _definition(name: str, version: int) -> Pathway:
    found = _DEFINITIONS[(name, version)] = get_pathway(name, version)
    return found


def _monitoring(definition: Pathway) -> Monitoring:
    key = (definition.name, definition.version)
    found = _MONITORING.get(key)
    if found is None:
        found = _MONITORING[key] = monitoring(definition)
    return found
