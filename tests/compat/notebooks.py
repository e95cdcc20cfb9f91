"""Running TextGrad 0.1.8's tutorial notebooks against the test server.

Each notebook's code cells run in a fresh Python process (like a kernel), in order, with
`import textgrad` / `from textgrad...` changed to textprop and only the offline edits its
case lists (exact string replacements: a local server URL for a hosted one, a local image
file for a download). The hosted models are the project's TestServer, reached the way the
notebooks reach them: OPENAI_BASE_URL / ANTHROPIC_BASE_URL, with placeholder keys.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from textprop.prompts import render
from textprop.testing.server import TestServer, last_user_text

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
EXAMPLES = SHARED / "textgrad-0.1.8-examples"
DATA = SHARED / "data"
RUNNER = Path(__file__).with_name("run_cells.py")

# `import textgrad...` and `from textgrad... import` at the start of a line: the one change.
_IMPORT = re.compile(r"^(\s*(?:import|from)\s+)textgrad\b", re.MULTILINE)


def require_examples() -> Path:
    """The examples folder; skip with the reason when it is absent, fail under CI."""
    if EXAMPLES.is_dir():
        return EXAMPLES
    reason = (f"TextGrad's notebooks are not at {EXAMPLES} (../shared/textgrad-0.1.8-examples "
              "beside the repository)")
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI has a copy of shared/ beside the clone, so this is a bug")
    pytest.skip(reason)


@dataclass(frozen=True)
class Replies:
    """What the test server answers, by the kind of call it recognizes from the system
    prompt: textprop's feedback and optimizer calls, then `rules` (a substring of the system
    prompt or the user message -> reply), else `forward`."""

    forward: str
    feedback: str = "Be more specific and state the final answer clearly."
    rewrite: str = "An improved version of the text."
    rules: tuple[tuple[str, str], ...] = ()

    def __call__(self, body: dict) -> str | dict:
        system = _system_text(body)
        wants_json = "response_format" in body or "output_config" in body
        if render("backward_system") in system or render("reduce_system") in system:
            return {"feedback": self.feedback} if wants_json else self.feedback
        if "optimization system that improves text (i.e., variable)" in system:
            if wants_json:
                return {"improved_variable": self.rewrite}
            return f"<IMPROVED_VARIABLE>{self.rewrite}</IMPROVED_VARIABLE>"
        user = last_user_text(body)
        for needle, reply in self.rules:
            if needle in system or needle in user:
                return reply
        return self.forward


def _system_text(body: Mapping[str, Any]) -> str:
    for message in body.get("messages") or []:
        if message.get("role") == "system":
            return message.get("content") or ""
    system = body.get("system")
    return system if isinstance(system, str) else ""


@dataclass(frozen=True)
class Notebook:
    """How one notebook runs offline. `edits` are exact replacements (besides the import),
    each applied to the cell that holds it; `{server}` and `{examples}` stand for the test
    server's URL and the examples folder. `expected_errors` are cells that raise under
    TextGrad too (cell index -> the start of the notebook's own message)."""

    file: str
    replies: Replies
    edits: Mapping[str, str] = field(default_factory=dict)
    expected_errors: Mapping[int, str] = field(default_factory=dict)


def notebook_cells(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        notebook = json.load(handle)
    return ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]


def textprop_cells(case: Notebook, examples: Path, server: TestServer) -> list[str]:
    """The cells with only the import and the case's edits changed; every edit must apply."""
    cells = [_IMPORT.sub(r"\1textprop", cell) for cell in notebook_cells(examples / case.file)]
    for old, new in case.edits.items():
        hits = [i for i, cell in enumerate(cells) if old in cell]
        assert hits, f"{case.file}: the edit {old!r} matches no cell"
        value = new.format(server=server.base_url, examples=examples)
        for i in hits:
            cells[i] = cells[i].replace(old, value)
    return cells


def environment(server: TestServer, tmp: Path) -> dict[str, str]:
    """The hosted providers pointed at the test server; cache and data in known places."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "ANTHROPIC_", "TEXTPROP_"))}
    env.update(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=server.base_url,
               ANTHROPIC_API_KEY="sk-ant-test", ANTHROPIC_BASE_URL=server.url,
               TEXTPROP_CACHE=str(tmp / "llm-cache.sqlite3"), TEXTPROP_DATA=str(DATA),
               PYTHONUNBUFFERED="1")
    return env


def run_notebook(cells: list[str], server: TestServer, tmp: Path,
                 timeout: float = 600) -> tuple[list[str], str]:
    """Run `cells` in a fresh interpreter in `tmp`; (each cell's outcome, the output)."""
    cells_path, results_path = tmp / "cells.json", tmp / "results.json"
    cells_path.write_text(json.dumps(cells), encoding="utf-8")
    done = subprocess.run([sys.executable, str(RUNNER), str(cells_path), str(results_path)],
                          cwd=tmp, env=environment(server, tmp), capture_output=True,
                          text=True, timeout=timeout, check=False)
    output = done.stdout + done.stderr
    results = json.loads(results_path.read_text()) if results_path.exists() else []
    return results, output
