"""AnthropicEngine: request mapping, and real HTTP against the test server's /v1/messages."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from textprop._sync import run_sync
from textprop.engines.anthropic import DEFAULT_MAX_TOKENS, AnthropicEngine
from textprop.engines.base import Message, Request
from textprop.errors import (
    EngineAuthError,
    EngineReplyError,
    EngineRequestError,
    EngineUnavailableError,
    TransientEngineError,
)
from textprop.testing import Fault, TestServer

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


@pytest.fixture
def server() -> Iterator[TestServer]:
    with TestServer(reply="Paris is the capital.") as srv:
        yield srv


@pytest.fixture
def make_engine(server: TestServer) -> Iterator[Callable[..., AnthropicEngine]]:
    engines: list[AnthropicEngine] = []

    def make(**kwargs: Any) -> AnthropicEngine:
        kwargs = {"base_url": server.url, "api_key": "sk-ant-test", "timeout": 2.0,
                  "max_retries": 2, **kwargs}
        engines.append(AnthropicEngine("claude-test", **kwargs))
        return engines[-1]

    yield make
    for engine in engines:
        run_sync(engine.aclose())


def test_request_mapping() -> None:
    engine = AnthropicEngine("claude-test", api_key="k")
    request = Request(messages=(Message("system", "Be brief."), Message("user", "Capital?"),
                                Message("assistant", "Of what?"), Message("user", "France")),
                      temperature=0.3, seed=5, stop=("END",), json_schema=SCHEMA)
    assert engine.request_params(request) == {
        "model": "claude-test",
        "max_tokens": DEFAULT_MAX_TOKENS,  # required by the API, so always sent
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Capital?"},
                     {"role": "assistant", "content": "Of what?"},
                     {"role": "user", "content": "France"}],
        "stop_sequences": ["END"],
        "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}},
    }  # no temperature or seed: SDK 2.x and its API version reject sampling parameters
    plain = engine.request_params(Request.chat("hi", max_tokens=10, model="claude-other"))
    assert plain == {"model": "claude-other", "max_tokens": 10,
                     "messages": [{"role": "user", "content": "hi"}]}


def test_complete_over_http(server: TestServer,
                            make_engine: Callable[..., AnthropicEngine]) -> None:
    engine = make_engine()
    completion = engine.complete(Request.chat("Capital of France?", "Be brief."))
    assert completion.text == "Paris is the capital."
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (5, 4)
    assert completion.finish_reason == "stop" and completion.model == "anthropic:claude-test"
    assert completion.latency_s > 0
    [record] = server.requests
    assert record.path == "/v1/messages" and record.body["system"] == "Be brief."
    assert record.headers["authorization"] == "Bearer sk-ant-test"


def test_max_tokens_stop_reads_as_length(make_engine: Callable[..., AnthropicEngine]) -> None:
    completion = make_engine().complete(Request.chat("Capital?", max_tokens=2))
    assert completion.text == "Paris is" and completion.finish_reason == "length"


def test_structured_output(server: TestServer,
                           make_engine: Callable[..., AnthropicEngine]) -> None:
    completion = make_engine().complete(Request.chat("Capital?", json_schema=SCHEMA))
    assert server.requests[0].body["output_config"] == {
        "format": {"type": "json_schema", "schema": SCHEMA}}
    assert completion.parsed == {"answer": "Paris is the capital."}
    server.reply = lambda body: "Paris"
    with pytest.raises(EngineReplyError, match="not JSON"):
        make_engine().complete(Request.chat("Capital?", json_schema=SCHEMA))


def test_sdk_retries_429_after_retry_after(server: TestServer,
                                           make_engine: Callable[..., AnthropicEngine]) -> None:
    server.inject(Fault("429", retry_after=0.5))
    start = time.monotonic()
    assert make_engine().complete(Request.chat("hi")).text == "Paris is the capital."
    assert time.monotonic() - start >= 0.5
    assert [r.status for r in server.requests] == [429, 200]


@pytest.mark.parametrize("fault, error, advice", [
    ("401", EngineAuthError, "pass a valid key as api_key"),
    ("404", EngineRequestError, "no model 'claude-test'"),
    ("400", EngineRequestError, "rejected the request"),
])
def test_client_errors_fail_fast(server: TestServer, make_engine: Callable[..., AnthropicEngine],
                                 fault: str, error: type, advice: str) -> None:
    engine = make_engine()
    engine.complete(Request.chat("warm up"))
    server.reset()
    server.inject(fault)
    with pytest.raises(error, match=advice):
        engine.complete(Request.chat("hi"))
    assert len(server.requests) == 1  # no retry, so no backoff either


def test_malformed_body_is_transient(server: TestServer,
                                     make_engine: Callable[..., AnthropicEngine]) -> None:
    server.inject("malformed")
    with pytest.raises(TransientEngineError, match="malformed reply"):
        make_engine().complete(Request.chat("hi"))


def test_env_key_and_base_url(server: TestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    engine = AnthropicEngine("claude-test", max_retries=0)
    assert engine.complete(Request.chat("hi")).text == "Paris is the capital."
    assert server.requests[0].headers["authorization"] == "Bearer sk-ant-env"
    server.inject("401")
    with pytest.raises(EngineAuthError, match="set ANTHROPIC_API_KEY to a valid key"):
        engine.complete(Request.chat("hi"))
    run_sync(engine.aclose())


def test_missing_credentials_name_the_variable(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_PROFILE",
                 "ANTHROPIC_IDENTITY_TOKEN", "ANTHROPIC_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path))  # no profile on disk
    engine = AnthropicEngine("claude-test", base_url="http://127.0.0.1:9")
    with pytest.raises(EngineAuthError, match="Set ANTHROPIC_API_KEY"):
        engine.complete(Request.chat("hi"))


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "anthropic", None)  # as if not installed
    with pytest.raises(EngineUnavailableError) as info:
        AnthropicEngine("claude-test")
    assert "pip install 'textprop[anthropic]'" in str(info.value)
