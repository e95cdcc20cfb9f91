"""`Variable.generate_graph()`: the computation graph as Graphviz DOT, and SVG if it can.

The DOT source is always there (`graph.source`); `graph.svg()` renders it with Graphviz's
`dot` program when it is installed, and a notebook shows the SVG (`_repr_svg_`) or, without
Graphviz, the DOT text.
"""

from __future__ import annotations

import html
import shutil
import subprocess
import textwrap
from typing import TYPE_CHECKING

from textprop.errors import TextpropError

if TYPE_CHECKING:
    from textprop.variable import Variable


def _label(text: str, width: int = 40, limit: int = 600) -> str:
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    lines = textwrap.wrap(text, width) or [""]
    return "<br/>".join(html.escape(line) for line in lines)


class Graph:
    """A rendered view of the graph that produced a variable."""

    def __init__(self, source: str) -> None:
        self.source = source

    def svg(self) -> str:
        """The graph as SVG; needs Graphviz's `dot` on PATH (apt-get install graphviz)."""
        dot = shutil.which("dot")
        if dot is None:
            raise TextpropError("rendering the graph needs Graphviz's `dot` program "
                                "(e.g. apt-get install graphviz); graph.source has the DOT text")
        result = subprocess.run([dot, "-Tsvg"], input=self.source.encode("utf-8"),
                                capture_output=True, check=False, timeout=60)
        if result.returncode != 0:
            raise TextpropError(f"dot failed: {result.stderr.decode('utf-8', 'replace')}")
        return result.stdout.decode("utf-8")

    def _repr_svg_(self) -> str | None:  # Jupyter: the picture when Graphviz is there
        return self.svg() if shutil.which("dot") else None

    def __str__(self) -> str:
        return self.source

    def __repr__(self) -> str:
        return self.source


def generate_graph(root: Variable, print_gradients: bool = False) -> Graph:
    """The DOT graph of every variable `root` depends on, inputs first (TextGrad's layout)."""
    from textprop.backward import topological_order

    lines = [f"// Computation graph starting from {root.role_description}", "digraph {",
             "  rankdir=TB; ranksep=0.2; bgcolor=lightgrey; fontsize=7.5;",
             '  node [shape=rectangle, style=filled, fillcolor=lavender, fontsize=8, '
             'fontname="Arial", margin=0.1];']
    order = topological_order(root)
    ids = {id(v): f"v{i}" for i, v in enumerate(order)}
    for v in order:
        rows = [f"<b>Role:</b> {_label(v.role_description)}", f"<b>Value:</b> {_label(v.text)}"]
        if v.grad_fn is not None:
            rows.append(f"<b>Grad Fn:</b> {html.escape(type(v.grad_fn.function).__name__)}")
        if print_gradients and v.gradients:
            rows.append(f"<b>Gradients:</b> {_label(v.get_gradient_text())}")
        lines.append(f"  {ids[id(v)]} [label=<{'<br/>'.join(rows)}>];")
    for v in order:
        lines.extend(f"  {ids[id(p)]} -> {ids[id(v)]};" for p in v.predecessors)
    lines.append("}")
    return Graph("\n".join(lines) + "\n")
