"""Retry transient engine failures with exponential backoff and full jitter.

How this layer and the SDKs' own retries share the work (one fault is never retried twice):

* HTTP providers (`OpenAIEngine`, `AnthropicEngine`) keep the official SDK's retry loop as
  the first line: their `max_retries` goes to the SDK, which retries 408/409/429/5xx,
  timeouts and dropped connections with backoff and honors Retry-After. When the SDK gives
  up after retrying, the engine raises `RetriesExhaustedError`, and `Retry` passes it on at
  once instead of starting max_retries x max_retries attempts. To put this layer in charge
  of those faults instead, build the engine with `max_retries=0`: its errors are then plain
  `TransientEngineError`s.
* `Retry` exists for what the SDK never retries: a 200 whose body is not JSON, a stream cut
  mid-way, and every engine that has no retry of its own (local servers behind custom
  engines, embedded models, TextGrad-style adapters). It retries `TransientEngineError` only;
  auth, request and reply errors (`EngineAuthError`, `EngineRequestError`,
  `EngineReplyError`) are deterministic and fail at once.

Backoff is "full jitter": the wait before retry n is uniform in [0, min(max_delay,
initial_delay * 2**n)], which spreads retries of many concurrent calls apart. A `retry_after`
on the error (from a Retry-After header) is honored as given, unless it is longer than
`max_retry_after`: then waiting is pointless for an interactive run and the error is raised.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from textprop.engines.base import Completion, Engine, Request
from textprop.errors import TransientEngineError

log = logging.getLogger(__name__)


class RetriesExhaustedError(TransientEngineError):
    """A transient failure that was already retried (`attempts` tries in all) and still failed.

    Still a `TransientEngineError`, so callers that skip or requeue transient failures keep
    working; `Retry` does not retry it again.
    """

    def __init__(self, message: str, *, attempts: int, provider: str | None = None,
                 status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, provider=provider, status=status, retry_after=retry_after)
        self.attempts = attempts


class Retry(Engine):
    """Wraps any engine; retries its `TransientEngineError`s (see the module docstring).

    `max_retries` counts retries after the first attempt; `initial_delay` and `max_delay`
    (seconds) bound the backoff; `max_retry_after` is the longest Retry-After worth waiting
    for. `sleep` (async) and `rng` (uniform in [0, 1)) are injectable for tests.
    """

    def __init__(self, engine: Engine, *, max_retries: int = 3, initial_delay: float = 0.5,
                 max_delay: float = 8.0, max_retry_after: float = 120.0,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: Callable[[], float] = random.random) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if initial_delay < 0 or max_delay < 0:
            raise ValueError("initial_delay and max_delay must be >= 0")
        self.engine = engine
        self.name = engine.name  # retrying never changes the answer: same cache key
        self.supports_json_schema = engine.supports_json_schema
        self.max_retries = max_retries
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.max_retry_after = max_retry_after
        self._sleep = sleep
        self._rng = rng

    def delay(self, retry: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before retry number `retry` (0-based); None: do not retry."""
        if retry_after is not None:
            return max(0.0, retry_after) if retry_after <= self.max_retry_after else None
        return self._rng() * min(self.max_delay, self.initial_delay * 2.0 ** retry)

    async def acomplete(self, request: Request) -> Completion:
        for retry in range(self.max_retries + 1):
            try:
                return await self.engine.acomplete(request)
            except RetriesExhaustedError:
                raise
            except TransientEngineError as exc:
                wait = self.delay(retry, exc.retry_after) if retry < self.max_retries else None
                if wait is None:
                    if retry == 0:
                        raise
                    raise RetriesExhaustedError(
                        f"{exc} (gave up after {retry + 1} attempts)", attempts=retry + 1,
                        provider=exc.provider, status=exc.status,
                        retry_after=exc.retry_after) from exc
                # Engine errors mostly start with the engine's name already: say it once.
                named = str(exc).startswith(f"{self.name}:")
                log.warning("%s%s; retry %d of %d in %.2fs", "" if named else f"{self.name}: ",
                            exc, retry + 1, self.max_retries, wait)
                await self._sleep(wait)
        raise AssertionError("unreachable: the loop returns or raises")

    async def aclose(self) -> None:
        await self.engine.aclose()

    def __repr__(self) -> str:
        return f"Retry({self.engine!r}, max_retries={self.max_retries})"
