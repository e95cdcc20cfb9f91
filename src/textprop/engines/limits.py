"""At most N requests in flight to the inner engine, and optionally at most R per second.

One limit covers every caller: async tasks on any event loop and sync `complete` calls from any
thread draw from the same N slots, so mixing the sync and async APIs cannot double it. A freed
slot goes straight to the longest waiter (FIFO), so no caller starves; calls made under
`low_priority(rank)` (work nothing waits on yet, such as a baseline's scoring run beside the
search) only get a slot no waiter of a lower rank wants, so they fill idle slots without
delaying the rest.

Put it below the cache (hits never wait for a slot) and above `Retry` (a call backing off after
a 429 keeps its slot, which is the back-pressure a rate-limited provider asks for).

A call that fails for good (refused credentials, or a transient failure `Retry` gave up on)
halts the limit until the calls in flight have ended: calls waiting for a slot, or arriving
meanwhile, fail at once without being sent, so a run that is about to fail pays for nothing
more, while the calls already sent finish (into the cache above). Once the limit is idle it
serves calls again.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from textprop.engines.base import Completion, Engine, Request
from textprop.errors import ConfigError, EngineAuthError, EngineError, TransientEngineError

FATAL = (EngineAuthError, TransientEngineError)  # below Retry, a transient error is final
_RANK: ContextVar[int] = ContextVar("textprop_priority_rank", default=0)


@contextmanager
def low_priority(rank: int = 1) -> Iterator[None]:
    """Calls made inside (in this task, and tasks it starts) yield slots to every waiter of a
    lower rank; 0 is everyone else's."""
    if rank < 1:
        raise ValueError(f"a low priority's rank is >= 1, got {rank}")
    token = _RANK.set(rank)
    try:
        yield
    finally:
        _RANK.reset(token)


class _AsyncWaiter:
    __slots__ = ("loop", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()


class Slots:
    """A counting semaphore shared by threads and event loops.

    `asyncio.Semaphore` belongs to one loop and `threading.Semaphore` blocks a loop, so
    neither alone can bound sync and async callers together.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._used = 0
        self._lock = threading.Lock()
        self._queues: dict[int, deque[threading.Event | _AsyncWaiter]] = {}  # by rank

    @property
    def in_use(self) -> int:
        return self._used

    @property
    def idle(self) -> bool:
        with self._lock:
            return self._used == 0 and not self._waiting()

    def _waiting(self, upto: float = float("inf")
                 ) -> deque[threading.Event | _AsyncWaiter] | None:
        """The queue of the lowest rank (at most `upto`) anyone waits in; call with the
        lock held."""
        return next((self._queues[r] for r in sorted(self._queues)
                     if r <= upto and self._queues[r]), None)

    def _take_free(self, rank: int) -> bool:
        """Take a slot if one is free and nobody of this rank or a lower one waits; call
        with the lock held."""
        if self._used < self.size and not self._waiting(rank):
            self._used += 1
            return True
        return False

    def _queue(self, waiter: threading.Event | _AsyncWaiter) -> None:
        self._queues.setdefault(_RANK.get(), deque()).append(waiter)

    def _unqueue(self, waiter: threading.Event | _AsyncWaiter) -> bool:
        """Drop a waiter that gave up; False when it was handed a slot already."""
        for queue in self._queues.values():
            if waiter in queue:
                queue.remove(waiter)
                return True
        return False

    def acquire(self) -> None:
        with self._lock:
            if self._take_free(_RANK.get()):
                return
            event = threading.Event()
            self._queue(event)
        try:
            event.wait()
        except BaseException:  # e.g. KeyboardInterrupt while waiting
            with self._lock:
                if self._unqueue(event):
                    raise
            self.release()  # the slot was handed over already: pass it on
            raise

    async def aacquire(self) -> None:
        loop = asyncio.get_running_loop()
        rank = _RANK.get()
        with self._lock:
            if not rank and self._take_free(rank):
                return
            waiter = _AsyncWaiter(loop)
            self._queue(waiter)
            if rank and self._used < self.size:
                # A low-priority call takes a free slot one turn of the loop later, so calls
                # of lower ranks started in the same turn (e.g. a search started beside its
                # baseline's scoring) go first.
                loop.call_soon(self._drain)
        try:
            await waiter.future
        except BaseException:  # cancelled while waiting
            with self._lock:
                if self._unqueue(waiter):
                    raise
            if waiter.future.done() and not waiter.future.cancelled():
                self.release()  # we got the slot just as we were cancelled
            # else the hand-over callback has not run yet; it sees the cancel and passes it on
            raise

    def release(self) -> None:
        with self._lock:
            queue = self._waiting()
            if not queue:
                self._used -= 1
                return
            waiter = queue.popleft()  # the slot passes to it; _used stays
        self._give(waiter)

    def _drain(self) -> None:
        """Hand the free slots to the waiters, lowest rank first."""
        while True:
            with self._lock:
                queue = self._waiting()
                if self._used >= self.size or not queue:
                    return
                self._used += 1
                waiter = queue.popleft()
            self._give(waiter)

    def _give(self, waiter: threading.Event | _AsyncWaiter) -> None:
        """Wake a waiter that was handed a slot."""
        if isinstance(waiter, threading.Event):
            waiter.set()
            return
        try:
            waiter.loop.call_soon_threadsafe(self._hand_over, waiter.future)
        except RuntimeError:  # that loop is closed: nobody will take the slot there
            self.release()

    def _hand_over(self, future: asyncio.Future[None]) -> None:
        if future.cancelled():
            self.release()
        else:
            future.set_result(None)


class RateLimiter:
    """Token bucket: on average `rate_per_s` starts per second, bursts of up to `burst`."""

    def __init__(self, rate_per_s: float, burst: int = 1) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ConfigError("rate_per_s must be > 0 and burst >= 1", field="rate_per_s")
        self.rate_per_s, self.burst = rate_per_s, burst
        self._tokens = float(burst)
        self._updated = time.monotonic()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take one token now, in advance if need be; returns the seconds to wait before use."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate_per_s)
            self._updated = now
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate_per_s


class ConcurrencyLimit(Engine):
    """Bound the requests in flight to `inner` (and optionally their start rate)."""

    def __init__(self, inner: Engine, max_in_flight: int = 4, *,
                 rate_per_s: float | None = None, burst: int = 1) -> None:
        if max_in_flight < 1:
            raise ConfigError(f"must be >= 1, got {max_in_flight}", field="max_in_flight")
        self.inner = inner
        self.name = inner.name
        self.supports_json_schema = inner.supports_json_schema
        self.max_in_flight = max_in_flight
        self.slots = Slots(max_in_flight)
        self.rate = RateLimiter(rate_per_s, burst) if rate_per_s is not None else None
        self.halted: EngineError | None = None  # the failure that stops new calls

    def _check_halted(self, request: Request) -> None:
        if self.halted is not None:
            raise EngineError(f"{self.name}: this {request.role} call was not sent, because an "
                              f"earlier call failed: {self.halted}", provider=self.name)

    def _failed(self, error: BaseException) -> None:
        if isinstance(error, FATAL):
            self.halted = error

    def _release(self) -> None:
        self.slots.release()
        if self.halted is not None and self.slots.idle:
            self.halted = None  # every call of the failed burst has ended

    async def acomplete(self, request: Request) -> Completion:
        await self.slots.aacquire()
        try:
            self._check_halted(request)
            if self.rate is not None:
                await asyncio.sleep(self.rate.reserve())
                self._check_halted(request)
            return await self.inner.acomplete(request)
        except Exception as error:
            self._failed(error)
            raise
        finally:
            self._release()

    def complete(self, request: Request) -> Completion:
        self.slots.acquire()
        try:
            self._check_halted(request)
            if self.rate is not None:
                time.sleep(self.rate.reserve())
                self._check_halted(request)
            return self.inner.complete(request)
        except Exception as error:
            self._failed(error)
            raise
        finally:
            self._release()

    async def aclose(self) -> None:
        await self.inner.aclose()
