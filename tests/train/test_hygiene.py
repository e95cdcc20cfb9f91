"""Credentials and paths: what a config or a ledger names never leaks a secret or escapes
its folder. Issue 14, items 6 and 7."""

from __future__ import annotations

import json

import pytest

from textprop.cli import main
from textprop.engines.registry import public_spec
from textprop.ledger import Ledger, StepRecord
from textprop.testing.server import TestServer

from .fake_pipeline import server_reply, write_run_config


# --- item 6: credentials in engine URLs -----------------------------------------------------
def test_a_password_in_an_engine_url_is_in_no_file_and_no_output(tmp_path, capsys):
    with TestServer(reply=server_reply) as server:
        url = server.base_url.replace("http://", "http://alice:S3CRETPASS@")
        config = write_run_config(
            tmp_path, engine=f"openai-compatible:fake@{url}", train=[(1, 2), (3, 4)],
            val=[(2, 2)], test=[(9, 9)], trainer={"batch_size": 2, "steps_per_epoch": 1})
        run = tmp_path / "run"
        code = main(["optimize", config, "--run-dir", str(run)])
        out, err = capsys.readouterr()
        main(["history", str(run)])
        out += capsys.readouterr().out
        public = server.base_url.rstrip("/")

    assert code == 0, err
    assert "S3CRETPASS" not in out + err
    for path in run.rglob("*"):
        if path.is_file() and not path.name.endswith(("-wal", "-shm")):
            assert b"S3CRETPASS" not in path.read_bytes() or path.name == "config.toml", path
    engines = Ledger.in_run(run).meta()["engines"]
    assert engines == {role: f"openai-compatible:fake@{public}"
                       for role in ("forward", "feedback", "optimizer")}
    assert "alice" not in (run / "report.html").read_text()


@pytest.mark.parametrize("spec, shown", [
    ("openai-compatible:m@http://u:p@host:8000/v1", "openai-compatible:m@http://host:8000/v1"),
    ("m@https://host/v1?api_key=XYZ", "m@https://host/v1"),
    ("llama-server:q@http://tok@host/v1/?a=1#f", "llama-server:q@http://host/v1"),
    ("openai:gpt-4o-mini", "openai:gpt-4o-mini"),
    ("local", "local"),
])
def test_a_spec_is_shown_without_user_info_or_query(spec, shown):
    assert public_spec(spec) == shown


def test_a_report_of_an_old_run_with_a_password_in_its_meta_does_not_show_it(tmp_path,
                                                                              capsys):
    run = tmp_path / "old"
    ledger = Ledger.in_run(run)
    ledger.set_meta(name="old", engines={"forward": "m@http://bob:HUNTER2@host/v1"})
    ledger.record_step(StepRecord(step=0, epoch=0, status="baseline", reason="start",
                                  values={"system_prompt": "x"}, optimizer_state={},
                                  val_score=0.0))
    assert main(["report", str(run)]) == 0
    assert "HUNTER2" not in (run / "report.html").read_text()


# --- item 7: names used as paths ------------------------------------------------------------
@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".", "..", "/abs/x"])
def test_a_run_name_that_is_not_one_folder_name_is_refused(tmp_path, capsys, name):
    config = write_run_config(
        tmp_path, engine="python:tests.train.fake_pipeline:make_engine", train=[(1, 2)],
        val=[(2, 2)], test=[(9, 9)], run={"name": name, "dir": str(tmp_path / "runs")})
    code = main(["optimize", config])
    _, err = capsys.readouterr()

    assert code == 1
    assert err.splitlines() == [
        f"textprop: error: {config}, field 'run.name': {name!r} is not a folder name (one "
        "path component, not empty, '.' or '..'); the run folder is run.dir/run.name"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["data"]


@pytest.mark.parametrize("value_name", ["../../PWNED", "{tmp}/PWNED", "a/b", ""])
def test_export_refuses_a_value_name_that_is_not_a_file_name(tmp_path, capsys, value_name):
    value_name = value_name.format(tmp=tmp_path)  # an absolute path, inside the test's folder
    run = tmp_path / "deep" / "run"
    Ledger.in_run(run).record_step(StepRecord(
        step=0, epoch=0, status="baseline", reason="start",
        values={"system_prompt": "fine", value_name: "evil"}, optimizer_state={}))

    code = main(["export", str(run)])
    _, err = capsys.readouterr()

    assert code == 1
    assert err.splitlines() == [
        f"textprop: error: {run}: the ledger names a value {value_name!r}, which is not a "
        "file name; nothing was exported"]
    assert not (run / "export").exists()
    assert not list(tmp_path.rglob("PWNED*"))


def test_export_writes_each_value_of_safe_names(tmp_path, capsys):
    run = tmp_path / "run"
    Ledger.in_run(run).record_step(StepRecord(
        step=0, epoch=0, status="baseline", reason="start",
        values={"system_prompt": "a", "step-2.prompt": "b"}, optimizer_state={}))
    assert main(["export", str(run), "--json"]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert files == ["prompts.json", "step-2.prompt.txt", "system_prompt.txt"]
