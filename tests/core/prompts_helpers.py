"""Builders for the graphs the prompt tests use, and the fixed texts they expect."""

from __future__ import annotations

import re

from textprop.engines.scripted import ScriptedEngine
from textprop.prompts import render

BACKWARD_SYSTEM = render("backward_system")
OPTIMIZER_SYSTEM_TAGS = render("optimizer_system", reply_rule=render(
    "optimizer_rule_tags", start_tag="<IMPROVED_VARIABLE>", end_tag="</IMPROVED_VARIABLE>"))


def feedback_engine(**extra: object) -> ScriptedEngine:
    """Forward calls answer '5', the judge says it's wrong, and each feedback names its
    target ("Make the <role> more precise."), so tests can follow feedback through a graph;
    a condensation of a batch's feedback answers "Condensed feedback."."""
    engine = ScriptedEngine()
    engine.on(lambda r: r.role == "forward", "The answer is 5.")
    engine.on(lambda r: r.role == "loss", "Wrong: the correct answer is 4.")

    def backward(request):
        if "condense" in request.system_prompt:
            return "Condensed feedback."
        role = re.search(r"<ROLE> (.*?) </ROLE>", request.prompt)
        return f"Make the {role.group(1)} more precise."

    engine.on(lambda r: r.role == "backward", backward)
    for role, reply in extra.items():
        engine.on(lambda r, role=role: r.role == role, reply)
    return engine
