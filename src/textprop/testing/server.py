"""A real OpenAI-compatible HTTP server with fault injection, for tests and benchmarks.

Engines are tested against real HTTP, not mocked SDKs: the SDK's own retries, timeouts and
parsing run exactly as in production. The server answers

    POST /v1/chat/completions   OpenAI chat completions, plain or `stream: true` (SSE)
    POST /v1/messages           a minimal Anthropic Messages endpoint (non-streaming)
    GET  /v1/models             the model list
    GET  /stats                 request count, in-flight and maximum in-flight requests

    with TestServer(latency=0.2, reply="hello") as srv:
        srv.inject("429", Fault("429", retry_after=1), "cut")   # the next three model calls
        engine = OpenAIEngine("any-model", base_url=srv.base_url)
        ...
        srv.requests, srv.max_in_flight

Faults apply, in order, to the next model calls (chat completions or messages):
`429` (with a Retry-After header), `500`, `401` (the message echoes the key it got, as a
careless proxy would: engines must keep it out of their errors), `400`, `404`, `context`
(a 400 in OpenAI's words for a prompt longer than the model's context), `hang`
(no answer until the client gives up), `malformed` (200 with a body that is not JSON) and
`cut` (the body or SSE stream stops mid-way and the connection closes).

Replies: `reply` is a canned text, a dict (sent as JSON), a callable `body -> str | dict`, or
None to echo the last user message; `rules` map substrings of the last user message to replies
first. When a request asks for JSON (`response_format`, or Anthropic's `output_config`) and
a canned or echoed reply is not JSON, the server answers with the smallest instance of the
schema, its strings set to the reply; a callable's text is sent as is (to test bad replies).
Usage counts words as tokens; `max_tokens` (in words) truncates the reply with finish_reason
"length"; `stop` cuts it at the first stop string.

Timing: `latency` delays every successful reply (errors answer at once); each request's
arrival and end are recorded, and `max_in_flight` shows how many were served at once.

Run it for benchmarks:

    python -m textprop.testing.server --port 8123 --latency 0.2 --reply "ok" --fault 429:1
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import select
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

FAULT_KINDS = ("429", "500", "401", "400", "404", "context", "hang", "malformed", "cut")

Reply = str | Mapping[str, Any] | list | Callable[[dict], Any]


@dataclass(frozen=True)
class Fault:
    """One injected failure. `retry_after` (seconds) is sent as Retry-After with a 429."""

    kind: str
    retry_after: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; expected one of "
                             f"{', '.join(FAULT_KINDS)}")

    @classmethod
    def parse(cls, spec: str | Fault) -> Fault:
        """`"429"`, `"429:1.5"` (Retry-After 1.5 s), `"cut"` ... or a Fault as is."""
        if isinstance(spec, Fault):
            return spec
        kind, _, arg = spec.partition(":")
        return cls(kind, float(arg) if arg else None)


@dataclass
class RecordedRequest:
    """What reached the server: times are `time.monotonic()` seconds.

    `status` is noted as the status line goes out, so it is set by the time a client has the
    reply; `ended` comes just after the last byte: call `TestServer.wait_idle()` before
    reading it.
    """

    method: str
    path: str
    body: Any
    headers: dict[str, str]
    arrived: float
    ended: float | None = None
    status: int | None = None  # None: no response was sent (hang, or a cut before headers)
    fault: str | None = None

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.arrived


class TestServer:
    """An OpenAI-compatible server on 127.0.0.1 (OS-chosen port by default) in a thread."""

    __test__ = False  # not a pytest test class

    def __init__(self, *, latency: float = 0.0, reply: Reply | None = None,
                 rules: Iterable[tuple[str, Reply]] = (), models: Sequence[str] | None = None,
                 hang_s: float = 30.0, host: str = "127.0.0.1", port: int = 0) -> None:
        self.latency = latency
        self.reply = reply
        self.rules = list(rules)
        self.models = list(models) if models is not None else None
        self.hang_s = hang_s
        self._address = (host, port)
        self._lock = threading.Condition()
        self._faults: deque[Fault] = deque()
        self._records: list[RecordedRequest] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> TestServer:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _HTTPServer(self._address, _Handler, self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={
            "poll_interval": 0.02}, name="textprop-testserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop every open connection (hung requests end at once)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> TestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not running: use `with TestServer() as srv:`")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """The server root, e.g. for the Anthropic SDK, which adds /v1 itself."""
        return f"http://{self._address[0]}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (ending in /v1)."""
        return f"{self.url}/v1"

    # -- control and observation -------------------------------------------------------------

    def inject(self, *faults: str | Fault) -> TestServer:
        """Fail the next model calls, one fault each, in order."""
        parsed = [Fault.parse(f) for f in faults]
        with self._lock:
            self._faults.extend(parsed)
        return self

    @property
    def pending_faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request but GET /stats, in arrival order."""
        with self._lock:
            return list(self._records)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The most model calls that were being served at the same time."""
        with self._lock:
            return self._max_in_flight

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no model call is being served; False on timeout.

        A client can read a whole reply a moment before the server thread records its end,
        so assert on `requests[...].ended` or `in_flight` only after this.
        """
        with self._lock:
            return self._lock.wait_for(lambda: self._in_flight == 0, timeout)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": len(self._records), "in_flight": self._in_flight,
                    "max_in_flight": self._max_in_flight,
                    "pending_faults": [f.kind for f in self._faults]}

    def reset(self) -> None:
        """Forget recorded requests, pending faults and the in-flight maximum."""
        with self._lock:
            self._records.clear()
            self._faults.clear()
            self._max_in_flight = self._in_flight

    # -- serving (called from handler threads) ------------------------------------------------

    def _record(self, handler: _Handler, body: Any) -> RecordedRequest:
        record = RecordedRequest(handler.command, urlsplit(handler.path).path, body,
                                 {k.lower(): v for k, v in handler.headers.items()},
                                 time.monotonic())
        with self._lock:
            self._records.append(record)
        handler.record = record  # its status is noted as the status line goes out
        return record

    def _serve_model_call(self, handler: _Handler, api: str) -> None:
        raw = handler.read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = self._record(handler, body if body is not None else raw.decode("utf-8", "replace"))
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        record.fault = fault.kind if fault else None
        try:
            self._answer(handler, api, body, fault)
        finally:
            handler.record = None
            record.ended = time.monotonic()
            with self._lock:
                self._in_flight -= 1
                self._lock.notify_all()

    def _answer(self, handler: _Handler, api: str, body: Any, fault: Fault | None) -> int | None:
        if not isinstance(body, dict):
            return handler.send_error_json(api, 400, "invalid_request_error",
                                           "the request body must be a JSON object")
        model = str(body.get("model", ""))
        if fault is not None and fault.kind in _ERROR_FAULTS:
            status, kind, message = _ERROR_FAULTS[fault.kind]
            if fault.kind == "401":
                message += f" Incorrect API key provided: {handler.bearer_key()}."
            elif fault.kind == "404":
                message = f"The model `{model}` does not exist or you do not have access to it."
            headers = {}
            if fault.kind == "429" and fault.retry_after is not None:
                headers["Retry-After"] = f"{fault.retry_after:g}"
            return handler.send_error_json(api, status, kind, message, headers)
        if fault is not None and fault.kind == "hang":
            handler.hang(self.hang_s, self._stopping)
            return None
        if self.models is not None and model not in self.models:
            return handler.send_error_json(
                api, 404, "not_found_error",
                f"The model `{model}` does not exist or you do not have access to it.")
        stream = bool(body.get("stream"))
        if stream and api == "anthropic":
            return handler.send_error_json(api, 400, "invalid_request_error",
                                           "this test server's /v1/messages does not stream")
        if self.latency:
            self._stopping.wait(self.latency)
        if fault is not None and fault.kind == "malformed":
            return handler.send_bytes(200, b'{"id": "broken", "choices": [{"message": ',
                                      "application/json")
        text, finish = self._reply_text(body, api)
        cut = fault is not None and fault.kind == "cut"
        if api == "anthropic":
            return handler.send_bytes(200, json.dumps(self._message(body, text, finish)).encode(),
                                      "application/json", cut=cut)
        if stream:
            return handler.send_stream(self._chunks(body, text, finish), cut=cut)
        return handler.send_bytes(200, json.dumps(self._completion(body, text, finish)).encode(),
                                  "application/json", cut=cut)

    # -- replies -------------------------------------------------------------------------------

    def _reply_text(self, body: dict, api: str) -> tuple[str, str]:
        prompt = last_user_text(body)
        choice: Any = self.reply
        for needle, reply in self.rules:
            if needle in prompt:
                choice = reply
                break
        if choice is None:
            choice = prompt
        verbatim = callable(choice)  # a callable's text is sent as is, even if not JSON
        if verbatim:
            choice = choice(body)
        wants_json, schema = _requested_json(body)
        if isinstance(choice, Mapping | list):
            text = json.dumps(choice)
        else:
            text = str(choice)
            if wants_json and not verbatim and not _is_json(text):
                text = json.dumps(_instance(schema, schema, text) if schema else {"reply": text})
        finish = "stop"
        stops = body.get("stop") if api == "openai" else body.get("stop_sequences")
        for stop in [stops] if isinstance(stops, str) else (stops or []):
            if stop and stop in text:
                text = text[:text.index(stop)]
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        words = text.split()
        if isinstance(limit, int) and len(words) > limit:
            text, finish = " ".join(words[:limit]), "length"
        return text, finish

    def _usage(self, body: dict, text: str) -> tuple[int, int]:
        parts = [m.get("content") for m in body.get("messages") or [] if isinstance(m, dict)]
        parts.append(body.get("system"))
        return sum(len(_text_of(p).split()) for p in parts), len(text.split())

    def _completion(self, body: dict, text: str, finish: str) -> dict:
        prompt_tokens, completion_tokens = self._usage(body, text)
        return {
            "id": f"chatcmpl-{next(self._ids)}", "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model", ""),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    def _chunks(self, body: dict, text: str, finish: str) -> list[dict]:
        base = {"id": f"chatcmpl-{next(self._ids)}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body.get("model", "")}

        def chunk(delta: dict, finish_reason: str | None = None) -> dict:
            return {**base, "choices": [{"index": 0, "delta": delta,
                                         "finish_reason": finish_reason}]}

        chunks = [chunk({"role": "assistant", "content": ""})]
        chunks += [chunk({"content": piece}) for piece in re.findall(r"\s*\S+\s*", text)]
        chunks.append(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            prompt_tokens, completion_tokens = self._usage(body, text)
            chunks.append({**base, "choices": [], "usage": {
                "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}})
        return chunks

    def _message(self, body: dict, text: str, finish: str) -> dict:
        input_tokens, output_tokens = self._usage(body, text)
        return {
            "id": f"msg_{next(self._ids)}", "type": "message", "role": "assistant",
            "model": body.get("model", ""), "content": [{"type": "text", "text": text}],
            "stop_reason": "max_tokens" if finish == "length" else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }


# status, error type, message of the faults that are plain HTTP errors
_ERROR_FAULTS: dict[str, tuple[int, str, str]] = {
    "429": (429, "rate_limit_error", "Rate limit reached (injected fault)."),
    "500": (500, "server_error", "The server had an error (injected fault)."),
    "401": (401, "authentication_error", "Invalid API key (injected fault)."),
    "400": (400, "invalid_request_error", "Invalid request (injected fault)."),
    "404": (404, "not_found_error", ""),
    "context": (400, "invalid_request_error", "This model's maximum context length is 4096 "
                "tokens. However, your messages resulted in 5000 tokens (injected fault)."),
}


def last_user_text(body: Mapping[str, Any]) -> str:
    """The text of the last user message of a chat or messages request body."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _requested_json(body: Mapping[str, Any]) -> tuple[bool, Mapping[str, Any] | None]:
    """Whether the request asks for JSON, and the schema it gives, in any of the dialects."""
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_schema":
            return True, (fmt.get("json_schema") or {}).get("schema")
        if fmt.get("type") == "json_object":
            return True, fmt.get("schema")
    output = (body.get("output_config") or {}).get("format")
    if isinstance(output, dict) and output.get("type") == "json_schema":
        return True, output.get("schema")
    return False, None


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _instance(schema: Any, root: Mapping[str, Any], text: str) -> Any:
    """The smallest value matching `schema`, with `text` wherever a string goes."""
    if not isinstance(schema, Mapping):
        return text
    if "$ref" in schema:
        target: Any = root
        for part in str(schema["$ref"]).lstrip("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return _instance(target, root, text)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _instance(schema[key][0], root, text)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        return {k: _instance(v, root, text) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [_instance(schema.get("items"), root, text)] * int(schema.get("minItems", 0))
    return {"integer": 0, "number": 0.0, "boolean": False, "null": None}.get(str(kind), text)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], handler: type[_Handler], app: TestServer) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client hung up mid-reply (its timeout, or a test): not a server bug
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect
    timeout = 60  # idle keep-alive connections are dropped after this many seconds
    server: _HTTPServer
    record: RecordedRequest | None = None  # the request being answered, if recorded

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm and
        # the client's delayed ACK add ~40 ms to every reply.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: tests and benchmarks read `requests` and `/stats` instead."""

    def do_GET(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        app = self.server.app
        if path == "/stats":
            self.send_bytes(200, json.dumps(app.stats()).encode(), "application/json")
            return
        record = app._record(self, None)
        if path in ("/v1/models", "/models"):
            names = app.models if app.models is not None else ["textprop-test"]
            models = [{"id": n, "object": "model", "created": 0, "owned_by": "textprop"}
                      for n in names]
            payload = json.dumps({"object": "list", "data": models}).encode()
            self.send_bytes(200, payload, "application/json")
        else:
            self.send_error_json("openai", 404, "not_found_error", f"no route GET {path}")
        self.record = None
        record.ended = time.monotonic()

    def do_POST(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        if path in ("/v1/chat/completions", "/chat/completions"):
            self.server.app._serve_model_call(self, "openai")
        elif path in ("/v1/messages", "/messages"):
            self.server.app._serve_model_call(self, "anthropic")
        else:
            self.read_body()
            self.send_error_json("openai", 404, "not_found_error", f"no route POST {path}")

    # -- helpers -----------------------------------------------------------------------------

    def send_response(self, code: int, message: str | None = None) -> None:
        # Noted before any byte goes out: a client that has read the reply sees its status.
        if self.record is not None:
            self.record.status = code
        super().send_response(code, message)

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def bearer_key(self) -> str:
        auth = self.headers.get("Authorization", "")
        return auth.removeprefix("Bearer ").strip() or self.headers.get("X-Api-Key", "")

    def send_bytes(self, status: int, payload: bytes, content_type: str, *,
                   headers: Mapping[str, str] | None = None, cut: bool = False) -> int:
        """Send a whole body; with `cut`, announce all of it but close after half."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if cut:
            self.wfile.write(payload[: len(payload) // 2])
            self.close_connection = True
        else:
            self.wfile.write(payload)
        return status

    def send_error_json(self, api: str, status: int, kind: str, message: str,
                        headers: Mapping[str, str] | None = None) -> int:
        if api == "anthropic":
            error: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            error = {"error": {"message": message, "type": kind, "param": None,
                               "code": {429: "rate_limit_exceeded", 401: "invalid_api_key",
                                        404: "model_not_found"}.get(status)}}
        return self.send_bytes(status, json.dumps(error).encode(), "application/json",
                               headers=headers)

    def send_stream(self, chunks: list[dict], *, cut: bool = False) -> int:
        """Server-sent events in chunked encoding; `cut` drops the connection mid-stream."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        events = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks]
        events.append(b"data: [DONE]\n\n")
        if cut:
            events = events[: max(1, len(events) // 2)]
        for event in events:
            self.wfile.write(f"{len(event):X}\r\n".encode() + event + b"\r\n")
        if cut:
            self.close_connection = True  # no terminating chunk: the stream ends mid-way
        else:
            self.wfile.write(b"0\r\n\r\n")
        return 200

    def hang(self, seconds: float, stopping: threading.Event) -> None:
        """Answer nothing until the client hangs up, the server stops, or `seconds` pass."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not stopping.is_set():
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            if readable:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        break  # the client closed the connection (its timeout fired)
                except OSError:
                    break
                stopping.wait(0.05)
        self.close_connection = True


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until interrupted: `python -m textprop.testing.server --port 8123 ...`."""
    parser = argparse.ArgumentParser(prog="python -m textprop.testing.server",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123, help="0 lets the OS choose")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--reply", default=None, help="canned reply text (default: echo)")
    parser.add_argument("--model", action="append", dest="models",
                        help="a known model (repeatable; default: accept any model)")
    parser.add_argument("--fault", action="append", default=[],
                        help=f"fault for the next call, in order: {', '.join(FAULT_KINDS)}; "
                             "429:SECONDS sets Retry-After")
    parser.add_argument("--hang", type=float, default=30.0, help="seconds a 'hang' lasts")
    args = parser.parse_args(argv)
    server = TestServer(latency=args.latency, reply=args.reply, models=args.models,
                        hang_s=args.hang, host=args.host, port=args.port)
    server.inject(*args.fault)
    with server:
        print(f"textprop test server: {server.base_url} (stats: {server.url}/stats)", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
