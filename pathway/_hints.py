"""What views read from a definition: its presentation hints and the states its schedules use.

Views (terminal colours, timelines, cohort plots, FHIR export, dashboards) name no state,
field or code of any pathway: they take them from here, so a new definition file brings its
own colours, plotted field and codes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from states import Pathway, get_pathway, pathways

from ._engine import DEFAULT_PATHWAY

__all__ = [
    "FALLBACK_COLOURS",
    "NEUTRAL_COLOUR",
    "Monitoring",
    "known_colours",
    "merged_colours",
    "monitoring",
    "state_order",
]

# The colour of a state no definition gives a colour.
NEUTRAL_COLOUR = "#9e9e9e"
# Colours handed out in turn to states without one, where states must be told apart (plots).
FALLBACK_COLOURS = ("#90caf9", "#f48fb1", "#b0bec5", "#bcaaa4", "#e6ee9c")


def merged_colours(definitions: Iterable[Pathway]) -> dict[str, str]:
    """State -> colour over several definitions; the first to colour a state wins."""
    colours: dict[str, str] = {}
    for definition in definitions:
        for state, colour in definition.presentation.colours.items():
            colours.setdefault(state, colour)
    return colours


_KNOWN: tuple[tuple[tuple[str, int], ...], dict[str, str]] | None = None


def known_colours() -> dict[str, str]:
    """State -> colour over every registered definition, the default pathway's (newest first) winning."""
    global _KNOWN
    keys = tuple(pathways())
    if _KNOWN is None or _KNOWN[0] != keys:
        ordered = sorted(keys, key=lambda key: (key[0] != DEFAULT_PATHWAY, key[0], -key[1]))
        _KNOWN = keys, merged_colours(get_pathway(name, version) for name, version in ordered)
    return _KNOWN[1]


def state_order(definitions: Iterable[Pathway], states: Iterable[str] = ()) -> list[str]:
    """The definitions' `state_order` hints merged in turn, then any other of `states` sorted."""
    order: dict[str, None] = {}
    for definition in definitions:
        order.update(dict.fromkeys(definition.presentation.state_order))
    return [*order, *sorted(set(states) - set(order))]


@dataclass(frozen=True)
class Monitoring:
    """The states of a definition's schedule regions: `due` (time says act) and `overdue` (time ran out)."""

    due: frozenset[str]
    overdue: frozenset[str]


def monitoring(definition: Pathway) -> Monitoring:
    """Read from the schedules: a region's states that time moves on, past its initial one, are due;
    the states time moves into and never out of are overdue."""
    model = definition.model
    due: set[str] = set()
    overdue: set[str] = set()
    for schedule in model.schedules:
        region = model.find_state(schedule.region) if schedule.region is not None else None
        if region is None:
            continue  # a plain timer moves no state
        children = [child.id for child in region.states]
        initial = next((child.id for child in region.states if child.initial), children[0] if children else None)
        due.update(state for state in schedule.due if state != initial)
        overdue.update(state for state in children if state not in schedule.due)
    return Monitoring(frozenset(due), frozenset(overdue))
