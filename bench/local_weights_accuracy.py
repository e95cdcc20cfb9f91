"""Do re-encoded weights answer as well as the shipped ones? The 0.5B task model, Q4_K_M
(shipped) against Q4_0 (re-encoded by llama.cpp, textprop.engines.local_weights), on B4's
test examples with B4's starting prompt, paired per example.

Each (task, weights) cell starts `textprop serve --model local:0.5b-WEIGHTS+batch8` alone on
the machine, scores B4's starting prompt on the task's test examples with B4's evaluator
(greedy, `--max-tokens`, `--workers` in flight), writes the cell to the results file and
stops the server; a rerun skips the cells already there. The weights alternate per task, so
noise hits both alike; the wall time of each cell is the same evaluation's throughput.

    python bench/local_weights_accuracy.py                      # object_counting and gsm8k
    python bench/local_weights_accuracy.py --table
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from b4_quality import (  # noqa: E402
    evaluate,
    load_task,
    model_id,
    serve_command,
    sign_test,
    start_server,
)

RESULTS = ROOT / "bench/results/local_weights_accuracy.json"
WEIGHTS = ("q4_k_m", "q4_0")


def run_cell(task: str, weights: str, args: argparse.Namespace) -> dict:
    data = load_task(task, val=0, test=args.test)
    spec = "local:0.5b" + ("" if weights == "q4_k_m" else f"-{weights}") + "+batch8"
    with tempfile.TemporaryDirectory() as scratch:
        proc, url = start_server(serve_command(spec, args.port, None), args.port,
                                 Path(scratch) / "serve.log")
        try:
            result = evaluate(data["prompt"], data["test"], data["metric"], url, model_id(url),
                              args.max_tokens, args.workers, timeout=1800)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    usage = result["usage"]
    return {"task": task, "weights": weights, "engine": spec, "score": result["score"],
            "n": result["n"], "per_example": result["per_example"], "usage": usage,
            "wall_s": result["wall_s"],
            "generated_tokens_per_s": round(usage["completion_tokens"] / result["wall_s"], 1),
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def table(results: dict) -> str:
    lines = ["| task | n | Q4_K_M (shipped) | Q4_0 | Q4_0 right, Q4_K_M wrong | Q4_0 wrong, "
             "Q4_K_M right | sign test p | eval wall Q4_K_M / Q4_0 | generated tok/s "
             "Q4_K_M / Q4_0 |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for task in dict.fromkeys(c["task"] for c in results["cells"].values()):
        a, b = (results["cells"].get(f"{task}/{w}") for w in WEIGHTS)
        if not (a and b):
            continue
        better = sum(b["per_example"][i] > s for i, s in a["per_example"].items())
        worse = sum(b["per_example"][i] < s for i, s in a["per_example"].items())
        lines.append(
            f"| {task} | {a['n']} | {a['score']:.3f} | {b['score']:.3f} | {better} | {worse} | "
            f"{sign_test(better, worse):.3f} | {a['wall_s']:.0f} s / {b['wall_s']:.0f} s "
            f"({a['wall_s'] / b['wall_s']:.2f}x) | {a['generated_tokens_per_s']} / "
            f"{b['generated_tokens_per_s']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["object_counting", "gsm8k"])
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.exists() else {"cells": {}}
    if args.table:
        print(table(results))
        return 0
    for task in args.tasks:
        for weights in WEIGHTS:
            key = f"{task}/{weights}"
            if key in results["cells"]:
                continue
            print(f"{time.strftime('%H:%M:%S')} {key} ...", flush=True)
            results["cells"][key] = run_cell(task, weights, args)
            args.out.write_text(json.dumps(results, indent=2) + "\n")
            cell = results["cells"][key]
            print(f"  {cell['score']:.3f} on {cell['n']}, {cell['wall_s']:.0f} s", flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
