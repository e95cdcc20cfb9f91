"""Run textprop's async core from sync code.

One event loop lives in a daemon thread, started on first use (never at import). Every sync
twin submits its coroutine there, so async clients (httpx, openai) keep one loop for their
whole life, and the sync API also works inside Jupyter, whose own loop is already running.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="textprop-loop", daemon=True)
            thread.start()
            _loop, _thread = loop, thread
        return _loop


SETTLE_S = 60.0
"""How long a failed call waits for the tasks it started (calls in flight) to end."""


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion on textprop's loop and return its result.

    When `coro` fails, the tasks it started and left running (its other calls in flight,
    e.g. the siblings of a `gather`) are waited for before the error is raised, up to
    `SETTLE_S`: their answers are paid for, and this way they reach the cache before the
    caller (often a CLI about to exit) moves on.
    """
    loop = _background_loop()
    if threading.current_thread() is _thread:
        coro.close()
        raise RuntimeError("a sync textprop call was made from inside textprop's own event "
                           "loop; use the async form (await ...acomplete/abackward/astep)")
    return asyncio.run_coroutine_threadsafe(_settling(coro), loop).result()


async def _settling(coro: Coroutine[Any, Any, T]) -> T:
    before = asyncio.all_tasks()
    try:
        return await coro
    except Exception:
        await _settle(before)
        raise


async def _settle(before: set[asyncio.Task[Any]]) -> None:
    loop, me = asyncio.get_running_loop(), asyncio.current_task()
    deadline = loop.time() + SETTLE_S
    while True:  # tasks may start others while they finish
        pending = {t for t in asyncio.all_tasks() if t not in before and t is not me
                   and not t.done()}
        if not pending:
            return
        if loop.time() >= deadline:
            for task in pending:
                task.cancel()
            return
        await asyncio.wait(pending, timeout=deadline - loop.time())


def beside(work: Awaitable[T]) -> asyncio.Future[T]:
    """A task run beside others: when another's failure ends the run first, its own error
    (often the same one) is not reported again as 'never retrieved' (`_settle` lets it
    finish)."""
    task = asyncio.ensure_future(work)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return task
