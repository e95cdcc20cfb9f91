"""A property of the CLI, for generated configs and dataset rows: `textprop optimize` ends
with exit 0, or exit 1 and one `textprop: error:` (a dataset's may go on to list each bad
row); never a traceback, and an error
leaves no run folder behind. Issue 14's acceptance property.

The engine is the scripted arithmetic model (no HTTP), so an example takes milliseconds;
counts that would make a long run are drawn either small or out of bounds.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from textprop.cli import main

SCRIPTED = "python:tests.train.fake_pipeline:make_engine"
FIELDS = ["question", "answer", "input", "target", "x"]

def maybe(valid: st.SearchStrategy, broken: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly `valid`, one time in eight `broken`, so that many generated runs do run."""
    return st.integers(0, 7).flatmap(lambda k: broken if k == 7 else valid)


words = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
scalars = st.one_of(words, st.integers(-5, 10**20), st.booleans(), st.none(),
                    st.lists(st.integers(0, 9), max_size=2))
good_row = st.fixed_dictionaries({"question": words, "answer": st.one_of(
    words, st.integers(0, 99).map(str))}, optional={"x": scalars})
any_row = st.dictionaries(st.sampled_from(FIELDS), scalars, max_size=4)
rows = st.lists(maybe(good_row, any_row), min_size=1, max_size=4)
dataset = maybe(
    rows.map(lambda rs: "".join(json.dumps(r) + "\n" for r in rs).encode()),
    st.one_of(st.binary(max_size=40), st.just(b"")),  # not JSON, not UTF-8, or empty
)
# counts: small enough to run quickly, or out of bounds (or of the wrong type)
count = maybe(st.integers(1, 3), st.one_of(st.integers(-3, 0), st.integers(min_value=10**6),
                                           words))


def toml_value(value: Any) -> str:
    if isinstance(value, str):  # a basic string: control characters escaped, the rest raw
        return '"' + "".join(f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7f
                             else "\\" + c if c in '"\\' else c for c in value) + '"'
    return json.dumps(value)  # integers, booleans and lists of integers are TOML too


def toml(tables: dict[str, dict[str, Any]]) -> str:
    return "".join(f"[{name}]\n" + "".join(f"{key} = {toml_value(v)}\n"
                                             for key, v in table.items() if v is not None)
                   for name, table in tables.items())


@st.composite
def run_configs(draw: st.DrawFn) -> tuple[dict[str, dict[str, Any]], dict[str, bytes]]:
    files = {name: draw(dataset) for name in ("train", "val", "test")}
    if draw(st.booleans()):
        task = {"train": "train.jsonl", "val": "val.jsonl",
                "test": draw(st.sampled_from(["test.jsonl", None])),
                "input_field": draw(maybe(st.just("question"), st.sampled_from(FIELDS))),
                "target_field": draw(maybe(st.just("answer"), st.sampled_from(FIELDS)))}
    else:
        task = {"builtin": draw(st.sampled_from(["object_counting", "word_sorting", "nope"])),
                "n_train": draw(st.integers(1, 3)), "n_val": draw(st.integers(1, 3)),
                "n_test": draw(st.integers(0, 2))}
    tables = {
        "run": {"name": draw(maybe(st.just("run"), words)), "seed": draw(count)},
        "task": task,
        "pipeline": {"system_prompt": draw(maybe(words, st.one_of(st.integers(), st.none()))),
                     "template": draw(maybe(
                         st.sampled_from(["{input}", "Q: {question}", "{{x}} {input}"]),
                         st.sampled_from(["{input} {", "{0}", "{missing}", "}"])))},
        "metric": {"name": draw(maybe(st.sampled_from(["numeric", "exact_match", "contains",
                                                       None]),
                                      st.sampled_from(["judge", "nope", "no_mod_xyz:f"])))},
        "engines": {"default": draw(maybe(st.just(SCRIPTED), st.sampled_from(
            ["nonsense", "openai-compatible:@http://h/v1"]))), "concurrency": draw(count)},
        "trainer": {"epochs": draw(count), "batch_size": draw(count),
                    "steps_per_epoch": draw(maybe(st.integers(1, 2), count)),
                    "acceptance": draw(maybe(st.sampled_from(["non_decrease", "strict"]),
                                             st.just("bogus")))},
    }
    if draw(st.booleans()):  # a budget that runs out mid-run is not a bad input: it is big
        tables["budget"] = {"max_calls": draw(maybe(st.integers(10**4, 10**6),
                                                    st.one_of(st.integers(-3, 0), words)))}
    return tables, files


# TEXTPROP_PROPERTY_EXAMPLES=500 for a longer hunt than CI's
@settings(max_examples=int(os.environ.get("TEXTPROP_PROPERTY_EXAMPLES", "40")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(run_configs(), maybe(st.just("toml"), st.just("garbage")))
def test_optimize_ends_with_success_or_one_error_line_and_no_folder_on_error(generated, form):
    tables, files = generated
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for name, data in files.items():
            (root / f"{name}.jsonl").write_bytes(data)
        config = root / "run.toml"
        if form == "toml":
            tables["run"]["dir"] = str(root / "runs")
            config.write_text(toml(tables), encoding="utf-8")
        else:
            config.write_bytes(files["train"])
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["optimize", str(config), "--quiet", "--no-cache"])
        event(f"exit {code}")  # --hypothesis-show-statistics: how many runs succeed
        problems = [line for line in err.getvalue().splitlines()
                    if line.strip() and not line.startswith("textprop: warning: ")]

        if code == 0:
            assert problems == [], err.getvalue()
            assert (root / "runs").is_dir()
        else:
            assert code == 1, err.getvalue()
            # one error; a dataset error may list each bad row on a line of its own
            assert problems[0].startswith("textprop: error: "), err.getvalue()
            assert not any(line.startswith("textprop: error: ") for line in problems[1:])
            assert "Traceback (most recent call last)" not in err.getvalue()
            assert not (root / "runs").exists(), problems[0]
