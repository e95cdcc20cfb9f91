"""`--replay`: a run's own record serves the run again, call for call, with no request sent;
that includes replies that were not the JSON asked for (they were paid for and recorded)."""

from __future__ import annotations

import json

from textprop.cli import main
from textprop.ledger import Ledger
from textprop.testing.server import TestServer

from .fake_pipeline import server_reply, write_run_config

TIMES = ("started_at", "finished_at", "created_at", "latency_s")


def without_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMES} for row in rows]


def every_other_rewrite_malformed():
    rewrites = {"n": 0}

    def reply(body: dict) -> str:
        system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
        if "optimization system that improves text" in system:
            rewrites["n"] += 1
            if rewrites["n"] % 2 == 1:
                return "Sure! Here is a better prompt, no JSON though."
        return server_reply(body)
    return reply, rewrites


def test_a_run_with_malformed_rewrites_replays_into_the_same_ledger_without_a_request(
        tmp_path, capsys):
    reply, rewrites = every_other_rewrite_malformed()
    with TestServer(reply=reply) as server:
        config = write_run_config(
            tmp_path, engine=f"openai-compatible:fake@{server.base_url}",
            train=[(i, i + 1) for i in range(6)], val=[(2, 2), (4, 6)], test=[(1, 1)],
            run={"name": "r", "dir": str(tmp_path / "runs")},
            cache={"path": str(tmp_path / "cache.sqlite3")},
            trainer={"batch_size": 2, "steps_per_epoch": 2})
        assert main(["optimize", config, "--json", "--run-dir", str(tmp_path / "a")]) == 0
        recorded = json.loads(capsys.readouterr().out)
        sent = len(server.requests)
        assert main(["optimize", config, "--json", "--replay",
                     "--run-dir", str(tmp_path / "b")]) == 0
        replayed = json.loads(capsys.readouterr().out)
        assert len(server.requests) == sent  # nothing reached the server
    assert rewrites["n"] >= 2  # a malformed rewrite happened, and was retried
    a, b = Ledger.in_run(tmp_path / "a"), Ledger.in_run(tmp_path / "b")
    assert without_times(b.steps()) == without_times(a.steps())
    assert without_times(b.revisions()) == without_times(a.revisions())
    assert (replayed["final_test"], replayed["best_val"]) == \
        (recorded["final_test"], recorded["best_val"])
    optimizer = replayed["usage"]["openai-compatible:fake"]["by_role"]["optimizer"]
    assert optimizer["errors"] >= 1 and optimizer["cache_hits"] == optimizer["calls"]
