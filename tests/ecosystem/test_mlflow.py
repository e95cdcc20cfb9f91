"""`[tracking] mlflow = "file:..."`: a run logs to a real MLflow file store, read back with
MLflow's own client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from textprop.cli import main

from ..train.fake_pipeline import IMPROVED, write_run_config

mlflow = pytest.importorskip("mlflow", reason="needs the mlflow extra")


def test_a_run_logs_params_metrics_and_artifacts_to_an_mlflow_file_store(tmp_path, capsys):
    store = tmp_path / "mlruns"
    config = write_run_config(
        tmp_path, engine="python:tests.train.fake_pipeline:make_engine",
        train=[(1, 2), (3, 4), (5, 6), (7, 8)], val=[(2, 2), (4, 5), (6, 1)],
        test=[(9, 9), (1, 1)], run={"name": "arith", "dir": str(tmp_path / "runs")},
        trainer={"batch_size": 2, "steps_per_epoch": 2},
        tracking={"mlflow": store.as_uri(), "experiment": "textprop-test"})

    assert main(["optimize", config, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("textprop-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.batch_size"] == "2"
    assert run.data.params["engines.default"] == "python:tests.train.fake_pipeline:make_engine"
    assert run.data.tags["textprop.status"] == "finished"
    val = client.get_metric_history(run.info.run_id, "val_score")
    assert [(m.step, m.value) for m in val] == [(0, 0.0), (1, 1.0)]  # step 2: no change
    assert run.data.metrics["final.test"] == summary["final_test"] == 1.0
    forward = client.get_metric_history(run.info.run_id, "calls.forward")
    assert [m.step for m in forward] == [0, 1, 2]
    assert forward[0].value == 3 + 2  # the baseline: validation and test
    total_calls = run.data.metrics["run_calls.total"]
    assert total_calls == summary["spent"]["calls"]["total"]
    assert "tokens.backward" in run.data.metrics and "cost_usd.optimizer" in run.data.metrics

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"final", "revisions", "report.html"} <= artifacts
    local = Path(client.download_artifacts(run.info.run_id, "final/system_prompt.txt",
                                           str(tmp_path)))
    assert local.read_text() == IMPROVED
    revision = Path(client.download_artifacts(
        run.info.run_id, "revisions/step_0001/system_prompt.txt", str(tmp_path)))
    assert revision.read_text() == IMPROVED
    from textprop.ledger import Ledger

    meta = Ledger.in_run(Path(summary["run"])).meta()
    assert meta["mlflow_run_id"] == run.info.run_id and meta["name"] == "arith"
    assert meta["estimate"]["calls"]["total"] >= total_calls


def test_a_search_logs_each_candidate_that_joined_the_pool(tmp_path, capsys):
    from textprop.testing.server import TestServer

    from ..train.fake_pipeline import server_reply

    store = tmp_path / "mlruns"
    with TestServer(reply=server_reply) as server:
        config = write_run_config(
            tmp_path, engine=f"openai-compatible:fake@{server.base_url}",
            train=[(i, i + 1) for i in range(6)], val=[(2, 2), (4, 6), (6, 1), (3, 3)],
            test=[(9, 9)], run={"name": "search", "dir": str(tmp_path / "runs")},
            strategy={"kind": "pareto", "minibatch": 2, "max_proposals": 2, "parallel": 1},
            tracking={"mlflow": store.as_uri()})
        assert main(["optimize", config, "--quiet"]) == 0
    capsys.readouterr()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("search").experiment_id])
    step = {a.path for a in client.list_artifacts(run.info.run_id, "revisions/step_0001")}
    assert step == {"revisions/step_0001/candidate_1"}
    local = Path(client.download_artifacts(
        run.info.run_id, "revisions/step_0001/candidate_1/system_prompt.txt", str(tmp_path)))
    assert local.read_text() == IMPROVED
    assert run.data.metrics["final.best_val"] == 1.0


def test_a_resumed_run_continues_its_mlflow_run(tmp_path, capsys):
    store = tmp_path / "mlruns"
    config = write_run_config(
        tmp_path, engine="python:tests.train.fake_pipeline:make_engine",
        train=[(1, 2), (3, 4), (5, 6), (7, 8)], val=[(2, 2), (4, 5), (6, 1)],
        test=[(9, 9)], run={"name": "reviewed", "dir": str(tmp_path / "runs")},
        trainer={"batch_size": 2, "steps_per_epoch": 2, "approval": True},
        tracking={"mlflow": store.as_uri()})
    run_dir = tmp_path / "runs" / "reviewed"
    assert main(["optimize", config, "--quiet", "--run-dir", str(run_dir)]) == 0
    assert main(["approve", str(run_dir), "1"]) == 0
    assert main(["optimize", config, "--quiet", "--run-dir", str(run_dir), "--resume"]) == 0
    capsys.readouterr()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("reviewed").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["textprop.status"] == "finished"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "calls.forward")]
    assert steps == [0, 1, 2]
