"""What each LLM call behind a prediction did: its input, output and the feedback it got.

The ledger's `step_outputs` table stores these rows per example, so the middle steps of a
pipeline can be reviewed. A call is named by its `step_name` (the chain's step names) or,
for pipelines written by hand, by the role description of its output.
"""

from __future__ import annotations

from dataclasses import dataclass

from textprop.variable import Variable


@dataclass
class TraceRow:
    name: str           # the pipeline step
    input: str          # the user message the step sent
    output: str
    feedback: str = ""  # the feedback its output received ("" before backward)
    system_prompt: str = ""


def trace(prediction: Variable) -> list[TraceRow]:
    """Every LLM call behind `prediction`, each after the calls it used."""
    from textprop.backward import topological_order
    from textprop.functions.llm_call import LLMCall

    rows = []
    for v in topological_order(prediction):
        step = v.grad_fn
        if step is None or not isinstance(step.function, LLMCall):
            continue
        name = getattr(step.function, "step_name", None) or v.role_description
        rows.append(TraceRow(name, str(step.data.get("prompt", "")), str(v.value),
                             v.get_gradient_text(), str(step.data.get("system_prompt") or "")))
    return rows
