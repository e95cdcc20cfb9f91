"""Batched embedded engine (issue 12): throughput at 1/4/8/16 requests in flight, and the
demo's wall time, before (one call at a time) and after (batched), side by side in one run.

Cells (each written to the results JSON as soon as it is measured; a rerun skips the cells
already there, so a long run can be resumed):

* `throughput/<engine>/<k>`: `--requests` chat calls of the 0.5B model, all with one shared
  system prompt (as in an evaluation), `k` in flight at a time, greedy, `--max-tokens` each,
  through `LocalEngine(n_parallel=1)` ("before": llama-cpp-python's create_chat_completion
  under a lock) and `LocalEngine(n_parallel=16)` ("after"). For every k the two engines run
  back to back, so machine noise hits both alike. Reported: aggregate generated tokens/s,
  requests/s, wall seconds.
* `demo/<engine>`: `textprop demo --no-cache` (0.5B forward, 1.5B feedback and rewrites) on
  the one-at-a-time engines (`--deterministic`: shipped weights, concurrency 1: "before")
  and with `local+batchN` / `local:1.5b+batchN` engines at concurrency N =
  `--demo-concurrency` ("after"): wall time of the whole command, plus the run's summary.

    python bench/batched_engine.py                      # everything (~20 min on 2 cores)
    python bench/batched_engine.py --skip-demo          # throughput only (~5 min)
    python bench/batched_engine.py --out bench/results/batched_engine.json
    python bench/batched_engine.py --weights q4_0 --out bench/results/batched_engine_q4_0.json

`--weights q4_0` (or q8_0) runs the "after" engines on the model re-encoded in that format
(`local:0.5b-q4_0+batchN`, textprop.engines.local_weights); "before" stays the shipped
engine, so the ratio is against the same baseline. The cells are then keyed `after-q4_0`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LEVELS = (1, 4, 8, 16)
SYSTEM = ("You are a helpful assistant that writes clear, concrete explanations for "
          "beginners. Use plain words, short sentences and one example.")
TOPICS = ["rivers", "volcanoes", "bread", "bicycles", "clouds", "bees", "libraries",
          "compasses", "tides", "glass", "chess", "maps", "salt", "kites", "bridges", "soap"]


# --------------------------------------------------------------------- cells

def _load(path: Path) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    return {"cells": {}}


def _save(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, path)


async def _throughput(engine: Any, k: int, n: int, max_tokens: int) -> dict[str, Any]:
    from textprop.engines.base import Request

    requests = [Request.chat(f"Explain {TOPICS[i % len(TOPICS)]} in about 150 words "
                             f"(variant {i}).", system_prompt=SYSTEM, max_tokens=max_tokens)
                for i in range(n)]
    gate = asyncio.Semaphore(k)

    async def one(request: Request) -> Any:
        async with gate:
            return await engine.acomplete(request)

    start = time.perf_counter()
    done = await asyncio.gather(*(one(r) for r in requests))
    wall = time.perf_counter() - start
    out = sum(c.usage.output_tokens for c in done)
    return {"in_flight": k, "requests": n, "wall_s": round(wall, 2),
            "output_tokens": out, "prompt_tokens": sum(c.usage.input_tokens for c in done),
            "tokens_per_s": round(out / wall, 1), "requests_per_s": round(n / wall, 3),
            "finish": sorted({c.finish_reason for c in done})}


def _label(name: str, args: argparse.Namespace) -> str:
    """A cell's engine label: "after" with re-encoded weights says which."""
    return name if name == "before" or args.weights == "q4_k_m" else f"{name}-{args.weights}"


def _wanted(key: str, args: argparse.Namespace) -> bool:
    return not args.only or any(part in key for part in args.only)


def run_throughput(results: dict[str, Any], path: Path, args: argparse.Namespace) -> None:
    from textprop.engines.local import LocalEngine

    engines: dict[str, Any] = {}

    def engine(name: str) -> Any:
        if name not in engines:
            engines[name] = (LocalEngine(n_parallel=1) if name == "before"
                             else LocalEngine(n_parallel=16, weights=args.weights))
            asyncio.run(engines[name].acomplete(__import__(
                "textprop.engines.base", fromlist=["Request"]).Request.chat(
                    "Say hi.", max_tokens=2)))  # load outside the timing
        return engines[name]

    for k in args.levels:
        for name in ("before", "after"):
            key = f"throughput/{_label(name, args)}/{k}"
            if key in results["cells"] or not _wanted(key, args):
                continue
            n = max(args.requests, k)
            cell = asyncio.run(_throughput(engine(name), k, n, args.max_tokens))
            cell["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
            results["cells"][key] = cell
            _save(path, results)
            print(key, cell, flush=True)
    for e in engines.values():
        e.close()


def run_demo(results: dict[str, Any], path: Path, args: argparse.Namespace) -> None:
    textprop = Path(sys.executable).with_name("textprop")
    n = args.demo_concurrency
    w = "" if args.weights == "q4_k_m" else f"-{args.weights}"
    variants = {
        "before": ["--deterministic"],  # one call at a time, the shipped weights
        "after": ["--set", f"engines.concurrency={n}",
                  "--set", f"engines.default=local:0.5b{w}+batch{n}",
                  "--set", f"engines.feedback=local:1.5b{w}+batch{n}",
                  "--set", f"engines.optimizer=local:1.5b{w}+batch{n}"],
    }
    env = dict(os.environ)
    for name in ("before", "after"):
        key = f"demo/{_label(name, args)}"
        if key in results["cells"] or not _wanted(key, args):
            continue
        run_dir = Path(args.scratch) / f"demo-{name}-{int(time.time())}"
        command = [str(textprop), "demo", "--no-cache", "--json", "--run-dir", str(run_dir),
                   *variants[name]]
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
        wall = time.perf_counter() - start
        cell: dict[str, Any] = {"wall_s": round(wall, 1), "returncode": proc.returncode,
                                "command": " ".join(command[1:]),
                                "date": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            summary = json.loads(proc.stdout)
            cell["summary"] = {k: summary.get(k) for k in (
                "status", "steps", "baseline_val", "best_val", "baseline_test", "final_test",
                "usage", "message")}
        except (json.JSONDecodeError, TypeError):
            cell["stdout_tail"] = proc.stdout[-2000:]
        cell["stderr_tail"] = proc.stderr[-2000:]
        results["cells"][key] = cell
        _save(path, results)
        print(key, {k: v for k, v in cell.items() if k != "stderr_tail"}, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/batched_engine.json")
    parser.add_argument("--levels", type=int, nargs="+", default=list(LEVELS))
    parser.add_argument("--requests", type=int, default=16, help="calls per throughput cell")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--demo-concurrency", type=int, default=8)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--only-demo", action="store_true")
    parser.add_argument("--only", nargs="+", default=[],
                        help="run only the cells whose key contains one of these, e.g. before")
    parser.add_argument("--scratch", default="/tmp/textprop-bench-batched")
    parser.add_argument("--weights", default="q4_k_m", choices=["q4_k_m", "q8_0", "q4_0"],
                        help="weights of the 'after' engines (default: the shipped Q4_K_M)")
    args = parser.parse_args()
    results = _load(args.out)
    results.setdefault("machine", {"platform": platform.platform(), "cpus": os.cpu_count(),
                                   "python": platform.python_version()})
    try:
        import llama_cpp

        results["machine"]["llama_cpp_python"] = llama_cpp.__version__
    except ImportError:
        pass
    if not args.only_demo:
        run_throughput(results, args.out, args)
    if not args.skip_demo:
        run_demo(results, args.out, args)
    _save(args.out, results)


if __name__ == "__main__":
    main()
