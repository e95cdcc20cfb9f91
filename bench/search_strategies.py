"""B5: the `pareto` search against `tgd` on the embedded models, at the same budget.

Every strategy runs `textprop optimize` on Qwen2.5-Coder-0.5B (task model) with
Qwen2.5-Coder-1.5B writing feedback and rewrites, the same starting prompt, and the same
`[budget] max_metric_calls` (GEPA's count: every example the pipeline runs, validation
included; the final test is not). `tgd` gets epochs enough to spend the budget.

Tasks:
  demo      the demo's built-in date_normalization (24 train / 16 val / 40 test)
  boolean   BBH boolean_expressions, TextGrad's split (train 0-49, val 50-149 cut to
            --val, test 150-249 cut to --test), exact match on the "Answer:" line

Resumable cell by cell: each (task, strategy, seed) cell is one run folder under
bench/runs/b5/ and one entry in the results file, written when the cell ends; a cell cut
off is resumed with `--resume` (its calls so far come from the benchmark's cache).

    python bench/search_strategies.py                          # every missing cell
    python bench/search_strategies.py --tasks demo --seeds 0 1 --strategies pareto
    python bench/search_strategies.py --table                   # the results as markdown
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from textprop.ledger import Ledger

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench/results/b5_search_strategies.json"
RUNS = ROOT / "bench/runs/b5"
BBH = (ROOT / "../shared/data/bbh/bbh").resolve()

ENGINES = """
[engines]
default = "local"
feedback = "local:1.5b"
optimizer = "local:1.5b"
concurrency = 1
"""

# The BBH cells answer with up to 96 tokens, ~4x the demo's: their task model runs on the
# batched engine (issue 12: ~2x the throughput at 8 in flight), the same for every strategy
# of the task. The demo cells keep the one-at-a-time engine they were first measured on.
TASK_ENGINES = {
    "boolean": """
[engines]
default = "local+batch8"
feedback = "local:1.5b"
optimizer = "local:1.5b"
concurrency = 8
""",
}

TASKS = {
    "demo": """
[task]
builtin = "date_normalization"
n_train = 24
n_val = 16
n_test = 40

[pipeline]
system_prompt = "You are a helpful assistant."
role_description = "{role}"
max_tokens = 40

[metric]
name = "exact_match"

{optimizer}
constraints = ["The prompt must work for any date, not only the dates in the examples."]
""",
    "boolean": """
[task]
bbh = "{bbh}/boolean_expressions.json"
limit_val = {val}
limit_test = {test}

[pipeline]
system_prompt = "You are a helpful assistant."
role_description = "{role}"
max_tokens = 96

[metric]
name = "exact_match"

{optimizer}
""",
}

OPTIMIZER = """[optimizer]
gradient_memory = 2
max_tokens = 200
feedback_max_tokens = 150
feedback_sentences = 3"""

ROLES = {
    "demo": "system prompt to the language model that rewrites dates; it is reused for "
            "every date",
    "boolean": "system prompt to the language model that evaluates boolean expressions; it "
               "is reused for every expression",
}

# B5's cells were measured before max_tried (daf5b01), max_fruitless and
# final_significance: all pinned off, so the cells rerun as measured.
PARETO = """
[strategy]
kind = "pareto"
minibatch = 3
children = 1
parallel = 2
holdout = 0.25
final_candidates = 3
max_tried = 0
max_fruitless = 0
final_significance = 1
"""

STRATEGIES = {
    "tgd": """
[trainer]
epochs = 20
batch_size = 3
acceptance = "non_decrease"
""",
    "pareto": PARETO,
    # pareto with a demonstrations parameter (issue 10): up to 4 pairs, bootstrapped from
    # training examples answered right and from the training labels (both tasks' labels are
    # exactly the output the metric accepts).
    "pareto-demos": PARETO + """demos = 4
demo_field = "target"
""",
    # pareto remembering the rewrites that failed the gate (the default since daf5b01)
    "pareto-tried": PARETO.replace("max_tried = 0", "max_tried = 3"),
}


def config_text(task: str, strategy: str, seed: int, args: argparse.Namespace) -> str:
    return (f'[run]\nname = "{task}-{strategy}-s{seed}"\nseed = {seed}\n'
            + TASKS[task].format(bbh=BBH, val=args.val, test=args.test, role=ROLES[task],
                               optimizer=OPTIMIZER)
            + STRATEGIES[strategy] + TASK_ENGINES.get(task, ENGINES)
            + f'\n[cache]\npath = "{RUNS / "cache.sqlite3"}"\n'
            + f"\n[budget]\nmax_metric_calls = {args.max_metric_calls}\n")


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {"cells": {}}


def save(results: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def run_cell(task: str, strategy: str, seed: int, args: argparse.Namespace) -> dict:
    name = f"{task}-{strategy}-s{seed}"
    folder = RUNS / name
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "run.toml"
    config.write_text(config_text(task, strategy, seed, args))
    run_dir = folder / "run"
    resume = (run_dir / "ledger.sqlite3").exists()
    command = [sys.executable, "-m", "textprop.cli", "optimize", str(config), "--run-dir",
               str(run_dir), "--json"] + (["--resume"] if resume else [])
    started = time.time()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    wall = time.time() - started
    if done.returncode != 0:
        return {"failed": True, "returncode": done.returncode, "stderr": done.stderr[-2000:],
                "wall_s": wall}
    # Everything from the ledger, so a finished run that is resumed (the CLI then only
    # says it is finished) gives the same record.
    ledger = Ledger.in_run(run_dir)
    steps = ledger.steps()
    final = ledger.meta()["final"]
    test_eval = final["test_per_example"]
    baseline_test = next(e["per_example"] for e in ledger.evaluations(0)
                         if e["split"] == "test")
    return {
        "task": task, "strategy": strategy, "seed": seed, "resumed": resume,
        "baseline_val": steps[0]["val_score"], "best_val": final["best_val_score"],
        "baseline_test": steps[0]["test_score"], "final_test": final["test_score"],
        "test_n": len(test_eval), "baseline_test_per_example": baseline_test,
        "final_test_per_example": test_eval, "values": final["values"],
        "metric_calls": ledger.meta()["final"].get("metric_calls"),
        "steps": len(steps) - 1,
        "accepted": sum(s["status"] == "accepted" for s in steps),
        "candidates": len(ledger.candidates()),
        "usage_by_role": ledger.usage_by_role(),
        "wall_s": max(x["finished_at"] for x in steps) - steps[0]["started_at"]
        if resume else wall,  # a resumed cell: the span its ledger records
        "run_dir": str(run_dir.relative_to(ROOT)),
    }


def bootstrap_interval(baseline: dict[str, float], final: dict[str, float],
                       resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of the mean gain (final - baseline) over test examples, resampled."""
    import random

    ids = sorted(final)
    gains = [final[i] - baseline[i] for i in ids]
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(gains) for _ in gains) / len(gains)
                   for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def table(results: dict) -> str:
    """The markdown table of every finished cell, for docs/benchmarks.md."""
    lines = ["| task | strategy | seed | test: start -> final (n) | gain, 95 % interval | "
             "val: start -> best | metric calls | calls fwd / bwd / opt | tokens in / out "
             "| accepted | wall |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key, c in sorted(results["cells"].items()):
        if c.get("failed"):
            lines.append(f"| {key} | failed: exit {c['returncode']} | | | | | | | | | |")
            continue
        low, high = bootstrap_interval(c["baseline_test_per_example"],
                                       c["final_test_per_example"])
        use = c["usage_by_role"]
        calls = " / ".join(str(int(use.get(r, {}).get("calls", 0)))
                           for r in ("forward", "backward", "optimizer"))
        tokens_in = sum(u["input_tokens"] for u in use.values())
        tokens_out = sum(u["output_tokens"] for u in use.values())
        lines.append(
            f"| {c['task']} | {c['strategy']} | {c['seed']} | {c['baseline_test']:.3f} -> "
            f"**{c['final_test']:.3f}** ({c['test_n']}) | "
            f"{c['final_test'] - c['baseline_test']:+.3f} [{low:+.3f}, {high:+.3f}] | "
            f"{c['baseline_val']:.3f} -> {c['best_val']:.3f} | "
            f"{c['metric_calls']} | {calls} | {tokens_in:,} / {tokens_out:,} | "
            f"{c['accepted']} | {c['wall_s'] / 60:.0f} min |")
    return "\n".join(lines)


def sign_test(better: int, worse: int) -> float:
    """Exact two-sided sign test over the discordant examples (ties dropped)."""
    from math import comb

    n, k = better + worse, min(better, worse)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n)


PAIRS = [("pareto", "tgd"), ("pareto-demos", "tgd"), ("pareto-demos", "pareto"),
         ("pareto-tried", "pareto"), ("pareto-tried", "tgd")]


def paired_table(results: dict) -> str:
    """Per task and seed, strategy A against B on the same test examples."""
    cells = {(c["task"], c["strategy"], c["seed"]): c for c in results["cells"].values()
             if not c.get("failed")}
    lines = ["| task | seed | A vs B | A better / worse / same | sign test p (two-sided) |",
             "| --- | --- | --- | --- | --- |"]
    for task, _, seed in sorted({(t, "", s) for t, _, s in cells}):
        for a, b in PAIRS:
            if (task, a, seed) not in cells or (task, b, seed) not in cells:
                continue
            fa = cells[task, a, seed]["final_test_per_example"]
            fb = cells[task, b, seed]["final_test_per_example"]
            better = sum(fa[i] > fb[i] for i in fa)
            worse = sum(fa[i] < fb[i] for i in fa)
            lines.append(f"| {task} | {seed} | {a} vs {b} | {better} / {worse} / "
                         f"{len(fa) - better - worse} | {sign_test(better, worse):.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["demo", "boolean"], choices=TASKS)
    parser.add_argument("--strategies", nargs="+", default=["tgd", "pareto"],
                        choices=STRATEGIES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--max-metric-calls", type=int, default=150)
    parser.add_argument("--val", type=int, default=24, help="BBH validation examples")
    parser.add_argument("--test", type=int, default=60, help="BBH test examples")
    parser.add_argument("--rerun", action="store_true", help="run cells already recorded")
    parser.add_argument("--table", action="store_true",
                        help="print the markdown table of the recorded cells and exit")
    args = parser.parse_args()
    results = load_results()
    if args.table:
        print(table(results))
        print()
        print(paired_table(results))
        return
    results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version()}
    for seed in args.seeds:
        for task in args.tasks:
            for strategy in args.strategies:
                key = f"{task}/{strategy}/seed{seed}/mmc{args.max_metric_calls}"
                if key in results["cells"] and not args.rerun \
                        and not results["cells"][key].get("failed"):
                    continue
                print(f"{time.strftime('%H:%M:%S')} {key} ...", flush=True)
                cell = run_cell(task, strategy, seed, args)
                cell["finished_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
                results["cells"][key] = cell
                save(results)
                print(f"  test {cell.get('baseline_test')} -> {cell.get('final_test')}, "
                      f"metric calls {cell.get('metric_calls')}, {cell['wall_s']:.0f} s",
                      flush=True)


if __name__ == "__main__":
    main()
