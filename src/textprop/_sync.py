"""Run textprop's async core from sync code.

One event loop lives in a daemon thread, started on first use (never at import). Every sync
twin submits its coroutine there, so async clients (httpx, openai) keep one loop for their
whole life, and the sync API also works inside Jupyter, whose own loop is already running.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
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


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion on textprop's loop and return its result."""
    loop = _background_loop()
    if threading.current_thread() is _thread:
        coro.close()
        raise RuntimeError("a sync textprop call was made from inside textprop's own event "
                           "loop; use the async form (await ...acomplete/abackward/astep)")
    return asyncio.run_coroutine_threadsafe(coro, loop).result()
