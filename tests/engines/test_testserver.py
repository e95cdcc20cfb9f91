"""The fault-injecting OpenAI-compatible test server, spoken to with plain HTTP."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from textprop.testing import Fault, TestServer


@pytest.fixture
def server() -> Iterator[TestServer]:
    with TestServer() as srv:
        yield srv


def post(srv: TestServer, body: dict[str, Any], path: str = "/v1/chat/completions",
         timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json",
                                                      "Authorization": "Bearer k-123"})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def get(srv: TestServer, path: str) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def chat(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                       {"role": "user", "content": prompt}], **extra}


def test_echoes_the_last_user_message_with_word_usage(server: TestServer) -> None:
    status, headers, raw = post(server, chat("two words"))
    reply = json.loads(raw)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert reply["object"] == "chat.completion" and reply["model"] == "m"
    assert reply["choices"][0]["message"] == {"role": "assistant", "content": "two words"}
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert reply["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}


def test_canned_reply_rules_and_callables() -> None:
    rules = [("weather", "sunny"), ("json", {"ok": True}),
             ("shout", lambda body: body["messages"][-1]["content"].upper())]
    with TestServer(reply="default", rules=rules) as srv:
        def text(prompt: str) -> str:
            return json.loads(post(srv, chat(prompt))[2])["choices"][0]["message"]["content"]

        assert text("what's the weather?") == "sunny"
        assert json.loads(text("give json")) == {"ok": True}
        assert text("shout this") == "SHOUT THIS"
        assert text("anything else") == "default"


def test_json_schema_requests_get_valid_json_for_the_schema(server: TestServer) -> None:
    schema = {"type": "object", "required": ["answer", "score"], "properties": {
        "answer": {"type": "string"}, "score": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "kind": {"enum": ["a", "b"]}, "item": {"$ref": "#/$defs/item"}},
        "$defs": {"item": {"type": "object", "properties": {"ok": {"type": "boolean"}}}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}
    reply = json.loads(post(server, chat("hello", response_format=fmt))[2])
    assert json.loads(reply["choices"][0]["message"]["content"]) == {
        "answer": "hello", "score": 0, "tags": [], "kind": "a", "item": {"ok": False}}

    llama_cpp_style = {"type": "json_object", "schema": {"type": "object", "properties": {
        "x": {"type": "string"}}}}
    reply = json.loads(post(server, chat("hi", response_format=llama_cpp_style))[2])
    assert json.loads(reply["choices"][0]["message"]["content"]) == {"x": "hi"}

    server.reply = lambda body: "not JSON"  # a callable's reply is sent as is, to test errors
    reply = json.loads(post(server, chat("hi", response_format=llama_cpp_style))[2])
    assert reply["choices"][0]["message"]["content"] == "not JSON"


def test_max_tokens_truncates_with_finish_reason_length(server: TestServer) -> None:
    reply = json.loads(post(server, chat("one two three four", max_tokens=2))[2])
    assert reply["choices"][0]["message"]["content"] == "one two"
    assert reply["choices"][0]["finish_reason"] == "length"


def test_streams_server_sent_events_ending_in_done(server: TestServer) -> None:
    status, headers, raw = post(server, chat("a b c", stream=True,
                                             stream_options={"include_usage": True}))
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    events = [line.removeprefix("data: ") for line in raw.decode().split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "a b c"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 3


def test_models_and_stats_endpoints() -> None:
    with TestServer(models=["small", "large"]) as srv:
        assert [m["id"] for m in get(srv, "/v1/models")["data"]] == ["small", "large"]
        status, _, raw = post(srv, {"model": "huge", "messages": []})
        assert status == 404 and "huge" in json.loads(raw)["error"]["message"]
        srv.inject("500")
        assert srv.wait_idle()
        assert get(srv, "/stats") == {"requests": 2, "in_flight": 0, "max_in_flight": 1,
                                      "pending_faults": ["500"]}


@pytest.mark.parametrize("kind, status", [("429", 429), ("500", 500), ("401", 401),
                                          ("400", 400), ("404", 404)])
def test_status_faults_apply_to_the_next_request_only(server: TestServer, kind: str,
                                                      status: int) -> None:
    server.inject(kind)
    got, _, raw = post(server, chat("hi"))
    assert got == status and "message" in json.loads(raw)["error"]
    assert post(server, chat("hi"))[0] == 200
    assert [r.fault for r in server.requests] == [kind, None]


def test_429_sends_retry_after_and_401_echoes_the_key(server: TestServer) -> None:
    server.inject(Fault("429", retry_after=1.5), "401")
    assert post(server, chat("hi"))[1]["Retry-After"] == "1.5"
    assert "k-123" in json.loads(post(server, chat("hi"))[2])["error"]["message"]


def test_malformed_is_a_200_whose_body_is_not_json(server: TestServer) -> None:
    server.inject("malformed")
    status, _, raw = post(server, chat("hi"))
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(raw)


def test_cut_closes_the_connection_mid_body(server: TestServer) -> None:
    server.inject("cut")
    with pytest.raises(http.client.IncompleteRead):
        post(server, chat("one two three"))
    server.inject("cut")
    with pytest.raises(http.client.IncompleteRead):  # chunked stream without its last chunk
        post(server, chat("one two three four five six", stream=True))


def test_hang_answers_nothing_and_ends_when_the_client_gives_up(server: TestServer) -> None:
    server.inject("hang")
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        post(server, chat("hi"), timeout=0.3)
    assert time.monotonic() - start >= 0.3
    assert server.wait_idle(timeout=10)  # the server lets go when the client hangs up,
    [record] = server.requests           # long before its 30 s hang would end
    assert record.fault == "hang" and record.status is None
    assert record.duration is not None and record.duration < 10


def test_serves_requests_concurrently_and_measures_in_flight() -> None:
    # Measured by the server, not by a clock: all six in flight at once means none waited
    # for another (a wall-time bound failed on a loaded machine). 1 s leaves the threads
    # ample time to arrive before the first reply.
    with TestServer(latency=1.0) as srv:
        threads = [threading.Thread(target=post, args=(srv, chat(f"n{i}"))) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert srv.max_in_flight == 6
        assert srv.wait_idle()
        records = srv.requests
        assert all(r.ended is not None and r.ended - r.arrived >= 1.0 for r in records)
        assert sorted(r.body["messages"][-1]["content"] for r in records) == [
            f"n{i}" for i in range(6)]
        srv.reset()
        assert srv.requests == [] and srv.max_in_flight == 0


def test_anthropic_messages_endpoint(server: TestServer) -> None:
    body = {"model": "claude", "max_tokens": 3, "system": "sys",
            "messages": [{"role": "user", "content": "one two three four"}]}
    status, _, raw = post(server, body, path="/v1/messages")
    reply = json.loads(raw)
    assert status == 200 and reply["type"] == "message"
    assert reply["content"] == [{"type": "text", "text": "one two three"}]
    assert reply["stop_reason"] == "max_tokens"
    assert reply["usage"] == {"input_tokens": 5, "output_tokens": 3}
    server.inject("401")
    status, _, raw = post(server, body, path="/v1/messages")
    assert status == 401 and json.loads(raw)["type"] == "error"


def test_unknown_fault_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        Fault.parse("503")
    assert Fault.parse("429:2") == Fault("429", retry_after=2.0)


def test_command_line_server_for_benchmarks() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "textprop.testing.server", "--port", "0", "--latency", "0",
         "--reply", "pong", "--fault", "500"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("textprop test server: http://127.0.0.1:"), proc.stderr.read()
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("POST", "/v1/chat/completions", json.dumps(chat("ping")))
        first = conn.getresponse()
        assert first.status == 500 and first.read()  # the --fault applies to the first call
        conn.request("POST", "/v1/chat/completions", json.dumps(chat("ping")))
        reply = json.loads(conn.getresponse().read())
        assert reply["choices"][0]["message"]["content"] == "pong"
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=5)
