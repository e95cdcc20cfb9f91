"""Retry: backoff with full jitter over transient errors only, and no double retry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from textprop._sync import run_sync
from textprop.engines.base import Request
from textprop.engines.openai_compat import OpenAIEngine
from textprop.engines.retry import RetriesExhaustedError, Retry
from textprop.engines.scripted import ScriptedEngine
from textprop.errors import (
    EngineAuthError,
    EngineReplyError,
    EngineRequestError,
    TransientEngineError,
)
from textprop.testing import Fault, TestServer


class Sleeps:
    """An injectable sleep that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def flaky(*errors: Exception, reply: str = "ok") -> ScriptedEngine:
    return ScriptedEngine(default=reply, name="flaky").queue(*errors)


def transient(status: int = 503, retry_after: float | None = None) -> TransientEngineError:
    return TransientEngineError("overloaded", provider="flaky", status=status,
                                retry_after=retry_after)


def test_transient_errors_are_retried_until_success() -> None:
    inner = flaky(transient(), transient())
    sleeps = Sleeps()
    engine = Retry(inner, max_retries=3, sleep=sleeps)
    assert engine.complete(Request.chat("hi")).text == "ok"
    assert len(inner.requests) == 3 and len(sleeps.delays) == 2


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    sleeps = Sleeps()
    engine = Retry(flaky(*[transient()] * 5), max_retries=5, initial_delay=0.5, max_delay=3.0,
                   sleep=sleeps, rng=lambda: 1.0)  # the top of each jitter range
    engine.complete(Request.chat("hi"))
    assert sleeps.delays == [0.5, 1.0, 2.0, 3.0, 3.0]
    jittered = Retry(flaky(), initial_delay=0.5, max_delay=3.0, rng=lambda: 0.25)
    assert [jittered.delay(n) for n in range(4)] == [0.125, 0.25, 0.5, 0.75]


def test_retry_after_is_honored_as_given() -> None:
    sleeps = Sleeps()
    engine = Retry(flaky(transient(429, retry_after=7.5)), max_delay=1.0, sleep=sleeps)
    engine.complete(Request.chat("hi"))
    assert sleeps.delays == [7.5]


def test_a_retry_after_beyond_the_limit_is_not_waited_for() -> None:
    sleeps = Sleeps()
    engine = Retry(flaky(transient(429, retry_after=600)), max_retry_after=120, sleep=sleeps)
    with pytest.raises(TransientEngineError) as info:
        engine.complete(Request.chat("hi"))
    assert info.value.retry_after == 600 and sleeps.delays == []


@pytest.mark.parametrize("error", [
    EngineAuthError("refused the API key", provider="flaky", status=401),
    EngineRequestError("unknown model", provider="flaky", status=404),
    EngineReplyError("reply is not JSON", provider="flaky"),
])
def test_deterministic_errors_fail_at_once(error: Exception) -> None:
    inner, sleeps = flaky(error), Sleeps()
    with pytest.raises(type(error)):
        Retry(inner, sleep=sleeps).complete(Request.chat("hi"))
    assert len(inner.requests) == 1 and sleeps.delays == []


def test_errors_the_sdk_already_retried_are_not_retried_again() -> None:
    exhausted = RetriesExhaustedError("still 500", attempts=4, provider="flaky", status=500)
    inner, sleeps = flaky(exhausted), Sleeps()
    with pytest.raises(RetriesExhaustedError) as info:
        Retry(inner, sleep=sleeps).complete(Request.chat("hi"))
    assert info.value is exhausted and len(inner.requests) == 1 and sleeps.delays == []


def test_giving_up_raises_retries_exhausted_with_the_last_error_as_cause() -> None:
    last = transient(502)
    inner = flaky(transient(), transient(), last)
    with pytest.raises(RetriesExhaustedError, match="gave up after 3 attempts") as info:
        Retry(inner, max_retries=2, sleep=Sleeps()).complete(Request.chat("hi"))
    assert info.value.attempts == 3 and info.value.status == 502
    assert info.value.__cause__ is last
    assert len(inner.requests) == 3


def test_retries_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="textprop.engines.retry"):
        Retry(flaky(transient()), sleep=Sleeps()).complete(Request.chat("hi"))
    assert "flaky: overloaded; retry 1 of 3" in caplog.text


def test_the_wrapper_is_transparent() -> None:
    inner = ScriptedEngine(default="ok", supports_json_schema=True, name="inner:model")
    engine = Retry(inner)
    assert engine.name == "inner:model" and engine.supports_json_schema
    assert asyncio.run(engine.acomplete(Request.chat("hi"))).text == "ok"
    assert repr(engine) == "Retry(ScriptedEngine(name='inner:model'), max_retries=3)"


# -- over real HTTP: Retry takes the faults the SDK leaves ------------------------------------

@pytest.fixture
def server() -> Iterator[TestServer]:
    with TestServer(reply="fine") as srv:
        yield srv


def http_engine(server: TestServer, **kwargs: Any) -> OpenAIEngine:
    return OpenAIEngine("m", base_url=server.base_url, timeout=2.0, **kwargs)


def test_malformed_reply_is_retried_by_retry(server: TestServer) -> None:
    server.inject("malformed")
    inner = http_engine(server, max_retries=2)
    assert Retry(inner, sleep=Sleeps()).complete(Request.chat("hi")).text == "fine"
    assert [r.fault for r in server.requests] == ["malformed", None]
    run_sync(inner.aclose())


def test_stream_cut_mid_way_is_retried_by_retry(server: TestServer) -> None:
    server.reply = "a reply long enough to be cut in the middle"
    server.inject("cut")
    inner = http_engine(server, stream=True)
    completion = Retry(inner, sleep=Sleeps()).complete(Request.chat("hi"))
    assert completion.text == "a reply long enough to be cut in the middle"
    assert [r.fault for r in server.requests] == ["cut", None]
    run_sync(inner.aclose())


def test_retry_honors_retry_after_when_it_owns_429s(server: TestServer) -> None:
    server.inject(Fault("429", retry_after=0.5))
    inner = http_engine(server, max_retries=0)  # the SDK leaves 429s to Retry
    start = time.monotonic()
    assert Retry(inner).complete(Request.chat("hi")).text == "fine"
    assert time.monotonic() - start >= 0.5
    first, second = server.requests
    assert second.arrived - first.ended >= 0.5
    run_sync(inner.aclose())


def test_one_fault_is_not_retried_by_both_layers(server: TestServer) -> None:
    server.inject(*["500"] * 10)
    inner = http_engine(server, max_retries=1)
    sleeps = Sleeps()
    with pytest.raises(RetriesExhaustedError):
        Retry(inner, max_retries=3, sleep=sleeps).complete(Request.chat("hi"))
    assert len(server.requests) == 2  # the SDK's two attempts, not 2 x 4
    assert sleeps.delays == []
    run_sync(inner.aclose())


@pytest.mark.parametrize("fault", ["400", "401", "404"])
def test_client_errors_reach_the_server_once(server: TestServer, fault: str) -> None:
    inner = http_engine(server, max_retries=3)
    engine = Retry(inner)
    engine.complete(Request.chat("warm up"))
    server.reset()
    server.inject(fault)
    with pytest.raises((EngineAuthError, EngineRequestError)):
        engine.complete(Request.chat("hi"))
    assert len(server.requests) == 1  # no retry, so no backoff either
    run_sync(inner.aclose())
