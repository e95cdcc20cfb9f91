"""Two embedded-model processes on one machine: one after the other, at once, and at once
taking turns through one `--cpu-lock` file (`textprop serve --cpu-lock`, B4's servers).

Each process is one `LocalEngine` (batched, 8 in flight) answering `--requests` chat calls of
`--max-tokens` tokens: the 0.5B task model and the 1.5B writer, as in B4. Reported per mode:
the wall time until both are done, and each process's own wall and tokens/s.

    python bench/shared_cores.py                  # ~5 min on 2 cores
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOPICS = ["rivers", "volcanoes", "bread", "bicycles", "clouds", "bees", "libraries",
          "compasses", "tides", "glass", "chess", "maps", "salt", "kites", "bridges", "soap"]


def worker(size: str, requests: int, max_tokens: int, lock: str | None) -> None:
    from textprop.engines.base import Request
    from textprop.engines.local import LocalEngine

    engine = LocalEngine(size=size, n_parallel=8, cpu_lock=lock or None)
    engine._load_locked()
    print("ready", flush=True)
    sys.stdin.readline()  # both start together

    async def main() -> list:
        return await asyncio.gather(*(engine.acomplete(Request.chat(
            f"Explain {TOPICS[i % len(TOPICS)]} to a child.", max_tokens=max_tokens))
            for i in range(requests)))

    start = time.perf_counter()
    done = asyncio.run(main())
    wall = time.perf_counter() - start
    tokens = sum(c.usage.output_tokens for c in done)
    print(json.dumps({"size": size, "wall_s": round(wall, 1), "tokens": tokens,
                      "tokens_per_s": round(tokens / wall, 1)}), flush=True)
    engine.close()


def run(sizes: list[str], together: bool, lock: str | None, args) -> dict:
    def spawn(size: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, __file__, "--worker", size, "--requests",
                                 str(args.requests), "--max-tokens", str(args.max_tokens),
                                 "--lock", lock or ""], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        return proc

    start = time.perf_counter()
    results = []
    if together:
        procs = [spawn(s) for s in sizes]
        start = time.perf_counter()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [json.loads(p.stdout.readline()) for p in procs]
        wall = time.perf_counter() - start
    else:
        wall = 0.0
        for size in sizes:
            p = spawn(size)
            p.stdin.write("go\n")
            p.stdin.flush()
            results.append(json.loads(p.stdout.readline()))
            wall += results[-1]["wall_s"]
            p.wait()
    return {"mode": ("together, cpu-lock" if lock else "together") if together
            else "one after the other", "wall_s": round(wall, 1), "processes": results,
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker")
    parser.add_argument("--lock", default="")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/shared_cores.json")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.requests, args.max_tokens, args.lock)
        return
    lock = str(Path(tempfile.mkdtemp()) / "cores.lock")
    sizes = ["0.5b", "1.5b"]
    cells = []
    for together, with_lock in ((False, False), (True, False), (True, True)):
        cells.append(run(sizes, together, lock if with_lock else None, args))
        print(cells[-1], flush=True)
    args.out.write_text(json.dumps({"cells": cells}, indent=2) + "\n")


if __name__ == "__main__":
    main()
