"""Take turns on the cores: one lock file shared by the llama.cpp processes of a machine.

Two embedded-model servers (say the 0.5B task model and the 1.5B writer) each run llama.cpp
with every core; decoding at the same time, their threads fight over the same cores and both
slow down by more than half. Holding one `flock` around each `llama_decode` makes them
alternate step by step instead, so each decode gets every core. Any process that opens the
same path joins the turns; a process killed while holding it releases it (the kernel drops
the lock with the file descriptor).
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path


class CoreTurns:
    """A context manager: `with turns:` waits for, then holds, the machine-wide turn."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._fd: int | None = None
        self._lock = threading.Lock()  # the decoders of one process, and opening the file
        self.waits = 0  # turns taken (for tests and benchmarks)

    def __enter__(self) -> CoreTurns:
        self._lock.acquire()
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._lock.release()
            raise
        self.waits += 1
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
