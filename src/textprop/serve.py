"""`textprop serve`: the batched embedded engine behind an OpenAI-compatible HTTP endpoint.

Other clients (TextGrad's `ChatExternalClient`, GEPA, the openai SDK, a user's own tools) can
then use the same local models at the same throughput as textprop itself: every HTTP request
runs in its own server thread and waits on the one `LocalEngine`, so concurrent requests join
one llama.cpp batch. Endpoints:

    GET  /v1/models              the one model served
    POST /v1/chat/completions    non-streaming (and `stream: true` as one SSE chunk);
                                 `response_format` {"type": "json_schema", "json_schema":
                                 {"schema": ...}} or {"type": "json_object"[, "schema": ...]}

Honoured: messages (text content), temperature, max_tokens / max_completion_tokens, seed,
stop. top_p and zero penalties are accepted and ignored (sampling at temperature > 0 uses
llama-cpp-python's defaults, top-p 0.95); non-zero penalties, n > 1, tools and logprobs are
refused with a 400, so a client never silently gets something other than it asked for.
The stdlib HTTP server keeps this dependency-free; it binds 127.0.0.1 by default. The engine
is batched (`n_parallel` 8) unless `--n-parallel 1` asks for the deterministic one.

A client that disconnects before its answer (a timeout, a killed process) cancels the call:
the batched engine drops its sequence at the next decode step instead of generating it to
the end for nobody, which on a 2-core machine would hold up every other request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from textprop.engines.base import Engine, Message, Request
from textprop.errors import EngineError, EngineReplyError, EngineRequestError

DEFAULT_PORT = 8765
_ROLES = {"system", "user", "assistant"}
_IGNORED_ZERO = ("frequency_penalty", "presence_penalty")
_REFUSED = ("tools", "functions", "logprobs", "top_logprobs", "logit_bias")


POLL_S = 0.25  # how often a waiting request checks whether its client is still there


class ClientGone(Exception):
    """The client closed its connection before its answer: nothing is sent."""


class BadRequest(ValueError):
    """The request cannot be served as asked; sent as a 400 with an OpenAI error body."""


def to_request(body: Mapping[str, Any]) -> Request:
    """A textprop `Request` from an OpenAI chat-completions body; raises `BadRequest`."""
    if not isinstance(body, Mapping):
        raise BadRequest("the body must be a JSON object")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise BadRequest("'messages' must be a non-empty list")
    messages = []
    for item in raw:
        role = item.get("role") if isinstance(item, Mapping) else None
        if role == "developer":
            role = "system"
        if role not in _ROLES:
            raise BadRequest(f"unsupported message role {role!r}")
        messages.append(Message(role, _text(item.get("content"))))
    if (n := body.get("n")) not in (None, 1):
        raise BadRequest(f"n={n} is not supported; send one request per choice")
    for key in _IGNORED_ZERO:
        if body.get(key) not in (None, 0, 0.0):
            raise BadRequest(f"{key} is not supported by the embedded engine")
    for key in _REFUSED:
        if body.get(key) not in (None, False, [], {}):
            raise BadRequest(f"{key} is not supported by the embedded engine")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise BadRequest("'stop' must be a string or a list of strings")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise BadRequest("max_tokens must be a positive integer")
    temperature = body.get("temperature")
    temperature = 1.0 if temperature is None else temperature  # OpenAI's default
    if not isinstance(temperature, int | float) or temperature < 0:
        raise BadRequest("temperature must be a number >= 0")
    seed = body.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise BadRequest("seed must be an integer")
    return Request(messages=tuple(messages), temperature=float(temperature),
                   max_tokens=max_tokens, seed=seed if seed is not None else 0,
                   stop=tuple(stop or ()), json_schema=_schema(body.get("response_format")))


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (isinstance(part, Mapping) and part.get("type") == "text"):
                raise BadRequest("only text content parts are supported")
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise BadRequest("message content must be a string or a list of text parts")


def _schema(response_format: Any) -> Mapping[str, Any] | None:
    if response_format is None:
        return None
    if not isinstance(response_format, Mapping):
        raise BadRequest("response_format must be an object")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if not isinstance(schema, Mapping):
            raise BadRequest("response_format.json_schema.schema must be a JSON schema")
        return schema
    if kind == "json_object":  # llama-cpp-python's form may carry a schema
        schema = response_format.get("schema")
        return schema if isinstance(schema, Mapping) else {"type": "object"}
    raise BadRequest(f"unsupported response_format type {kind!r}")


class Server:
    """`engine` behind the OpenAI endpoints on `host:port` (port 0: the OS picks one)."""

    def __init__(self, engine: Engine, *, model_id: str | None = None,
                 host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        self.engine = engine
        self.model_id = model_id or engine.name
        # OpenAI's field for the backend configuration: answers are comparable under one
        self.system_fingerprint: str | None = getattr(engine, "system_fingerprint", None)
        self.created = int(time.time())
        self._httpd = _HTTPServer((host, port), _Handler, self)
        self._thread: threading.Thread | None = None
        # Calls run on one event loop, so a request whose client left can be cancelled.
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever,
                                             name="textprop-serve-calls", daemon=True)
        self._loop_thread.start()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self._httpd.server_address[0]}:{self.port}/v1"

    def serve_forever(self) -> None:
        self._httpd.serve_forever(poll_interval=0.1)

    def start(self) -> Server:
        """Serve in a background thread (tests, embedding)."""
        self._thread = threading.Thread(target=self.serve_forever, name="textprop-serve",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def models(self) -> dict[str, Any]:
        model = {"id": self.model_id, "object": "model", "created": self.created,
                 "owned_by": "textprop"}
        if self.system_fingerprint:  # not an OpenAI field here: how a client learns it first
            model["system_fingerprint"] = self.system_fingerprint
        return {"object": "list", "data": [model]}

    def complete(self, request: Request, gone: Callable[[], bool]) -> Any:
        """The engine's answer; cancelled (`ClientGone`) as soon as `gone()` says so."""
        call = asyncio.run_coroutine_threadsafe(self.engine.acomplete(request), self._loop)
        while True:
            try:
                return call.result(timeout=POLL_S)
            except concurrent.futures.TimeoutError:
                if gone():
                    call.cancel()
                    raise ClientGone from None

    def chat(self, body: Mapping[str, Any],
             gone: Callable[[], bool] = lambda: False) -> dict[str, Any]:
        request = to_request(body)
        try:
            completion = self.complete(request, gone)
            text, finish = completion.text, completion.finish_reason
            usage = completion.usage
            prompt_tokens, completion_tokens = usage.input_tokens, usage.output_tokens
        except EngineReplyError as exc:  # not valid JSON (cut at max_tokens): send it as is
            text, finish = exc.reply_text or "", exc.finish_reason
            usage = exc.completion.usage if exc.completion is not None else None
            prompt_tokens = usage.input_tokens if usage else 0
            completion_tokens = usage.output_tokens if usage else 0
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
            "created": int(time.time()), "model": self.model_id,
            "system_fingerprint": self.system_fingerprint,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": finish or "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler], app: Server) -> None:
        self.app = app
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send(200, self.server.app.models())
        elif self.path.rstrip("/") in ("", "/health"):
            self._send(200, {"status": "ok"})
        else:
            self._error(404, "not_found", f"no route {self.path}")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._error(404, "not_found", f"no route {self.path}")
            return
        try:
            body = json.loads(raw or b"null")
            reply = self.server.app.chat(body, self._client_gone)
        except ClientGone:
            self.close_connection = True
            return
        except (json.JSONDecodeError, BadRequest, EngineRequestError) as exc:
            self._error(400, "invalid_request_error", str(exc))
            return
        except EngineError as exc:
            self._error(500, "server_error", str(exc))
            return
        if isinstance(body, Mapping) and body.get("stream"):
            self._stream(reply)
        else:
            self._send(200, reply)

    def _client_gone(self) -> bool:
        """Whether the client closed the connection (it sends nothing while it waits)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, kind: str, message: str) -> None:
        self._send(status, {"error": {"message": message, "type": kind, "param": None,
                                      "code": None}})

    def _stream(self, reply: dict[str, Any]) -> None:
        """The whole answer as one SSE chunk, then the finish chunk and [DONE]."""
        choice = reply["choices"][0]
        base = {"id": reply["id"], "object": "chat.completion.chunk",
                "created": reply["created"], "model": reply["model"]}
        events = [
            {**base, "choices": [{"index": 0, "delta": choice["message"],
                                  "finish_reason": None}]},
            {**base, "choices": [{"index": 0, "delta": {},
                                  "finish_reason": choice["finish_reason"]}],
             "usage": reply["usage"]},
        ]
        data = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events)
        data += b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main(model: str = "local", port: int = DEFAULT_PORT, host: str = "127.0.0.1",
         n_parallel: int | None = None, cpu_lock: str | None = None) -> int:
    """Run the server until interrupted (`textprop serve`)."""
    from pathlib import Path

    from textprop.engines.local import BATCH_N_PARALLEL, LocalEngine
    from textprop.engines.registry import get_engine

    # Serving is for throughput: batched unless told otherwise (--n-parallel 1 is the
    # byte-for-byte deterministic engine).
    kwargs: dict[str, Any] = {"cpu_lock": cpu_lock} if cpu_lock else {}
    if n_parallel is not None or "+batch" not in model:
        kwargs["n_parallel"] = n_parallel or BATCH_N_PARALLEL
    if model.startswith("local") or model.startswith("llamacpp:"):
        engine = get_engine(model, **kwargs)
    else:  # a path to a GGUF file
        engine = LocalEngine(Path(model), **kwargs)
    server = Server(engine, host=host, port=port)
    print(f"textprop serve: {engine.name} at {server.base_url} "
          f"(model id {server.model_id!r}); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        close = getattr(engine, "close", None)
        if close is not None:
            close()
    return 0
