"""The standard engine stack against the real HTTP test server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from textprop.engines.base import Request
from textprop.engines.openai_compat import OpenAIEngine
from textprop.engines.stack import build_stack
from textprop.errors import CacheMissError, EngineReplyError
from textprop.testing.server import TestServer

REPO = Path(__file__).resolve().parents[2]


def provider(server: TestServer) -> OpenAIEngine:
    return OpenAIEngine("m", base_url=server.base_url, api_key="k", provider="test-server",
                        timeout=5)


def test_the_concurrency_limit_holds_at_the_server():
    with TestServer(latency=0.1, reply="ok") as server:
        engine, _ = build_stack(provider(server), cache=False, concurrency=3)

        async def burst() -> None:
            await asyncio.gather(*(engine.acomplete(Request.chat(f"q{i}")) for i in range(12)))

        asyncio.run(burst())
        assert server.max_in_flight == 3


def test_a_rerun_in_a_new_process_is_served_from_the_cache(tmp_path):
    code = ("import sys; from textprop.engines.openai_compat import OpenAIEngine; "
            "from textprop.engines.stack import build_stack; "
            "from textprop.engines.base import Request; "
            "e, meter = build_stack(OpenAIEngine('m', base_url=sys.argv[1], api_key='k', "
            "provider='test-server'), cache=sys.argv[2]); "
            "print(e.complete(Request.chat('hello', seed=1)).text, "
            "meter.usage().total.cache_hits)")
    with TestServer(reply="world") as server:
        runs = [subprocess.run([sys.executable, "-c", code, server.base_url,
                                str(tmp_path / "c.sqlite3")], capture_output=True, text=True,
                               check=True, cwd=REPO, env={**os.environ}).stdout.split()
                for _ in range(2)]
        assert len(server.requests) == 1
    assert runs == [["world", "0"], ["world", "1"]]


def test_replay_serves_recorded_calls_and_fails_loudly_on_a_miss(tmp_path):
    with TestServer(reply="recorded") as server:
        record, _ = build_stack(provider(server), cache=tmp_path / "c.sqlite3")
        record.complete(Request.chat("known", role="forward"))
        replay, _ = build_stack(provider(server), cache=tmp_path / "c.sqlite3", replay=True)

        assert replay.complete(Request.chat("known", role="forward")).text == "recorded"
        with pytest.raises(CacheMissError, match="forward"):
            replay.complete(Request.chat("never seen", role="forward"))
        assert len(server.requests) == 1


def test_a_reply_that_is_not_the_json_asked_for_is_paid_once_and_raised_again_from_the_cache(
        tmp_path):
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    request = Request.chat("give JSON", role="optimizer", json_schema=schema, max_tokens=20)
    with TestServer(reply=lambda body: "not json, sorry") as server:  # sent as is
        engine, meter = build_stack(provider(server), cache=tmp_path / "c.sqlite3")
        with pytest.raises(EngineReplyError) as first:
            engine.complete(request)
        with pytest.raises(EngineReplyError) as again:  # the recorded reply, same error
            engine.complete(request)
        replay, replay_meter = build_stack(provider(server), cache=tmp_path / "c.sqlite3",
                                           replay=True)
        with pytest.raises(EngineReplyError) as replayed:
            replay.complete(request)
        assert len(server.requests) == 1
    assert first.value.reply_text == again.value.reply_text == replayed.value.reply_text \
        == "not json, sorry"
    assert str(again.value) == str(replayed.value) == str(first.value)
    [paid, hit] = meter.records  # the malformed reply was paid for: its tokens are metered
    assert (paid.ok, paid.cached, hit.ok, hit.cached) == (False, False, False, True)
    assert paid.output_tokens > 0 and paid.input_tokens > 0
    usage = meter.usage().by_role["optimizer"]
    assert (usage.calls, usage.errors, usage.cache_hits) == (2, 2, 1)
    assert usage.output_tokens == paid.output_tokens  # the hit costs nothing
    assert replay_meter.usage().total.cache_hits == 1
