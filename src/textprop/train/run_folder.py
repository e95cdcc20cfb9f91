"""Run folders: one process at a time, and claimed only once a run is ready to start.

A run folder is held with an exclusive `flock` on its `.lock` file for the run's life; the
file holds the holder's pid, so a second process stops at once with one error naming it. The
lock is released when the process ends, however it ends (kill -9 included), so a killed run
can be resumed straight away. Within one process the lock is re-entrant: the CLI claims the
folder, then the `Trainer` it runs takes the same lock again.

    with claim_run_dir(Path("runs/my-run"), resume=False, explicit=True) as run_dir:
        ...  # the folder exists, nobody else writes it, and it held no run (or resume=True)

POSIX only (fcntl); textprop's machines are Linux and macOS.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from textprop.errors import RunExistsError, RunInUseError
from textprop.ledger import storage_error

LOCK_NAME = ".lock"
LEDGER_NAME = "ledger.sqlite3"

_held: dict[str, list[int]] = {}  # resolved folder -> [lock file descriptor, holders]
_guard = threading.Lock()


def _key(run_dir: Path) -> str:
    return str(run_dir.resolve())


def holder_pid(run_dir: Path) -> int | None:
    """The pid written in a run folder's lock file (None: none written yet, or unreadable)."""
    deadline = time.monotonic() + 1.0
    while True:  # the holder writes its pid right after taking the lock
        try:
            text = (run_dir / LOCK_NAME).read_text().strip()
        except OSError:
            text = ""
        if text.isdigit() or time.monotonic() > deadline:
            return int(text) if text.isdigit() else None
        time.sleep(0.02)


def try_lock(run_dir: Path) -> bool:
    """Take the folder's lock (creating the folder); False when another process holds it."""
    key = _key(run_dir)
    with _guard:
        if key in _held:
            _held[key][1] += 1
            return True
        path = run_dir / LOCK_NAME
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise storage_error(error, path, "create the run folder's lock file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as error:
            os.close(fd)
            raise storage_error(error, path, "write the run folder's lock file") from None
        _held[key] = [fd, 1]
        return True


def unlock(run_dir: Path) -> None:
    key = _key(run_dir)
    with _guard:
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _held[key]
            os.close(entry[0])  # closing the descriptor releases the flock


def in_use_error(run_dir: Path) -> RunInUseError:
    pid = holder_pid(run_dir)
    return RunInUseError(f"{run_dir}: the run folder is in use by another textprop process "
                         f"({f'pid {pid}' if pid else 'pid unknown'}); wait for it to end or "
                         "choose another folder", pid=pid)


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold the run folder's lock for the block; `RunInUseError` if another process has it."""
    run_dir = Path(run_dir)
    if not try_lock(run_dir):
        raise in_use_error(run_dir)
    try:
        yield run_dir
    finally:
        unlock(run_dir)


def holds_run(run_dir: Path) -> bool:
    return (run_dir / LEDGER_NAME).exists()


def exists_error(run_dir: Path) -> RunExistsError:
    return RunExistsError(f"{run_dir} already holds a run; resume it with --resume or choose "
                          "another run folder")


@contextmanager
def claim_run_dir(run_dir: Path, *, resume: bool, explicit: bool) -> Iterator[Path]:
    """Create and lock the folder a run writes to, for the block; yields its path.

    `explicit` (a folder the user named) or `resume`: exactly `run_dir`; it must not hold a
    run unless `resume`. Otherwise `run_dir` is a default name: when it holds a run or is in
    use, the next free `NAME-<timestamp>[-k]` is created (atomically, so two processes
    started in the same second get two folders).
    """
    if explicit or resume:
        chosen = run_dir
        with run_lock(chosen):
            if not resume and holds_run(chosen):
                raise exists_error(chosen)
            yield chosen
        return
    stamp = time.strftime("%Y%m%d-%H%M%S")
    names = [run_dir] + [run_dir.with_name(f"{run_dir.name}-{stamp}" + (f"-{k}" if k else ""))
                         for k in range(100)]
    for candidate in names:
        try:
            candidate.mkdir(parents=True)
            created = True
        except FileExistsError:
            created = False
        except OSError as error:
            raise storage_error(error, candidate, "create the run folder") from None
        if not try_lock(candidate):
            continue
        if not created and holds_run(candidate):
            unlock(candidate)
            continue
        try:
            yield candidate
        finally:
            unlock(candidate)
        return
    raise RunInUseError(f"{run_dir}: no free run folder name (tried {len(names)})")
