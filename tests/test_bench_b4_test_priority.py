"""bench/b4_test_priority.py: while one B4 harness scores on the test server (no child
process), the other harnesses' process trees are paused, and resumed when it is done or
the watcher stops."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import b4_test_priority as priority  # noqa: E402


def test_a_harness_without_a_child_twice_in_a_row_pauses_the_others() -> None:
    tree = {1: [], 2: [20], 3: [30], 20: [], 30: []}
    scoring, to_pause, seen = priority.plan([1, 2, 3], tree.__getitem__, {})
    assert (scoring, to_pause) == (set(), [])  # once could be a cell starting its search
    scoring, to_pause, seen = priority.plan([1, 2, 3], tree.__getitem__, seen)
    assert (scoring, to_pause) == ({1}, [2, 3])


def test_nothing_is_paused_while_every_harness_searches() -> None:
    tree = {2: [20], 3: [30]}
    seen: dict[int, int] = {}
    for _ in range(3):
        scoring, to_pause, seen = priority.plan([2, 3], tree.__getitem__, seen)
        assert (scoring, to_pause) == (set(), [])


def test_a_harness_that_starts_a_child_stops_counting_as_scoring() -> None:
    _, _, seen = priority.plan([1, 2], {1: [], 2: [20]}.__getitem__, {1: 5})
    scoring, to_pause, seen = priority.plan([1, 2], {1: [10], 2: [20]}.__getitem__, seen)
    assert (scoring, to_pause, seen) == (set(), [], {})


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_the_watcher_pauses_a_searching_tree_and_resumes_it_when_stopped() -> None:
    scoring = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                                "fake-b4-harness-scoring"])
    searching = subprocess.Popen(["bash", "-c", "sleep 60 & wait # fake-b4-harness-searching"])
    watcher, child = None, None
    try:
        assert _wait_for(lambda: priority.children(searching.pid))
        child = priority.children(searching.pid)[0]
        assert priority.process_tree(searching.pid) == [searching.pid, child]
        watcher = subprocess.Popen([sys.executable, str(ROOT / "bench/b4_test_priority.py"),
                                    "--pattern", "fake-b4-harness", "--tick", "0.1",
                                    "--stop", "30", "--run", "0.1"],
                                   stdout=subprocess.PIPE, text=True)
        assert _wait_for(lambda: _state(searching.pid) == "T" and _state(child) == "T")
        assert _state(scoring.pid) != "T"
        watcher.terminate()
        out, _ = watcher.communicate(timeout=10)
        assert _state(searching.pid) != "T" and _state(child) != "T"
        assert "scoring on the test server: paused" in out and "resumed" in out
    finally:
        for process in (watcher, scoring, searching):
            if process is not None and process.poll() is None:
                process.kill()
        if child is not None:
            subprocess.run(["kill", "-9", str(child)], check=False)
