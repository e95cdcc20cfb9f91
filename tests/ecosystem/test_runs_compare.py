"""`textprop runs DIR` lists runs; `textprop compare A B` puts two side by side."""

from __future__ import annotations

import json
from pathlib import Path

from textprop.cli import main

from ..train.fake_pipeline import IMPROVED, write_run_config

START = "You are a helpful assistant."


def two_runs(tmp_path: Path, capsys) -> tuple[Path, Path]:
    config = write_run_config(
        tmp_path, engine="python:tests.train.fake_pipeline:make_engine",
        train=[(1, 2), (3, 4), (5, 6), (7, 8)], val=[(2, 2), (4, 5), (6, 1)],
        test=[(9, 9), (1, 1)], system_prompt=START,
        run={"name": "arith", "dir": str(tmp_path / "runs")},
        trainer={"batch_size": 2, "steps_per_epoch": 2})
    runs = tmp_path / "runs"
    assert main(["optimize", config, "--quiet", "--run-dir", str(runs / "a")]) == 0
    assert main(["optimize", config, "--quiet", "--run-dir", str(runs / "b"),
                 "--set", "trainer.steps_per_epoch=0"]) == 1  # refused: ge=1
    assert main(["optimize", config, "--quiet", "--run-dir", str(runs / "b"),
                 "--set", "trainer.approval=true"]) == 0  # its first rewrite awaits review
    capsys.readouterr()
    return runs / "a", runs / "b"


def test_runs_lists_status_steps_scores_cost_and_date(tmp_path, capsys):
    a, b = two_runs(tmp_path, capsys)
    (tmp_path / "runs" / "not-a-run").mkdir()

    assert main(["runs", str(tmp_path / "runs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "status", "steps", "best", "val", "test", "cost", "$",
                                "date"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"a", "b"}
    assert rows["a"][1:6] == ["finished", "2", "1.000", "1.000", "0.0000"]
    assert rows["b"][1:3] == ["awaiting_approval", "1"]

    assert main(["runs", str(tmp_path / "runs"), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [Path(r["run"]).name for r in listed] == ["a", "b"]
    assert listed[0]["calls"] > 0 and listed[0]["baseline_val"] == 0.0


def test_compare_shows_scores_side_by_side_and_the_final_prompts_diff(tmp_path, capsys):
    a, b = two_runs(tmp_path, capsys)
    assert main(["compare", str(a), str(a)]) == 0
    same = capsys.readouterr().out
    assert "system_prompt: the same final value in both runs" in same

    assert main(["compare", str(a), str(b), "--json"]) == 0
    compared = json.loads(capsys.readouterr().out)
    assert compared["a"]["best_val"] == 1.0 and compared["a"]["steps"] == 2
    assert compared["b"]["steps"] == 1

    assert main(["compare", str(a), str(tmp_path)]) == 1  # not a run folder
    assert "not a run folder" in capsys.readouterr().err

    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    header, *rows = out.splitlines()
    assert header.split() == ["a", "b"]
    table = {r.split()[0]: r.split()[1:] for r in rows[:9]}
    assert table["best_val"] == ["1.000", "0.000"] and table["steps"] == ["2", "1"]
    assert table["status"] == ["finished", "awaiting_approval"]
    assert f"-{IMPROVED}" in out and f"+{START}" in out  # a's final prompt, then b's
