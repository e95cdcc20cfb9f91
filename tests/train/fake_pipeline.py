"""A scripted 'model' for end-to-end runs: it answers arithmetic questions correctly only
once its system prompt asks for an 'Answer:' line, the way a real model follows a format."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from textprop.engines.scripted import ScriptedEngine

FEEDBACK = "Tell the model to end with a line 'Answer: <number>'."
IMPROVED = "Add the numbers. End your reply with a line 'Answer: <number>'."


def reply(system: str, prompt: str, wants_json: bool) -> str:
    if "gradient (feedback) engine" in system or "condense" in system:
        return json.dumps({"feedback": FEEDBACK}) if wants_json else FEEDBACK
    if "optimization system that improves text" in system:
        return (json.dumps({"improved_variable": IMPROVED}) if wants_json
                else f"<IMPROVED_VARIABLE>{IMPROVED}</IMPROVED_VARIABLE>")
    numbers = [int(n) for n in re.findall(r"\d+", prompt)]
    if "Answer:" in system:
        return f"Adding them up.\nAnswer: {sum(numbers)}"
    return "It is a number, probably 0."


def make_engine() -> ScriptedEngine:
    """The engine factory a config names as `python:tests.train.fake_pipeline:make_engine`."""
    engine = ScriptedEngine(name="scripted:arithmetic")
    engine.on(lambda r: True, lambda r: reply(r.system_prompt or "", r.prompt,
                                              r.json_schema is not None))
    return engine


def server_reply(body: dict) -> str:
    """The same behaviour for the OpenAI-compatible test server."""
    messages = body["messages"]
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    prompt = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    return reply(system, prompt, "response_format" in body)


def write_dataset(folder, name: str, pairs: list[tuple[int, int]]) -> str:
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {a} + {b}?",
                                        "answer": str(a + b)}) + "\n" for a, b in pairs))
    return str(path)


def write_run_config(folder, *, engine: str, train: list[tuple[int, int]],
                     val: list[tuple[int, int]], test: list[tuple[int, int]],
                     system_prompt: str | None = "You are a helpful assistant.",
                     steps: list[dict] | None = None, **sections: dict) -> str:
    """A run config over generated arithmetic data; `sections` add or extend TOML tables,
    `steps` are written as `[[pipeline.steps]]` tables (then give no system prompt)."""
    data = folder / "data"
    data.mkdir(exist_ok=True)
    tables: dict[str, dict] = {
        "task": {"train": write_dataset(data, "train", train),
                 "val": write_dataset(data, "val", val),
                 "test": write_dataset(data, "test", test),
                 "input_field": "question", "target_field": "answer"},
        "pipeline": {} if system_prompt is None else {"system_prompt": system_prompt},
        "metric": {"name": "numeric"},
        "engines": {"default": engine},
        "cache": {"path": str(folder / "cache.sqlite3")},
    }
    for name, values in sections.items():
        tables.setdefault(name, {}).update(values)
    text = "".join(f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in t.items())
                   for name, t in tables.items())
    text += "".join("[[pipeline.steps]]\n" + "".join(f"{k} = {json.dumps(v)}\n"
                                                     for k, v in step.items())
                    for step in steps or [])
    config = folder / "run.toml"
    config.write_text(text)
    return str(config)


REPO = Path(__file__).resolve().parents[2]


def cli_process(*args: object, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A real `textprop` process (this checkout's), its output captured as text."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": "sk-test",
                   **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "textprop.cli", *map(str, args)],
                            cwd=REPO, env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
