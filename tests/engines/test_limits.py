"""The concurrency limit: at most N requests in flight, for async and sync callers together."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from textprop.engines.base import Completion, Engine, Request
from textprop.engines.limits import ConcurrencyLimit, low_priority
from textprop.engines.scripted import ScriptedEngine
from textprop.errors import ConfigError, EngineError


class InFlight(Engine):
    """Counts the requests inside `inner` at once (both async and sync paths)."""

    def __init__(self, inner: Engine) -> None:
        self.inner, self.name = inner, inner.name
        self.now = self.peak = 0
        self.starts: list[float] = []
        self._lock = threading.Lock()

    def _enter(self) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.starts.append(time.monotonic())

    def _exit(self) -> None:
        with self._lock:
            self.now -= 1

    async def acomplete(self, request: Request) -> Completion:
        self._enter()
        try:
            return await self.inner.acomplete(request)
        finally:
            self._exit()

    def complete(self, request: Request) -> Completion:
        self._enter()
        try:
            return self.inner.complete(request)
        finally:
            self._exit()


def tracked(latency_s: float = 0.02, **kwargs) -> InFlight:
    return InFlight(ScriptedEngine(default="ok", latency_s=latency_s, **kwargs))


def test_twenty_concurrent_calls_with_limit_three_never_exceed_three_and_do_overlap():
    inner = tracked()
    limited = ConcurrencyLimit(inner, 3)

    async def main():
        return await asyncio.gather(*[limited.acomplete(Request.chat(f"q{i}"))
                                      for i in range(20)])

    results = asyncio.run(main())

    assert len(results) == 20 and inner.now == 0
    assert inner.peak == 3


def test_sync_calls_from_threads_respect_the_limit():
    inner = tracked()
    limited = ConcurrencyLimit(inner, 2)
    threads = [threading.Thread(target=limited.complete, args=(Request.chat(f"t{i}"),))
               for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(inner.inner.requests) == 8
    assert inner.peak == 2


def test_sync_and_async_callers_share_the_same_slots():
    inner = tracked(latency_s=0.03)
    limited = ConcurrencyLimit(inner, 2)
    threads = [threading.Thread(target=limited.complete, args=(Request.chat(f"t{i}"),))
               for i in range(4)]

    async def main():
        for thread in threads:
            thread.start()
        await asyncio.gather(*[limited.acomplete(Request.chat(f"a{i}")) for i in range(6)])

    asyncio.run(main())
    for thread in threads:
        thread.join()

    assert len(inner.inner.requests) == 10
    assert inner.peak == 2


def test_cancelled_waiters_and_failed_calls_give_their_slots_back():
    inner = InFlight(ScriptedEngine(latency_s=0.03, default="ok").queue(EngineError("x")))
    limited = ConcurrencyLimit(inner, 1)

    async def main():
        failing = asyncio.create_task(limited.acomplete(Request.chat("fails")))
        waiting = [asyncio.create_task(limited.acomplete(Request.chat(f"w{i}")))
                   for i in range(3)]
        await asyncio.sleep(0.01)
        waiting[0].cancel()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(limited.acomplete(Request.chat("impatient")), 0.005)
        with pytest.raises(EngineError):
            await failing
        await asyncio.gather(*waiting[1:])
        assert limited.slots.in_use == 0
        return await asyncio.wait_for(limited.acomplete(Request.chat("after")), 1)

    assert asyncio.run(main()).text == "ok"
    assert inner.inner.prompts() == ["fails", "w1", "w2", "after"]
    assert inner.peak == 1


def test_low_priority_calls_take_only_slots_no_other_call_waits_for():
    inner = tracked(latency_s=0.02)
    limited = ConcurrencyLimit(inner, 2)

    async def background(i: int):
        with low_priority():
            return await limited.acomplete(Request.chat(f"low{i}"))

    async def main():
        low = [asyncio.create_task(background(i)) for i in range(4)]
        await asyncio.sleep(0)  # low0 and low1 hold both slots, low2 and low3 wait
        high = [asyncio.create_task(limited.acomplete(Request.chat(f"high{i}")))
                for i in range(3)]
        await asyncio.gather(*low, *high)
        assert limited.slots.idle

    asyncio.run(main())
    order = inner.inner.prompts()
    assert order[:2] == ["low0", "low1"]  # free slots go to anyone
    assert order[2:5] == ["high0", "high1", "high2"]  # queued ahead of the waiting low ones
    assert order[5:] == ["low2", "low3"]
    assert inner.peak == 2


def test_a_freed_slot_goes_to_the_lowest_rank_waiting_first_come_first_served_within_it():
    inner = tracked(latency_s=0.02)
    limited = ConcurrencyLimit(inner, 1)

    async def call(prompt: str, rank: int):
        if not rank:
            return await limited.acomplete(Request.chat(prompt))
        with low_priority(rank):
            return await limited.acomplete(Request.chat(prompt))

    async def main():
        first = asyncio.create_task(call("first", 0))
        await asyncio.sleep(0)  # it holds the one slot; the rest queue in this order
        rest = [asyncio.create_task(call(p, r)) for p, r in
                [("test0", 2), ("val0", 1), ("test1", 2), ("search0", 0), ("val1", 1)]]
        await asyncio.gather(first, *rest)
        assert limited.slots.idle

    asyncio.run(main())
    assert inner.inner.prompts() == ["first", "search0", "val0", "val1", "test0", "test1"]
    with pytest.raises(ValueError, match="rank"):
        with low_priority(0):
            pass


def test_a_cancelled_low_priority_waiter_gives_up_its_place():
    limited = ConcurrencyLimit(tracked(latency_s=0.03), 1)

    async def main():
        first = asyncio.create_task(limited.acomplete(Request.chat("first")))
        await asyncio.sleep(0)
        with low_priority():
            waiting = asyncio.create_task(limited.acomplete(Request.chat("low")))
        await asyncio.sleep(0.005)
        waiting.cancel()
        await first
        assert limited.slots.idle
        return await asyncio.wait_for(limited.acomplete(Request.chat("after")), 1)

    assert asyncio.run(main()).text == "ok"


def test_a_rate_limit_spaces_out_the_starts():
    inner = tracked(latency_s=0.0)
    limited = ConcurrencyLimit(inner, 10, rate_per_s=50)  # one start per 20 ms, burst 1

    async def main():
        await asyncio.gather(*[limited.acomplete(Request.chat(f"q{i}")) for i in range(5)])

    begin = time.monotonic()
    asyncio.run(main())

    # The k-th start comes no sooner than k intervals after the first could have.
    offsets = [start - begin for start in sorted(inner.starts)]
    assert all(offset >= k * 0.02 - 0.002 for k, offset in enumerate(offsets)), offsets


def test_the_limit_must_be_positive():
    with pytest.raises(ConfigError, match="max_in_flight"):
        ConcurrencyLimit(ScriptedEngine(), 0)


def test_a_low_priority_call_leaves_a_free_slot_to_a_call_started_in_the_same_turn():
    """Started first, it still yields: a search started beside its baseline's scoring gets
    the first slots although the scoring's calls reached the limit a moment earlier."""
    inner = tracked(latency_s=0.02)
    limited = ConcurrencyLimit(inner, 1)

    async def low():
        with low_priority():
            return await limited.acomplete(Request.chat("low"))

    async def main():
        first = asyncio.create_task(low())
        second = asyncio.create_task(limited.acomplete(Request.chat("normal")))
        await asyncio.gather(first, second)
        assert limited.slots.idle

    asyncio.run(main())
    assert inner.inner.prompts() == ["normal", "low"]
