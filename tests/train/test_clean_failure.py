"""A call that fails for good stops the run without paying anything twice: no new call is
started, the calls already in flight finish into the cache, then the run fails, and
`--resume` sends only what never got an answer. Issue 14, item 4."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest

from textprop.engines.base import Request
from textprop.engines.limits import ConcurrencyLimit
from textprop.engines.retry import RetriesExhaustedError
from textprop.engines.scripted import ScriptedEngine
from textprop.errors import EngineAuthError, EngineError
from textprop.testing.server import TestServer

from .fake_pipeline import IMPROVED, cli_process, server_reply, write_run_config


def bodies(requests: list) -> list[str]:
    return [json.dumps(r.body, sort_keys=True) for r in requests
            if r.path.endswith("/chat/completions")]


def test_a_fatal_failure_lets_the_calls_in_flight_finish_into_the_cache(tmp_path):
    with TestServer(latency=0.2, reply=server_reply) as server:
        config = write_run_config(
            tmp_path, engine=f"openai-compatible:fake@{server.base_url}",
            train=[(1, 2), (3, 4)], val=[(2, 2), (4, 5), (6, 1), (3, 3)],
            test=[(9, 9), (1, 1)], engines={"concurrency": 4},
            trainer={"batch_size": 2, "steps_per_epoch": 1})
        run = tmp_path / "run"
        server.inject("401")  # the first of the four baseline calls sent at once
        first = cli_process("optimize", config, "--run-dir", run, "--quiet")
        _, err = first.communicate(timeout=60)
        sent_first = bodies(server.requests)
        answered = [b for b, r in zip(sent_first, server.requests, strict=True)
                    if r.status == 200]

        second = cli_process("optimize", config, "--run-dir", run, "--resume", "--json")
        out, err2 = second.communicate(timeout=60)
        sent_second = bodies(server.requests)[len(sent_first):]

    assert first.returncode == 1
    assert [line for line in err.splitlines() if line.startswith("textprop: error:")], err
    assert len(sent_first) == 4  # the failed call and the three beside it; none started after
    assert len(answered) == 3
    assert second.returncode == 0, err2
    assert json.loads(out)["values"] == {"system_prompt": IMPROVED}
    assert not set(answered) & set(sent_second)  # nothing answered was paid for again
    assert max(Counter(sent_second).values()) == 1


@pytest.mark.parametrize("failure", [
    EngineAuthError("scripted: key refused"),
    RetriesExhaustedError("scripted: HTTP 429, the server asks to wait 300 s", attempts=1,
                          retry_after=300),
], ids=["401", "429 wait 300 s"])
def test_calls_queued_behind_a_fatal_failure_are_not_sent_and_the_limit_recovers(failure):
    inner = ScriptedEngine(latency_s=0.05, default="ok").queue(failure)
    limited = ConcurrencyLimit(inner, 2)

    async def burst() -> list[object]:
        return await asyncio.gather(*(limited.acomplete(Request.chat(f"q{i}"))
                                      for i in range(5)), return_exceptions=True)

    results = asyncio.run(burst())
    assert results[0] is failure
    assert [getattr(r, "text", None) for r in results[1:2]] == ["ok"]  # in flight: finished
    assert all(isinstance(r, EngineError) and "not sent" in str(r) for r in results[2:])
    assert inner.prompts() == ["q0", "q1"]
    assert asyncio.run(limited.acomplete(Request.chat("later"))).text == "ok"
