"""OpenAIEngine against a real HTTP server: request shape, replies, SDK retries, errors."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from textprop._sync import run_sync
from textprop.engines.base import Message, Request
from textprop.engines.openai_compat import PLACEHOLDER_KEY, OpenAIEngine
from textprop.engines.retry import RetriesExhaustedError
from textprop.engines.sdk import status_error
from textprop.errors import (
    ContextWindowError,
    EngineAuthError,
    EngineReplyError,
    EngineRequestError,
    TransientEngineError,
)
from textprop.testing import Fault, TestServer

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


@pytest.fixture
def server() -> Iterator[TestServer]:
    with TestServer(reply="The answer is 4.") as srv:
        yield srv


@pytest.fixture
def make_engine(server: TestServer) -> Iterator[Callable[..., OpenAIEngine]]:
    """Engines on the test server (short timeout); their sync clients are closed after."""
    engines: list[OpenAIEngine] = []

    def make(**kwargs: Any) -> OpenAIEngine:
        kwargs = {"base_url": server.base_url, "api_key": "sk-test", "timeout": 2.0,
                  "max_retries": 2, **kwargs}
        engine = OpenAIEngine(kwargs.pop("model", "test-model"), **kwargs)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        run_sync(engine.aclose())


def test_complete_fills_text_usage_finish_reason_and_latency(
        server: TestServer, make_engine: Callable[..., OpenAIEngine]) -> None:
    server.latency = 0.05
    completion = make_engine().complete(Request.chat("What is 2+2?", "Be brief."))
    assert completion.text == "The answer is 4."
    assert completion.usage.input_tokens == 5 and completion.usage.output_tokens == 4
    assert completion.finish_reason == "stop"
    assert completion.latency_s >= 0.05
    assert completion.model == "openai:test-model" and completion.parsed is None


def test_acomplete_works_on_the_callers_event_loop(
        server: TestServer, make_engine: Callable[..., OpenAIEngine]) -> None:
    engine = make_engine()

    async def main() -> list[str]:
        try:
            return [(await engine.acomplete(Request.chat(f"q{i}"))).text for i in range(2)]
        finally:
            await engine.aclose()

    assert asyncio.run(main()) == ["The answer is 4."] * 2
    assert engine.complete(Request.chat("then sync")).text == "The answer is 4."  # other loop
    assert len(server.requests) == 3


def test_concurrent_calls_run_in_parallel(server: TestServer,
                                          make_engine: Callable[..., OpenAIEngine]) -> None:
    server.latency = 0.5  # wide enough that a loaded machine still overlaps all eight
    engine = make_engine()

    async def main() -> None:
        try:
            await engine.acomplete(Request.chat("warm up"))  # the client of this loop
            await asyncio.gather(*(engine.acomplete(Request.chat(f"q{i}")) for i in range(8)))
        finally:
            await engine.aclose()

    asyncio.run(main())
    assert server.max_in_flight == 8  # all eight at once, measured by the server


def test_request_maps_to_chat_completions_create(server: TestServer,
                                                 make_engine: Callable[..., OpenAIEngine]) -> None:
    engine = make_engine(extra_body={"top_k": 20})
    request = Request(messages=(Message("system", "sys"), Message("user", "hi"),
                                Message("assistant", "hello"), Message("user", "again")),
                      temperature=0.7, max_tokens=50, seed=7, stop=("\n\n",))
    engine.complete(request)
    engine.complete(Request.chat("x", model="other-model", seed=None))
    first, second = (r.body for r in server.requests)
    assert first["messages"] == [{"role": "system", "content": "sys"},
                                 {"role": "user", "content": "hi"},
                                 {"role": "assistant", "content": "hello"},
                                 {"role": "user", "content": "again"}]
    assert (first["model"], first["temperature"], first["max_tokens"], first["seed"],
            first["stop"], first["top_k"]) == ("test-model", 0.7, 50, 7, ["\n\n"], 20)
    assert "response_format" not in first and "stream" not in first
    assert second["model"] == "other-model" and "seed" not in second
    assert engine.complete(Request.chat("x", model="other-model")).model == "openai:other-model"
    assert server.requests[0].headers["authorization"] == "Bearer sk-test"


def test_structured_output_openai_form(server: TestServer,
                                       make_engine: Callable[..., OpenAIEngine]) -> None:
    completion = make_engine().complete(Request.chat("2+2?", json_schema=SCHEMA))
    assert server.requests[0].body["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "reply", "schema": SCHEMA,
                                               "strict": False}}
    assert completion.parsed == {"answer": "The answer is 4."}


def test_structured_output_llama_cpp_form(server: TestServer,
                                          make_engine: Callable[..., OpenAIEngine]) -> None:
    engine = make_engine(provider="llama.cpp")
    assert engine.name == "llama.cpp:test-model"
    completion = engine.complete(Request.chat("2+2?", json_schema=SCHEMA))
    assert server.requests[0].body["response_format"] == {"type": "json_object",
                                                          "schema": SCHEMA}
    assert completion.parsed == {"answer": "The answer is 4."}


def test_llama_cpp_form_lowers_bounds_its_grammar_cannot_hold(
        server: TestServer, make_engine: Callable[..., OpenAIEngine]) -> None:
    engine = make_engine(provider="llama.cpp")
    schema = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 1104}}}
    engine.complete(Request.chat("2+2?", json_schema=schema))
    assert server.requests[0].body["response_format"] == {"type": "json_object", "schema": {
        "type": "object", "properties": {"answer": {"type": "string", "maxLength": 1000}}}}
    assert schema["properties"]["answer"]["maxLength"] == 1104


def test_openai_form_keeps_the_schema_as_given(
        server: TestServer, make_engine: Callable[..., OpenAIEngine]) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 1104}}}
    make_engine().complete(Request.chat("2+2?", json_schema=schema))
    assert server.requests[0].body["response_format"]["json_schema"]["schema"] == schema


def test_without_json_schema_support_no_response_format_is_sent(
        server: TestServer, make_engine: Callable[..., OpenAIEngine]) -> None:
    engine = make_engine(supports_json_schema=False)
    completion = engine.complete(Request.chat("2+2?", json_schema=SCHEMA))
    assert "response_format" not in server.requests[0].body
    assert completion.parsed is None and completion.text == "The answer is 4."


def test_reply_that_is_not_json_is_a_reply_error_with_an_excerpt(
        server: TestServer, make_engine: Callable[..., OpenAIEngine]) -> None:
    server.reply = lambda body: '{"answer": "four", "reason": "because'  # JSON cut short
    with pytest.raises(EngineReplyError, match="not JSON") as info:
        make_engine().complete(Request.chat("2+2?", json_schema=SCHEMA))
    assert '{"answer": "four"' in str(info.value)
    assert info.value.reply_text == '{"answer": "four", "reason": "because'  # kept whole
    server.reply = {"answer": "a long answer of many words"}
    with pytest.raises(EngineReplyError, match="raise max_tokens") as info:
        make_engine().complete(Request.chat("2+2?", json_schema=SCHEMA, max_tokens=3))
    assert info.value.finish_reason == "length"


def test_reply_missing_a_required_key_is_a_reply_error(
        server: TestServer, make_engine: Callable[..., OpenAIEngine]) -> None:
    server.reply = {"other": 1}
    with pytest.raises(EngineReplyError, match="'answer'"):
        make_engine().complete(Request.chat("2+2?", json_schema=SCHEMA))


def test_streaming_gives_the_same_completion(server: TestServer,
                                             make_engine: Callable[..., OpenAIEngine]) -> None:
    completion = make_engine(stream=True).complete(Request.chat("What is 2+2?", "Be brief."))
    assert server.requests[0].body["stream"] is True
    assert completion.text == "The answer is 4."
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (5, 4)
    assert completion.finish_reason == "stop"


# -- the SDK's retries: the first line for 429, 5xx, timeouts and dropped connections ---------

def test_429_is_retried_after_the_retry_after_header(
        server: TestServer, make_engine: Callable[..., OpenAIEngine]) -> None:
    server.inject(Fault("429", retry_after=1))
    start = time.monotonic()
    assert make_engine().complete(Request.chat("hi")).text == "The answer is 4."
    assert time.monotonic() - start >= 1.0
    first, second = server.requests
    assert (first.status, second.status) == (429, 200)
    assert second.arrived - first.ended >= 1.0


@pytest.mark.parametrize("fault", ["500", "cut"])
def test_server_errors_and_cut_bodies_are_retried(
        server: TestServer, make_engine: Callable[..., OpenAIEngine], fault: str) -> None:
    server.inject(fault)
    assert make_engine().complete(Request.chat("hi")).text == "The answer is 4."
    assert [r.fault for r in server.requests] == [fault, None]


def test_a_hang_past_the_timeout_is_retried(server: TestServer,
                                            make_engine: Callable[..., OpenAIEngine]) -> None:
    server.inject("hang")
    start = time.monotonic()
    completion = make_engine(timeout=0.3).complete(Request.chat("hi"))
    assert completion.text == "The answer is 4."
    assert time.monotonic() - start >= 0.3
    assert [r.fault for r in server.requests] == ["hang", None]


def test_when_sdk_retries_run_out_the_error_says_so(
        server: TestServer, make_engine: Callable[..., OpenAIEngine]) -> None:
    server.inject("500", "500")
    with pytest.raises(RetriesExhaustedError, match="after 1 SDK retry") as info:
        make_engine(max_retries=1).complete(Request.chat("hi"))
    assert isinstance(info.value, TransientEngineError)
    assert info.value.status == 500 and info.value.attempts == 2
    assert len(server.requests) == 2


def test_without_sdk_retries_transient_errors_are_plain(
        server: TestServer, make_engine: Callable[..., OpenAIEngine]) -> None:
    server.inject(Fault("429", retry_after=3))
    with pytest.raises(TransientEngineError) as info:
        make_engine(max_retries=0).complete(Request.chat("hi"))
    assert type(info.value) is TransientEngineError
    assert info.value.retry_after == 3 and info.value.status == 429


# -- faults the SDK does not retry: surfaced as TransientEngineError for `Retry` ---------------

def test_malformed_body_is_transient(server: TestServer,
                                     make_engine: Callable[..., OpenAIEngine]) -> None:
    server.inject("malformed")
    with pytest.raises(TransientEngineError, match="malformed reply") as info:
        make_engine().complete(Request.chat("hi"))
    assert type(info.value) is TransientEngineError  # not retried by the SDK
    assert len(server.requests) == 1


@pytest.fixture
def json_body_server() -> Iterator[Callable[[Any], str]]:
    """A server that answers every chat completion with a fixed JSON body: `serve(body)`
    returns its base URL."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    servers: list[ThreadingHTTPServer] = []

    def serve(body: Any) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers["Content-Length"]))
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_port}/v1"

    yield serve
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("body", [{"object": "chat.completion"}, {"choices": []},
                                  {"choices": ["x"]}, ["not", "an", "object"]])
def test_a_json_reply_without_a_choice_is_malformed_and_transient(
        json_body_server: Callable[[Any], str], body: Any) -> None:
    engine = OpenAIEngine("m", base_url=json_body_server(body), api_key="sk-test",
                          max_retries=0)
    with pytest.raises(TransientEngineError, match=r"sent a malformed reply \(it has no "
                                                   r"choices\); it may pass on retry"):
        engine.complete(Request.chat("hi"))


def test_a_choice_without_text_or_usage_reads_as_empty_text_and_zero_tokens(
        json_body_server: Callable[[Any], str]) -> None:
    url = json_body_server({"choices": [{"message": {"role": "assistant", "content": None},
                                         "finish_reason": "tool_calls"}]})
    completion = OpenAIEngine("m", base_url=url, api_key="sk-test").complete(
        Request.chat("hi"))
    assert (completion.text, completion.finish_reason) == ("", "tool_calls")
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (0, 0)


def test_stream_cut_mid_way_is_transient(server: TestServer,
                                         make_engine: Callable[..., OpenAIEngine]) -> None:
    server.reply = "a long reply of many words that will be cut"
    server.inject("cut")
    with pytest.raises(TransientEngineError) as info:
        make_engine(stream=True).complete(Request.chat("hi"))
    assert type(info.value) is TransientEngineError
    assert len(server.requests) == 1


# -- deterministic failures: one request, at once, with what to fix -------------------------

@pytest.mark.parametrize("fault, error, advice", [
    ("400", EngineRequestError, "rejected the request"),
    ("401", EngineAuthError, "pass a valid key as api_key"),
    ("404", EngineRequestError, "no model 'test-model'"),
    ("context", ContextWindowError, "it does not fit the model's context window; shorten the "
                                    "prompt or lower max_tokens"),
])
def test_client_errors_fail_fast_with_advice(server: TestServer,
                                             make_engine: Callable[..., OpenAIEngine],
                                             fault: str, error: type, advice: str) -> None:
    engine = make_engine(max_retries=3)
    engine.complete(Request.chat("warm up"))
    server.reset()
    server.inject(fault)
    with pytest.raises(error, match=advice) as info:
        engine.complete(Request.chat("hi"))
    assert len(server.requests) == 1  # no retry, so no backoff either
    assert info.value.status == (400 if fault == "context" else int(fault))
    assert info.value.provider == "openai:test-model"
    assert isinstance(info.value, ContextWindowError) == (fault == "context")


@pytest.mark.parametrize("detail", [
    "Requested tokens (4142) exceed context window of 4096 (n_ctx=4096)",  # llama-cpp-python
    "the request exceeds the available context size, try increasing it",  # llama.cpp server
    "prompt is too long: 201234 tokens > 200000 maximum",  # Anthropic
])
def test_each_servers_wording_of_a_too_long_prompt_is_a_context_window_error(
        detail: str) -> None:
    error = status_error(400, detail, engine="e", where="http://x/v1", model="m",
                         key_advice="", retry_after=None, sdk_retries=0)
    assert type(error) is ContextWindowError
    assert str(error) == (f"e: http://x/v1 rejected the request (HTTP 400: {detail}): it does "
                          "not fit the model's context window; shorten the prompt or lower "
                          "max_tokens")


def test_unknown_model_names_the_model_list() -> None:
    with TestServer(models=["real-model"]) as srv:
        engine = OpenAIEngine("no-such-model", base_url=srv.base_url, max_retries=3)
        with pytest.raises(EngineRequestError, match="no model 'no-such-model'") as info:
            engine.complete(Request.chat("hi"))
        assert f"GET {srv.base_url}/models" in str(info.value)
        run_sync(engine.aclose())


def test_connection_refused_is_transient(make_engine: Callable[..., OpenAIEngine]) -> None:
    engine = OpenAIEngine("m", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout=1)
    with pytest.raises(TransientEngineError, match="connection to http://127.0.0.1:9/v1"):
        engine.complete(Request.chat("hi"))


# -- keys and URLs, as the SDK resolves them --------------------------------------------------

def test_env_base_url_and_key_are_honored(server: TestServer,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    engine = OpenAIEngine("test-model")
    assert engine.complete(Request.chat("hi")).text == "The answer is 4."
    assert server.requests[0].headers["authorization"] == "Bearer sk-from-env"
    server.inject("401")
    with pytest.raises(EngineAuthError, match="set OPENAI_API_KEY to a valid key"):
        engine.complete(Request.chat("hi"))
    run_sync(engine.aclose())


def test_local_server_without_a_key_gets_a_placeholder(
        server: TestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    engine = OpenAIEngine("test-model", base_url=server.base_url)
    assert engine.complete(Request.chat("hi")).text == "The answer is 4."
    assert server.requests[0].headers["authorization"] == f"Bearer {PLACEHOLDER_KEY}"
    server.inject("401")
    with pytest.raises(EngineAuthError, match="the server needs a key: set OPENAI_API_KEY"):
        engine.complete(Request.chat("hi"))
    run_sync(engine.aclose())


def test_missing_key_for_the_openai_api_names_the_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    engine = OpenAIEngine("gpt-4o-mini")  # constructing needs no key: nothing is sent yet
    with pytest.raises(EngineAuthError, match="Set OPENAI_API_KEY"):
        engine.complete(Request.chat("hi"))


def test_import_and_construction_do_not_load_the_sdk() -> None:
    code = ("import sys\n"
            "from textprop.engines.openai_compat import OpenAIEngine\n"
            "OpenAIEngine('gpt-4o-mini', base_url='http://127.0.0.1:9/v1')\n"
            "print('openai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def test_bad_arguments_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        OpenAIEngine("m", max_retries=-1)
    with pytest.raises(ValueError, match="timeout"):
        OpenAIEngine("m", timeout=0)
