"""The run folder: one process at a time, nothing written before the config is known good,
a finished run stays finished, an explicit folder is never swapped for another one.

Issue 14, items 1, 2, 5, 7, 14 and 15. Runs are real `textprop` processes or `main()` calls
against the OpenAI-compatible test server, which counts every request actually sent.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from textprop.cli import main
from textprop.ledger import Ledger
from textprop.testing.server import TestServer

from .fake_pipeline import cli_process, server_reply, write_run_config

SCRIPTED = "python:tests.train.fake_pipeline:make_engine"


def small_config(tmp_path: Path, engine: str, **sections: dict) -> Path:
    """Three calls of baseline and one short step: a run of a few seconds at 0.25 s a call."""
    sections.setdefault("run", {"name": "arith", "dir": str(tmp_path / "runs")})
    sections["engines"] = {"concurrency": 1, **sections.get("engines", {})}
    sections["trainer"] = {"batch_size": 2, "steps_per_epoch": 1, **sections.get("trainer", {})}
    return Path(write_run_config(
        tmp_path, engine=engine, train=[(1, 2), (3, 4)], val=[(2, 2), (4, 5)], test=[(9, 9)],
        **sections))


def chat_requests(server: TestServer) -> list:
    return [r for r in server.requests if r.path.endswith("/chat/completions")]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


# --- item 1: one process per run folder -----------------------------------------------------
def test_a_second_process_on_a_run_folder_in_use_stops_at_once_naming_the_holder(tmp_path):
    second_ended = threading.Event()

    def held_reply(body: dict) -> str:
        # The first run's replies wait for the second process to end, so the first still
        # holds the folder however slowly the second starts (it did not on a loaded machine).
        second_ended.wait(timeout=120)
        return server_reply(body)

    with TestServer(latency=0.25, reply=held_reply) as server:
        config = small_config(tmp_path, f"openai-compatible:fake@{server.base_url}")
        run_dir = tmp_path / "run"
        first = cli_process("optimize", config, "--run-dir", run_dir, "--json")
        deadline = time.monotonic() + 30
        while not chat_requests(server) and time.monotonic() < deadline:
            time.sleep(0.01)
        sent_before_second = len(chat_requests(server))
        second = cli_process("optimize", config, "--run-dir", run_dir, "--resume", "--json")
        _, second_err = second.communicate(timeout=60)
        second_ended.set()
        sent_while_second_ran = len(chat_requests(server))
        first_was_running = first.poll() is None
        first_out, first_err = first.communicate(timeout=60)

    assert first.returncode == 0, first_err
    assert second.returncode == 1
    assert error_lines(second_err) == [
        f"textprop: error: {run_dir}: the run folder is in use by another textprop process "
        f"(pid {first.pid}); wait for it to end or choose another folder"]
    assert sent_before_second >= 1 and first_was_running
    steps = Ledger.in_run(run_dir).steps()
    assert [s["step"] for s in steps] == [0, 1]  # written once, by the first process
    calls = Ledger.in_run(run_dir).calls()
    assert len(calls) == len(chat_requests(server)) >= sent_while_second_ran


def test_two_starts_of_one_config_in_the_same_second_get_two_folders(tmp_path):
    config = small_config(tmp_path, SCRIPTED)
    assert main(["optimize", str(config), "--quiet"]) == 0  # runs/arith now holds a run

    processes = [cli_process("optimize", config, "--json") for _ in range(2)]
    outputs = [p.communicate(timeout=60) for p in processes]

    assert [p.returncode for p in processes] == [0, 0], [err for _, err in outputs]
    folders = {json.loads(out)["run"] for out, _ in outputs}
    assert len(folders) == 2 and str(tmp_path / "runs" / "arith") not in folders
    for folder in folders:
        assert [s["status"] for s in Ledger.in_run(folder).steps()] == [
            "baseline", "accepted"]


# --- item 2: nothing is written before everything is built ----------------------------------
BROKEN = {
    "missing dataset": ({"task": {"val": "data/nowhere.jsonl"}}, "nowhere.jsonl"),
    "unknown metric module": ({"metric": {"name": "no_such_module_xyz:score"}},
                              "no_such_module_xyz"),
    "bad engine spec": ({"engines": {"forward": "openai-compatible:fake"}}, "URL"),
    "unknown built-in task": ({}, "no_such_task"),
    "stray brace in the template": ({"pipeline": {"template": "Q: {input} {"}},
                                    "pipeline.template"),
    "dollar budget without a price": ({"budget": {"max_cost_usd": 1.0}}, "price"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_an_error_after_config_validation_leaves_no_run_folder(tmp_path, capsys, case):
    change, named = BROKEN[case]
    with TestServer(reply=server_reply) as server:
        sections = {name: dict(values) for name, values in change.items()}
        config = small_config(tmp_path, f"openai-compatible:fake@{server.base_url}",
                              **sections)
        if case == "unknown built-in task":  # the task is a built-in, not the files
            text = config.read_text()
            start = text.index("[task]")
            end = text.index("[", start + 1)
            config.write_text(text[:start] + '[task]\nbuiltin = "no_such_task"\n' + text[end:])

        code = main(["optimize", str(config)])
        out, err = capsys.readouterr()

    assert code == 1
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("textprop: error: ") \
        and named in lines[0], err
    assert not (tmp_path / "runs").exists()
    assert chat_requests(server) == []


# --- item 5: a finished run stays finished --------------------------------------------------
@pytest.mark.parametrize("cache", [[], ["--no-cache"]], ids=["cached", "no-cache"])
def test_resuming_a_finished_run_says_so_and_sends_nothing(tmp_path, capsys, cache):
    with TestServer(reply=server_reply) as server:
        config = small_config(tmp_path, f"openai-compatible:fake@{server.base_url}")
        run = tmp_path / "run"
        assert main(["optimize", str(config), "--run-dir", str(run), "--quiet", *cache]) == 0
        sent = len(chat_requests(server))
        calls = Ledger.in_run(run).calls()
        capsys.readouterr()

        code = main(["optimize", str(config), "--run-dir", str(run), "--resume", *cache])
        out, err = capsys.readouterr()

        assert code == 0, err
        assert f"{run} is finished (status finished); nothing to resume" in out
        assert len(chat_requests(server)) == sent
        assert Ledger.in_run(run).calls() == calls


# --- item 14: an explicit folder that holds a run ------------------------------------------
def test_run_dir_that_holds_a_run_needs_resume_and_no_other_folder_is_made(tmp_path, capsys):
    config = small_config(tmp_path, SCRIPTED)
    run = tmp_path / "chosen"
    assert main(["optimize", str(config), "--run-dir", str(run), "--quiet"]) == 0
    steps = Ledger.in_run(run).steps()
    capsys.readouterr()

    code = main(["optimize", str(config), "--run-dir", str(run), "--quiet"])
    _, err = capsys.readouterr()

    assert code == 1
    assert error_lines(err) == [
        f"textprop: error: {run} already holds a run; resume it with --resume or choose "
        "another run folder"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["chosen", "data"]
    assert Ledger.in_run(run).steps() == steps
