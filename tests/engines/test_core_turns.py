"""`CoreTurns`: processes that share a lock file take turns; a process killed while holding
its turn gives it up."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from textprop.engines.core_turns import CoreTurns

HOLD = """
import sys, time
from textprop.engines.core_turns import CoreTurns
with CoreTurns(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(lock: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_a_turn_waits_for_another_process_to_finish_its_own(tmp_path: Path) -> None:
    lock = tmp_path / "cores.lock"
    other = _holder(lock, 1.0)
    start = time.perf_counter()
    with CoreTurns(lock) as turns:
        waited = time.perf_counter() - start
    assert other.wait(timeout=30) == 0
    assert waited > 0.5 and turns.waits == 1


def test_a_process_killed_in_its_turn_releases_it(tmp_path: Path) -> None:
    lock = tmp_path / "cores.lock"
    other = _holder(lock, 60)
    other.kill()
    other.wait(timeout=30)
    start = time.perf_counter()
    turns = CoreTurns(lock)
    with turns:
        pass
    with turns:  # the same object takes turn after turn
        pass
    turns.close()
    assert time.perf_counter() - start < 5 and turns.waits == 2


TAKE_TURNS = """
import os, sys, time
from textprop.engines.core_turns import CoreTurns
turns = CoreTurns(sys.argv[1])
log = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
print("started", flush=True)
for _ in range(int(sys.argv[4])):
    with turns:  # a decode step: busy on the cores for a while, then straight back in line
        os.write(log, sys.argv[3].encode())
        end = time.perf_counter() + 0.03
        while time.perf_counter() < end:
            pass
"""


def test_processes_that_want_the_cores_all_the_time_take_turns_in_rotation(
        tmp_path: Path) -> None:
    # Plain flock lets the process that just released the turn take it straight back, so a
    # busy server starves the others; the queue makes every waiter go before it again.
    lock, log = tmp_path / "cores.lock", tmp_path / "turns.log"
    with CoreTurns(lock):  # hold the turn until both are waiting for it
        procs = [subprocess.Popen([sys.executable, "-c", TAKE_TURNS, str(lock), str(log),
                                   name, "12"], stdout=subprocess.PIPE, text=True)
                 for name in "ab"]
        for proc in procs:
            assert proc.stdout.readline().strip() == "started"
        time.sleep(0.5)
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    order = log.read_text()
    assert sorted(order) == sorted("ab" * 12)
    assert "aa" not in order and "bb" not in order, order
