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

from dataclasses import dataclass
from typing import Any

from persistence import AuditEntry, Snapshot
from states import MIGRATE_EVENT, Pathway, get_pathway
from states._model import StateSpec

from ._hints import Monitoring, monitoring

__all__ = ["KINDS", "notices"]

KINDS = ("enrolled", "escalated", "resolved", "ended", "due", "overdue", "flagged", "migrated")


@dataclass(frozen=True)
class _Classifier:
    """What classifying reads from one definition, looked up once: classifying runs for every
    appended entry, and walking the states or the stages for each cost more than the rest."""

    definition: Pathway
    goal: str | None
    final: dict[str, bool]  # state id -> whether it is final (the first state of that id, as find_state)
    stages: dict[str, int]  # stage -> its place among the stages (the first, as list.index)
    schedules: Monitoring
    flags: bool

    @classmethod
    def of(cls, definition: Pathway) -> _Classifier:
        final: dict[str, bool] = {}

        def walk(states: tuple[StateSpec, ...]) -> None:
            for state in states:
                final.setdefault(state.id, state.final)
                walk(state.states)

        walk(definition.model.states)
        presentation = definition.presentation
        stages: dict[str, int] = {}
        for place, stage in enumerate(presentation.stages):
            stages.setdefault(stage, place)
        return cls(definition, presentation.goal, final, stages, monitoring(definition), bool(presentation.flags))


# By (name, version), which never names another definition once registered.
_CLASSIFIERS: dict[tuple[str, int], _Classifier] = {}


def notices(before: Snapshot, entry: AuditEntry, after: Snapshot) -> list[tuple[str, dict[str, Any]]]:
    """The (kind, details) of what `entry` did to the enrolment (empty when nothing to tell)."""
    event = entry.event
    if event == "enroll":
        return [("enrolled", {})]
    classifier = _CLASSIFIERS.get((after.pathway, after.version)) or _classifier(after.pathway, after.version)
    if event == MIGRATE_EVENT:
        return [("migrated", {"from_version": before.version, "to_version": after.version})]
    configuration = after.configuration
    unmoved = after.state == before.state and configuration == before.configuration
    if unmoved and (not classifier.flags or after.context is before.context):
        return []  # the most common entry: no state entered, and no flag could have turned on
    found: list[tuple[str, dict[str, Any]]] = []
    if after.state != before.state:
        found += _state_change(classifier, before.state, after.state)
    entered = set(configuration).difference(before.configuration)
    if entered:
        schedules = classifier.schedules
        found += [("due", {"state": state}) for state in sorted(entered & schedules.due)]
        found += [("overdue", {"state": state}) for state in sorted(entered & schedules.overdue)]
    if classifier.flags:
        definition = classifier.definition
        raised = set(definition.flags(after.context)) - set(definition.flags(before.context))
        found += [("flagged", {"flag": flag}) for flag in sorted(raised)]
    return found


def _state_change(classifier: _Classifier, before: str, after: str) -> list[tuple[str, dict[str, Any]]]:
    if after == classifier.goal:
        return [("resolved", {})]
    if classifier.final.get(after):
        return [("ended", {})]
    stages = classifier.stages
    if before in stages and after in stages and stages[after] > stages[before]:
        return [("escalated", {"from_stage": before, "to_stage": after})]
    return []


def _classifier(name: str, version: int) -> _Classifier:
    found = _CLASSIFIERS[(name, version)] = _Classifier.of(get_pathway(name, version))
    return found
