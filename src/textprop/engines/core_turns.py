"""Take turns on the cores: one lock file shared by the llama.cpp processes of a machine.

Two embedded-model servers (say the 0.5B task model and the 1.5B writer) each run llama.cpp
with every core; decoding at the same time, their threads fight over the same cores and both
slow down by more than half. Holding one `flock` around each `llama_decode` makes them
alternate step by step instead, so each decode gets every core. Any process that opens the
same path joins the turns; a process killed while holding it releases it (the kernel drops
the lock with the file descriptor).

`flock` alone is not fair: the process that just released the turn is still running and
takes it again before a waiter wakes, so one busy server starved the others (in B4 a fourth
server kept the writer's calls waiting past their timeout). So a waiter also holds a shared
lock on a second file, `<path>.waiting`, and a process that saw someone waiting when it
released its turn steps aside until another process has taken the turn (polling, at most
`YIELD_SECONDS`, so a waiter that never wakes cannot stall the cores).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

YIELD_SECONDS = 0.1  # how long a releaser waits for a waiter to wake and take the turn
_POLL_SECONDS = 0.001


class CoreTurns:
    """A context manager: `with turns:` waits for, then holds, the machine-wide turn."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.waiting_path = self.path.with_name(self.path.name + ".waiting")
        self._fd: int | None = None
        self._waiting_fd: int | None = None
        self._lock = threading.Lock()  # the decoders of one process, and opening the files
        self._others_waited = False  # someone was waiting when this process last released
        self.waits = 0  # turns taken (for tests and benchmarks)

    def __enter__(self) -> CoreTurns:
        self._lock.acquire()
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                self._waiting_fd = os.open(self.waiting_path, os.O_RDWR | os.O_CREAT, 0o644)
            assert self._waiting_fd is not None
            fcntl.flock(self._waiting_fd, fcntl.LOCK_SH)
            try:
                if self._others_waited:
                    self._step_aside(self._fd)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            finally:
                fcntl.flock(self._waiting_fd, fcntl.LOCK_UN)
        except BaseException:
            self._lock.release()
            raise
        self.waits += 1
        return self

    @staticmethod
    def _step_aside(fd: int) -> None:
        """Leave the free turn to a waiter until one has taken it (or YIELD_SECONDS pass)."""
        deadline = time.monotonic() + YIELD_SECONDS
        while time.monotonic() < deadline:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another process has the turn: queue behind it
            fcntl.flock(fd, fcntl.LOCK_UN)
            time.sleep(_POLL_SECONDS)

    def __exit__(self, *exc: object) -> None:
        try:
            if self._fd is not None:
                self._others_waited = self._someone_waits()
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._lock.release()

    def _someone_waits(self) -> bool:
        assert self._waiting_fd is not None
        try:
            fcntl.flock(self._waiting_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._waiting_fd, fcntl.LOCK_UN)
        return False

    def close(self) -> None:
        with self._lock:
            for fd in (self._fd, self._waiting_fd):
                if fd is not None:
                    os.close(fd)
            self._fd = self._waiting_fd = None
