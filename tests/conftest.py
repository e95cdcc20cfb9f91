"""Shared fixtures: scripted engines whose replies depend on the call's role."""

from __future__ import annotations

import pytest

from textprop.engines.scripted import ScriptedEngine


def role_engine(**replies: object) -> ScriptedEngine:
    """A scripted engine answering each call role (forward, loss, backward, optimizer)."""
    engine = ScriptedEngine()
    for role, reply in replies.items():
        engine.on(lambda r, role=role: r.role == role, reply)
    return engine


@pytest.fixture
def engine() -> ScriptedEngine:
    return role_engine(
        forward="The answer is 5.",
        loss="The answer is wrong: the correct answer is 4.",
        backward="State the final answer as a single number.",
        optimizer="<IMPROVED_VARIABLE>Solve the task and end with 'Answer: <number>'."
                  "</IMPROVED_VARIABLE>",
    )
