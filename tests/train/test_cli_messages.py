"""What the CLI says when something is wrong: one `textprop: error:` line naming the file and
the field, never a traceback, and warnings without Python source lines.
Issue 14, items 9, 10, 13, 16 and 17."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from textprop.cli import main
from textprop.engines.openai_compat import OpenAIEngine
from textprop.engines.registry import parse_spec
from textprop.engines.retry import Retry
from textprop.errors import ConfigError
from textprop.ledger import Ledger
from textprop.testing.server import TestServer

from .fake_pipeline import IMPROVED, cli_process, server_reply, write_run_config

SCRIPTED = "python:tests.train.fake_pipeline:make_engine"


def config_in(tmp_path: Path, **sections: dict) -> Path:
    sections.setdefault("run", {"name": "arith", "dir": str(tmp_path / "runs")})
    return Path(write_run_config(
        tmp_path, engine=SCRIPTED, train=[(1, 2), (3, 4)], val=[(2, 2), (4, 5)],
        test=[(9, 9)], trainer={"batch_size": 2, "steps_per_epoch": 1}, **sections))


def one_error(capsys) -> str:
    _, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("textprop: error: "), err
    return lines[0].removeprefix("textprop: error: ")


# --- item 9: one error line, not a traceback ------------------------------------------------
def test_a_config_file_that_is_not_utf8_is_one_error(tmp_path, capsys):
    config = tmp_path / "latin1.toml"
    config.write_bytes('[pipeline]\nsystem_prompt = "Grüße"\n'.encode("latin-1"))
    assert main(["optimize", str(config)]) == 1
    assert one_error(capsys) == f"{config}: not UTF-8 text (invalid start byte at byte 30)"


def test_a_config_path_that_is_a_directory_is_one_error(tmp_path, capsys):
    assert main(["optimize", str(tmp_path)]) == 1
    assert one_error(capsys) == f"{tmp_path}: is a directory, expected a TOML config file"


def test_a_cache_path_that_is_a_directory_is_one_error_before_any_folder(tmp_path, capsys):
    config = config_in(tmp_path, cache={"path": str(tmp_path)})
    assert main(["optimize", str(config)]) == 1
    assert one_error(capsys) == (f"{config}, field 'cache.path': {str(tmp_path)!r} is a "
                                 "directory; give the cache's file path")
    assert not (tmp_path / "runs").exists()


def test_export_of_a_run_with_no_steps_is_one_error(tmp_path, capsys):
    run = tmp_path / "run"
    Ledger.in_run(run).set_meta(name="run", status="running")
    assert main(["export", str(run)]) == 1
    assert one_error(capsys) == f"{run}: the run has no steps yet, so nothing to export"
    assert not (run / "export").exists()


def test_eval_with_a_folder_that_is_not_a_run_is_one_error_and_creates_nothing(tmp_path,
                                                                               capsys):
    config = config_in(tmp_path)
    folder = tmp_path / "not-a-run"
    folder.mkdir()
    assert main(["eval", str(config), "--run", str(folder)]) == 1
    assert one_error(capsys) == f"{folder}: not a run folder (no ledger.sqlite3)"
    assert list(folder.iterdir()) == []


# --- item 10: messages that say where -------------------------------------------------------
def test_a_bad_engine_spec_names_the_config_and_the_field(tmp_path, capsys):
    config = config_in(tmp_path, engines={"optimizer": "nonsense-engine"})
    assert main(["optimize", str(config)]) == 1
    assert one_error(capsys).startswith(
        f"{config}, field 'engines.optimizer': engine spec 'nonsense-engine': unknown engine.")


def test_an_unknown_builtin_task_names_the_config_and_the_field(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('[task]\nbuiltin = "no_such_task"\n[pipeline]\nsystem_prompt = "x"\n'
                      f'[engines]\ndefault = "{SCRIPTED}"\n')
    assert main(["optimize", str(config)]) == 1
    assert one_error(capsys).startswith(
        f"{config}, field 'task.builtin': unknown built-in task 'no_such_task'; available: ")


def test_a_compatible_spec_without_a_model_says_the_model_is_missing():
    with pytest.raises(ConfigError) as caught:
        parse_spec("openai-compatible:@http://host:8000/v1")
    assert caught.value.message.startswith(
        "engine spec 'openai-compatible:@http://host:8000/v1': openai-compatible needs a "
        "model name before '@'")


def test_a_retry_warning_names_the_engine_once(caplog):
    with TestServer(reply="ok") as server:
        server.inject("500")
        engine = Retry(OpenAIEngine("m", base_url=server.base_url, api_key="k",
                                    max_retries=0), initial_delay=0)
        with caplog.at_level(logging.WARNING, logger="textprop.engines.retry"):
            assert engine("hi") == "ok"
    [record] = caplog.records
    assert record.getMessage().count(engine.name) == 1, record.getMessage()


def test_the_unpriced_engine_warning_is_one_line_without_python_source(tmp_path):
    with TestServer(reply=server_reply) as server:
        config = config_in(tmp_path, engines={"default": f"openai-compatible:m@{server.base_url}"})
        process = cli_process("optimize", config, "--quiet")
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert err.splitlines() == [
        "textprop: warning: no price known for 'openai-compatible:m': its calls are metered "
        "at $0; set [budget] prices = { \"openai-compatible:m\" = { input = ..., "
        "output = ... } } (USD per 1M tokens), or pass prices={'openai-compatible:m': "
        "(usd_in_per_1M, usd_out_per_1M)}"]


# --- item 13: diff lines ---------------------------------------------------------------------
def test_diff_prints_the_removed_and_the_added_line_on_lines_of_their_own(tmp_path, capsys):
    config = config_in(tmp_path)
    run = tmp_path / "run"
    assert main(["optimize", str(config), "--run-dir", str(run), "--quiet"]) == 0
    capsys.readouterr()

    assert main(["diff", str(run), "0", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "-You are a helpful assistant." in lines and f"+{IMPROVED}" in lines

    assert main(["diff", str(run), "0", "1", "--json"]) == 0
    text = json.loads(capsys.readouterr().out)["system_prompt"]
    assert text.splitlines()[-2:] == ["-You are a helpful assistant.", f"+{IMPROVED}"]
