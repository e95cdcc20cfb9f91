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

The pareto runs (`textprop optimize` with `[strategy] kind = "pareto"`, settings from the
`--pareto-*` flags) get the same replies but two: training questions are right by the hash
too (`--pareto-train-right`, 40 %), since the gate re-runs a child on the training
minibatch and a child that gets all of it wrong can never beat its parent; and a rewrite is
numbered by a hash of its request, so runs side by side take the same path every time.
`floor` sends `--floor-calls` independent forward calls through textprop's engine stack:
no dependency at all, so what it takes above the bound is the client and the machine.

The server counts the calls by kind and their times; the critical path is the longest chain
of calls each of which began after the previous one ended (the dependent rounds as run).
The bound is every call at the server (forward, feedback, reduction, rewrite; test
included) / workers x 0.2 s: all of them pass the same `workers` slots. Per run the JSON
also has the calls by phase (before the first training question, the search, the final
pick and test), the calls in flight per 100 ms, and for pareto each round from the ledger
(its proposals, calls, dependent rounds, bound, mean in flight); `<out>_calls.json` holds
every call's arrival and end.

    python bench/b1_orchestration.py                      # textgrad + textprop, 32 and 4 workers
    python bench/b1_orchestration.py --workers 32 --out bench/results/b1_orchestration.json
    python bench/b1_orchestration.py --workers 32 --frameworks pareto   # the pareto row alone
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import re
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
    """The canned replies; `optimizer_calls` numbers the rewrites of one run.

    `train_right` is the share (percent) of training questions answered right, by the same
    hash as validation: 0 (always wrong) for TextGrad and textprop tgd; the pareto run
    needs some right, since its gate re-runs a child on the training minibatch and a child
    that gets everything wrong there can never beat its parent. `hashed` (the pareto runs)
    numbers a rewrite by a hash of its request instead of the order the rewrites arrive in,
    which varies with timing when proposals run side by side: so a pareto run takes the
    same path every time.
    """

    def __init__(self, targets: dict[str, str], train: set[str], right_percent: int = 55,
                 train_right: int = 0) -> None:
        self.targets, self.train, self.right = targets, train, right_percent
        self.train_right, self.hashed = train_right, False
        self.lock = threading.Lock()
        self.optimizer_calls = 0

    def reset(self, train_right: int = 0, hashed: bool = False) -> None:
        with self.lock:
            self.optimizer_calls = 0
            self.train_right, self.hashed = train_right, hashed

    def __call__(self, body: dict) -> str:
        kind = classify(body)
        wants_json, schema = _requested_json(body)
        if kind == "forward":
            question = last_user_text(body)
            target = int(self.targets.get(question.strip(), "0"))
            digest = hashlib.sha256(f"{system_text(body)}\n{question}".encode()).digest()
            share = self.train_right if question.strip() in self.train else self.right
            right = digest[0] * 100 // 256 < share
            answer = target if right else target + 1
            return f"I list the objects and add them up.\nAnswer: {answer}"
        if kind == "optimizer":
            with self.lock:
                self.optimizer_calls += 1
                k = self.optimizer_calls
            if self.hashed:  # proposals side by side: the same request, the same rewrite
                k = int.from_bytes(hashlib.sha256(json.dumps(
                    body.get("messages"), sort_keys=True).encode()).digest()[:3], "big")
            new = f"{START_PROMPT} Revision {k}: list each object with its count, then add."
            if wants_json:
                return json.dumps({"improved_variable": new})
            return f"<IMPROVED_VARIABLE>{new}</IMPROVED_VARIABLE>"
        if wants_json:
            props = list(((schema or {}).get("properties") or {"feedback": {}}).keys())
            return json.dumps({props[0]: CRITIQUE})
        return CRITIQUE


def revision(system: str) -> int | None:
    """The rewrite a forward call's system prompt comes from: 0 the starting prompt."""
    if system == START_PROMPT:
        return 0
    m = re.search(r"Revision (\d+):", system)
    return int(m.group(1)) if m else None


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


def in_flight_profile(records: list, t0: float, t1: float, step: float = 0.1) -> list[float]:
    """Mean number of calls in flight in each `step`-second bin of [t0, t1]."""
    bins = [0.0] * max(math.ceil((t1 - t0) / step), 1)
    for r in records:
        a, e = r.arrived, r.ended if r.ended is not None else r.arrived
        first, last = int((a - t0) / step), int((e - t0) / step)
        for b in range(max(first, 0), min(last, len(bins) - 1) + 1):
            lo, hi = t0 + b * step, t0 + (b + 1) * step
            bins[b] += max(min(e, hi) - max(a, lo), 0.0) / step
    return [round(b, 1) for b in bins]


def window_stats(records: list, workers: int) -> dict:
    """Calls, span, dependent rounds, the bound (calls / workers x latency) and the mean
    number in flight of a set of calls."""
    if not records:
        return {"calls": 0}
    t0 = min(r.arrived for r in records)
    t1 = max(r.ended or r.arrived for r in records)
    busy = sum((r.ended or r.arrived) - r.arrived for r in records)
    rounds = critical_path(records)
    return {"calls": len(records), "span_s": round(t1 - t0, 3), "dependent_rounds": rounds,
            "critical_path_s": round(rounds * LATENCY, 2),
            "bound_s": round(len(records) / workers * LATENCY, 2),
            "span_over_bound": round((t1 - t0) / (len(records) / workers * LATENCY), 2),
            "mean_in_flight": round(busy / max(t1 - t0, 1e-9), 1)}


def server_summary(server: TestServer, workers: int, split_of: dict[str, str],
                   holdout: set[str] = frozenset()) -> dict:
    """What the server saw: calls by kind and by split (forward calls), the dependent rounds,
    the bound, and the same per phase: `start` (the calls before the first training
    question), `search` (up to the end of the last call that is neither a test question nor
    a held-out validation question), `end` (the final pick's held-out validation and the
    final test)."""
    server.wait_idle(10)
    records = [r for r in server.requests if r.path.endswith("/chat/completions")]
    kinds: dict[str, int] = {}
    splits: dict[str, int] = {}
    tags = []
    for r in records:
        kind = classify(r.body) if isinstance(r.body, dict) else "invalid"
        kinds[kind] = kinds.get(kind, 0) + 1
        split = None
        if kind == "forward":
            question = last_user_text(r.body).strip()
            split = split_of.get(question, "other")
            if split == "val" and question in holdout:
                split = "val_holdout"
            splits[split] = splits.get(split, 0) + 1
        tags.append((r, kind, split))
    rounds = critical_path(records)
    if not records:
        return {"calls": 0}
    t0 = min(r.arrived for r in records)
    calls = [[round(r.arrived - t0, 4), round((r.ended or r.arrived) - t0, 4), kind, split,
              revision(system_text(r.body)) if split else None] for r, kind, split in tags]
    t_end = max(r.ended or r.arrived for r in records)
    span = t_end - t0
    train_at = [r.arrived for r, _, split in tags if split == "train"]
    t_search = min(train_at, default=t_end)
    search_end = max(((r.ended or r.arrived) for r, _, split in tags
                      if r.arrived >= t_search and split not in ("test", "val_holdout")),
                     default=t_search)
    phases = {"start": [r for r in records if r.arrived < t_search],
              "search": [r for r in records if t_search <= r.arrived <= search_end],
              "end": [r for r in records if r.arrived > search_end]}
    bound = len(records) / workers * LATENCY
    return {"calls": len(records), "by_kind": kinds, "forward_by_split": splits,
            "max_in_flight": server.max_in_flight,
            "dependent_rounds": rounds, "critical_path_s": round(rounds * LATENCY, 2),
            "bound_s": round(bound, 2), "first_to_last_call_s": round(span, 3),
            "span_over_bound": round(span / bound, 2),
            "mean_in_flight": round(sum((r.ended or r.arrived) - r.arrived
                                        for r in records) / max(span, 1e-9), 1),
            "phases": {name: window_stats(rs, workers) for name, rs in phases.items()},
            "in_flight_per_100ms": in_flight_profile(records, t0, t_end),
            "t0_monotonic": t0, "calls_timeline": calls,
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


def run_textprop(server: TestServer, workers: int, scratch: Path,
                 pareto: dict | None = None, label: str = "textprop") -> dict:
    """`textprop optimize` with the tgd strategy (TextGrad's protocol), or with `pareto`
    (a dict of [strategy] settings plus `max_metric_calls`)."""
    work = scratch / f"{label}-{workers}"
    work.mkdir(parents=True)
    config = work / "run.toml"
    search = ""
    if pareto:
        options = {k: v for k, v in pareto.items() if k != "max_metric_calls" and v}
        search = "\n[strategy]\nkind = \"pareto\"\n" + "".join(
            f"{k} = {json.dumps(v)}\n" for k, v in options.items()) + (
            f"\n[budget]\nmax_metric_calls = {pareto['max_metric_calls']}\n"
            if pareto["max_metric_calls"] else "")
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
{search}""")
    textprop = Path(sys.executable).with_name("textprop")
    cmd = [str(textprop), "optimize", str(config), "--no-cache", "--run-dir",
           str(work / "run"), "--json"]
    proc, wall, cpu = timed_run(cmd, cwd=work,
                                env={**os.environ, "OPENAI_API_KEY": "not-needed"})
    try:
        summary = json.loads(proc.stdout)
    except ValueError:
        summary = {"failure": proc.stderr[-2000:]}
    steps, rounds, holdout = [], [], []
    if (work / "run").exists():
        from textprop.ledger import Ledger

        ledger = Ledger.in_run(work / "run")
        for s in ledger.steps():
            calls = ledger.calls(s["step"])
            steps.append({"step": s["step"], "status": s["status"], "val": s["val_score"],
                          "reason": s["reason"], "started_at": s["started_at"],
                          "finished_at": s["finished_at"], "calls": len(calls)})
            holdout = holdout or s["search_state"].get("holdout", [])
        summary["metric_calls"] = (ledger.meta().get("final") or {}).get("metric_calls")
        if pareto:
            children: dict[int, list[int]] = {}
            for c in ledger.candidates():
                k = revision(next(iter(c.values.values()), ""))
                if c.step > 0 and k:
                    children.setdefault(c.step, []).append(k)
            rounds = pareto_rounds(steps, children)
    return {"framework": f"textprop {label if pareto else 'tgd'}", "workers": workers,
            "wall_s": round(wall, 3), "cpu_s": round(cpu, 2), "returncode": proc.returncode,
            "settings": pareto or {"strategy": "tgd"},
            "run": {k: summary.get(k) for k in ("status", "baseline_val", "baseline_test",
                                                "best_val", "final_test", "metric_calls",
                                                "failure")}
            | {"steps": steps, "rounds": rounds}, "holdout_ids": holdout}


def run_floor(server: TestServer, workers: int, calls: int) -> dict:
    """`calls` forward calls at once, through textprop's engine stack (concurrency limit
    `workers`, cache off) and the graph, in a process of their own: no dependencies, so
    what the run takes beyond calls / workers x latency is the client's and the machine's
    (processing 32 replies and sending the next 32), which no strategy can remove."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--floor-client", server.base_url,
           "--floor-calls", str(calls), "--workers", str(workers)]
    proc, wall, cpu = timed_run(cmd, env={**os.environ, "OPENAI_API_KEY": "not-needed"})
    try:
        run = json.loads(proc.stdout)
    except ValueError:
        run = {"failure": proc.stderr[-2000:]}
    return {"framework": "floor (independent calls)", "workers": workers,
            "wall_s": round(wall, 3), "cpu_s": round(cpu, 2), "returncode": proc.returncode,
            "run": run}


def floor_client(url: str, calls: int, workers: int) -> int:
    import asyncio

    import textprop as tp
    from textprop.engines.openai_compat import OpenAIEngine
    from textprop.engines.stack import build_stack

    examples = json.loads(BBH.read_text())["examples"][50:150]

    async def go() -> float:
        provider = OpenAIEngine("bench-model", base_url=url, api_key="x")
        engine = build_stack(provider, cache=False, concurrency=workers)[0]
        model = tp.BlackboxLLM(engine, tp.Variable(START_PROMPT, role_description="prompt"))
        questions = [tp.Variable(examples[i % len(examples)]["input"], requires_grad=False,
                                 role_description="question") for i in range(calls)]
        t = time.perf_counter()
        try:
            await asyncio.gather(*(model.aforward(q) for q in questions))
        finally:
            await provider.aclose()
        return time.perf_counter() - t

    print(json.dumps({"calls": calls, "gather_s": round(asyncio.run(go()), 3)}))
    return 0


def pareto_rounds(steps: list[dict], children: dict[int, list[int]]) -> list[dict]:
    """The pareto search's rounds from its ledger: the proposals of a round start together
    (its parents are chosen at the round's start) and are recorded together at its end;
    the next round starts after that (the barrier)."""
    search = [s for s in steps if s["step"] > 0 and s["status"] not in ("final", "pending")]
    rounds: list[list[dict]] = []
    for s in sorted(search, key=lambda s: s["step"]):
        if rounds and s["started_at"] < max(x["finished_at"] for x in rounds[-1]):
            rounds[-1].append(s)
        else:
            rounds.append([s])
    return [{"steps": [s["step"] for s in r],
             "validated": sum(1 for s in r if s["status"] == "accepted"),
             "statuses": [s["status"] for s in r],
             "start": min(s["started_at"] for s in r),
             "end": max(s["finished_at"] for s in r),
             "ledger_calls": sum(s["calls"] for s in r),
             "children": sorted(k for s in r for k in children.get(s["step"], []))}
            for r in rounds]


FRAMEWORKS = ("textgrad", "textprop", "pareto", "floor")
# The pareto run's [strategy] settings and [budget] max_metric_calls (flags --pareto-*).
PARETO_FLAGS = (
    ("parallel", 16, "proposals in flight per round"),
    ("minibatch", 3, "training examples per proposal (TextGrad's batch)"),
    ("children", 1, "rewrites per proposal"),
    ("holdout", 0.25, "share of validation held back for the final pick"),
    ("final_candidates", 3, "candidates re-scored on the held-out part"),
    ("max_metric_calls", 1340, "the budget: pipeline runs of train and validation "
                               "examples, the baseline's validation included (0: none)"),
    ("max_proposals", 0, "stop after this many proposals (0: no limit)"),
)
PARETO_TRAIN_RIGHT = 40


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, action="append",
                   help="TextGrad eval threads = textprop engines.concurrency (repeatable; "
                        "default: 32, TextGrad's script default, and 4, textprop's default)")
    p.add_argument("--frameworks", default="textgrad,textprop",
                   help="comma-separated, in running order, from: textgrad, textprop "
                        "(textprop optimize with the tgd strategy), pareto (textprop "
                        "optimize with the pareto strategy, settings from --pareto-*), "
                        "pareto-LABEL (a --pareto-variant), floor (FLOOR_CALLS independent "
                        "forward calls through textprop's engine stack: what the client "
                        "and this machine cost without any dependency); "
                        "default: textgrad,textprop")
    for name, default, help_ in PARETO_FLAGS:
        p.add_argument(f"--pareto-{name.replace('_', '-')}", dest=f"pareto_{name}",
                       type=type(default), default=default, help=help_)
    p.add_argument("--pareto-variant", action="append", default=[], metavar="LABEL:K=V,...",
                   help="a pareto run `pareto-LABEL` with some --pareto-* settings changed, "
                        "e.g. budget:max_metric_calls=1350,max_proposals=0 (repeatable)")
    p.add_argument("--pareto-train-right", type=int, default=PARETO_TRAIN_RIGHT,
                   help="percent of training questions the server answers right in the "
                        "pareto runs (0 in the others), so children can pass the gate")
    p.add_argument("--floor-calls", type=int, default=1600,
                   help="calls of the floor run (default 1600, about TextGrad's)")
    p.add_argument("--floor-client", help=argparse.SUPPRESS)  # the floor run's own process
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/b1_orchestration.json")
    args = p.parse_args()
    if args.floor_client:
        return floor_client(args.floor_client, args.floor_calls, (args.workers or [32])[0])
    pareto = {name: getattr(args, f"pareto_{name}") for name, _, _ in PARETO_FLAGS}
    settings = {"pareto": pareto}
    for spec in args.pareto_variant:
        label, _, pairs = spec.partition(":")
        variant = dict(pareto)
        for pair in filter(None, pairs.split(",")):
            key, _, value = pair.partition("=")
            if key not in pareto:
                p.error(f"--pareto-variant {spec}: unknown setting {key!r}")
            variant[key] = type(pareto[key])(value)
        settings[f"pareto-{label}"] = variant
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    unknown = sorted(set(frameworks) - set(FRAMEWORKS) - set(settings))
    if unknown or not frameworks:
        p.error(f"--frameworks: unknown {', '.join(unknown) or '(none given)'}; "
                f"choose from {', '.join((*FRAMEWORKS, *settings))}")
    if "textgrad" in frameworks and not TG_PYTHON.exists():
        sys.exit("bench/.venv-textgrad is missing: run bench/setup-textgrad")
    examples = json.loads(BBH.read_text())["examples"]
    questions = [e["input"].strip() for e in examples]
    split_of = {q: "train" if i < 50 else "val" if i < 150 else "test"
                for i, q in enumerate(questions)}
    replies = Replies({e["input"].strip(): e["target"] for e in examples}, set(questions[:50]))
    results = {"benchmark": "b1_orchestration", "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                       time.gmtime()),
               "machine": f"{platform.machine()} {os.cpu_count()} cpu, "
                          f"{platform.python_implementation()} {platform.python_version()}",
               "latency_s": LATENCY, "command": " ".join(["python"] + sys.argv),
               "pareto_train_right_percent": args.pareto_train_right,
               "pareto_settings": {n: settings[n] for n in frameworks if n in settings},
               "rows": []}
    with tempfile.TemporaryDirectory(prefix="b1-") as tmp, \
            TestServer(latency=LATENCY, reply=replies) as server:
        for workers in args.workers or [32, 4]:
            row: dict = {"workers": workers}
            for name in frameworks:
                server.reset()
                replies.reset(args.pareto_train_right if name in settings else 0,
                              hashed=name in settings)
                print(f"running {name} with {workers} workers", file=sys.stderr, flush=True)
                t_mono, t_wall = time.monotonic(), time.time()
                own = resource.getrusage(resource.RUSAGE_SELF)
                if name == "textgrad":
                    outcome = run_textgrad(server, workers, Path(tmp))
                elif name == "floor":
                    outcome = run_floor(server, workers, args.floor_calls)
                else:
                    outcome = run_textprop(server, workers, Path(tmp), settings.get(name),
                                           label=name)
                held = {questions[int(i.rsplit("-", 1)[1])]
                        for i in outcome.pop("holdout_ids", [])}
                used = resource.getrusage(resource.RUSAGE_SELF)
                outcome["harness_cpu_s"] = round(used.ru_utime - own.ru_utime
                                                 + used.ru_stime - own.ru_stime, 2)
                outcome["server"] = summary = server_summary(server, workers, split_of, held)
                summary["wall_over_bound"] = round(outcome["wall_s"] / summary["bound_s"], 2)
                before = summary.pop("t0_monotonic") - t_mono
                summary["process_before_first_call_s"] = round(before, 2)
                summary["process_after_last_call_s"] = round(
                    outcome["wall_s"] - before - summary["first_to_last_call_s"], 2)
                if outcome["run"].get("rounds"):
                    add_round_stats(outcome["run"]["rounds"], server, workers,
                                    t_wall - t_mono, set(questions[:50]))
                print(json.dumps({k: outcome[k] for k in ("framework", "wall_s", "cpu_s")}
                                 | {k: summary[k] for k in (
                                     "calls", "by_kind", "dependent_rounds", "bound_s",
                                     "wall_over_bound", "phases")}),
                      file=sys.stderr, flush=True)
                row[name] = outcome
            if "textgrad" in row:
                row["wall_vs_textgrad"] = {name: round(row[name]["wall_s"]
                                                       / row["textgrad"]["wall_s"], 3)
                                           for name in frameworks if name != "textgrad"}
            results["rows"].append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    timelines = {f"{row['workers']}/{name}": row[name]["server"].pop("calls_timeline")
                 for row in results["rows"] for name in frameworks}
    args.out.write_text(json.dumps(results, indent=1))
    calls_out = args.out.with_name(args.out.stem + "_calls.json")
    calls_out.write_text(json.dumps({
        "about": "per run (workers/framework), every call at the server: [arrived, ended] "
                 "in seconds from the run's first call, kind, split of a forward call's "
                 "question (train, val, val_holdout, test), the rewrite number of its "
                 "system prompt (0: the starting prompt)", "runs": timelines}))
    for row in results["rows"]:
        for name in frameworks:
            r = row[name]
            sv = r["server"]
            print(f"workers {row['workers']} {r['framework']:>16}: {r['wall_s']:6.1f} s wall, "
                  f"{r['cpu_s']:5.1f} s CPU, {sv['calls']} calls {sv['by_kind']}, "
                  f"{sv['dependent_rounds']} rounds ({sv['critical_path_s']} s), bound "
                  f"{sv['bound_s']} s, wall/bound {sv['wall_over_bound']}")
        if "wall_vs_textgrad" in row:
            print(f"workers {row['workers']} wall / TextGrad's: {row['wall_vs_textgrad']}")
    print(f"raw: {args.out}, call timelines: {calls_out}")
    return 0


def add_round_stats(rounds: list[dict], server: TestServer, workers: int,
                    offset: float, train: set[str]) -> None:
    """Per pareto round: the server's view (calls, dependent rounds, the bound, the mean
    in flight) of the calls that arrived during it; ledger times are time.time(), the
    server's monotonic (`offset` converts)."""
    records = [r for r in server.requests if r.path.endswith("/chat/completions")]
    if not records:
        return
    t0 = records[0].arrived
    for i, rnd in enumerate(rounds):
        lo, hi = rnd["start"] - offset, rnd["end"] - offset
        inside = [r for r in records if lo - 0.005 <= r.arrived <= hi]
        rnd.update(window_stats(inside, workers))
        kids = set(rnd.pop("children"))
        gates = [r for r in inside if classify(r.body) == "forward"
                 and revision(system_text(r.body)) in kids
                 and last_user_text(r.body).strip() in train]
        first = min((r.arrived for r in inside), default=lo)
        last = max((r.ended or r.arrived for r in inside), default=lo)
        gate_end = max((r.ended or r.arrived for r in gates), default=first)
        # up to the last gate call: minibatch, feedback, rewrites, gate (and the first
        # validations, which start as the proposals before them are done)
        rnd["to_last_gate_s"] = round(gate_end - first, 3)
        rnd["calls_to_last_gate"] = sum(1 for r in inside if r.arrived < gate_end)
        rnd["after_last_gate_s"] = round(last - gate_end, 3)  # validations only
        if i + 1 < len(rounds):  # the round's last call to the next round's first
            nxt = min((r.arrived for r in records if r.arrived >= hi), default=hi)
            rnd["gap_to_next_round_s"] = round(nxt - last, 3)
        rnd["start"], rnd["end"] = round(first - t0, 3), round(last - t0, 3)


if __name__ == "__main__":
    sys.exit(main())
