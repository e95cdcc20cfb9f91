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
