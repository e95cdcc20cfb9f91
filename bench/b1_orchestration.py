"""B1: orchestration overhead of TextGrad 0.1.8 vs textprop on the same protocol.

TextGrad's prompt-optimization protocol on BBH object_counting (TextGrad's split: train
0-49, val 50-149, test 150-249): test and validation at the start, then 3 epochs x 4 steps
of batch 3, validation after every step with a revert when it drops, test at the end.
TextGrad runs its own loop (bench/tg_protocol.py, in bench/.venv-textgrad); textprop runs
`textprop optimize` (its Trainer) with `engines.default = "openai-compatible:MODEL@URL"` and
the cache off. Both talk to textprop's test server (real HTTP) answering every call after
200 ms with canned replies valid for both frameworks:

* forward (the task's question): "... Answer: N". Validation and test questions are right
  or wrong by a hash of the system prompt and the question (55 % right), so each rewrite
  scores differently and some validations go up and some drop. Training questions are
  always answered wrong, so every step of both frameworks has feedback, a rewrite and a
  validation (textprop skips the rewrite and the validation of a batch it got all right;
  TextGrad never does: with right training answers the two would not do the same work);
* feedback / batch reduction: a short critique (JSON when the request asks for JSON);
* optimizer: the starting prompt + "Revision k", between <IMPROVED_VARIABLE> tags, or as
  JSON {"improved_variable": ...} when the request has a response_format.

The server counts the calls by kind and their times; the critical path is the longest chain
of calls each of which began after the previous one ended (the dependent rounds as run).

    python bench/b1_orchestration.py                      # both pairs (32 and 4 workers)
    python bench/b1_orchestration.py --workers 32 --out bench/results/b1_orchestration.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from textprop.testing.server import TestServer, _requested_json, last_user_text

ROOT = Path(__file__).resolve().parent.parent
BBH = (ROOT / "../shared/data/bbh/bbh/object_counting.json").resolve()
TG_PYTHON = ROOT / "bench/.venv-textgrad/bin/python"
LATENCY = 0.2
START_PROMPT = ("You will answer a reasoning question. Think step by step. The last line of "
                "your response should be of the following format: 'Answer: $VALUE' where "
                "VALUE is a numerical value.")
CRITIQUE = ("The prompt does not tell the model to list every object with its count before "
            "adding; ask for that list and a final check of the sum.")


def system_text(body: dict) -> str:
    for m in body.get("messages") or []:
        if isinstance(m, dict) and m.get("role") == "system":
            c = m.get("content")
            return c if isinstance(c, str) else "".join(
                p.get("text", "") for p in c or [] if isinstance(p, dict))
    return ""


def classify(body: dict) -> str:
    """forward | feedback | reduce | optimizer, from the request's system prompt."""
    system = system_text(body)
    if "gradient (feedback) engine" in system:
        return "feedback"
    if "condense several pieces of feedback" in system:
        return "reduce"
    if "You are part of an optimization system" in system:
        return "optimizer"
    return "forward"


class Replies:
    """The canned replies; `optimizer_calls` numbers the rewrites of one run."""

    def __init__(self, targets: dict[str, str], train: set[str], right_percent: int = 55) -> None:
        self.targets, self.train, self.right = targets, train, right_percent
        self.lock = threading.Lock()
        self.optimizer_calls = 0

    def reset(self) -> None:
        with self.lock:
            self.optimizer_calls = 0

    def __call__(self, body: dict) -> str:
        kind = classify(body)
        wants_json, schema = _requested_json(body)
        if kind == "forward":
            question = last_user_text(body)
            target = int(self.targets.get(question.strip(), "0"))
            digest = hashlib.sha256(f"{system_text(body)}\n{question}".encode()).digest()
            right = question.strip() not in self.train and digest[0] * 100 // 256 < self.right
            answer = target if right else target + 1
            return f"I list the objects and add them up.\nAnswer: {answer}"
        if kind == "optimizer":
            with self.lock:
                self.optimizer_calls += 1
                k = self.optimizer_calls
            new = f"{START_PROMPT} Revision {k}: list each object with its count, then add."
            if wants_json:
                return json.dumps({"improved_variable": new})
            return f"<IMPROVED_VARIABLE>{new}</IMPROVED_VARIABLE>"
        if wants_json:
            props = list(((schema or {}).get("properties") or {"feedback": {}}).keys())
            return json.dumps({props[0]: CRITIQUE})
        return CRITIQUE


def critical_path(records: list) -> int:
    """The longest chain of calls each of which arrived after the previous one ended."""
    calls = sorted((r for r in records if r.path.endswith("/chat/completions")),
                   key=lambda r: r.arrived)
    depth: list[int] = []
    ends: list[float] = []
    for r in calls:
        best = 0
        for d, e in zip(depth, ends, strict=True):
            if e <= r.arrived + 1e-4 and d > best:
                best = d
        depth.append(best + 1)
        ends.append(r.ended if r.ended is not None else r.arrived)
    return max(depth, default=0)


def server_summary(server: TestServer) -> dict:
    server.wait_idle(10)
    records = [r for r in server.requests if r.path.endswith("/chat/completions")]
    kinds: dict[str, int] = {}
    for r in records:
        kind = classify(r.body) if isinstance(r.body, dict) else "invalid"
        kinds[kind] = kinds.get(kind, 0) + 1
    rounds = critical_path(records)
    span = (max(r.ended for r in records) - min(r.arrived for r in records)) if records else 0
    return {"calls": len(records), "by_kind": kinds, "max_in_flight": server.max_in_flight,
            "dependent_rounds": rounds, "critical_path_s": round(rounds * LATENCY, 2),
            "first_to_last_call_s": round(span, 3),
            "errors": sum(1 for r in records if (r.status or 0) >= 400)}


def timed_run(cmd: list[str], **kw) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run `cmd`; its wall seconds and its CPU seconds (user + system, all threads).

    CPU time is the steadier figure on a shared machine: other jobs stretch wall time, not
    the work a process does.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc, wall, cpu


def run_textgrad(server: TestServer, workers: int, scratch: Path) -> dict:
    work = scratch / f"tg-{workers}"
    work.mkdir(parents=True)
    out = work / "result.json"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "XDG_CACHE_HOME": str(work / "cache"), "TG_DATA_ROOT": str(work / "data"),
           "OPENAI_API_KEY": "not-needed", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [str(TG_PYTHON), str(ROOT / "bench/tg_protocol.py"), "--base-url", server.base_url,
           "--bbh", str(BBH), "--threads", str(workers), "--out", str(out)]
    proc, wall, cpu = timed_run(cmd, cwd=work, env=env)
    result = json.loads(out.read_text()) if out.exists() else {"failure": proc.stderr[-2000:]}
    return {"framework": "textgrad 0.1.8", "workers": workers, "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 2), "returncode": proc.returncode, "run": _tg_brief(result)}


def _tg_brief(r: dict) -> dict:
    return {k: r.get(k) for k in ("import_s", "loop_s", "baseline_val", "baseline_test",
                                  "best_val", "final_test", "calls", "generate_calls",
                                  "failure", "sizes")} | {
        "accepted": [s["accepted"] for s in r.get("steps", [])],
        "val_after": [s["val_after"] for s in r.get("steps", [])]}


def run_textprop(server: TestServer, workers: int, scratch: Path) -> dict:
    work = scratch / f"tp-{workers}"
    work.mkdir(parents=True)
    config = work / "run.toml"
    config.write_text(f"""
[run]
name = "b1"
seed = 0

[task]
bbh = "{BBH}"

[pipeline]
system_prompt = {json.dumps(START_PROMPT)}

[metric]
name = "numeric"

[engines]
default = "openai-compatible:bench-model@{server.base_url}"
concurrency = {workers}

[trainer]
epochs = 3
batch_size = 3
steps_per_epoch = 4
acceptance = "non_decrease"

[cache]
enabled = false
""")
    textprop = Path(sys.executable).with_name("textprop")
    cmd = [str(textprop), "optimize", str(config), "--no-cache", "--run-dir",
           str(work / "run"), "--json"]
    proc, wall, cpu = timed_run(cmd, cwd=work,
                                env={**os.environ, "OPENAI_API_KEY": "not-needed"})
    try:
        summary = json.loads(proc.stdout)
    except ValueError:
        summary = {"failure": proc.stderr[-2000:]}
    steps = []
    if (work / "run").exists():
        from textprop.ledger import Ledger

        steps = [{"step": s["step"], "status": s["status"], "val": s["val_score"],
                  "reason": s["reason"]} for s in Ledger.in_run(work / "run").steps()]
    return {"framework": "textprop", "workers": workers, "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 2),
            "returncode": proc.returncode,
            "run": {k: summary.get(k) for k in ("status", "baseline_val", "baseline_test",
                                                "best_val", "final_test", "failure")}
            | {"steps": steps}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, action="append",
                   help="TextGrad eval threads = textprop engines.concurrency (repeatable; "
                        "default: 32, TextGrad's script default, and 4, textprop's default)")
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/b1_orchestration.json")
    args = p.parse_args()
    if not TG_PYTHON.exists():
        sys.exit("bench/.venv-textgrad is missing: run bench/setup-textgrad")
    examples = json.loads(BBH.read_text())["examples"]
    replies = Replies({e["input"].strip(): e["target"] for e in examples},
                      {e["input"].strip() for e in examples[:50]})
    results = {"benchmark": "b1_orchestration", "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                       time.gmtime()),
               "machine": f"{platform.machine()} {os.cpu_count()} cpu, "
                          f"{platform.python_implementation()} {platform.python_version()}",
               "latency_s": LATENCY, "command": " ".join(["python"] + sys.argv), "pairs": []}
    with tempfile.TemporaryDirectory(prefix="b1-") as tmp, \
            TestServer(latency=LATENCY, reply=replies) as server:
        for workers in args.workers or [32, 4]:
            pair = []
            for run in (run_textgrad, run_textprop):
                server.reset()
                replies.reset()
                print(f"running {run.__name__.removeprefix('run_')} with {workers} workers",
                      file=sys.stderr, flush=True)
                outcome = run(server, workers, Path(tmp))
                outcome["server"] = server_summary(server)
                print(json.dumps({k: outcome[k] for k in ("framework", "wall_s", "cpu_s",
                                                           "server")}),
                      file=sys.stderr, flush=True)
                pair.append(outcome)
            tg, tp = pair
            results["pairs"].append({"workers": workers, "textgrad": tg, "textprop": tp,
                                     "speedup": round(tg["wall_s"] / tp["wall_s"], 2)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    for pair in results["pairs"]:
        tg, tp = pair["textgrad"], pair["textprop"]
        print(f"workers {pair['workers']}: textgrad {tg['wall_s']:.1f} s "
              f"({tg['server']['calls']} calls, {tg['server']['dependent_rounds']} rounds) | "
              f"textprop {tp['wall_s']:.1f} s ({tp['server']['calls']} calls, "
              f"{tp['server']['dependent_rounds']} rounds) | {pair['speedup']}x")
    print(f"raw: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
