"""Give B4's test server the cores while a cell scores a prompt on it.

Why: the servers take turns on the cores one `llama_decode` at a time (`--cpu-lock`). The
test server decodes one sequence (`--n-parallel 1`, so its answers do not depend on what
else is decoded with them), so with three cells searching beside it, it gets one token per
turn while the task and writer servers decode eight: a GSM8K test run (100 answers of up to
256 tokens) went at 0.4 answers a minute. This watcher pauses (SIGSTOP) the process trees
of the other harnesses while one scores on the test server (a harness with no child
process: its search runs in a child, `textprop optimize` or the GEPA or TextGrad venv's
Python), at most `--stop` seconds at a time with `--run` seconds of running between, so no
paused call comes near its timeout (900 s); on exit it resumes everything. Paused cells'
wall times include the pauses; their CPU times do not.

    python bench/b4_test_priority.py &        # beside harnesses started with --task-url ...
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable

HARNESS = "bench/b4_quality.py --task-url"  # harnesses sharing hand-started servers


def children(pid: int) -> list[int]:
    """The pid's child processes (from every thread's /proc children list)."""
    kids: list[int] = []
    try:
        for thread in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{thread}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:  # gone meanwhile
        pass
    return kids


def process_tree(pid: int, children_of: Callable[[int], list[int]] = children) -> list[int]:
    """The pid and all its descendants, parents before children."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        tree.append(current)
        todo += children_of(current)
    return tree


def plan(harnesses: Iterable[int], children_of: Callable[[int], list[int]],
         seen: dict[int, int], confirm: int = 2) -> tuple[set[int], list[int], dict[int, int]]:
    """(harnesses scoring on the test server, harnesses to pause, updated sightings).

    A harness counts as scoring once it has had no child process in `confirm` checks in a
    row (one check catches it between a search and its test, or starting a cell); the
    others are paused only while one is scoring."""
    harnesses = list(harnesses)
    idle = {h for h in harnesses if not children_of(h)}
    seen = {h: seen.get(h, 0) + 1 for h in idle}
    scoring = {h for h, n in seen.items() if n >= confirm}
    to_pause = [h for h in harnesses if h not in idle] if scoring else []
    return scoring, to_pause, seen


def harness_pids(pattern: str = HARNESS) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split() if int(p) != os.getpid()]


def _signal(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stop", type=float, default=300.0, help="longest pause, seconds")
    p.add_argument("--run", type=float, default=45.0, help="running between pauses, seconds")
    p.add_argument("--tick", type=float, default=10.0, help="seconds between checks")
    p.add_argument("--pattern", default=HARNESS, help="pgrep -f pattern of the harnesses")
    args = p.parse_args(argv)
    paused: set[int] = set()

    def log(message: str) -> None:
        print(time.strftime("%H:%M:%S ") + message, flush=True)

    def resume(*_: object) -> None:
        _signal(paused, signal.SIGCONT)
        paused.clear()

    def stop_watching(*_: object) -> None:
        resume()
        log("stopped; every paused process resumed")
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop_watching)
    signal.signal(signal.SIGINT, stop_watching)
    seen: dict[int, int] = {}
    while True:
        scoring, to_pause, seen = plan(harness_pids(args.pattern), children, seen)
        if not to_pause:
            time.sleep(args.tick)
            continue
        for harness in to_pause:
            tree = process_tree(harness)
            _signal(tree, signal.SIGSTOP)
            paused.update(tree)
        log(f"{sorted(scoring)} scoring on the test server: paused {to_pause}")
        started = time.monotonic()
        while time.monotonic() - started < args.stop:
            time.sleep(args.tick)
            alive = set(harness_pids(args.pattern))
            if not any(h in alive and not children(h) for h in scoring):
                break  # each scoring harness has finished or started its next search
        resume()
        log(f"resumed after {time.monotonic() - started:.0f} s")
        seen = {}
        time.sleep(args.run)


if __name__ == "__main__":
    raise SystemExit(main())
