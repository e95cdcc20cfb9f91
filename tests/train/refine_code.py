"""A code snippet whose tests fail at first, its tests as a refine loss, and a scripted
model whose rewrite fixes it."""

from __future__ import annotations

import json

from textprop.engines.scripted import ScriptedEngine

BROKEN = "def add(a, b):\n    return a - b\n"
FIXED = "def add(a, b):\n    return a + b\n"
CASES = [((2, 3), 5), ((0, 0), 0), ((-1, 4), 3)]


def check_add(code: str) -> list[str]:
    """Run the snippet's tests; the failures are the loss's feedback."""
    namespace: dict = {}
    try:
        exec(compile(code, "<snippet>", "exec"), namespace)  # noqa: S102 - the test's own code
    except Exception as error:  # noqa: BLE001 - any error is a failure to report
        return [f"the code does not run: {type(error).__name__}: {error}"]
    failures = []
    for args, expected in CASES:
        got = namespace["add"](*args)
        if got != expected:
            failures.append(f"add{args} returned {got!r}, expected {expected!r}")
    return failures


def reply(system: str, prompt: str, wants_json: bool) -> str:
    assert "optimization system that improves text" in system, "only rewrites are asked"
    return (json.dumps({"improved_variable": FIXED}) if wants_json
            else f"<IMPROVED_VARIABLE>{FIXED}</IMPROVED_VARIABLE>")


def make_engine() -> ScriptedEngine:
    engine = ScriptedEngine(name="scripted:coder")
    engine.on(lambda r: True, lambda r: reply(r.system_prompt or "", r.prompt,
                                              r.json_schema is not None))
    return engine
