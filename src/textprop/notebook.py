"""How a `Variable` and a `RunResult` render in Jupyter (`_repr_html_`): escaped HTML,
no scripts, no external resources."""

from __future__ import annotations

from html import escape
from typing import Any

_BOX = ("font-family:system-ui,sans-serif;font-size:13px;border:1px solid #ccc;"
        "border-radius:6px;padding:8px 10px;margin:4px 0;max-width:60em")
_PRE = ("white-space:pre-wrap;font-family:ui-monospace,monospace;background:#f6f6f6;"
        "padding:6px;border-radius:4px;margin:4px 0")


def _pre(text: str) -> str:
    return f'<pre style="{_PRE}">{escape(text)}</pre>'


def variable_html(variable: Any) -> str:
    value = ("[image]" if getattr(variable, "image", None) is not None
             else _pre(variable.text))
    grads = list(variable.gradients)
    parts = [f'<div class="textprop-variable" style="{_BOX}">',
             f"<div><b>Variable</b> <i>{escape(variable.role_description)}</i>"
             f"{'' if variable.requires_grad else ' (no grad)'}</div>", value]
    if grads:
        parts.append(f"<details open><summary>{len(grads)} gradient"
                     f"{'s' if len(grads) != 1 else ''}</summary>")
        for g in grads:
            parts.append(f"<div><i>{escape(g.role_description)}</i></div>{_pre(g.value)}")
        parts.append("</details>")
    parts.append("</div>")
    return "".join(parts)


def _score(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def result_html(result: Any) -> str:
    rows = [("status", escape(result.status)), ("steps", str(result.steps)),
            ("validation", f"{_score(result.baseline_val)} &rarr; {_score(result.best_val)}"),
            ("test", f"{_score(result.baseline_test)} &rarr; {_score(result.final_test)}"),
            ("run folder", escape(str(result.run_dir)))]
    table = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{k}</th>"
                    f"<td>{v}</td></tr>" for k, v in rows)
    values = "".join(f"<div><b>{escape(name)}</b></div>{_pre(value)}"
                     for name, value in result.values.items())
    message = f"<p>{escape(result.message)}</p>" if result.message else ""
    return (f'<div class="textprop-run" style="{_BOX}"><div><b>textprop run</b></div>'
            f"<table>{table}</table>{message}{values}</div>")
