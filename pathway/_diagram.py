"""Statechart diagrams (Graphviz DOT, Mermaid, SVG/PNG) built from a definition's chart class.

The chart's states (compound and parallel ones as nested clusters) and transitions are read
from `definition.chart.states_map`; each edge is labelled with its event and the names of the
rules that decide it, so any registered pathway gets its diagram without diagram code of its
own. Rendering to SVG/PNG runs the local Graphviz `dot` binary; nothing is sent anywhere.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

from carepath.errors import Category
from states import Pathway

from ._errors import CarepathError
from ._extras import require

__all__ = [
    "DiagramError",
    "FORMATS",
    "GraphvizMissing",
    "UnknownFormat",
    "render",
    "to_dot",
    "to_mermaid",
]

FORMATS = ("mermaid", "dot", "svg", "png")
TEXT_FORMATS = ("mermaid", "dot", "svg")

_ACTIVE_FILL = "#ffd54f"
_ACTIVE_LINE = "#e65100"
_IDLE_LINE = "#607d8b"
_FINAL_FILL = "#eceff1"

Definition = Pathway


class DiagramError(CarepathError):
    """Raised when a diagram cannot be drawn as asked (states the chart does not have); root of the
    diagram errors."""

    code = "invalid_diagram"
    category = Category.INVALID_INPUT


class GraphvizMissing(DiagramError):
    """Raised when SVG or PNG is asked for and the Graphviz `dot` binary is not installed."""

    code = "graphviz_missing"
    category = Category.INTERNAL

    def __init__(self, fmt: str) -> None:
        self.format = fmt
        super().__init__(
            f"cannot render {fmt}: the Graphviz 'dot' program is not installed "
            "(install Graphviz, or use --format mermaid or --format dot)"
        )


class UnknownFormat(DiagramError):
    """Raised when a diagram format other than mermaid, dot, svg or png is asked for."""

    code = "unknown_diagram_format"

    def __init__(self, fmt: str) -> None:
        self.format = fmt
        super().__init__(f"unknown diagram format {fmt!r}; choose one of {', '.join(FORMATS)}")


@dataclass(frozen=True)
class _Edge:
    source: str
    target: str
    label: str


def to_dot(definition: Definition, active: Collection[str] = ()) -> str:
    """The whole statechart as Graphviz DOT, the states in `active` highlighted."""
    chart = _Chart(definition, active)
    lines = [
        f'digraph "{definition.name} v{definition.version}" {{',
        "  compound=true; rankdir=LR; newrank=true;",
        f'  label="{definition.name} v{definition.version}"; labelloc=t; fontname="Helvetica";',
        '  node [shape=box, style="rounded,filled", fillcolor=white, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=9];',
        '  "__start" [shape=point, width=0.15, fillcolor=black, label=""];',
    ]
    for state in chart.top_level():
        lines.extend(_dot_state(chart, state, indent="  "))
    lines.append(f'  "__start" -> {_dot_node(chart, chart.initial)};')
    for edge in chart.edges():
        lines.append(f"  {_dot_edge(chart, edge)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(definition: Definition, active: Collection[str] = ()) -> str:
    """The whole statechart as a Mermaid stateDiagram-v2, the states in `active` highlighted."""
    chart = _Chart(definition, active)
    placed: dict[str | None, list[_Edge]] = {}
    for edge in chart.edges():
        placed.setdefault(chart.container(edge), []).append(edge)
    lines = [
        "stateDiagram-v2",
        "    direction LR",
        f"    classDef active fill:{_ACTIVE_FILL},stroke:{_ACTIVE_LINE},stroke-width:2px",
        f"    [*] --> {chart.initial}",
    ]
    for state in chart.top_level():
        lines.extend(_mermaid_state(chart, state, placed, indent="    "))
    lines.extend(f"    {_mermaid_edge(edge)}" for edge in placed.get(None, []))
    lines.extend(f"    {state.id} --> [*]" for state in chart.states() if state.final)
    highlighted = [state_id for state_id in chart.states_map if state_id in chart.active]
    if highlighted:
        lines.append(f"    class {','.join(highlighted)} active")
    return "\n".join(lines) + "\n"


def render(definition: Definition, fmt: str, active: Collection[str] = ()) -> bytes:
    """The diagram in `fmt` (mermaid, dot, svg or png) as bytes; svg and png need Graphviz."""
    if fmt == "mermaid":
        return to_mermaid(definition, active).encode()
    if fmt == "dot":
        return to_dot(definition, active).encode()
    if fmt not in FORMATS:
        raise UnknownFormat(fmt)
    require("graphviz", f"rendering a diagram as {fmt}")
    import graphviz  # lazily: the CLI must start fast

    try:
        data: bytes = graphviz.Source(to_dot(definition, active)).pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise GraphvizMissing(fmt) from None
    return data


# -- reading the chart ---------------------------------------------------------------------


class _Chart:
    """The chart class of a definition, read as a tree of states and a list of labelled edges."""

    def __init__(self, definition: Definition, active: Collection[str]) -> None:
        self.definition = definition
        self.states_map: dict[str, Any] = dict(definition.chart.states_map)
        self.active = frozenset(active)
        unknown = self.active - set(self.states_map)
        if unknown:
            raise DiagramError(f"not states of {definition.name} v{definition.version}: {', '.join(sorted(unknown))}")
        initial = definition.chart.initial_state
        self.initial: str = initial.id if initial is not None else self.top_level()[0].id

    def states(self) -> Iterator[Any]:
        return iter(self.states_map.values())

    def top_level(self) -> list[Any]:
        return [state for state in self.states() if state.parent is None]

    def ancestors(self, state_id: str) -> list[str]:
        """Ids of the states containing `state_id`, innermost first."""
        found = []
        parent = self.states_map[state_id].parent
        while parent is not None:
            found.append(parent.id)
            parent = parent.parent
        return found

    def descendants(self, state_id: str) -> set[str]:
        return {other for other in self.states_map if state_id in self.ancestors(other)}

    def container(self, edge: _Edge) -> str | None:
        """The innermost compound (not parallel) state strictly holding both ends of an edge."""
        around_target = set(self.ancestors(edge.target))
        for state_id in self.ancestors(edge.source):
            if state_id in around_target and not self.states_map[state_id].parallel:
                return state_id
        return None

    def edges(self) -> Iterator[_Edge]:
        events = set(self.definition.payloads)
        for state in self.states():
            for transition in state.transitions:
                if transition.initial:
                    continue
                names = [str(event) for event in transition.events]
                # A transition list assigned to a class attribute also answers to that name: drop it.
                names = [name for name in names if name in events] or names
                for target in transition.targets:
                    yield _Edge(state.id, target.id, self._label(state.id, target.id, names))

    def _label(self, source: str, target: str, events: list[str]) -> str:
        related = {source, *self.ancestors(source), *self.descendants(source)}
        parts = []
        for event in events:
            rules = [
                _short(rule.name, event)
                for rule in self.definition.rules
                if rule.event == event and rule.target == target and rule.sources & related
            ]
            rules = [name for name in rules if name]
            parts.append(f"{event} [{', '.join(rules)}]" if rules else event)
        return "; ".join(parts)


def _short(rule: str, event: str) -> str:
    """A rule's name without its event prefix ("reassess.resolved" on reassess -> "resolved")."""
    if rule == event:
        return ""
    return rule.removeprefix(f"{event}.")


# -- DOT ---------------------------------------------------------------------------------------


def _dot_state(chart: _Chart, state: Any, indent: str) -> list[str]:
    is_active = state.id in chart.active
    if not state.states:
        fill = _ACTIVE_FILL if is_active else (_FINAL_FILL if state.final else "white")
        attrs = [f'label="{state.id}"', f'fillcolor="{fill}"']
        if is_active:
            attrs += [f'color="{_ACTIVE_LINE}"', "penwidth=2.5", 'fontname="Helvetica-Bold"']
        if state.final:
            attrs.append("peripheries=2")
        return [f'{indent}"{state.id}" [{", ".join(attrs)}];']
    kind = "parallel" if state.parallel else "compound"
    style = "dashed,rounded" if state.parent is not None and state.parent.parallel else "rounded"
    lines = [
        f'{indent}subgraph "cluster_{state.id}" {{',
        f'{indent}  label="{state.id} ({kind})"; style="{style}"; fontname="Helvetica";',
        f'{indent}  color="{_ACTIVE_LINE if is_active else _IDLE_LINE}"; penwidth={2.5 if is_active else 1};',
        f'{indent}  "{_anchor(state.id)}" [shape=point, style=invis, width=0.01, label=""];',
    ]
    if is_active:
        lines.append(f'{indent}  bgcolor="#fff8e1";')
    for child in state.states:
        lines.extend(_dot_state(chart, child, indent + "  "))
    if not state.parallel:
        initial = next((child for child in state.states if child.initial), None)
        if initial is not None:
            start = f"__start_{state.id}"
            lines.append(f'{indent}  "{start}" [shape=point, width=0.1, fillcolor=black, label=""];')
            lines.append(f'{indent}  "{start}" -> {_dot_node(chart, initial.id)};')
    lines.append(f"{indent}}}")
    return lines


def _dot_node(chart: _Chart, state_id: str) -> str:
    # Clusters cannot be edge ends: a compound state's edges attach to its invisible anchor.
    return f'"{_anchor(state_id)}"' if chart.states_map[state_id].states else f'"{state_id}"'


def _dot_edge(chart: _Chart, edge: _Edge) -> str:
    attrs = [f'label="{edge.label}"']
    source_is_cluster = bool(chart.states_map[edge.source].states)
    target_is_cluster = bool(chart.states_map[edge.target].states)
    # A cluster may only clip an edge whose other end lies outside it.
    if source_is_cluster and edge.target not in chart.descendants(edge.source):
        attrs.append(f'ltail="cluster_{edge.source}"')
    if target_is_cluster and edge.source not in chart.descendants(edge.target):
        attrs.append(f'lhead="cluster_{edge.target}"')
    if edge.source in chart.active:  # a transition the patient could take now
        attrs += [f'color="{_ACTIVE_LINE}"', f'fontcolor="{_ACTIVE_LINE}"']
    return f"{_dot_node(chart, edge.source)} -> {_dot_node(chart, edge.target)} [{', '.join(attrs)}]"


def _anchor(state_id: str) -> str:
    return f"__anchor_{state_id}"


# -- Mermaid -------------------------------------------------------------------------------------


def _mermaid_state(chart: _Chart, state: Any, placed: dict[str | None, list[_Edge]], indent: str) -> list[str]:
    if not state.states:
        return [f"{indent}state {state.id}"]
    lines = [f"{indent}state {state.id} {{"]
    inner = indent + "    "
    for i, child in enumerate(state.states):
        if state.parallel and i:
            lines.append(f"{inner}--")
        lines.extend(_mermaid_state(chart, child, placed, inner))
    if not state.parallel:
        initial = next((child for child in state.states if child.initial), None)
        if initial is not None:
            lines.append(f"{inner}[*] --> {initial.id}")
    lines.extend(f"{inner}{_mermaid_edge(edge)}" for edge in placed.get(state.id, []))
    lines.append(f"{indent}}}")
    return lines


def _mermaid_edge(edge: _Edge) -> str:
    # Mermaid ends a label at a line break and reads ";" as a statement end: keep it plain.
    label = edge.label.replace(";", ",")
    return f"{edge.source} --> {edge.target} : {label}"
