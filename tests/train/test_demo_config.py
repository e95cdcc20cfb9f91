"""The demo the README's quick start runs: its config is valid and it runs end to end."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from textprop.cli import main
from textprop.ledger import Ledger
from textprop.train.config import load_config


def _demo_config(overrides=None):
    with resources.as_file(resources.files("textprop").joinpath("demo.toml")) as path:
        return load_config(path, overrides)


def test_the_shipped_demo_runs_the_batched_embedded_engines_eight_calls_at_a_time():
    config = _demo_config()
    assert config.task.builtin == "date_normalization"
    assert [config.engine_spec(r) for r in ("forward", "feedback", "optimizer")] == [
        "local:0.5b-q4_0+batch8", "local:1.5b-q4_0+batch8", "local:1.5b-q4_0+batch8"]
    assert config.engines.concurrency == 8  # one batch's worth of calls in flight


def test_demo_deterministic_runs_the_one_at_a_time_engines_on_the_shipped_weights(
        tmp_path, monkeypatch):
    seen = {}

    def run(args, config, path):  # stands in for the run: what config would it get?
        seen["engines"] = [config.engine_spec(r) for r in ("forward", "feedback", "optimizer")]
        seen["concurrency"] = config.engines.concurrency
        return 0

    monkeypatch.setattr("textprop.cli._run", run)
    assert main(["demo", "--deterministic", "--run-dir", str(tmp_path / "d")]) == 0
    assert seen == {"engines": ["local", "local:1.5b", "local:1.5b"], "concurrency": 1}
    # an explicit --set still wins over the flag
    assert main(["demo", "--deterministic", "--set", "engines.concurrency=2",
                 "--run-dir", str(tmp_path / "d")]) == 0
    assert seen["concurrency"] == 2


def test_the_demo_command_runs_end_to_end_with_another_engine(tmp_path, capsys):
    code = main(["demo", "--engine", "python:tests.train.fake_pipeline:make_engine",
                 "--run-dir", str(tmp_path / "demo"), "--no-cache", "--json",
                 "--set", "task.n_val=3", "--set", "task.n_test=3",
                 "--set", "trainer.steps_per_epoch=1"])
    out = capsys.readouterr().out
    assert code == 0
    summary = json.loads(out)
    assert Path(summary["report"]).exists()
    assert [s["status"] for s in Ledger.in_run(tmp_path / "demo").steps()][0] == "baseline"
