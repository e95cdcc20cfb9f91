"""The offline examples in examples/: their configs are valid, and the code-refine example's
tests fail on the shipped snippet and pass on a correct one (the runs themselves need the
embedded models: see the README for their measured results)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from textprop.refinement import config_loss, config_text, load_refine_config
from textprop.train.config import load_config

EXAMPLES = Path(__file__).parents[2] / "examples"
CORRECT = """```python
def is_palindrome(text):
    kept = [c.lower() for c in text if c.isalnum()]
    return kept == kept[::-1]
```"""


def test_the_chain_example_is_a_valid_three_step_chain():
    config = load_config(EXAMPLES / "chain" / "chain.toml")
    assert config.pipeline.kind == "chain"
    assert [s.name for s in config.pipeline.steps] == ["plan", "count", "answer"]
    assert config.engine_spec("forward") == "local:0.5b-q4_0+batch8"  # batched, like the demo
    assert config.engines.concurrency == 8


def test_the_code_refine_example_fails_its_tests_first_and_a_fix_passes(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    config = load_refine_config(EXAMPLES / "refine_code" / "refine.toml")
    loss = config_loss(config, feedback=None)  # type: ignore[arg-type]  # tests: no engine
    checks = importlib.import_module("checks")

    score, failures = checks.check(config_text(config))
    assert (round(score, 3), len(failures)) == (0.571, 3)  # 4 of 7 tests pass
    assert checks.check(CORRECT) == (1.0, [])
    assert loss.name == "tests"
    sys.modules.pop("checks", None)
