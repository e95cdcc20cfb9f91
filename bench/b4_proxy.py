"""B4's counting proxy: one in front of each model server per cell, the same for every framework.

A stdlib HTTP server on 127.0.0.1 (OS-chosen port) that forwards every request to its
upstream OpenAI-compatible server unchanged and counts, per role, the chat-completion calls
and the `usage` tokens of their replies (plain JSON, or the SSE stream's usage chunk). The
role is the proxy's own label ("task" for the task model's server) or, on the server that
writes feedback, the kind of request, read from its prompt the way B1 reads it:

    feedback    textprop's and TextGrad's gradient engine ("gradient (feedback) engine")
    reduce      textprop's batch reduction ("condense several pieces of feedback")
    rewrite     textprop's and TextGrad's optimizer ("You are part of an optimization system")
    reflection  GEPA's proposer ("I provided an assistant with the following instructions")
    other       anything else

So no framework's own bookkeeping decides its calls or tokens.

    with CountingProxy("http://127.0.0.1:8765/v1", label="task") as proxy:
        ... proxy.base_url ...
        proxy.summary()   # {"task": {"calls": n, "failed": k, "prompt_tokens": ...}, ...}

With `log=PATH` every call is also appended to a JSON-lines file as it ends, and a proxy
started on an existing log counts on from it: a cell cut off and resumed by a later process
still reports every call it paid for.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HOP_HEADERS = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
               "trailers", "transfer-encoding", "upgrade", "host", "content-length",
               "accept-encoding"}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def classify(body: Any) -> str:
    """The kind of a request to the feedback server, from its messages."""
    messages = body.get("messages") if isinstance(body, dict) else None
    text = "\n".join(_text(m.get("content")) for m in messages or [] if isinstance(m, dict))
    if "gradient (feedback) engine" in text:
        return "feedback"
    if "condense several pieces of feedback" in text:
        return "reduce"
    if "You are part of an optimization system" in text:
        return "rewrite"
    if "I provided an assistant with the following instructions" in text:
        return "reflection"
    return "other"


class CountingProxy:
    """Forward to `upstream` (a base URL ending in /v1), counting calls and tokens by role.

    `label`: the role of every call (e.g. "task"); None classifies each request (`classify`).
    """

    def __init__(self, upstream: str, *, label: str | None = None,
                 timeout: float = 1800.0, log: Path | None = None) -> None:
        parts = urlsplit(upstream.rstrip("/"))
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or (443 if parts.scheme == "https" else 80)
        self.upstream_prefix = parts.path  # "/v1"
        self.https = parts.scheme == "https"
        self.label, self.timeout = label, timeout
        self.lock = threading.Lock()
        self.counts: dict[str, dict[str, float]] = {}
        self.busy_s = 0.0
        self.log = log
        self._httpd: ThreadingHTTPServer | None = None
        for entry in read_log(log):
            self._count(entry)
        if log is not None and log.exists() and log.stat().st_size:
            with open(log, "rb+") as out:  # a line a kill cut off must not swallow the next
                out.seek(-1, 2)
                if out.read(1) != b"\n":
                    out.write(b"\n")

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> CountingProxy:
        proxy = self

        class Handler(_Handler):
            app = proxy

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True, name="b4-proxy").start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> CountingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "start the proxy first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{self.upstream_prefix}"

    # -- counting ----------------------------------------------------------------------------
    def record(self, role: str, ok: bool, usage: dict | None, seconds: float) -> None:
        entry = {"t": round(time.time(), 3), "role": role, "ok": ok,
                 "prompt_tokens": int((usage or {}).get("prompt_tokens") or 0),
                 "completion_tokens": int((usage or {}).get("completion_tokens") or 0),
                 "seconds": round(seconds, 3)}
        with self.lock:
            self._count(entry)
            if self.log is not None:
                with open(self.log, "a", encoding="utf-8") as out:
                    out.write(json.dumps(entry) + "\n")

    def _count(self, entry: dict[str, Any]) -> None:
        row = self.counts.setdefault(entry["role"], {"calls": 0, "failed": 0,
                                                     "prompt_tokens": 0,
                                                     "completion_tokens": 0, "seconds": 0.0})
        row["calls"] += 1
        row["failed"] += 0 if entry["ok"] else 1
        row["prompt_tokens"] += entry["prompt_tokens"]
        row["completion_tokens"] += entry["completion_tokens"]
        row["seconds"] = round(row["seconds"] + entry["seconds"], 3)

    def summary(self) -> dict[str, dict[str, float]]:
        with self.lock:
            return {k: dict(v) for k, v in sorted(self.counts.items())}

    def connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return cls(self.upstream_host, self.upstream_port, timeout=self.timeout)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    app: CountingProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._forward(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._forward(self.rfile.read(length) if length else b"")

    def _forward(self, body: bytes) -> None:
        app = self.app
        path = urlsplit(self.path).path
        is_call = self.command == "POST" and path.rstrip("/").endswith("/chat/completions")
        parsed: Any = None
        if is_call:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        role = app.label or classify(parsed)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
        headers["Content-Length"] = str(len(body))
        started = time.perf_counter()
        conn = app.connection()
        try:
            conn.request(self.command, self.path, body=body or None, headers=headers)
            reply = conn.getresponse()
            payload = reply.read()  # whole: SSE replies are relayed at the end
        except OSError as error:
            conn.close()
            if is_call:
                app.record(role, False, None, time.perf_counter() - started)
            message = json.dumps({"error": {"message": f"b4 proxy: upstream: {error}",
                                            "type": "server_error"}}).encode()
            self._send(502, message, "application/json")
            return
        conn.close()
        if is_call:
            app.record(role, 200 <= reply.status < 300, _usage(payload),
                       time.perf_counter() - started)
        self._send(reply.status, payload, reply.getheader("Content-Type") or "application/json",
                   [(k, v) for k, v in reply.getheaders() if k.lower() not in HOP_HEADERS
                    and k.lower() != "content-type"])

    def _send(self, status: int, payload: bytes, content_type: str,
              extra: list[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)


def read_log(log: Path | None) -> list[dict[str, Any]]:
    """The calls a log holds; a last line cut off by a kill is ignored."""
    if log is None or not log.exists():
        return []
    entries = []
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


def _usage(payload: bytes) -> dict | None:
    """`usage` of a JSON reply, or of the last SSE chunk that has one."""
    try:
        return (json.loads(payload) or {}).get("usage")
    except ValueError:
        pass
    usage = None
    for line in payload.decode("utf-8", "replace").splitlines():
        if line.startswith("data:") and "usage" in line:
            try:
                usage = json.loads(line[5:]).get("usage") or usage
            except ValueError:
                continue
    return usage
