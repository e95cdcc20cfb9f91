"""Benchmark B4's harness (bench/b4_quality.py): its counting proxy, its budget arithmetic and
statistics, and (when bench/.venv-gepa and bench/.venv-textgrad exist) its `--smoke` run of
every framework against the scripted test server, resume included. No model is loaded."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from openai import OpenAI

from textprop.testing.server import TestServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import b4_quality as b4  # noqa: E402
from b4_proxy import CountingProxy, classify  # noqa: E402

needs_bbh = pytest.mark.skipif(not (b4.DATA / "bbh/bbh/object_counting.json").exists(),
                               reason="needs the shared BBH data")


def test_the_proxy_counts_calls_and_usage_tokens_by_role() -> None:
    with TestServer(reply="four words in reply") as server, \
            CountingProxy(server.base_url) as proxy:
        client = OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
        client.chat.completions.create(model="m", messages=[
            {"role": "system", "content": "You are part of an optimization system. You are "
                                          "the gradient (feedback) engine."},
            {"role": "user", "content": "give feedback"}])
        client.chat.completions.create(model="m", messages=[
            {"role": "user", "content": "I provided an assistant with the following "
                                        "instructions to perform a task"}])
        assert client.models.list().data  # GET is forwarded, not counted
        server.inject("400")
        with pytest.raises(Exception):  # noqa: B017 - the SDK's error class varies
            client.chat.completions.create(model="m", messages=[
                {"role": "user", "content": "hello"}])
    usage = proxy.summary()
    assert usage["feedback"]["calls"] == 1 and usage["reflection"]["calls"] == 1
    assert usage["feedback"]["completion_tokens"] == 4
    assert usage["feedback"]["prompt_tokens"] > 0
    assert usage["other"] == {**usage["other"], "calls": 1, "failed": 1}
    assert sum(u["calls"] for u in usage.values()) == 3


def test_classify_knows_every_frameworks_writer_calls() -> None:
    def body(text: str) -> dict:
        return {"messages": [{"role": "system", "content": text}]}

    assert classify(body("You are part of an optimization system that improves text")) == \
        "rewrite"
    assert classify(body("... condense several pieces of feedback ...")) == "reduce"
    assert classify({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "I provided an assistant with the following instructions"}]}]}) \
        == "reflection"


def test_textgrad_steps_match_the_budget() -> None:
    plan = b4.textgrad_schedule(300, 30, 50)
    assert plan == {"epochs": 1, "steps": 8, "total_steps": 8, "metric_calls": 294}
    assert b4.textgrad_schedule(300, 30, 50)["metric_calls"] <= 300
    many = b4.textgrad_schedule(1000, 10, 50)  # 76 steps: 5 epochs of 15, whole batches
    assert many["epochs"] * many["steps"] == many["total_steps"] <= 76
    assert many["steps"] <= 16 and many["metric_calls"] <= 1000
    assert b4.textgrad_schedule(30, 30, 50)["total_steps"] == 0


def test_sign_test_and_paired_comparison() -> None:
    assert b4.sign_test(0, 0) == 1.0
    assert b4.sign_test(0, 7) == pytest.approx(2 / 128)
    assert b4.sign_test(3, 3) == 1.0
    a = [{"seed": 0, "final_test_per_example": {"x": 1.0, "y": 1.0, "z": 0.0}},
         {"seed": 1, "final_test_per_example": {"x": 1.0, "y": 0.0, "z": 0.0}}]
    b = [{"seed": 0, "final_test_per_example": {"x": 0.0, "y": 1.0, "z": 0.0}},
         {"seed": 2, "final_test_per_example": {"x": 0.0, "y": 0.0, "z": 0.0}}]
    result = b4.paired(a, b)  # seed 0 only: the seeds both have
    assert result == {"seeds": 1, "pairs": 3, "better": 1, "worse": 0,
                      "difference": pytest.approx(1 / 3), "p": 1.0}


def test_bootstrap_gain_over_examples_and_seeds() -> None:
    start = {str(i): 0.0 for i in range(20)}
    cells = [{"final_test_per_example": {str(i): float(i < 10) for i in range(20)}}
             for _ in range(3)]
    mean, low, high = b4.bootstrap_gain(cells, start)
    assert mean == 0.5 and 0.2 < low < 0.5 < high < 0.8
    same = [{"final_test_per_example": dict(start)}]
    assert b4.bootstrap_gain(same, start) == (0.0, 0.0, 0.0)


VENVS = [ROOT / "bench/.venv-gepa/bin/python", ROOT / "bench/.venv-textgrad/bin/python"]


@pytest.mark.skipif(not all(p.exists() for p in VENVS),
                    reason="needs bench/setup-gepa and bench/setup-textgrad")
@needs_bbh
@pytest.mark.parametrize("server", ["test", "serve"])
def test_smoke_runs_every_framework_and_resumes(tmp_path: Path, server: str) -> None:
    """Against the test server, and against `textprop serve`'s HTTP layer (the real runs'
    server) in front of a scripted engine: every framework's requests pass it."""
    out = tmp_path / "b4.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench/b4_quality.py"), "--smoke", "--smoke-server",
         server, "--tasks", "object_counting", "--out", str(out), "--runs",
         str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results["cells"]) == {f"object_counting/{f}/seed0/mmc40" for f in b4.FRAMEWORKS}
    for cell in results["cells"].values():
        assert cell["status"] == "ok", cell.get("error")
        assert len(cell["final_test_per_example"]) == cell["test_n"] == 8
        assert cell["usage_by_role"]["task"]["calls"] > 0
        assert cell["usage_by_role"]["rewrite"]["calls"] > 0
    assert "skip object_counting/gepa/seed0/mmc40 (ok)" in done.stderr
    assert results["starts"]["object_counting"]["n"] == 8
    # pareto adds the writer's instruction as a line (edit = "append"); pareto-rewrite's
    # whole-text rewrites replace the prompt
    appended = results["cells"]["object_counting/pareto/seed0/mmc40"]["final_prompt"]
    assert appended.startswith(f"{b4.BBH_PROMPT}\nRevision ")
    # pareto-rewrite's best candidate led the start 1 to 0 on validation: within noise, so
    # the start stays, and that candidate is scored on test beside it
    kept = results["cells"]["object_counting/pareto-rewrite/seed0/mmc40"]
    assert kept["framework_info"]["final_evidence"]["kept_start"] is True
    assert kept["final_prompt"] == b4.BBH_PROMPT
    assert kept["final_test"] == results["starts"]["object_counting"]["score"]
    assert kept["unguarded_prompt"] != b4.BBH_PROMPT and kept["unguarded_test"] == 1.0
    assert "start kept, its best candidate: 1.000" in b4.table(results)


def test_start_server_waits_for_the_model_list(tmp_path: Path) -> None:
    """--start-servers' wait and stop, with the test server standing in for `textprop serve`
    (which would load a model)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert b4.serve_command("local:1.5b", 8782, None)[-4:] == ["--model", "local:1.5b",
                                                               "--port", "8782"]
    assert b4.serve_command("local", 8781, 8, tmp_path / "cores.lock")[-4:] == [
        "--n-parallel", "8", "--cpu-lock", str(tmp_path / "cores.lock")]
    cmd = [sys.executable, "-m", "textprop.testing.server", "--port", str(port), "--model",
           "served-model"]
    proc, url = b4.start_server(cmd, port, tmp_path / "server.log", wait_s=60)
    try:
        assert b4.model_id(url) == "served-model"
        assert b4.proc_cpu_s(proc.pid) is not None
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def tiny_tgd_cell(tmp_path: Path) -> tuple[dict, object, Path, list[str]]:
    """One tgd cell of object_counting at toy sizes: (data, the task server's canned reply,
    the results file, the harness's arguments without servers)."""
    data = b4.load_task("object_counting", 6, 8)
    targets = {r["input"].strip(): r["target"] for split in ("train", "val", "test")
               for r in data[split]}
    task_reply, _ = b4.smoke_replies(targets)
    out = tmp_path / "b4.json"
    argv = ["--tasks", "object_counting", "--frameworks", "tgd", "--seeds", "0", "--val", "6",
            "--test", "8", "--max-metric-calls", "40", "--max-tokens", "64",
            "--writer-max-tokens", "64", "--workers", "2", "--deadline-min", "5",
            "--out", str(out), "--runs", str(tmp_path / "runs"),
            "--parts", str(tmp_path / "parts")]
    return data, task_reply, out, argv


@needs_bbh
def test_a_run_that_fails_is_a_recorded_cell_and_is_skipped_on_resume(tmp_path: Path) -> None:
    data, task_reply, out, argv = tiny_tgd_cell(tmp_path)
    with TestServer(reply=task_reply) as task, TestServer(reply="feedback") as writer:
        writer.inject(*["400"] * 50)  # every feedback call is refused: textprop's run ends
        urls = ["--task-url", task.base_url, "--writer-url", writer.base_url]
        assert b4.main(argv + urls) == 0
        cell = json.loads(out.read_text())["cells"]["object_counting/tgd/seed0/mmc40"]
        assert cell["status"] == "failed" and "textprop optimize exited 1" in cell["error"]
        assert cell["usage_by_role"]["feedback"]["failed"] >= 1
        assert "failed" in b4.table(json.loads(out.read_text()))
        sent = len(task.requests)
        assert b4.main(argv + urls) == 0  # resume: the failed cell is a result, not rerun
        assert len(task.requests) == sent  # nothing to run: no server is asked
        writer.reset()
        assert b4.main(argv + urls + ["--retry-failed"]) == 0
    cell = json.loads(out.read_text())["cells"]["object_counting/tgd/seed0/mmc40"]
    assert cell["status"] == "ok" and cell["test_n"] == 8


@needs_bbh
def test_a_baseline_without_its_venv_stops_the_run_before_any_cell_and_records_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(b4, "GEPA_PYTHON", tmp_path / "no-venv/bin/python")
    _, _, out, argv = tiny_tgd_cell(tmp_path)
    argv[argv.index("tgd")] = "gepa"
    with TestServer(reply="x") as task, TestServer(reply="x") as writer:
        with pytest.raises(SystemExit, match=r"b4: missing .*no-venv/bin/python; run "
                                             r"bench/setup-gepa"):
            b4.main(argv + ["--task-url", task.base_url, "--writer-url", writer.base_url])
        assert task.requests == [] and writer.requests == []
    assert not out.exists()  # no run recorded, no failed cell
    assert list((tmp_path / "runs").glob("*")) == []
    assert b4.missing_baselines(["pareto", "tgd"]) == []


def test_the_cells_can_run_the_textprop_of_another_checkout_and_record_its_commit(
        tmp_path: Path) -> None:
    pinned = tmp_path / "b4code"
    (pinned / "src/textprop").mkdir(parents=True)
    (pinned / "src/textprop/__init__.py").write_text("PINNED = True\n")
    git = ["git", "-C", str(pinned), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "pin"], check=True)
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], check=True,
                            capture_output=True, text=True).stdout.strip()
    probe = ("import b4_quality as b, textprop; "
             "print(b.SRC, b._commit(), getattr(textprop, 'PINNED', False))")
    env = {**os.environ, "B4_TEXTPROP_SRC": str(pinned / "src")}
    env.pop("PYTHONPATH", None)
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT / "bench", env=env,
                         check=True, capture_output=True, text=True).stdout.split()
    assert out == [str((pinned / "src").resolve()), commit, "True"]
    assert b4.SRC == ROOT / "src"  # unset: this checkout's own


def test_a_proxy_on_an_existing_call_log_counts_on_from_it(tmp_path: Path) -> None:
    log = tmp_path / "calls-task.jsonl"
    with TestServer(reply="two words") as server:
        for calls in (2, 1):  # two parts of one cell, two processes' worth of proxies
            with CountingProxy(server.base_url, label="task", log=log) as proxy:
                client = OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
                for _ in range(calls):
                    client.chat.completions.create(
                        model="m", messages=[{"role": "user", "content": "hi"}])
            if calls == 2:
                with open(log, "a") as out:
                    out.write('{"t": 1, "role": "ta')  # the line a kill cut off
    assert proxy.summary()["task"]["calls"] == 3
    assert proxy.summary()["task"]["completion_tokens"] == 6
    assert len(b4.read_log(log)) == 3


def test_a_cut_off_cell_keeps_its_parts_and_its_work_folder(tmp_path: Path) -> None:
    work = b4.cell_work_dir(tmp_path, "object_counting", "gepa", 0, 300)
    assert work.name == "object_counting-gepa-s0-mmc300"
    first = b4.start_part(work, "gepa")
    (work / "gepa_run").mkdir()
    second = b4.start_part(work, "gepa")
    assert len(second) == 2 and second[0] == first[0] and (work / "gepa_run").is_dir()
    assert second[1]["commit"] == b4._commit()  # the code each part ran, for the table
    # a part cut off ran from its start to the end of its last logged call
    parts, calls = [{"started": 100.0}, {"started": 200.0}], [{"t": 105}, {"t": 140}, {"t": 201}]
    assert b4.earlier_parts_wall(parts, calls) == 40

    tg = b4.cell_work_dir(tmp_path, "object_counting", "textgrad", 0, 300)
    b4.start_part(tg, "textgrad")
    (tg / "cache" / "textgrad").mkdir(parents=True)  # TextGrad's own response cache
    again = b4.start_part(tg, "textgrad")
    assert len(again) == 2 and (tg / "cache" / "textgrad").is_dir()


def test_only_unfinished_cells_are_packed_and_a_part_unpacks_only_into_its_own_folder(
        tmp_path: Path) -> None:
    import tarfile

    runs, parts = tmp_path / "runs", tmp_path / "parts"
    cut = b4.cell_work_dir(runs, "object_counting", "gepa", 0, 300)
    done = b4.cell_work_dir(runs, "object_counting", "tgd", 0, 300)
    for work in (cut, done):
        b4.start_part(work, "x")
        (work / "run").mkdir()
        (work / "run" / "ledger.sqlite3").write_bytes(b"ledger of " + work.name.encode())
    (runs / "not-a-cell").mkdir()  # no parts.json: never packed
    recorded = {"object_counting/tgd/seed0/mmc300": {"work_dir": str(done)}}
    assert b4.pack_parts(runs, parts, recorded) == [parts / f"{cut.name}.tar.gz"]

    fresh = tmp_path / "fresh" / cut.name
    assert b4.unpack_part(fresh, parts)
    assert (fresh / "run" / "ledger.sqlite3").read_bytes() == b"ledger of " + cut.name.encode()
    assert not b4.unpack_part(fresh, parts)  # a folder that exists is never overwritten

    evil = tmp_path / "evil"
    with tarfile.open(parts / "x-s0-mmc1.tar.gz", "w:gz") as tar:
        (tmp_path / "other").mkdir()
        tar.add(tmp_path / "other", arcname="elsewhere")
    with pytest.raises(SystemExit, match="outside"):
        b4.unpack_part(evil / "x-s0-mmc1", parts)


@needs_bbh
def test_a_harness_killed_mid_cell_resumes_the_cell_where_it_stopped(tmp_path: Path) -> None:
    """SIGKILL the harness while textprop's search runs and pack the cut cell as a session's
    end does; on a checkout with no work folders the rerun unpacks it and resumes the same
    ledger (the baseline is not paid again), and the cell counts the calls of both parts."""
    import shutil
    import signal
    import time

    from textprop.errors import StorageError
    from textprop.ledger import Ledger

    data = b4.load_task("object_counting", 6, 8)
    targets = {r["input"].strip(): r["target"] for split in ("train", "val", "test")
               for r in data[split]}
    task_reply, writer_reply = b4.smoke_replies(targets)
    out, runs, parts = tmp_path / "b4.json", tmp_path / "runs", tmp_path / "parts"
    work = b4.cell_work_dir(runs, "object_counting", "pareto", 0, 40)
    with TestServer(reply=task_reply, latency=0.05) as task, \
            TestServer(reply=writer_reply, latency=0.05) as writer:
        cmd = [sys.executable, str(ROOT / "bench/b4_quality.py"), "--tasks", "object_counting",
               "--frameworks", "pareto", "--seeds", "0", "--val", "6", "--test", "8",
               "--max-metric-calls", "40", "--max-tokens", "64", "--writer-max-tokens", "64",
               "--workers", "2", "--out", str(out), "--runs", str(runs), "--parts", str(parts),
               "--task-url", task.base_url, "--writer-url", writer.base_url]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
        ledger_file = work / "run" / "ledger.sqlite3"
        deadline = time.time() + 120
        while time.time() < deadline:  # wait for the baseline and one round of proposals
            try:
                if ledger_file.exists() and len(
                        Ledger.in_run(work / "run", read_only=True).steps()) >= 2:
                    break
            except StorageError:  # the file exists a moment before textprop writes its schema
                pass
            time.sleep(0.05)
        else:
            pytest.fail("the search never got past its first round")
        os.killpg(first.pid, signal.SIGKILL)  # the harness, textprop and all
        first.wait(timeout=30)
        assert "cells" not in json.loads(out.read_text()) or \
            not json.loads(out.read_text())["cells"]
        baseline = Ledger.in_run(work / "run").steps()[0]
        paid_first = len(b4.read_log(work / "calls-task.jsonl"))
        packed = subprocess.run(cmd + ["--pack-parts"], env=env, capture_output=True,
                                text=True, timeout=60)
        assert packed.returncode == 0, packed.stderr
        assert [p.name for p in parts.iterdir()] == [f"{work.name}.tar.gz"]
        shutil.rmtree(runs)  # the next session's checkout: only what was committed
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stderr and not list(parts.iterdir())  # done: part dropped
    cell = json.loads(out.read_text())["cells"]["object_counting/pareto/seed0/mmc40"]
    assert cell["status"] == "ok" and cell["parts"] == 2
    assert Ledger.in_run(work / "run").steps()[0] == baseline  # resumed, not started over
    # every task call of both parts, the search's and the final test's
    assert cell["usage_by_role"]["task"]["calls"] == len(b4.read_log(work / "calls-task.jsonl"))
    assert cell["usage_by_role"]["task"]["calls"] > paid_first > 0
    assert "2 parts" in b4.table(json.loads(out.read_text()))
    assert cell["commits"] == [b4._commit()] * 2  # the code of each part
    results = json.loads(out.read_text())
    results["cells"]["object_counting/pareto/seed0/mmc40"]["commits"] = ["abc1234", "def5678"]
    assert "(code abc1234 then def5678)" in b4.table(results)


@needs_bbh
def test_test_prompts_are_scored_by_the_test_server_and_never_reused_across_its_models(
        tmp_path: Path) -> None:
    data, task_reply, out, argv = tiny_tgd_cell(tmp_path)
    out.write_text(json.dumps({"benchmark": "b4", "protocol": None, "cells": {}, "runs": [],
                               "test_evals": {}, "starts": {"object_counting": {
                                   "prompt": data["prompt"], "score": 0.5, "n": 8,
                                   "per_example": {}}}}))  # scored by an unnamed model
    with TestServer(reply=task_reply, models=["batched"]) as task, \
            TestServer(reply=task_reply, models=["one-at-a-time"]) as test, \
            TestServer(reply="feedback") as writer:
        assert b4.main(argv + ["--task-url", task.base_url, "--writer-url", writer.base_url,
                               "--test-url", test.base_url]) == 0
        test_questions = {r["input"] for r in data["test"]}
        assert not [r for r in task.requests if r.path.endswith("/chat/completions")
                    and b4_last_user(r) in test_questions]
        scored = [r for r in test.requests if r.path.endswith("/chat/completions")]
        assert {b4_last_user(r) for r in scored} == test_questions
    results = json.loads(out.read_text())
    # the starting prompt scored again (the recorded start named no model), then the final
    # prompt if it differs: every distinct prompt once, on the test server only
    assert len(scored) == 8 * len(results["test_evals"]["object_counting"])
    assert results["starts"]["object_counting"]["model"] == "one-at-a-time"
    assert results["cells"]["object_counting/tgd/seed0/mmc40"]["test_model"] == "one-at-a-time"
    assert all(key.endswith("@one-at-a-time") for key in results["test_evals"]["object_counting"])


@needs_bbh
def test_test_scores_are_kept_per_platform_and_the_table_shows_one_platform(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same weights answer differently on another CPU, so a cell finished on one machine
    is compared with starts and cells scored on the same one; --rescore scores it on the
    machine at hand."""
    data, task_reply, out, argv = tiny_tgd_cell(tmp_path)
    with TestServer(reply=task_reply, models=["batched"]) as task, \
            TestServer(reply=task_reply, models=["det"]) as here, \
            TestServer(reply="Answer: -1", models=["det"]) as elsewhere, \
            TestServer(reply="feedback") as writer:
        platform = {here.base_url: "fp_here", elsewhere.base_url: "fp_elsewhere",
                    task.base_url: None, writer.base_url: None}
        monkeypatch.setattr(b4, "server_platform", lambda url, timeout=10: platform[url])
        assert b4.main(argv + ["--task-url", task.base_url, "--writer-url", writer.base_url,
                               "--test-url", here.base_url]) == 0
        results = json.loads(out.read_text())
        cell = results["cells"]["object_counting/tgd/seed0/mmc40"]
        assert cell["test_platform"] == "fp_here"
        assert all(k.endswith("@det@fp_here") for k in results["test_evals"]["object_counting"])
        assert not [r for r in elsewhere.requests if r.path.endswith("/chat/completions")]

        assert b4.main(argv + ["--rescore", "--test-url", elsewhere.base_url]) == 0
        scored = [r for r in elsewhere.requests if r.path.endswith("/chat/completions")]
        prompts = {cell["final_prompt"], data["prompt"]}
        assert len(scored) == 8 * len(prompts)  # the final prompt and the start, once each
        assert b4.main(argv + ["--rescore", "--test-url", elsewhere.base_url]) == 0
        assert len([r for r in elsewhere.requests
                    if r.path.endswith("/chat/completions")]) == len(scored)  # nothing new
    results = json.loads(out.read_text())
    here_view = b4.platform_view(results)  # the platform that scored the cell
    assert here_view["platform"] == "fp_here"
    assert here_view["cells"]["object_counting/tgd/seed0/mmc40"]["final_test"] == \
        cell["final_test"]
    there = b4.platform_view(results, "fp_elsewhere")["cells"]["object_counting/tgd/seed0/mmc40"]
    assert (there["start_test"], there["final_test"]) == (0.0, 0.0)  # every answer -1 there
    nowhere = b4.platform_view(results, "fp_other")["cells"]["object_counting/tgd/seed0/mmc40"]
    assert nowhere["status"] == "unscored"
    assert "unscored here: s0" in b4.table(results, platform="fp_other")
    assert "platform fp_elsewhere" in b4.table(results, platform="fp_elsewhere")


def b4_last_user(request) -> str:  # noqa: ANN001
    return [m for m in request.body["messages"] if m["role"] == "user"][-1]["content"]


@pytest.mark.skipif(not VENVS[0].exists(), reason="needs bench/setup-gepa")
def test_a_resumed_gepa_part_does_not_pay_again_for_the_seeds_validation(tmp_path: Path) -> None:
    """gepa.optimize scores the seed on the whole validation set before it loads a saved
    state; the adapter answers that from the earlier part's record, so a resume costs no
    task call an uninterrupted run would not have made."""
    from textprop.testing.server import TestServer

    seed_prompt = "Answer with the number only."
    rows = [{"input": f"What is {a} + {b}?", "target": str(a + b)} for a, b in
            [(1, 2), (3, 4), (5, 6), (7, 8), (2, 2), (4, 4), (6, 1), (9, 9)]]

    def reply(body: dict) -> str:
        system = body["messages"][0]["content"] if body["messages"][0]["role"] == "system" \
            else ""
        return "7" if system == seed_prompt else "I am not sure."

    with TestServer(reply=reply) as server:
        spec = {"task_url": server.base_url, "task_model": "m", "reflection_url":
                server.base_url, "reflection_model": "w", "system_prompt": seed_prompt,
                "template": "{input}", "metric": "numeric", "train": rows[:4],
                "val": rows[4:], "max_metric_calls": 12, "seed": 0, "minibatch": 2,
                "max_tokens": 16, "reflection_max_tokens": 32, "workers": 2, "timeout": 30,
                "run_dir": str(tmp_path / "gepa_run")}

        def part(budget: int) -> dict:
            (tmp_path / "spec.json").write_text(json.dumps({**spec, "max_metric_calls": budget}))
            done = subprocess.run(
                [str(VENVS[0]), str(ROOT / "bench/b4_gepa_adapter.py"),
                 str(tmp_path / "spec.json"), str(tmp_path / "out.json")],
                capture_output=True, text=True, timeout=300, cwd=tmp_path,
                env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
            assert done.returncode == 0, done.stderr[-2000:]
            return json.loads((tmp_path / "out.json").read_text())

        def seed_val_requests() -> int:
            return sum(1 for r in server.requests if r.path.endswith("/chat/completions")
                       and r.body["messages"][0]["content"] == seed_prompt
                       and r.body["messages"][-1]["content"] in {v["input"] for v in rows[4:]})

        first = part(8)
        assert seed_val_requests() == 4 and first.get("task_answers_from_earlier_parts", 0) == 0
        second = part(20)  # resumes from run_dir with more budget
        seeds = [r.body["seed"] for r in server.requests
                 if r.path.endswith("/chat/completions") and r.body["model"] == "w"]
    assert seed_val_requests() == 4  # the seed's validation was not asked again
    assert second.get("task_answers_from_earlier_parts", 0) >= 4
    assert second["metric_calls"] > first["metric_calls"]
    # reflections are numbered across parts: the second part's seeds follow the first's
    assert len(seeds) >= 2 and seeds == list(range(1, len(seeds) + 1))


@pytest.mark.skipif(not VENVS[1].exists(), reason="needs bench/setup-textgrad")
@needs_bbh
def test_a_restarted_textgrad_part_retraces_the_earlier_part_from_its_own_cache(
        tmp_path: Path) -> None:
    """TextGrad keeps no state, so a cut-off cell runs its loop again; with the work folder
    kept, TextGrad's response cache answers the calls the earlier part made. Not every one:
    TextGrad joins a batch's feedback in the order its threads finish, so a rewrite request
    can differ from the recorded one and go to the server, as it could in any run."""
    from textprop.testing.server import TestServer

    from .train.fake_pipeline import server_reply

    def reply(body: dict) -> str:
        system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
        if "optimization system" in system:  # TextGrad's optimizer: a rewrite in its tags
            return "<IMPROVED_VARIABLE>Count every item, then answer.</IMPROVED_VARIABLE>"
        return server_reply(body)

    work = tmp_path / "cell"
    work.mkdir()
    with TestServer(reply=reply) as server:
        def run() -> dict:
            out = work / "result.json"
            done = subprocess.run(
                [str(VENVS[1]), str(ROOT / "bench/tg_protocol.py"), "--base-url",
                 server.base_url, "--model", "m", "--bbh",
                 str(b4.DATA / "bbh/bbh/object_counting.json"), "--val", "4", "--no-test",
                 "--epochs", "1", "--steps", "2", "--batch-size", "2", "--threads", "2",
                 "--max-tokens", "16", "--seed", "0", "--out", str(out)],
                capture_output=True, text=True, timeout=300, cwd=work,
                env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                     "XDG_CACHE_HOME": str(work / "cache"), "TG_DATA_ROOT": str(work / "data"),
                     "OPENAI_API_KEY": "not-needed"})
            assert done.returncode == 0, done.stderr[-2000:]
            return json.loads(out.read_text())

        first = run()
        sent = len(server.requests)
        second = run()
        again = len(server.requests) - sent
    assert sent >= 20 and again <= 4  # the evaluations and most feedback came from the cache
    assert second["final_prompt"] == first["final_prompt"]
    def path(result: dict) -> list[dict]:
        return [{k: v for k, v in step.items() if k != "seconds"} for step in result["steps"]]

    assert path(second) == path(first) and len(path(first)) == 2


def test_a_cut_test_evaluation_resumes_from_its_record_and_asks_only_the_rest(
        tmp_path: Path) -> None:
    rows = [{"id": f"q{i}", "input": f"What is {i} + 1?", "target": str(i + 1)}
            for i in range(4)]
    record = tmp_path / "parts/test-evals/start.jsonl"
    with TestServer(reply="Answer: 2", models=["m"]) as server:
        first = b4.evaluate("Add.", rows[:2], "exact_match", server.base_url, "m", 16, 2,
                            60, record=record)
        asked_first = len(server.requests)
        whole = b4.evaluate("Add.", rows, "exact_match", server.base_url, "m", 16, 2, 60,
                            record=record)
        asked = [r for r in server.requests[asked_first:]
                 if r.path.endswith("/chat/completions")]
    assert first["per_example"] == {"q0": 0.0, "q1": 1.0}
    assert sorted(b4_last_user(r) for r in asked) == ["What is 2 + 1?", "What is 3 + 1?"]
    assert whole["per_example"] == {"q0": 0.0, "q1": 1.0, "q2": 0.0, "q3": 0.0}
    assert whole["usage"]["calls"] == 4  # the recorded answers count as calls made
    assert len(record.read_text().splitlines()) == 4


@pytest.mark.skipif(not VENVS[0].exists(), reason="needs bench/setup-gepa")
def test_gepa_is_told_when_a_wrong_reply_was_cut_off_as_textprop_is(tmp_path: Path) -> None:
    """The adapter's feedback adds the sentence textprop's trainer adds to a wrong verdict
    whose reply stopped at max_tokens, so both searches reflect on the same information."""
    from textprop.testing.server import TestServer

    rambling = " ".join(["First I restate the question carefully."] * 8)  # > 16 words
    rows = [{"input": f"What is {a} + {b}?", "target": str(a + b)} for a, b in
            [(1, 2), (3, 4), (5, 6), (7, 8), (2, 2), (4, 4)]]
    with TestServer(reply=lambda body: rambling if body["model"] == "m"
                    else "Answer with the sum only.") as server:
        spec = {"task_url": server.base_url, "task_model": "m", "reflection_url":
                server.base_url, "reflection_model": "w", "system_prompt": "Think first.",
                "template": "{input}", "metric": "numeric", "train": rows[:4],
                "val": rows[4:], "max_metric_calls": 8, "seed": 0, "minibatch": 2,
                "max_tokens": 16, "reflection_max_tokens": 32, "workers": 2, "timeout": 30}
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        done = subprocess.run(
            [str(VENVS[0]), str(ROOT / "bench/b4_gepa_adapter.py"), str(tmp_path / "spec.json"),
             str(tmp_path / "out.json")], capture_output=True, text=True, timeout=300,
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        assert done.returncode == 0, done.stderr[-2000:]
        reflections = [b4_last_user(r) for r in server.requests
                       if r.path.endswith("/chat/completions") and r.body["model"] == "w"]
    assert reflections, "GEPA made no reflection"
    assert re.search(r"## Feedback\nThe generated response is incorrect \(The reply was cut "
                     r"off at its limit of 16 tokens before it finished; it has to finish "
                     r"within that limit\. expected \d+, but the prediction contains no "
                     r"number\)", reflections[0])
