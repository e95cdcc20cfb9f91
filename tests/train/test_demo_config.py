"""The demo the README's quick start runs: its config is valid and it runs end to end."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from textprop.cli import main
from textprop.ledger import Ledger
from textprop.train.config import load_config


def test_the_shipped_demo_config_is_valid_and_uses_the_embedded_models():
    with resources.as_file(resources.files("textprop").joinpath("demo.toml")) as path:
        config = load_config(path)
    assert config.task.builtin == "date_normalization"
    assert [config.engine_spec(r) for r in ("forward", "feedback", "optimizer")] == [
        "local", "local:1.5b", "local:1.5b"]


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
