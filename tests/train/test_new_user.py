"""What a new user meets first: the README's config, bounds on counts, prices, the approve
command, numbering, --version and help, the default engine. Issue 14, items 8, 12, 15, 16,
17 and 18."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from pathlib import Path

import pytest

from textprop import __version__
from textprop.cli import main
from textprop.ledger import Ledger
from textprop.testing.server import TestServer

from .fake_pipeline import IMPROVED, server_reply, write_dataset, write_run_config

REPO = Path(__file__).resolve().parents[2]
SCRIPTED = "python:tests.train.fake_pipeline:make_engine"


def chat_requests(server: TestServer) -> list:
    return [r for r in server.requests if r.path.endswith("/chat/completions")]


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("textprop: error: "), err
    return lines[0].removeprefix("textprop: error: ")


# --- item 8: bounds on counts ---------------------------------------------------------------
@pytest.mark.parametrize("setting, field", [
    ("trainer.epochs=9223372036854775807", "trainer.epochs"),
    ("trainer.steps_per_epoch=10000000000", "trainer.steps_per_epoch"),
    ("task.limit_val=10000000000", "task.limit_val"),
    ("engines.concurrency=100000000", "engines.concurrency"),
])
def test_an_absurd_count_is_refused_before_any_call(tmp_path, capsys, setting, field):
    with TestServer(reply=server_reply) as server:
        config = write_run_config(
            tmp_path, engine=f"openai-compatible:fake@{server.base_url}", train=[(1, 2)],
            val=[(2, 2)], test=[(9, 9)], run={"dir": str(tmp_path / "runs")})
        code = main(["optimize", config, "--set", setting])
        _, err = capsys.readouterr()
        assert chat_requests(server) == []
    assert code == 1
    assert error_line(err).startswith(f"{config}, field '{field}': Input should be less than")
    assert not (tmp_path / "runs").exists()


# --- item 12: the README's config, and prices ----------------------------------------------
def readme_config() -> str:
    readme = (REPO / "README.md").read_text()
    return re.search(r"```toml\n(\[task\].*?)```", readme, re.S).group(1)


def test_the_readme_config_runs_with_its_price_for_an_engine_without_one(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train", "val", "test"):
        write_dataset(data, name, [(1, 2), (3, 4), (5, 6)])
    config = tmp_path / "run.toml"
    config.write_text(readme_config())
    assert "prices" in config.read_text()  # the README shows how to price an engine
    with TestServer(reply=server_reply) as server:
        code = main(["optimize", str(config), "--json", "--set", "run.dir=" + json.dumps(
            str(tmp_path / "runs")), "--set", "engines.default=" + json.dumps(
            f"openai-compatible:my-model@{server.base_url}"),
            "--set", "trainer.epochs=1", "--set", "trainer.steps_per_epoch=1",
            "--cache", str(tmp_path / "cache.sqlite3")])
        out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    cost = summary["usage"]["openai-compatible:my-model"]["total"]["cost_usd"]
    assert summary["values"] == {"system_prompt": IMPROVED} and cost > 0


def test_a_bad_price_is_a_config_error_naming_the_engine(tmp_path, capsys):
    config = write_run_config(tmp_path, engine=SCRIPTED, train=[(1, 2)], val=[(2, 2)],
                              test=[(9, 9)])
    with open(config, "a") as file:
        file.write('[budget]\nprices = { "my-model" = { input = 1 } }\n')
    assert main(["optimize", config]) == 1
    assert error_line(capsys.readouterr().err).startswith(
        f"{config}, field 'my-model': price must be {{input = <usd/1M>, output = <usd/1M>}}")


def test_the_report_says_unknown_for_the_cost_of_an_engine_without_a_price(tmp_path, capsys):
    with TestServer(reply=server_reply) as server:
        config = write_run_config(
            tmp_path, engine=f"openai-compatible:fake@{server.base_url}", train=[(1, 2)],
            val=[(2, 2)], test=[(9, 9)], trainer={"batch_size": 1, "steps_per_epoch": 1})
        run = tmp_path / "run"
        assert main(["optimize", config, "--run-dir", str(run), "--quiet"]) == 0
    page = (run / "report.html").read_text()
    assert "unknown" in page and "$0.0000" not in page


# --- item 15: the command approve prints ---------------------------------------------------
def test_the_resume_command_approve_prints_works_with_relative_data_paths(tmp_path, capsys,
                                                                          monkeypatch):
    config = Path(write_run_config(
        tmp_path, engine=SCRIPTED, train=[(1, 2), (3, 4)], val=[(2, 2)], test=[(9, 9)],
        run={"name": "arith", "dir": str(tmp_path / "runs")},
        trainer={"batch_size": 2, "steps_per_epoch": 1, "approval": True}))
    config.write_text(config.read_text().replace(str(tmp_path / "data") + "/", "data/"))
    assert '"data/train.jsonl"' in config.read_text()
    monkeypatch.chdir(tmp_path / "data")  # the user's shell may be anywhere
    assert main(["optimize", str(config), "--quiet", "--set", "run.seed=1"]) == 0
    run = tmp_path / "runs" / "arith"
    capsys.readouterr()

    assert main(["approve", str(run), "1"]) == 0
    printed = capsys.readouterr().out
    command = shlex.split(printed.split("continue with: ", 1)[1])
    assert command[:2] == ["textprop", "optimize"] and "--set" in command

    assert main([*command[1:], "--json"]) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["values"] == {"system_prompt": IMPROVED}


# --- item 16: numbering and the report ------------------------------------------------------
def test_epochs_count_from_one_everywhere_and_the_report_draws_the_final_test(tmp_path,
                                                                              capsys):
    config = write_run_config(tmp_path, engine=SCRIPTED, train=[(1, 2), (3, 4)],
                              val=[(2, 2)], test=[(9, 9)],
                              trainer={"batch_size": 2, "steps_per_epoch": 1})
    run = tmp_path / "run"
    assert main(["optimize", config, "--run-dir", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["history", str(run), "--json"]) == 0
    assert [s["epoch"] for s in json.loads(capsys.readouterr().out)] == [1, 1]
    page = (run / "report.html").read_text()
    assert "epoch 1" in page and "epoch 0" not in page
    test_points = re.findall(r'data-series="test" data-step="(\d+)"', page)
    assert test_points == ["0", "1"]  # baseline and the final test of step 1's values
    task = Ledger.in_run(run).meta()["task"]
    assert task == "data files train.jsonl, val.jsonl, test.jsonl"


# --- item 17: --version and help ------------------------------------------------------------
def test_version_and_help_texts(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"textprop {__version__}\n"
    with pytest.raises(SystemExit):
        main(["diff", "--help"])
    usage = capsys.readouterr().out
    assert re.search(r"\n\s+a\s+step number", usage) and re.search(r"\n\s+run\s+run folder",
                                                                   usage)
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "(default: test)" in capsys.readouterr().out


# --- item 18: the default engine -----------------------------------------------------------
def test_without_engines_the_local_default_says_how_to_choose_an_api_engine(tmp_path, capsys,
                                                                            monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",  # the [local] extra is not installed
                        lambda name, *a: None if name == "llama_cpp" else find_spec(name, *a))
    monkeypatch.setenv("TEXTPROP_HOME", str(tmp_path / "home"))
    config = tmp_path / "run.toml"
    config.write_text(f'[run]\ndir = "{tmp_path / "runs"}"\n[task]\nbuiltin = '
                      '"object_counting"\n[pipeline]\nsystem_prompt = "Count."\n')
    assert main(["optimize", str(config)]) == 1
    line = error_line(capsys.readouterr().err)
    assert line.startswith(f"{config}, field 'engines.default': the local engine")
    assert "pip install 'textprop[local]'" in line
    assert 'set [engines] default = "openai:gpt-4o-mini"' in line
    assert not (tmp_path / "runs").exists()
