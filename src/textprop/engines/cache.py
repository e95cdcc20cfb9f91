"""A persistent completion cache in SQLite, wrapping any engine.

Record a run once, then rerun it for free, or replay it offline:

    engine = Cache(provider, "run.sqlite3")                 # read-write: hits are free
    engine = Cache(provider, "run.sqlite3", mode="replay")  # never calls provider; a miss raises

Modes:
    "readwrite"  serve recorded answers; on a miss call the inner engine and record its answer.
    "replay"     serve recorded answers only; a miss raises `CacheMissError` (offline reruns,
                 deterministic tests). The inner engine is never called.
    "refresh"    always call the inner engine and overwrite the recorded answer (re-record).
    "off"        pass through; the cache file is never touched.

The key is the sha256 of a canonical JSON of everything that determines the answer: the inner
engine's `name`, `Request.model`, the messages, and every sampling parameter (temperature,
max_tokens, seed, stop, json_schema). `Request.role` is a metering tag and is left out, so a
forward call and a loss call with the same prompt share one answer. The key uses no Python
`hash()` and no pickle, so it is the same across processes, machines and Python versions.

Rows hold the canonical request and the completion as JSON, never the engine object, so no
API key or client state can end up on disk. A reply that is not the JSON its request asked
for (`EngineReplyError` carrying its completion) is recorded too, and a hit raises the same
error again: it was paid for, so a rerun does not pay for it twice and `--replay` can serve
a run that met one.

Concurrency: the database runs in WAL mode with a busy timeout and writes one short
autocommit statement at a time, so several processes can share one file; each thread gets
its own connection. Identical requests in flight at the same time in one process are sent
once: the first caller does the work and the others wait for its answer. WAL needs a local
file system (not NFS).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import random
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from concurrent.futures import Future
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from textprop.engines.base import Completion, Engine, Message, Request, Usage
from textprop.errors import CacheMissError, ConfigError, EngineReplyError

if TYPE_CHECKING:
    import sqlite3

T = TypeVar("T")

CacheMode = Literal["readwrite", "replay", "refresh", "off"]
CACHE_MODES: tuple[str, ...] = ("readwrite", "replay", "refresh", "off")

KEY_VERSION = 1
"""Bumped whenever the key's contents change, so old rows stop matching instead of lying."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key         TEXT PRIMARY KEY,
    engine      TEXT NOT NULL,
    role        TEXT NOT NULL,
    request     TEXT NOT NULL,
    completion  TEXT NOT NULL,
    latency_s   REAL NOT NULL,
    created_at  REAL NOT NULL
)
"""


def default_cache_path() -> Path:
    """`$TEXTPROP_CACHE`, else `$XDG_CACHE_HOME/textprop/...`, else `~/.cache/textprop/...`.

    Only computes the path; nothing is created until the cache is first used.
    """
    explicit = os.environ.get("TEXTPROP_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says relative values are invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "textprop" / "llm-cache.sqlite3"


def _plain(value: Any, where: str) -> Any:
    """JSON-ready copy of `value` (mappings and sequences made plain), or ConfigError."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{value!r} cannot be part of a cache key", field=where)
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v, where) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, where) for v in value]
    raise ConfigError(f"{type(value).__name__} is not JSON and cannot be part of a cache key",
                      field=where)


def canonical_request(engine_name: str, request: Request) -> str:
    """The canonical JSON the cache key hashes: every answer-determining field, not `role`."""
    payload = {
        "v": KEY_VERSION,
        "engine": engine_name,
        "model": request.model,
        "messages": [_message_key(m) for m in request.messages],
        "temperature": float(request.temperature),
        "max_tokens": request.max_tokens,
        "seed": request.seed,
        "stop": _plain(list(request.stop), "stop"),
        "json_schema": _plain(request.json_schema, "json_schema"),
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _message_key(message: Message) -> dict[str, Any]:
    """A message as the key sees it; one with images adds its parts, each image by the
    sha256 of its bytes (a text-only message keys exactly as before images existed)."""
    key: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.parts:
        key["parts"] = [{"text": p} if isinstance(p, str) else p.key() for p in message.parts]
    return key


def cache_key(engine_name: str, request: Request) -> str:
    """sha256 hex digest of `canonical_request`: stable across processes and machines."""
    return hashlib.sha256(canonical_request(engine_name, request).encode("utf-8")).hexdigest()


def _dump_completion(completion: Completion, error: EngineReplyError | None = None) -> str:
    row = {
        "text": completion.text,
        "parsed": completion.parsed,
        "usage": {"input_tokens": completion.usage.input_tokens,
                  "output_tokens": completion.usage.output_tokens},
        "finish_reason": completion.finish_reason,
        "model": completion.model,
    }
    if error is not None:  # a reply that did not parse: replayed as the same error
        row["reply_error"] = {"message": str(error), "provider": error.provider,
                              "status": error.status}
    return json.dumps(row, ensure_ascii=False, allow_nan=False)


def _load_completion(data: str) -> Completion | EngineReplyError:
    row = json.loads(data)
    completion = Completion(text=row["text"], parsed=row.get("parsed"),
                            usage=Usage(**row.get("usage", {})),
                            finish_reason=row.get("finish_reason"), latency_s=0.0,
                            cached=True, model=row.get("model"))
    error = row.get("reply_error")
    if error is None:
        return completion
    return EngineReplyError(error["message"], provider=error.get("provider"),
                            status=error.get("status"), reply_text=completion.text,
                            finish_reason=completion.finish_reason, completion=completion)


class _LeaderGone(Exception):
    """Given to waiters when the caller doing the work was cancelled: they retry themselves."""


class Cache(Engine):
    """Serve completions from a SQLite file; call `inner` only for requests never seen."""

    def __init__(self, inner: Engine, path: str | os.PathLike[str] | None = None, *,
                 mode: CacheMode = "readwrite", busy_timeout_s: float = 30.0) -> None:
        if mode not in CACHE_MODES:
            raise ConfigError(f"unknown cache mode {mode!r}; use one of {', '.join(CACHE_MODES)}",
                              field="mode")
        self.inner = inner
        self.name = inner.name
        self.supports_json_schema = inner.supports_json_schema
        self.mode: CacheMode = mode
        self.path = Path(path).expanduser() if path is not None else default_cache_path()
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._generation = 0
        self._conn_lock = threading.Lock()
        self._inflight: dict[str, Future[Completion]] = {}
        self._inflight_lock = threading.Lock()
        self.unusable: str | None = None  # why the file cannot be used: calls pass through

    def key(self, request: Request) -> str:
        return cache_key(self.inner.name, request)

    # -- engine interface -------------------------------------------------------------------

    async def acomplete(self, request: Request) -> Completion:
        if self.mode == "off":
            return await self.inner.acomplete(request)
        return await self._answer(request, call=self.inner.acomplete, run=asyncio.to_thread,
                                  wait=asyncio.wrap_future)

    def complete(self, request: Request) -> Completion:
        if self.mode == "off":
            return self.inner.complete(request)
        return _run_inline(self._answer(request, call=partial(_now, self.inner.complete),
                                        run=_now, wait=partial(_now, Future.result)))

    def contains(self, request: Request) -> bool:
        """Whether `request` would be answered from the file (so it would cost nothing)."""
        if self.mode in ("off", "refresh"):
            return False
        return self._get(self.key(request)) is not None

    def count(self) -> int:
        """Number of recorded answers (0 if the file does not exist yet)."""
        if not self.path.exists():
            return 0
        return self._connection().execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        """Close every connection this cache opened, in any thread; call it when no request is
        in flight. The next use reopens."""
        with self._conn_lock:
            connections, self._connections = self._connections, []
            self._generation += 1
        for connection in connections:
            connection.close()

    async def aclose(self) -> None:
        self.close()
        await self.inner.aclose()

    def __repr__(self) -> str:
        return f"Cache({self.inner!r}, path={str(self.path)!r}, mode={self.mode!r})"

    # -- lookup and in-flight coalescing ----------------------------------------------------

    async def _answer(self, request: Request, *,
                      call: Callable[[Request], Awaitable[Completion]],
                      run: Callable[..., Awaitable[Any]],
                      wait: Callable[[Future[Completion]], Awaitable[Completion]]) -> Completion:
        """The lookup, written once for both paths; they differ only in how they wait.

        `call` asks the inner engine, `run(fn, *args)` runs a blocking database step and `wait`
        waits for the leader's future. `acomplete` passes truly async ones; `complete` passes
        `_now` wrappers that finish at once, so the coroutine never suspends.
        """
        key = self.key(request)
        if self.mode == "replay":
            return self._replay(request, await run(self._get, key))
        if self.unusable is not None:
            return await call(request)
        while True:
            future, leader = self._claim(key)
            if not leader:
                try:
                    return _as_shared(await wait(future))
                except _LeaderGone:
                    continue
            try:
                found = None if self.mode == "refresh" else await run(self._get, key)
                if found is None:
                    try:
                        found = await call(request)
                    except EngineReplyError as error:  # paid for: keep it, then raise it
                        if error.completion is not None:
                            await run(self._put, key, request, error.completion, error)
                        raise
                    await run(self._put, key, request, found)
                if isinstance(found, EngineReplyError):
                    raise found
            except Exception as exc:
                self._settle(key, future, error=exc)
                raise
            except BaseException:
                self._settle(key, future, error=_LeaderGone())
                raise
            self._settle(key, future, result=found)
            return found

    def _claim(self, key: str) -> tuple[Future[Completion], bool]:
        """The future for `key` and whether this caller must produce it (the leader)."""
        with self._inflight_lock:
            future = self._inflight.get(key)
            if future is not None:
                return future, False
            future = Future()
            # RUNNING: a waiter's cancellation (asyncio.wrap_future) cannot cancel it for all.
            future.set_running_or_notify_cancel()
            self._inflight[key] = future
            return future, True

    def _settle(self, key: str, future: Future[Completion], *, result: Completion | None = None,
                error: BaseException | None = None) -> None:
        with self._inflight_lock:
            self._inflight.pop(key, None)
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    # -- storage ----------------------------------------------------------------------------

    def _replay(self, request: Request,
                found: Completion | EngineReplyError | None) -> Completion:
        if isinstance(found, EngineReplyError):
            raise found
        if found is not None:
            return found
        where = (f"in {self.path}" if self.path.exists()
                 else f"because {self.path} does not exist")
        raise CacheMissError(
            f"replay: no recorded answer for this {request.role} request to {self.inner.name}"
            f"{f' (model {request.model})' if request.model else ''} {where}. "
            f"Prompt starts: {request.prompt[:160]!r}. Record it first with mode='readwrite'.",
            provider=self.inner.name)

    def _connection(self) -> sqlite3.Connection:
        local = self._local
        if getattr(local, "generation", None) == self._generation:
            return local.connection
        import sqlite3  # lazily: `import textprop` must not load it

        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit (isolation_level=None): every write is one short transaction that takes
        # the write lock at once, so the busy timeout applies instead of a failed upgrade.
        connection = sqlite3.connect(self.path, timeout=self.busy_timeout_s,
                                     isolation_level=None, check_same_thread=False)
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            connection.execute("PRAGMA synchronous = NORMAL")
            self._initialize(connection)
        except BaseException:
            connection.close()
            raise
        with self._conn_lock:
            self._connections.append(connection)
            local.connection, local.generation = connection, self._generation
        return connection

    def _initialize(self, connection: sqlite3.Connection) -> None:
        """Switch the file to WAL and create the table, retrying while another opener holds it.

        `PRAGMA journal_mode = WAL` needs the file to itself; while another connection is
        about to write (e.g. a second process creating the same new file), SQLite refuses at
        once with "database is locked" instead of running the busy handler. WAL persists in
        the file, so the mode is read first and the switch happens once per file.
        """
        import sqlite3

        deadline = time.monotonic() + self.busy_timeout_s
        pause = 0.005
        while True:
            try:
                if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    # Refused without an error, it returns the old mode: the loop tries again.
                    mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                    if mode != "wal":
                        raise sqlite3.OperationalError(f"database is locked (mode {mode})")
                connection.execute(_SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, 0.2)

    def _get(self, key: str) -> Completion | EngineReplyError | None:
        if self.mode == "replay" and not self.path.exists():
            return None  # replay never creates the file
        if self.unusable is not None:
            return None
        import sqlite3

        try:
            row = self._connection().execute(
                "SELECT completion FROM completions WHERE key = ?", (key,)).fetchone()
        except (sqlite3.DatabaseError, OSError) as exc:
            if not _is_damage(exc) or self.mode == "replay":
                raise
            self._give_up(exc)
            return None
        return _load_completion(row[0]) if row else None

    def _give_up(self, exc: BaseException) -> None:
        """The file is damaged (or cannot be made): run uncached, and say so once."""
        with self._conn_lock:
            first, self.unusable = self.unusable is None, f"{type(exc).__name__}: {exc}"
        if first:
            warnings.warn(f"the LLM cache {self.path} cannot be used ({exc}); running "
                          "without it, so no call is cached (move the file away to start a "
                          "new cache)", RuntimeWarning, stacklevel=2)

    def _put(self, key: str, request: Request, completion: Completion,
             error: EngineReplyError | None = None) -> None:
        """Record an answer (with `error`: one that did not parse). It is already paid for, so
        a failure to store it only warns."""
        import sqlite3

        if self.unusable is not None:
            return
        try:
            data = _dump_completion(completion, error)
            self._connection().execute(
                "INSERT OR REPLACE INTO completions "
                "(key, engine, role, request, completion, latency_s, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, self.inner.name, request.role, canonical_request(self.inner.name, request),
                 data, completion.latency_s, time.time()))
        except (sqlite3.DatabaseError, OSError) as exc:
            if _is_damage(exc):
                self._give_up(exc)
            else:
                self._warn_uncached(request, exc)
        except (TypeError, ValueError, sqlite3.Error) as exc:
            self._warn_uncached(request, exc)

    def _warn_uncached(self, request: Request, exc: BaseException) -> None:
        # stacklevel 7 names the caller of `complete` (past this, _put, _now, _answer,
        # _run_inline and complete); on the async path `_put` runs in a worker thread.
        warnings.warn(f"could not cache a {request.role} completion in {self.path} "
                      f"({type(exc).__name__}: {exc}); it will be requested again next time",
                      RuntimeWarning, stacklevel=7)


def _is_damage(exc: BaseException) -> bool:
    """A damaged or unwritable file, as opposed to another process holding the lock."""
    text = str(exc)
    return "locked" not in text and "busy" not in text


async def _now(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)`, run here and now: the sync path's stand-in for `asyncio.to_thread`."""
    return fn(*args)


def _run_inline(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends (it awaits only `_now`), without a loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("a coroutine run inline suspended")


def _as_shared(completion: Completion) -> Completion:
    """What a caller that waited for an identical in-flight request gets: it paid nothing."""
    return replace(completion, cached=True, latency_s=0.0)
