"""A budget holds for the run, not for each process: a run stopped by its budget mid-step and
resumed pays nothing more until the limit is raised, and every call a provider received is
in the ledger's journal of paid calls, including those of a step that never finished."""

from __future__ import annotations

import json

from textprop.ledger import Ledger
from textprop.testing.server import TestServer

from .fake_pipeline import IMPROVED, cli_process, server_reply, write_run_config


def sent(server: TestServer) -> int:
    return sum(r.path.endswith("/chat/completions") for r in server.requests)


def test_a_run_stopped_by_its_budget_resumes_without_paying_past_it(tmp_path) -> None:
    with TestServer(reply=server_reply) as server:
        config = write_run_config(
            tmp_path, engine=f"openai-compatible:fake@{server.base_url}",
            train=[(1, 2), (3, 4), (5, 6), (7, 8)], val=[(2, 2), (4, 5), (6, 1), (3, 3)],
            test=[(9, 9), (1, 1)], engines={"concurrency": 2},
            trainer={"batch_size": 2, "steps_per_epoch": 2, "epochs": 2},
            budget={"max_calls": 14})
        run = tmp_path / "run"
        first = cli_process("optimize", config, "--run-dir", run)
        _, first_err = first.communicate(timeout=60)
        after_first = sent(server)

        resumed = cli_process("optimize", config, "--run-dir", run, "--resume")
        _, resumed_err = resumed.communicate(timeout=60)
        after_resume = sent(server)

        # the baseline (6 calls) and step 1's batch, feedback, rewrite and validation need
        # more than 14: the budget stops the run inside step 1
        assert first.returncode == 1 and "budget exceeded" in first_err
        assert after_first == 14
        assert Ledger.in_run(run).paid()[0] == 14  # step 1's calls too, though unfinished
        assert resumed.returncode == 1
        assert after_resume == 14  # cached answers replayed, nothing new sent
        assert "14 calls made by this run so far and 0 in flight, max_calls=14" in resumed_err
        assert (f"raise the limit in [budget] and run: textprop optimize {config} "
                f"--run-dir {run} --resume") in resumed_err

        raised = config.replace("run.toml", "raised.toml")
        with open(raised, "w") as out:
            out.write(open(config).read().replace("max_calls = 14", "max_calls = 100"))
        done = cli_process("optimize", raised, "--run-dir", run, "--resume", "--json")
        out, err = done.communicate(timeout=60)
        assert done.returncode == 0, err
        assert json.loads(out)["values"] == {"system_prompt": IMPROVED}
        assert Ledger.in_run(run).paid()[0] == sent(server)  # every call journaled once
