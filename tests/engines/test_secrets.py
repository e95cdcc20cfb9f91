"""API keys never leak: not in reprs, error messages, exception args, tracebacks or logs.

Every error path is triggered against a real server with a recognizable fake key. The
server's 401 message echoes the key it received, so the engines must scrub server text too.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from textprop._sync import run_sync
from textprop.engines.anthropic import AnthropicEngine
from textprop.engines.base import Engine, Request
from textprop.engines.openai_compat import OpenAIEngine
from textprop.engines.retry import Retry
from textprop.engines.sdk import Secret, error_detail
from textprop.errors import EngineError
from textprop.testing import Fault, TestServer

KEY = "sk-textprop-CANARY-0123456789abcdef"
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}}


@pytest.fixture
def server() -> Iterator[TestServer]:
    with TestServer(reply="fine") as srv:
        yield srv


@pytest.fixture(autouse=True)
def capture_everything(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # the SDKs' and httpx's debug logs included


def assert_no_key(*things: Any) -> None:
    for thing in things:
        if isinstance(thing, BaseException):
            texts = [str(thing), repr(thing), repr(thing.args), repr(vars(thing)),
                     "".join(traceback.format_exception(thing))]
        else:
            texts = [str(thing), repr(thing), repr(vars(thing)) if hasattr(thing, "__dict__")
                     else ""]
        for text in texts:
            assert KEY not in text


def fail(engine: Engine, request: Request) -> EngineError:
    with pytest.raises(EngineError) as info:
        engine.complete(request)
    return info.value


# (fault, engine options, request options) for every way an OpenAI call can fail
OPENAI_FAILURES = {
    "401 echoing the key": ("401", {}, {}),
    "400": ("400", {}, {}),
    "404": ("404", {}, {}),
    "429 exhausted": (Fault("429", retry_after=0.1), {"max_retries": 0}, {}),
    "500 after SDK retries": ("500", {"max_retries": 1, "_times": 2}, {}),
    "hang past the timeout": ("hang", {"timeout": 0.2}, {}),
    "malformed body": ("malformed", {}, {}),
    "stream cut": ("cut", {"stream": True}, {}),
    "reply not JSON": (None, {}, {"json_schema": SCHEMA}),
}


@pytest.mark.parametrize("key_from", ["argument", "environment"])
@pytest.mark.parametrize("case", list(OPENAI_FAILURES))
def test_openai_errors_never_carry_the_key(server: TestServer, caplog: pytest.LogCaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch, case: str,
                                           key_from: str) -> None:
    fault, options, request_options = OPENAI_FAILURES[case]
    options = dict(options)
    times = options.pop("_times", 1)
    if fault is not None:
        server.inject(*[fault] * times)
    if fault is None:
        server.reply = lambda body: f"not json, and the key: {KEY}"
    options = {"max_retries": 0, "timeout": 2.0, **options}
    if key_from == "argument":
        options["api_key"] = KEY
    else:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
    engine = OpenAIEngine("m", base_url=server.base_url, **options)
    error = fail(engine, Request.chat("hi", **request_options))
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"  # the key was used
    if case.startswith("401") or fault is None:
        assert "***" in str(error)  # the key the server echoed back was scrubbed
    assert_no_key(error, engine)
    assert KEY not in caplog.text
    run_sync(engine.aclose())


def test_long_texts_are_scrubbed_before_they_are_shortened(server: TestServer) -> None:
    """Excerpts are cut at a fixed length: a key across the cut must not leave a prefix."""
    engine = OpenAIEngine("m", base_url=server.base_url, api_key=KEY, max_retries=0)
    server.reply = lambda body: "x" * 175 + KEY  # excerpts stop at 200 characters, mid-key
    error = fail(engine, Request.chat("hi", json_schema=SCHEMA))
    assert "x" * 150 in str(error) and "CANARY" not in str(error)
    run_sync(engine.aclose())
    server_message = {"error": {"message": "y" * 275 + KEY}}  # cut at 300, mid-key
    detail = error_detail(server_message, "", Secret(KEY))
    assert detail.startswith("y" * 275) and "CANARY" not in detail


def test_connection_refused_never_carries_the_key(caplog: pytest.LogCaptureFixture) -> None:
    engine = OpenAIEngine("m", base_url="http://127.0.0.1:9/v1", api_key=KEY, max_retries=0)
    assert_no_key(fail(engine, Request.chat("hi")), engine)
    assert KEY not in caplog.text


def test_retry_logs_never_carry_the_key(server: TestServer,
                                        caplog: pytest.LogCaptureFixture) -> None:
    server.inject("401")
    server.inject("malformed")
    inner = OpenAIEngine("m", base_url=server.base_url, api_key=KEY, max_retries=0)

    async def no_wait(seconds: float) -> None:
        pass

    engine = Retry(inner, sleep=no_wait)
    assert_no_key(fail(engine, Request.chat("hi")), engine, inner)
    assert engine.complete(Request.chat("hi")).text == "fine"  # after a logged retry
    assert "retry 1 of 3" in caplog.text and KEY not in caplog.text
    run_sync(inner.aclose())


ANTHROPIC_FAILURES: dict[str, tuple[Any, dict[str, Any]]] = {
    "401 echoing the key": ("401", {}),
    "404": ("404", {}),
    "500 after SDK retries": ("500", {"max_retries": 1}),
    "malformed body": ("malformed", {}),
    "hang past the timeout": ("hang", {"timeout": 0.2}),
}


@pytest.mark.parametrize("key_from", ["argument", "environment"])
@pytest.mark.parametrize("case", list(ANTHROPIC_FAILURES))
def test_anthropic_errors_never_carry_the_key(server: TestServer,
                                              caplog: pytest.LogCaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch, case: str,
                                              key_from: str) -> None:
    fault, options = ANTHROPIC_FAILURES[case]
    server.inject(*[fault] * (1 + options.get("max_retries", 0)))
    options = {"max_retries": 0, "timeout": 2.0, **options}
    if key_from == "argument":
        options["api_key"] = KEY
    else:
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    engine = AnthropicEngine("claude-test", base_url=server.url, **options)
    error = fail(engine, Request.chat("hi"))
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert_no_key(error, engine)
    assert KEY not in caplog.text
    run_sync(engine.aclose())


def test_engine_reprs_hide_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    engines: list[Callable[[], Engine]] = [
        lambda: OpenAIEngine("m", api_key=KEY),
        lambda: AnthropicEngine("c", api_key=KEY),
        lambda: Retry(OpenAIEngine("m", api_key=KEY)),
    ]
    for make in engines:
        assert_no_key(make())
