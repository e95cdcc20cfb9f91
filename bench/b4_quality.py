"""B4: held-out test accuracy at an equal budget: textprop vs GEPA 0.1.4 vs TextGrad 0.1.8.

Every framework optimizes the same one-prompt pipeline (system = the prompt, user = the
question) from the same starting prompt, with Qwen2.5-Coder-0.5B answering (the task model)
and Qwen2.5-Coder-1.5B writing feedback, reflections and rewrites (the writer), on the same
two OpenAI-compatible servers, at the same budget of task-model runs:

  frameworks  pareto      `textprop optimize`, `[strategy] kind = "pareto"` (minibatch 3, 1 child,
                          2 in flight, holdout 0.25, final 3), `[budget] max_metric_calls`,
                          `[optimizer] edit = "append"` (one instruction added per rewrite)
              pareto-rewrite  the same with whole-text rewrites (`edit = "rewrite"`, the
                          default; the 1.5B writer mostly sent the old text back)
              pareto-demos  the same with `[strategy] demos = 4` (demonstrations bootstrapped
                          from right answers and labels / GSM8K's worked answers); its test
                          prompt is the system message with the pairs, as textprop sends it
              tgd         `textprop optimize`, the default strategy (batch 3, non-decrease
                          acceptance, epochs enough to spend the budget), same budget
              gepa        `gepa.optimize` (bench/b4_gepa_adapter.py in bench/.venv-gepa): its
                          defaults (Pareto selection, minibatch 3, merge off), our adapter
                          (B4's pipeline and metric), `max_metric_calls`, the reflection
                          LM at temperature 1.0 as DSPy's GEPA docs set it
              gepa-merge  the same with `use_merge=True` (GEPA's max_merge_invocations 5)
              textgrad    TextGrad's loop (bench/tg_protocol.py in bench/.venv-textgrad): batch 3,
                          validation + revert after every step, steps chosen to match the budget
  tasks       object_counting (BBH, TextGrad's split, exact match on the "Answer:" line) and
              gsm8k (TextGrad's/DSPy's split, numeric match); any other BBH task name works
              with the generic prompt and exact match
  budget      --max-metric-calls M, GEPA's definition: every example the task model runs,
              validation included, the final test not. TextGrad runs V + S (3 + V) of them
              (baseline validation, then per step a batch of 3 and a validation), so it gets
              S = (M - V) // (3 + V) steps (at most 16 an epoch, whole batches only).

The harness scores every final prompt on the test set itself (the same template, test server,
max_tokens and textprop metric for all; per-example correctness stored), once per distinct
prompt and task; the starting prompt's test score is computed once per task and shared.
The test server is the task model answering one call at a time (`--start-servers` starts
it; `--test-url` names one), which is byte-for-byte deterministic, so a prompt has one
test score: the batched engine the frameworks optimize against is ~2x faster but its
answers depend on their batch-mates (two runs of the starting prompt on it: 0.25 and 0.21
on the same 100 object_counting questions, 6 of them answered differently). A
counting proxy of its own (bench/b4_proxy.py) sits in front of each server for each cell, so
calls and tokens per role are counted the same way for every framework.

Resumable: each (task, framework, seed, budget) cell is written to the results file
(atomically, under a lock) when it ends, ok or failed; a rerun skips recorded cells (failed
ones too, unless --retry-failed). A cell cut off (the session ended, SIGTERM, SIGKILL) goes on
where it stopped: its work folder is fixed (RUNS/TASK-FRAMEWORK-sSEED-mmcBUDGET), textprop
resumes its ledger (`--resume`), GEPA its run_dir state, and the proxies' call logs carry
the earlier parts' calls and tokens. TextGrad's loop keeps no state and starts again, but its
own response cache (under XDG_CACHE_HOME, in the work folder) answers the calls an earlier
part made, so it retraces that path almost without calling the servers (a rewrite request
whose batch feedback its threads joined in another order goes out again) and goes on.
Several harness processes may run different cells against the same servers at once (the
results file is locked).

    python bench/b4_quality.py --start-servers                   # every missing core cell
    python bench/b4_quality.py --task-url URL --writer-url URL   # servers already running
    python bench/b4_quality.py --start-servers --frameworks gepa --tasks gsm8k --seeds 1
    python bench/b4_quality.py --table                           # the markdown B4 table
    python bench/b4_quality.py --smoke          # every framework, tiny, the test server
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import math
import os
import platform
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The textprop the cells run: this checkout's, or (B4_TEXTPROP_SRC) the src folder of another
# checkout at a fixed commit, e.g. `git worktree add ../b4code COMMIT`, so that a benchmark
# spread over sessions runs one code while main moves on. Each part records its commit.
SRC = Path(os.environ.get("B4_TEXTPROP_SRC") or ROOT / "src").resolve()
sys.path.insert(0, str(SRC))
sys.path.insert(0, str(ROOT / "bench"))
from b4_proxy import CountingProxy, read_log  # noqa: E402
from bounded_run import run_bounded  # noqa: E402

DATA = (ROOT / "../shared/data").resolve()
RESULTS = ROOT / "bench/results/b4_quality.json"
RUNS = ROOT / "bench/runs/b4"
# Unfinished cells' work folders, packed at a session's end (--pack-parts) and committed: a
# session's machine and checkout start fresh, so bench/runs/ does not outlive it.
PARTS = ROOT / "bench/results/b4_parts"
TG_PYTHON = ROOT / "bench/.venv-textgrad/bin/python"
GEPA_PYTHON = ROOT / "bench/.venv-gepa/bin/python"
# The test server's interpreter: llama.cpp built for a fixed instruction set (AVX2), whose
# answers are the same on every machine B4's sessions land on (bench/setup-testserver)
TESTSERVER_PYTHON = ROOT / "bench/.venv-testserver/bin/python"
FRAMEWORKS = ("pareto", "pareto-demos", "pareto-rewrite", "tgd", "gepa", "gepa-merge",
              "textgrad")
PARETO = ("pareto", "pareto-demos", "pareto-rewrite")
# What runs unless --frameworks says otherwise: the four frameworks. pareto-demos
# (demonstrations, off by default after B5) and gepa-merge (merge "if budget allows") are
# extra cells, run once the core cells are in; so is pareto-rewrite (pareto's whole-text
# rewrites, which B4's first pareto cell used until 2026-12-02).
CORE = ("pareto", "tgd", "gepa", "textgrad")
# pareto-demos: pareto with a demonstrations parameter of up to DEMOS pairs (B5 on the demo
# task: 0.150 -> 0.300 held-out over pareto alone, 6 better / 0 worse), bootstrapped from
# right answers and from the training labels (BBH) or worked solutions (GSM8K's "answer")
DEMOS = 4
MINIBATCH = 3  # every framework's batch / minibatch
GEPA_REFLECTION_TEMPERATURE = 1.0  # DSPy's GEPA docs' setting for the reflection LM
TG_MAX_STEPS_PER_EPOCH = 16  # whole batches of 3 from BBH's 50 training examples

# TextGrad's starting prompts (bench/b2_quality.py) and its role description of the prompt
BBH_PROMPT = ("You will answer a reasoning question. Think step by step. The last line of "
              "your response should be of the following format: 'Answer: $VALUE' where "
              "VALUE is a numerical value.")
BBH_GENERIC_PROMPT = ("You will answer a reasoning question. Think step by step. The last line "
                      "of your response should be of the following format: 'Answer: $VALUE' "
                      "where VALUE is the answer, written as the question's options write it.")
GSM8K_PROMPT = ("You will answer a mathemetical reasoning question. Think step by step. The "
                "last line of your response should be of the following format: 'Answer: "
                "$VALUE' where VALUE is a numerical value.")
ROLE = ("structured system prompt to a somewhat capable language model that specifies the "
        "behavior and strategies for the QA task")
TEMPLATE = "{input}"
NUMERIC_BBH = {"object_counting", "multistep_arithmetic_two"}


# --- tasks ------------------------------------------------------------------------------------
def task_info(task: str) -> dict[str, Any]:
    if task == "gsm8k":
        return {"kind": "gsm8k", "metric": "numeric", "prompt": GSM8K_PROMPT,
                "path": DATA / "gsm8k"}
    path = DATA / f"bbh/bbh/{task}.json"
    return {"kind": "bbh", "metric": "exact_match", "path": path,
            "prompt": BBH_PROMPT if task in NUMERIC_BBH else BBH_GENERIC_PROMPT}


def load_task(task: str, val: int, test: int) -> dict[str, Any]:
    """TextGrad's split through textprop's loaders (the ones `[task] bbh/gsm8k` use)."""
    from textprop.data.benchmarks import load_bbh, load_gsm8k

    info = task_info(task)
    if info["kind"] == "gsm8k":
        splits = load_gsm8k(info["path"] / "train.jsonl", info["path"] / "test.jsonl")
        check_gsm8k_split(splits, info["path"] / "textgrad_dspy_split_indices.json")
    else:
        splits = load_bbh(info["path"])
    rows = {name: [{"id": e.id, "input": e.input, "target": e.target} for e in split]
            for name, split in (("train", splits.train), ("val", splits.val),
                                ("test", splits.test))}
    if len(rows["val"]) < val or len(rows["test"]) < test:
        raise SystemExit(f"b4: {task} has {len(rows['val'])} validation and "
                         f"{len(rows['test'])} test examples; asked for {val} and {test}")
    rows["val"], rows["test"] = rows["val"][:val], rows["test"][:test]
    return {**info, **rows}


def check_gsm8k_split(splits: Any, indices_file: Path) -> None:
    """textprop's GSM8K split is the one in the data's split file (TextGrad's / DSPy's)."""
    if not indices_file.exists():
        return
    wanted = json.loads(indices_file.read_text())
    got = [int(e.id.rsplit("-", 1)[1]) for e in splits.train]
    key = next((k for k in wanted if k.startswith("train_indices")), None)
    if key and wanted[key][:len(got)] != got:
        raise SystemExit(f"b4: the GSM8K train split differs from {indices_file}")


def metric_fn(name: str):
    from textprop.metrics.numeric import numeric_match
    from textprop.metrics.text import exact_match

    return {"exact_match": exact_match, "numeric": numeric_match}[name]


# --- servers --------------------------------------------------------------------------------
def model_id(base_url: str, timeout: float = 10) -> str:
    return _first_model(base_url, timeout)["id"]


def server_platform(base_url: str, timeout: float = 10) -> str | None:
    """The server's `system_fingerprint` (`textprop serve`: its llama.cpp build, CPU
    features, threads and model): a test score holds for one platform only, since the same
    weights answer differently on another CPU (3 of 20 start-prompt answers, 2026-12-02)."""
    return _first_model(base_url, timeout).get("system_fingerprint")


def _first_model(base_url: str, timeout: float) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base_url}/models", timeout=timeout) as reply:
        return json.load(reply)["data"][0]


def test_key(prompt_sha: str, model: str, platform: str | None) -> str:
    return f"{prompt_sha}@{model}" + (f"@{platform}" if platform else "")


def serve_command(model: str, port: int, n_parallel: int | None,
                  cpu_lock: Path | None = None, python: Path | str | None = None) -> list[str]:
    """`textprop serve` of this checkout for one model (`local`, `local:1.5b`, a GGUF path);
    servers given one `cpu_lock` take turns on the cores instead of fighting over them."""
    cmd = [str(python or sys.executable), "-m", "textprop.cli", "serve", "--model", model,
           "--port", str(port)]
    return (cmd + (["--n-parallel", str(n_parallel)] if n_parallel else [])
            + (["--cpu-lock", str(cpu_lock)] if cpu_lock else []))


def start_server(cmd: list[str], port: int, log: Path, wait_s: float = 900):
    """Start a server and wait until it answers /v1/models; (process, base URL)."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + wait_s
    while time.time() < deadline:
        try:
            model_id(url, timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"b4: {' '.join(cmd)} exited: "
                                 f"{log.read_text()[-1500:]}") from None
            time.sleep(1)
    proc.terminate()
    raise SystemExit(f"b4: {' '.join(cmd)} did not answer /v1/models in {wait_s:g} s")


def proc_cpu_s(pid: int | None) -> float | None:
    """utime + stime of a process (Linux /proc), for the servers' CPU per cell."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


# --- results file ---------------------------------------------------------------------------
@contextlib.contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load_results(path: Path) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())
    return {"benchmark": "b4_quality", "protocol": None, "starts": {}, "test_evals": {},
            "cells": {}}


def update_results(path: Path, change) -> dict[str, Any]:
    """Read, change and write the results file atomically, under a lock (runs of a few cells
    at a time may share one file)."""
    with locked(path):
        results = load_results(path)
        change(results)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as out:
            json.dump(results, out, indent=1)
            out.write("\n")
        os.replace(tmp, path)
    return results


def cell_key(task: str, framework: str, seed: int, budget: int) -> str:
    return f"{task}/{framework}/seed{seed}/mmc{budget}"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- the one test evaluator -----------------------------------------------------------------
def evaluate(prompt: str, rows: list[dict], metric: str, url: str, model: str,
             max_tokens: int, workers: int, timeout: float,
             record: Path | None = None) -> dict[str, Any]:
    """Score `prompt` on `rows`: the pipeline every framework optimized, textprop's metric.

    With `record` (a JSON-lines file), every answer is appended to it as it arrives and the
    rows it already holds are not asked again: a test evaluation cut off by a session's end
    (100 answers of the deterministic test server: up to ~40 min beside running cells)
    resumes where it stopped. Calls and tokens count the recorded answers too."""
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key="not-needed", timeout=timeout, max_retries=2)
    score = metric_fn(metric)
    usage = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}
    lock = threading.Lock()
    done: dict[str, dict[str, Any]] = {}
    if record is not None and record.exists():
        for line in record.read_text().splitlines():
            if line.strip():
                answer = json.loads(line)
                done[answer["id"]] = answer
    for answer in done.values():
        usage["calls"] += 1
        usage["prompt_tokens"] += answer["prompt_tokens"]
        usage["completion_tokens"] += answer["completion_tokens"]

    def one(row: dict) -> tuple[str, float, str]:
        if row["id"] in done:
            return row["id"], done[row["id"]]["score"], done[row["id"]]["text"]
        reply = client.chat.completions.create(
            model=model, temperature=0.0, max_tokens=max_tokens,
            messages=[{"role": "system", "content": prompt},
                      {"role": "user", "content": TEMPLATE.format(input=row["input"])}])
        text = reply.choices[0].message.content or ""
        answer = {"id": row["id"], "score": float(score(text, row["target"]).score),
                  "text": text, "prompt_tokens": 0, "completion_tokens": 0}
        if reply.usage is not None:
            answer["prompt_tokens"] = reply.usage.prompt_tokens or 0
            answer["completion_tokens"] = reply.usage.completion_tokens or 0
        with lock:
            usage["calls"] += 1
            usage["prompt_tokens"] += answer["prompt_tokens"]
            usage["completion_tokens"] += answer["completion_tokens"]
            if record is not None:
                record.parent.mkdir(parents=True, exist_ok=True)
                with record.open("a") as f:
                    f.write(json.dumps(answer) + "\n")
        return row["id"], answer["score"], text

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        scored = list(pool.map(one, rows))
    per_example = {i: s for i, s, _ in scored}
    return {"score": sum(per_example.values()) / max(len(per_example), 1),
            "n": len(per_example), "per_example": per_example,
            "replies_tail": {i: t[-200:] for i, _, t in scored[:3]},
            "usage": usage, "wall_s": round(time.perf_counter() - started, 1)}


# --- running a framework --------------------------------------------------------------------
def textgrad_schedule(budget: int, val: int, train: int) -> dict[str, int]:
    """Steps of TextGrad's loop whose task-model runs match `budget` (GEPA's count)."""
    total = max(0, (budget - val) // (MINIBATCH + val))
    per_epoch = min(TG_MAX_STEPS_PER_EPOCH, max(1, train // MINIBATCH))
    epochs = max(1, math.ceil(total / per_epoch))
    steps = total // epochs if total else 0
    return {"epochs": epochs, "steps": steps, "total_steps": epochs * steps,
            "metric_calls": val + epochs * steps * (MINIBATCH + val)}


def tgd_epochs(budget: int, train: int) -> int:
    """Epochs enough for tgd to spend `budget` even if it never validated."""
    return min(1000, math.ceil(budget / MINIBATCH / max(1, train // MINIBATCH)) + 1)


def textprop_config(framework: str, data: dict, args, seed: int, task_url: str,
                    writer_url: str, models: dict[str, str]) -> str:
    source = (f'gsm8k = "{data["path"]}"' if data["kind"] == "gsm8k"
              else f'bbh = "{data["path"]}"')
    edit = "append" if framework in ("pareto", "pareto-demos") else "rewrite"
    if framework in PARETO:
        search = (f'[strategy]\nkind = "pareto"\nminibatch = {MINIBATCH}\nchildren = 1\n'
                  f'parallel = 2\nholdout = 0.25\nfinal_candidates = 3\n')
        if framework == "pareto-demos":
            field = "answer" if data["kind"] == "gsm8k" else "target"
            search += f'demos = {DEMOS}\ndemo_field = "{field}"\n'
    else:  # tgd: epochs enough to spend the budget; the budget ends the run
        epochs = tgd_epochs(args.max_metric_calls, len(data["train"]))
        search = (f'[trainer]\nepochs = {epochs}\nbatch_size = {MINIBATCH}\n'
                  f'acceptance = "non_decrease"\n')
    return f"""[run]
name = "b4"
seed = {seed}

[task]
{source}
limit_val = {args.val}
limit_test = 0

[pipeline]
system_prompt = {json.dumps(data["prompt"])}
role_description = {json.dumps(ROLE)}
template = {json.dumps(TEMPLATE)}
max_tokens = {args.max_tokens}

[metric]
name = "{data["metric"]}"

[engines]
default = "openai-compatible:{models["task"]}@{task_url}"
feedback = "openai-compatible:{models["writer"]}@{writer_url}"
optimizer = "openai-compatible:{models["writer"]}@{writer_url}"
concurrency = {args.workers}
timeout = {args.call_timeout:g}

[optimizer]
max_tokens = {args.writer_max_tokens}
feedback_max_tokens = {args.writer_max_tokens}
edit = "{edit}"

{search}
[budget]
max_metric_calls = {args.max_metric_calls}

[cache]
enabled = false
"""


def run_textprop(framework, data, args, seed, task_url, writer_url, models, work: Path):
    config = work / "run.toml"
    config.write_text(textprop_config(framework, data, args, seed, task_url, writer_url,
                                      models))
    resume = (work / "run" / "ledger.sqlite3").exists()  # an earlier part was cut off
    cmd = [sys.executable, "-m", "textprop.cli", "optimize", str(config), "--no-cache",
           "--run-dir", str(work / "run"), "--json"] + (["--resume"] if resume else [])
    env = {**os.environ, "PYTHONPATH": str(SRC), "OPENAI_API_KEY": "not-needed"}
    proc, _, killed = run_bounded(cmd, args.deadline_min * 60, cwd=work, env=env)
    code, err = proc.returncode, proc.stderr
    out_info: dict[str, Any] = {"returncode": code, "killed_at_deadline": killed,
                                "stderr_tail": err[-1500:]}
    ledger_file = work / "run" / "ledger.sqlite3"
    if code != 0 or not ledger_file.exists():
        return None, out_info | {"error": f"textprop optimize exited {code}"
                                          f"{' at the deadline' if killed else ''}: "
                                          f"{err.strip()[-600:]}"}
    from textprop.ledger import Ledger

    ledger = Ledger.in_run(work / "run")
    steps, meta = ledger.steps(), ledger.meta()
    final = meta.get("final") or {}
    values = final.get("values") or {}
    prompt = sent_prompt(values)
    if prompt is None:
        return None, out_info | {"error": "the ledger has no final system prompt"}
    # pareto keeps the start when its best candidate's lead is within noise: that candidate
    # is scored on test too, so the table shows what the rule cost or saved
    evidence = (steps[-1].get("search_state") or {}).get("final", {}).get("evidence")
    if evidence:
        out_info["final_evidence"] = evidence
        if evidence["kept_start"]:
            [best] = [c for c in ledger.candidates() if c.id == evidence["candidate"]]
            out_info["unguarded_prompt"] = sent_prompt(best.values)
    out_info |= {"baseline_val": steps[0]["val_score"], "best_val": final.get("best_val_score"),
                 "metric_calls": final.get("metric_calls"), "steps": len(steps) - 1,
                 "accepted": sum(s["status"] == "accepted" for s in steps),
                 "candidates": len(ledger.candidates()), "status": meta.get("status"),
                 "ledger_usage_by_role": ledger.usage_by_role()}
    return prompt, out_info


def sent_prompt(values: dict[str, str]) -> str | None:
    """The system message textprop sends for these values (pareto-demos: with the pairs)."""
    prompt = values.get("system_prompt")
    if prompt is not None and values.get("demonstrations"):
        from textprop.demos import decode, in_system_prompt

        prompt = in_system_prompt(prompt, decode(values["demonstrations"]))
    return prompt


def run_gepa(framework, data, args, seed, task_url, writer_url, models, work: Path):
    spec = {"task_url": task_url, "task_model": models["task"], "reflection_url": writer_url,
            "reflection_model": models["writer"], "system_prompt": data["prompt"],
            "template": TEMPLATE, "metric": data["metric"], "train": data["train"],
            "val": data["val"], "max_metric_calls": args.max_metric_calls, "seed": seed,
            "use_merge": framework == "gepa-merge", "minibatch": MINIBATCH,
            "max_tokens": args.max_tokens, "reflection_max_tokens": args.writer_max_tokens,
            "reflection_temperature": GEPA_REFLECTION_TEMPERATURE,
            "workers": args.workers, "timeout": args.call_timeout,
            "run_dir": str(work / "gepa_run")}
    (work / "spec.json").write_text(json.dumps(spec))
    out = work / "result.json"
    cmd = [str(GEPA_PYTHON), str(ROOT / "bench/b4_gepa_adapter.py"), str(work / "spec.json"),
           str(out)]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OPENAI_API_KEY": "not-needed"}
    proc, _, killed = run_bounded(cmd, args.deadline_min * 60, cwd=work, env=env)
    code, err = proc.returncode, proc.stderr
    r = json.loads(out.read_text()) if out.exists() else {}
    info = {"returncode": code, "killed_at_deadline": killed, "stderr_tail": err[-1500:],
            **{k: r.get(k) for k in ("baseline_val", "best_val", "metric_calls",
                                     "candidates", "full_val_evals", "val_scores",
                                     "task_calls", "reflection_calls", "loop_s")}}
    if code != 0 or r.get("failure") or not r.get("final_prompt"):
        return None, info | {"error": r.get("failure") or f"gepa exited {code}"
                             f"{' at the deadline' if killed else ''}: {err.strip()[-600:]}"}
    return r["final_prompt"], info


def run_textgrad(framework, data, args, seed, task_url, writer_url, models, work: Path):
    plan = textgrad_schedule(args.max_metric_calls, args.val, len(data["train"]))
    if plan["total_steps"] == 0:
        return None, {"error": f"a budget of {args.max_metric_calls} leaves TextGrad no step "
                               f"after its validation of {args.val}", "schedule": plan}
    task = (["--gsm8k", str(data["path"])] if data["kind"] == "gsm8k"
            else ["--bbh", str(data["path"])])
    out = work / "result.json"
    cmd = [str(TG_PYTHON), str(ROOT / "bench/tg_protocol.py"), "--base-url", task_url,
           "--model", models["task"], "--backward-base-url", writer_url,
           "--backward-model", models["writer"], *task, "--val", str(args.val), "--no-test",
           "--epochs", str(plan["epochs"]), "--steps", str(plan["steps"]),
           "--batch-size", str(MINIBATCH), "--threads", str(args.workers),
           "--max-tokens", str(args.max_tokens),
           "--backward-max-tokens", str(args.writer_max_tokens),
           "--timeout", f"{args.call_timeout:g}", "--seed", str(seed), "--out", str(out)]
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "XDG_CACHE_HOME": str(work / "cache"), "TG_DATA_ROOT": str(work / "data"),
           "OPENAI_API_KEY": "not-needed"}
    proc, _, killed = run_bounded(cmd, args.deadline_min * 60, cwd=work, env=env)
    code, err = proc.returncode, proc.stderr
    r = json.loads(out.read_text()) if out.exists() else {}
    info = {"returncode": code, "killed_at_deadline": killed, "stderr_tail": err[-1500:],
            "schedule": plan, "metric_calls": plan["metric_calls"],
            "baseline_val": r.get("baseline_val"), "best_val": r.get("best_val"),
            "steps": len(r.get("steps") or []),
            "accepted": sum(bool(s.get("accepted")) for s in r.get("steps") or []),
            "tg_calls": r.get("calls"), "tg_forward_calls": r.get("forward_engine_calls"),
            "cache_hits": (r.get("generate_calls") or 0) - sum((r.get("calls") or {}).values())}
    if code != 0 or r.get("failure") or not r.get("final_prompt"):
        return None, info | {"error": r.get("failure") or f"tg_protocol exited {code}"
                             f"{' at the deadline' if killed else ''}: {err.strip()[-600:]}"}
    return r["final_prompt"], info


RUNNERS = {"pareto": run_textprop, "pareto-demos": run_textprop,
           "pareto-rewrite": run_textprop, "tgd": run_textprop,
           "gepa": run_gepa, "gepa-merge": run_gepa, "textgrad": run_textgrad}


def by_role(task_usage: dict, writer_usage: dict) -> dict[str, dict[str, float]]:
    """The proxies' counts as roles: task (the task model), feedback (feedback + batch
    reduction), rewrite (optimizer rewrites and GEPA's reflections), other."""
    roles: dict[str, dict[str, float]] = {}
    group = {"feedback": "feedback", "reduce": "feedback", "rewrite": "rewrite",
             "reflection": "rewrite"}
    for kind, row in [*(("task", r) for r in task_usage.values()), *writer_usage.items()]:
        name = group.get(kind, kind)
        acc = roles.setdefault(name, {"calls": 0, "failed": 0, "prompt_tokens": 0,
                                      "completion_tokens": 0})
        for k in acc:
            acc[k] += row.get(k, 0)
    return roles




def cell_work_dir(runs: Path, task: str, framework: str, seed: int, budget: int) -> Path:
    return runs / f"{task}-{framework}-s{seed}-mmc{budget}"


def pack_parts(runs: Path, parts: Path, recorded: dict[str, Any]) -> list[Path]:
    """Pack every cell work folder under `runs` whose cell is not recorded into
    `parts`/NAME.tar.gz (written atomically), so the next session's checkout resumes it."""
    import tarfile

    finished = {Path(c["work_dir"]).name for c in recorded.values() if c.get("work_dir")}
    packed = []
    for work in sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []:
        if work.name in finished or not (work / "parts.json").exists():
            continue
        parts.mkdir(parents=True, exist_ok=True)
        target = parts / f"{work.name}.tar.gz"
        tmp = target.with_suffix(".tmp")
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(work, arcname=work.name)
        tmp.replace(target)
        packed.append(target)
    return packed


def unpack_part(work: Path, parts: Path) -> bool:
    """Restore a cell's work folder from its packed part when this checkout has none."""
    import tarfile

    packed = parts / f"{work.name}.tar.gz"
    if work.exists() or not packed.exists():
        return False
    work.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(packed) as tar:
        names = tar.getnames()
        if any(n != work.name and not n.startswith(work.name + "/") for n in names):
            raise SystemExit(f"b4: {packed} holds files outside {work.name}/")
        tar.extractall(work.parent, filter="data")
    return True


def start_part(work: Path, framework: str) -> list[dict[str, Any]]:
    """Open a new part of the cell in `work` (kept as the earlier parts left it: ledger,
    run_dir, response cache, call logs) and return all its parts so far, this one last."""
    parts_file = work / "parts.json"
    work.mkdir(parents=True, exist_ok=True)
    parts = json.loads(parts_file.read_text()) if parts_file.exists() else []
    parts.append({"started": time.time(), "commit": _commit()})  # the code this part ran
    parts_file.write_text(json.dumps(parts))
    return parts


def earlier_parts_wall(parts: list[dict[str, Any]], calls: list[dict[str, Any]]) -> float:
    """Seconds the cell's earlier, cut-off parts ran: each from its start to the end of the
    last call it logged (a part cut off is not there to time itself)."""
    total = 0.0
    for part, following in zip(parts[:-1], parts[1:], strict=True):
        ends = [c["t"] for c in calls if part["started"] <= c["t"] < following["started"]]
        total += max(ends) - part["started"] if ends else 0.0
    return total


def run_cell(task: str, framework: str, seed: int, data: dict, args, servers: dict,
             results_path: Path) -> dict[str, Any]:
    work = cell_work_dir(args.runs, task, framework, seed, args.max_metric_calls)
    if unpack_part(work, args.parts):
        print(f"  resumed from {args.parts / (work.name + '.tar.gz')}", file=sys.stderr,
              flush=True)
    parts = start_part(work, framework)
    logs = {"task": work / "calls-task.jsonl", "writer": work / "calls-writer.jsonl"}
    earlier_wall = earlier_parts_wall(parts, [c for log in logs.values()
                                              for c in read_log(log)])
    cell: dict[str, Any] = {"task": task, "framework": framework, "seed": seed,
                            "budget": args.max_metric_calls, "work_dir": str(work),
                            "parts": len(parts),
                            "commits": [p.get("commit") for p in parts]}
    rusage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    server_cpu0 = {k: proc_cpu_s(v) for k, v in servers["pids"].items()}
    task_proxy = CountingProxy(servers["task"], label="task", timeout=args.call_timeout + 60,
                               log=logs["task"])
    writer_proxy = CountingProxy(servers["writer"], timeout=args.call_timeout + 60,
                                 log=logs["writer"])
    prompt = None
    with task_proxy, writer_proxy:
        try:
            prompt, info = RUNNERS[framework](framework, data, args, seed, task_proxy.base_url,
                                              writer_proxy.base_url, servers["models"], work)
        except Exception as error:  # the harness's own failure is the cell's failure too
            info = {"error": f"harness: {type(error).__name__}: {error}"}
    optimize_wall = time.perf_counter() - wall0 + earlier_wall
    rusage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    unguarded = info.pop("unguarded_prompt", None)
    cell |= {"framework_info": {k: v for k, v in info.items() if k != "error"},
             "usage": {"task": task_proxy.summary(), "writer": writer_proxy.summary()},
             "usage_by_role": by_role(task_proxy.summary(), writer_proxy.summary()),
             "optimize_wall_s": round(optimize_wall, 1),
             "cpu_framework_s": round(rusage1.ru_utime + rusage1.ru_stime
                                      - rusage0.ru_utime - rusage0.ru_stime, 1)}
    cell["metric_calls"] = info.get("metric_calls")
    cell["task_calls"] = cell["usage_by_role"].get("task", {}).get("calls", 0)
    if prompt is None:
        cell |= {"status": "failed", "error": info.get("error", "no final prompt")}
    else:
        cell |= {"status": "ok", "final_prompt": prompt, "prompt_sha": sha(prompt),
                 "baseline_val": info.get("baseline_val"), "best_val": info.get("best_val")}
        try:
            test = test_eval(task, prompt, data, args, servers, results_path)
            start = load_results(results_path)["starts"][task]
            cell |= {"start_test": start["score"], "final_test": test["score"],
                     "test_n": test["n"], "final_test_per_example": test["per_example"],
                     "test_model": servers["models"]["test"],
                     "test_platform": servers.get("test_platform"),
                     "test_eval": {"shared": test.get("shared", False), **test["usage"],
                                   "wall_s": test["wall_s"]}}
            if unguarded is not None:
                other = test_eval(task, unguarded, data, args, servers, results_path)
                cell |= {"unguarded_prompt": unguarded, "unguarded_test": other["score"],
                         "unguarded_test_per_example": other["per_example"]}
        except Exception as error:
            cell |= {"status": "failed", "error": f"test evaluation: {type(error).__name__}: "
                                                  f"{error}"}
    cell["wall_s"] = round(time.perf_counter() - wall0 + earlier_wall, 1)
    cell["cpu_harness_s"] = round(time.process_time() - cpu0, 1)
    cell["cpu_servers_s"] = {k: None if v is None or proc_cpu_s(servers["pids"][k]) is None
                             else round(proc_cpu_s(servers["pids"][k]) - v, 1)
                             for k, v in server_cpu0.items()}
    cell["finished_at"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return cell


def test_eval(task: str, prompt: str, data: dict, args, servers: dict,
              results_path: Path) -> dict[str, Any]:
    """The harness's test score of `prompt` by the test server's model, once per distinct
    prompt, task, test model and platform (scores of another model or platform are not
    reused)."""
    model, platform = servers["models"]["test"], servers.get("test_platform")
    key = test_key(sha(prompt), model, platform)
    known = load_results(results_path)["test_evals"].get(task, {}).get(key)
    if known is not None:
        return {**known, "shared": True}
    # answers so far, committed with the cells' parts, so a cut evaluation resumes
    name = f"{task}-{key}".replace("/", "_").replace(":", "_")
    record = args.parts / "test-evals" / f"{name}.jsonl"
    result = evaluate(prompt, data["test"], data["metric"], servers["test"], model,
                      args.max_tokens, args.workers, args.call_timeout, record=record)
    result |= {"prompt": prompt, "model": model, "platform": platform}
    update_results(results_path, lambda r: r["test_evals"].setdefault(task, {})
                   .__setitem__(key, result))
    record.unlink(missing_ok=True)
    if record.parent.is_dir() and not any(record.parent.iterdir()):
        record.parent.rmdir()  # --parts holds only what is unfinished
    return result


def ensure_start(task: str, data: dict, args, servers: dict, results_path: Path) -> None:
    """The starting prompt's test score, computed once per task, test model and platform
    and shared by every cell scored there (`starts` holds the latest; every platform's is
    kept in `test_evals`)."""
    known = load_results(results_path)["starts"].get(task)
    if known is not None and known.get("model") == servers["models"]["test"] and \
            known.get("platform") == servers.get("test_platform"):
        return
    print(f"{time.strftime('%H:%M:%S')} {task}: the starting prompt on {len(data['test'])} "
          "test examples ...", file=sys.stderr, flush=True)
    result = test_eval(task, data["prompt"], data, args, servers, results_path)
    start = {"prompt": data["prompt"], "prompt_sha": sha(data["prompt"]),
             "model": servers["models"]["test"], "platform": servers.get("test_platform"),
             "score": result["score"], "n": result["n"],
             "per_example": result["per_example"],
             "finished_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    update_results(results_path, lambda r: r["starts"].__setitem__(task, start))


def protocol_of(args, models: dict[str, str]) -> dict[str, Any]:
    """What every cell of one results file shares, served models included: cells of other
    models or settings go to another file."""
    return {"models": models, "val": args.val, "test": args.test, "max_tokens": args.max_tokens,
            "writer_max_tokens": args.writer_max_tokens, "minibatch": MINIBATCH,
            "template": TEMPLATE}


# --- one platform's scores -------------------------------------------------------------------
def platform_view(results: dict, platform: str | None = None) -> dict[str, Any]:
    """The results with every ok cell's test scores (final and start) as measured on one
    platform: `platform`, or the one that scored the most ok cells (the latest on a tie). An
    ok cell whose final prompt has no score there is shown as `unscored` (`--rescore` on a
    machine of that platform fills it in)."""
    ok = [c for c in results["cells"].values() if c["status"] == "ok"]
    counts: dict[str | None, list[str]] = {}
    for c in ok:
        counts.setdefault(c.get("test_platform"), []).append(c.get("finished_at", ""))
    if platform is None and counts:
        platform = max(counts, key=lambda p: (len(counts[p]), max(counts[p])))
    cells, starts = {}, {}
    for key, c in results["cells"].items():
        if c["status"] != "ok":
            cells[key] = c
            continue
        evals = results["test_evals"].get(c["task"], {})
        start_sha = sha(task_info(c["task"])["prompt"])
        final = evals.get(test_key(c["prompt_sha"], c["test_model"], platform))
        start = evals.get(test_key(start_sha, c["test_model"], platform))
        if final is None or start is None:
            cells[key] = {**c, "status": "unscored",
                          "error": f"not scored on platform {platform}: --rescore there"}
            continue
        starts[c["task"]] = start
        cells[key] = {**c, "start_test": start["score"], "final_test": final["score"],
                      "final_test_per_example": final["per_example"], "test_n": final["n"],
                      "test_platform": platform}
    return {**results, "cells": cells, "starts": starts, "platform": platform}


def rescore(args, out: Path) -> list[str]:
    """Score, on the test server given, the start of every task in --tasks and every ok
    cell's final prompt that this platform has not scored yet; what was scored."""
    servers = {"test": args.test_url, "models": {"test": model_id(args.test_url)}}
    servers["test_platform"] = server_platform(args.test_url)
    done = []
    results = load_results(out)
    for task in args.tasks:
        data = load_task(task, args.val, args.test)
        ensure_start(task, data, args, servers, out)
        for c in sorted(results["cells"].values(), key=lambda c: c["seed"]):
            if c["task"] == task and c["status"] == "ok" and \
                    c["test_model"] == servers["models"]["test"]:
                test = test_eval(task, c["final_prompt"], data, args, servers, out)
                if not test.get("shared"):
                    done.append(f"{task} {c['framework']} seed {c['seed']}: {test['score']:.3f}")
    return done


# --- statistics -----------------------------------------------------------------------------
def bootstrap_gain(cells: list[dict], start: dict[str, float], resamples: int = 2000,
                   seed: int = 0) -> tuple[float, float, float]:
    """Mean gain (final - start) over (test example, seed), and a 95 % bootstrap interval
    that resamples test examples and seeds (both with replacement, independently)."""
    ids = sorted(start)
    grid = [[c["final_test_per_example"][i] - start[i] for i in ids] for c in cells]
    mean = sum(map(sum, grid)) / (len(grid) * len(ids))
    rng = random.Random(seed)
    means = []
    for _ in range(resamples):
        rows = [grid[rng.randrange(len(grid))] for _ in grid]
        cols = [rng.randrange(len(ids)) for _ in ids]
        means.append(sum(row[j] for row in rows for j in cols) / (len(rows) * len(cols)))
    means.sort()
    return mean, means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def sign_test(better: int, worse: int) -> float:
    """Exact two-sided sign test (McNemar's exact test) on the discordant pairs."""
    n = better + worse
    if n == 0:
        return 1.0
    k = min(better, worse)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def paired(a: list[dict], b: list[dict]) -> dict[str, Any] | None:
    """Framework a vs b on the same (test example, seed) pairs (seeds where both are ok)."""
    b_by_seed = {c["seed"]: c for c in b}
    pairs = [(c, b_by_seed[c["seed"]]) for c in a if c["seed"] in b_by_seed]
    if not pairs:
        return None
    better = worse = n = 0
    for x, y in pairs:
        for i, s in x["final_test_per_example"].items():
            t = y["final_test_per_example"].get(i)
            if t is None:
                continue
            n += 1
            better += s > t
            worse += s < t
    return {"seeds": len(pairs), "pairs": n, "better": better, "worse": worse,
            "difference": (better - worse) / max(n, 1), "p": sign_test(better, worse)}


def summarize(results: dict, budget: int | None = None,
              platform: str | None = None) -> dict[str, Any]:
    results = view = platform_view(results, platform)
    groups: dict[tuple[str, str, int], list[dict]] = {}
    for c in results["cells"].values():
        if budget is None or c["budget"] == budget:
            groups.setdefault((c["task"], c["framework"], c["budget"]), []).append(c)
    rows = []
    for (task, framework, b), cells in sorted(groups.items()):
        ok = sorted((c for c in cells if c["status"] == "ok"), key=lambda c: c["seed"])
        start = results["starts"].get(task, {}).get("per_example", {})
        row: dict[str, Any] = {"task": task, "framework": framework, "budget": b,
                               "seeds_ok": [c["seed"] for c in ok],
                               "failed": [{"seed": c["seed"], "error": c.get("error")}
                                          for c in cells if c["status"] not in
                                          ("ok", "unscored")],
                               "unscored": [c["seed"] for c in cells
                                            if c["status"] == "unscored"]}
        if ok and start:
            mean, low, high = bootstrap_gain(ok, start)
            row |= {"start": results["starts"][task]["score"],
                    "final": sum(c["final_test"] for c in ok) / len(ok),
                    "gain": mean, "low": low, "high": high,
                    "per_seed": [(c["seed"], c["start_test"], c["final_test"]) for c in ok]}
        every = [c for c in cells if c.get("usage_by_role")]
        roles: dict[str, dict[str, float]] = {}
        for c in every:
            for role, u in c["usage_by_role"].items():
                acc = roles.setdefault(role, {"calls": 0, "prompt_tokens": 0,
                                              "completion_tokens": 0})
                for k in acc:
                    acc[k] += u.get(k, 0) / len(every)
        row["usage_mean"] = roles
        row["metric_calls_mean"] = _mean([c.get("metric_calls") for c in every])
        row["wall_s_mean"] = _mean([c.get("optimize_wall_s") for c in every])
        row["cpu_s_mean"] = _mean([(c.get("cpu_framework_s") or 0) + (c.get("cpu_harness_s")
                                   or 0) + sum(v or 0 for v in (c.get("cpu_servers_s") or {})
                                               .values()) for c in every])
        rows.append(row)
    comparisons = []
    for task in sorted({t for t, _, _ in groups}):
        for b in sorted({x for t, _, x in groups if t == task}):
            for ours in ("pareto", "pareto-demos"):
                mine = [c for c in groups.get((task, ours, b), []) if c["status"] == "ok"]
                others = ("gepa", "gepa-merge", "textgrad", "tgd") + (
                    ("pareto",) if ours == "pareto-demos" else ()) + (
                    ("pareto-rewrite",) if ours == "pareto" else ())
                for other in others:
                    theirs = [c for c in groups.get((task, other, b), [])
                              if c["status"] == "ok"]
                    result = paired(mine, theirs) if mine and theirs else None
                    if result:
                        comparisons.append({"task": task, "budget": b, "a": ours, "b": other,
                                            **result})
    return {"rows": rows, "comparisons": comparisons, "view": view}


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def table(results: dict, budget: int | None = None, platform: str | None = None) -> str:
    s = summarize(results, budget, platform)
    view = s["view"]
    lines = [f"Test scores on platform {view['platform']} (the test server's "
             "system_fingerprint); cells scored elsewhere only: unscored.", "",
             "| task | framework | budget | seeds ok / failed | test: start -> final (mean) | "
             "gain, 95 % interval | per seed final | metric calls | calls task / feedback / "
             "rewrite | tokens in / out: task | tokens in / out: writer | optimize wall / cell "
             "| CPU / cell |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in s["rows"]:
        u = r["usage_mean"]

        def calls(role: str, u: dict = u) -> str:
            return f"{u.get(role, {}).get('calls', 0):.0f}"

        def tokens(names: tuple[str, ...], u: dict = u) -> str:
            pin = sum(u.get(n, {}).get("prompt_tokens", 0) for n in names)
            pout = sum(u.get(n, {}).get("completion_tokens", 0) for n in names)
            return f"{pin:,.0f} / {pout:,.0f}"

        quality = "-" if "gain" not in r else (
            f"{r['start']:.3f} -> **{r['final']:.3f}** | {r['gain']:+.3f} "
            f"[{r['low']:+.3f}, {r['high']:+.3f}] | "
            + ", ".join(f"s{seed} {f:.3f}" for seed, _, f in r["per_seed"]))
        if "gain" not in r:
            quality = "- | - | -"
        failed = "; ".join(f"s{f['seed']}: {str(f['error'])[:80]}" for f in r["failed"])
        if r["unscored"]:
            failed += ("; " if failed else "") + "unscored here: " + ", ".join(
                f"s{seed}" for seed in r["unscored"])
        mc = "-" if r["metric_calls_mean"] is None else f"{r['metric_calls_mean']:.0f}"
        wall = "-" if r["wall_s_mean"] is None else f"{r['wall_s_mean'] / 60:.1f} min"
        cpu = "-" if r["cpu_s_mean"] is None else f"{r['cpu_s_mean'] / 60:.1f} min"
        lines.append(
            f"| {r['task']} | {r['framework']} | {r['budget']} | {len(r['seeds_ok'])} / "
            f"{len(r['failed'])}{f' ({failed})' if failed else ''} | {quality} | {mc} | "
            f"{calls('task')} / {calls('feedback')} / {calls('rewrite')} | "
            f"{tokens(('task',))} | {tokens(('feedback', 'rewrite', 'other'))} | {wall} | "
            f"{cpu} |")
    lines += ["", "Per cell:", "",
              "| task | framework | seed | status | test: start -> final | val: start -> best | "
              "metric calls | calls task / feedback / rewrite | tokens in / out | wall: optimize + "
              "test | CPU: framework + harness + servers |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in sorted((c for c in view["cells"].values()
                     if budget is None or c["budget"] == budget),
                    key=lambda c: (c["task"], c["framework"], c["budget"], c["seed"])):
        u = c.get("usage_by_role") or {}
        roles = " / ".join(f"{u.get(r, {}).get('calls', 0):.0f}"
                           for r in ("task", "feedback", "rewrite"))
        tin = sum(v.get("prompt_tokens", 0) for v in u.values())
        tout = sum(v.get("completion_tokens", 0) for v in u.values())
        servers = sum(v or 0 for v in (c.get("cpu_servers_s") or {}).values())
        if c["status"] == "ok":
            test = f"{c['start_test']:.3f} -> {c['final_test']:.3f} ({c['test_n']})"
            if c.get("unguarded_test") is not None:  # pareto kept the start
                test += f"; start kept, its best candidate: {c['unguarded_test']:.3f}"
            val = (f"{c['baseline_val']:.3f} -> {c['best_val']:.3f}"
                   if c.get("baseline_val") is not None and c.get("best_val") is not None
                   else "-")
            status = "ok"
        else:
            test, val = "-", "-"
            status = f"{c['status']}: {str(c.get('error'))[:120]}"
        if c.get("parts", 1) > 1:  # cut off and resumed: CPU counts the last part only
            status += f" ({c['parts']} parts, CPU of the last)"
            known = list(dict.fromkeys(x for x in c.get("commits", []) if x))
            if len(known) > 1:  # the code changed between parts
                status += f" (code {' then '.join(known)})"
        lines.append(
            f"| {c['task']} | {c['framework']} | {c['seed']} | {status} | {test} | {val} | "
            f"{c.get('metric_calls') if c.get('metric_calls') is not None else '-'} | {roles} | "
            f"{tin:,.0f} / {tout:,.0f} | {c.get('optimize_wall_s', 0) / 60:.1f} + "
            f"{(c['wall_s'] - c.get('optimize_wall_s', 0)) / 60:.1f} min | "
            f"{c.get('cpu_framework_s', 0):.0f} + {c.get('cpu_harness_s', 0):.0f} + "
            f"{servers:.0f} s |")
    lines += ["", "Paired, same test examples and seeds (exact two-sided sign test on the "
                  "discordant (example, seed) pairs):", "",
              "| task | budget | a vs b | seeds | pairs | a right, b wrong | a wrong, b right | "
              "difference | p |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in s["comparisons"]:
        lines.append(f"| {c['task']} | {c['budget']} | {c['a']} vs {c['b']} | {c['seeds']} | "
                     f"{c['pairs']} | {c['better']} | {c['worse']} | {c['difference']:+.3f} | "
                     f"{c['p']:.3g} |")
    return "\n".join(lines)


# --- the smoke run: every framework, tiny, against the scripted test server -----------------
SMOKE_CRITIQUE = ("The prompt does not ask the model to list every item with its count "
                  "before adding; ask for that list and a final check.")


def smoke_replies(targets: dict[str, str]):
    """Canned replies for the task server and the writer server (as in B1)."""
    from b4_proxy import classify

    from textprop.testing.server import _requested_json, last_user_text

    def system(body: dict) -> str:
        return next((m.get("content") or "" for m in body.get("messages") or []
                     if m.get("role") == "system"), "")

    def task(body: dict) -> str:
        question = last_user_text(body).strip()
        target = targets.get(question, "0")
        digest = hashlib.sha256(f"{system(body)}\n{question}".encode()).digest()
        # a revised prompt answers right more often, so every framework's smoke cell accepts
        # a revision whatever hash its writer's messages (and so its revision) get
        right = digest[0] < (224 if "Revision" in system(body) else 128)
        answer = target if right or not target.lstrip("-").isdigit() else str(int(target) + 1)
        return f"I count step by step.\nAnswer: {answer}"

    def writer(body: dict) -> str:
        kind = classify(body)
        wants_json, schema = _requested_json(body)
        number = int.from_bytes(hashlib.sha256(json.dumps(
            body.get("messages"), sort_keys=True).encode()).digest()[:3], "big")
        new = f"{BBH_PROMPT} Revision {number}: list each item with its count, then add."
        if kind == "reflection":
            return f"```\n{new}\n```"
        if kind == "rewrite":
            if wants_json:  # the key the schema asks for: a whole text, or one instruction
                key = next(iter((schema or {}).get("properties") or {"improved_variable": {}}))
                return json.dumps({key: new if key == "improved_variable" else
                                   f"Revision {number}: list each item with its count."})
            return f"<IMPROVED_VARIABLE>{new}</IMPROVED_VARIABLE>"
        if wants_json:
            props = list(((schema or {}).get("properties") or {"feedback": {}}).keys())
            return json.dumps({props[0]: SMOKE_CRITIQUE})
        return SMOKE_CRITIQUE

    return task, writer


REQUIRED = ("task", "framework", "seed", "budget", "status", "final_prompt", "start_test",
            "final_test", "test_n", "final_test_per_example", "metric_calls", "usage_by_role",
            "wall_s", "cpu_framework_s", "cpu_harness_s", "finished_at")


def as_request_reply(reply):
    """A reply on an OpenAI body as a ScriptedEngine reply on a textprop Request."""

    def answer(request) -> str:
        body: dict[str, Any] = {"messages": [{"role": m.role, "content": m.content}
                                             for m in request.messages]}
        if request.json_schema is not None:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"schema": request.json_schema}}
        return reply(body)

    return answer


@contextlib.contextmanager
def smoke_servers(kind: str, task_reply, writer_reply):
    """Two scripted servers: textprop's test server, or `textprop serve`'s HTTP layer (the
    real runs' server) in front of a ScriptedEngine; (task, writer, request counter)."""
    if kind == "test":
        from textprop.testing.server import TestServer

        with TestServer(reply=task_reply, models=["b4-task"]) as task, \
                TestServer(reply=writer_reply, models=["b4-writer"]) as writer:
            yield task.base_url, writer.base_url, lambda: len(task.requests) + len(
                writer.requests)
        return
    from textprop.engines.scripted import ScriptedEngine
    from textprop.serve import Server

    engines = [ScriptedEngine(default=as_request_reply(reply), supports_json_schema=True,
                              name=name)
               for reply, name in ((task_reply, "local:b4-task"),
                                   (writer_reply, "local:b4-writer"))]
    with Server(engines[0], port=0) as task, Server(engines[1], port=0) as writer:
        yield task.base_url, writer.base_url, lambda: sum(len(e.requests) for e in engines)


def smoke(args) -> int:
    """Every framework for one seed on a tiny budget against scripted servers (textprop's
    test server, or with `--smoke-server serve` `textprop serve`'s HTTP layer); checks the
    cells and their fields, then that a rerun skips every finished cell."""

    missing = missing_baselines(FRAMEWORKS)
    if missing:
        print(f"b4 smoke: missing {', '.join(missing)} (bench/setup-textgrad, "
              "bench/setup-gepa)", file=sys.stderr)
        return 2
    out = args.out if args.out != RESULTS else Path(tempfile.mkdtemp(
        prefix="b4-smoke-", dir=_scratch())) / "b4_smoke.json"
    targets = {}
    for task in args.tasks:
        data = load_task(task, args.val, args.test)
        targets |= {r["input"].strip(): r["target"] for split in ("train", "val", "test")
                    for r in data[split]}
    task_reply, writer_reply = smoke_replies(targets)
    with smoke_servers(args.smoke_server, task_reply, writer_reply) as (task_url, writer_url,
                                                                         requests):
        args.task_url, args.writer_url = task_url, writer_url
        started = time.perf_counter()
        run_all(args, out)
        first = load_results(out)
        print(f"b4 smoke: first pass {time.perf_counter() - started:.0f} s", file=sys.stderr)
        calls_before = requests()
        run_all(args, out)  # resume: every cell is recorded, nothing runs
        calls_after = requests()
    second = load_results(out)
    problems = []
    for task in args.tasks:
        for framework in args.frameworks:
            for seed in args.seeds:
                key = cell_key(task, framework, seed, args.max_metric_calls)
                cell = first["cells"].get(key)
                if cell is None:
                    problems.append(f"{key}: no cell")
                    continue
                if cell["status"] != "ok":
                    problems.append(f"{key}: {cell['status']}: {cell.get('error')}")
                    continue
                absent = [f for f in REQUIRED if cell.get(f) is None]
                if absent:
                    problems.append(f"{key}: missing {absent}")
                if cell["test_n"] != args.test:
                    problems.append(f"{key}: test_n {cell['test_n']}")
                if not cell["usage_by_role"].get("task", {}).get("calls"):
                    problems.append(f"{key}: no task calls counted")
                if second["cells"].get(key) != cell:
                    problems.append(f"{key}: changed by the rerun")
    sent = calls_after - calls_before  # nothing to run: no request at all
    if sent:
        problems.append(f"the rerun sent {sent} requests: it did not skip the cells")
    print(table(second), flush=True)
    print(f"\nb4 smoke: results in {out}", flush=True)
    if problems:
        print("b4 smoke: FAILED\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"b4 smoke: ok ({len(first['cells'])} cells; the rerun skipped them all)",
          file=sys.stderr)
    return 0


def _scratch() -> Path:
    folder = ROOT / "bench/results/tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --- main ------------------------------------------------------------------------------------
def plan(args) -> str:
    """What each cell will run, with no call: sizes, the budget and each framework's share."""
    lines = []
    for task in args.tasks:
        data = load_task(task, args.val, args.test)
        tg = textgrad_schedule(args.max_metric_calls, args.val, len(data["train"]))
        epochs = tgd_epochs(args.max_metric_calls, len(data["train"]))
        lines += [
            f"{task}: train {len(data['train'])}, val {len(data['val'])}, test "
            f"{len(data['test'])}, metric {data['metric']}, budget M = {args.max_metric_calls}"
            " task-model runs (validation included, test not)",
            f"  pareto, tgd: [budget] max_metric_calls = {args.max_metric_calls} (tgd: up to "
            f"{epochs} epochs of batch {MINIBATCH}; the budget ends the run)",
            f"  gepa, gepa-merge: max_metric_calls = {args.max_metric_calls} (its last "
            f"iteration may pass it by up to {2 * MINIBATCH + args.val})",
            f"  textgrad: {tg['epochs']} epoch(s) x {tg['steps']} steps = {tg['total_steps']} "
            f"steps: {args.val} + {tg['total_steps']} x ({MINIBATCH} + {args.val}) = "
            f"{tg['metric_calls']} runs",
            f"  test: {len(data['test'])} runs per distinct final prompt (the harness)"]
    return "\n".join(lines)


def cells_to_run(args, out: Path) -> list[tuple[str, int, str, str]]:
    """(task, seed, framework, key) of the cells not recorded yet (or failed, with
    --retry-failed), in the order they run: task, then seed, then framework."""
    recorded = load_results(out)["cells"]
    todo = []
    for task in args.tasks:
        for seed in args.seeds:
            for framework in args.frameworks:
                key = cell_key(task, framework, seed, args.max_metric_calls)
                old = recorded.get(key)
                if old is not None and (old["status"] == "ok" or not args.retry_failed):
                    print(f"skip {key} ({old['status']})", file=sys.stderr)
                    continue
                todo.append((task, seed, framework, key))
    return todo


def missing_baselines(frameworks) -> list[str]:
    """The baselines' Python interpreters that these frameworks need and this machine lacks
    (a fresh machine has neither venv until bench/setup-gepa and bench/setup-textgrad)."""
    need = {TG_PYTHON if f.startswith("textgrad") else GEPA_PYTHON
            for f in frameworks if f.startswith(("gepa", "textgrad"))}
    return sorted(str(p) for p in need if not p.exists())


def port_is_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def run_all(args, out: Path) -> None:
    args.runs.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    servers: dict[str, Any] = {"pids": {}}
    todo = cells_to_run(args, out)
    if not todo:
        return
    missing = missing_baselines(framework for _, _, framework, _ in todo)
    if missing:  # not a failed cell: nothing ran
        raise SystemExit(f"b4: missing {', '.join(missing)}; run bench/setup-gepa and "
                         "bench/setup-textgrad first")
    try:
        if args.start_servers:
            roles = [("task", args.task_model_spec, args.task_port, args.server_n_parallel),
                     ("writer", args.writer_model_spec, args.writer_port,
                      args.server_n_parallel)]
            if not args.test_url:  # the task model, deterministic: a prompt has one score
                roles.append(("test", args.task_model_spec, args.test_port, 1))
            for _, _, port, _ in roles:
                if not port_is_free(port):
                    raise SystemExit(f"b4: port {port} is in use; choose --task-port / "
                                     "--writer-port / --test-port, or pass the URLs")
            log_dir = Path(tempfile.mkdtemp(prefix="b4-servers-", dir=_scratch()))
            for role, model, port, n_parallel in roles:
                python = None
                if role == "test" and TESTSERVER_PYTHON.exists():
                    python = TESTSERVER_PYTHON
                elif role == "test":
                    print("b4: no bench/.venv-testserver (bench/setup-testserver): the test "
                          "server runs this machine's native llama.cpp build, whose scores "
                          "hold on this platform only", file=sys.stderr, flush=True)
                print(f"{time.strftime('%H:%M:%S')} starting textprop serve --model {model} "
                      f"--port {port} ...", file=sys.stderr, flush=True)
                proc, url = start_server(serve_command(model, port, n_parallel,
                                                       log_dir / "cores.lock", python),
                                         port, log_dir / f"{role}.log")
                procs.append(proc)
                servers[role], servers["pids"][role] = url, proc.pid
        else:
            if not (args.task_url and args.writer_url):
                raise SystemExit("b4: give --task-url and --writer-url, or --start-servers")
            servers["task"], servers["writer"] = args.task_url, args.writer_url
        servers.setdefault("test", args.test_url or servers["task"])
        servers["models"] = {role: model_id(servers[role])
                             for role in ("task", "writer", "test")}
        servers["test_platform"] = server_platform(servers["test"])
        protocol = protocol_of(args, servers["models"])

        def meta(r: dict) -> None:
            if r["protocol"] not in (None, protocol):
                raise SystemExit(f"b4: {out} was made with {r['protocol']}, not {protocol}: "
                                 "use another --out")
            r["protocol"] = protocol
            r.setdefault("runs", []).append({
                "command": " ".join(["python"] + sys.argv),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "machine": f"{platform.machine()} {os.cpu_count()} cpu, "
                           f"{platform.python_implementation()} {platform.python_version()}",
                "servers": {k: servers[k] for k in ("task", "writer", "test")},
                "models": servers["models"], "test_platform": servers["test_platform"],
                "commit": _commit()})

        update_results(out, meta)
        for task in args.tasks:
            mine = [(seed, framework, key) for t, seed, framework, key in todo if t == task]
            if not mine:
                continue
            data = load_task(task, args.val, args.test)
            ensure_start(task, data, args, servers, out)
            for seed, framework, key in mine:
                print(f"{time.strftime('%H:%M:%S')} {key} ...", file=sys.stderr, flush=True)
                cell = run_cell(task, framework, seed, data, args, servers, out)
                update_results(out, lambda r, key=key, cell=cell: r["cells"]
                               .__setitem__(key, cell))
                (args.parts / f"{Path(cell['work_dir']).name}.tar.gz").unlink(missing_ok=True)
                print(f"  {cell['status']}: test {cell.get('start_test')} -> "
                      f"{cell.get('final_test')}, metric calls {cell.get('metric_calls')}, "
                      f"task calls {cell.get('task_calls')}, {cell['wall_s']:.0f} s"
                      f"{'; ' + str(cell.get('error'))[:300] if cell.get('error') else ''}",
                      file=sys.stderr, flush=True)
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _commit() -> str | None:
    """The commit of the textprop the cells run (SRC's checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=SRC,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS,
                   help=f"default: {' '.join(CORE)} (--smoke: all)")
    p.add_argument("--tasks", nargs="+", default=["object_counting", "gsm8k"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--max-metric-calls", type=int, default=300,
                   help="the budget of every run, GEPA's count (validation included)")
    p.add_argument("--val", type=int, default=30, help="validation examples per task")
    p.add_argument("--test", type=int, default=100, help="test examples per task")
    p.add_argument("--max-tokens", type=int, default=256, help="the task model's answers")
    p.add_argument("--writer-max-tokens", type=int, default=400,
                   help="feedback, reflections and rewrites (every framework)")
    p.add_argument("--workers", type=int, default=4,
                   help="calls in flight per framework (textprop concurrency, GEPA's and the "
                        "test evaluator's threads, TextGrad's --threads)")
    p.add_argument("--task-url", help="the task model's server (OpenAI-compatible base URL)")
    p.add_argument("--writer-url", help="the writer model's server")
    p.add_argument("--test-url",
                   help="the server that scores test prompts (default with --start-servers: "
                        "the task model one call at a time, byte-for-byte deterministic; "
                        "else --task-url)")
    p.add_argument("--start-servers", action="store_true",
                   help="start `textprop serve` for both models and the test server (ports "
                        "--task-port, --writer-port, --test-port), one --cpu-lock for all, "
                        "and stop them at the end")
    # The faster engine for every framework alike (issue 11, item 7): the embedded models
    # re-encoded as Q4_0, which batch 1.4-1.6x faster here (docs/benchmarks.md).
    p.add_argument("--task-model-spec", default="local:0.5b-q4_0")
    p.add_argument("--writer-model-spec", default="local:1.5b-q4_0")
    p.add_argument("--task-port", type=int, default=8781)
    p.add_argument("--writer-port", type=int, default=8782)
    p.add_argument("--test-port", type=int, default=8783)
    p.add_argument("--server-n-parallel", type=int, default=None,
                   help="textprop serve --n-parallel (default: the server's, batched; 1 is "
                        "the byte-for-byte deterministic engine)")
    p.add_argument("--call-timeout", type=float, default=900.0, help="seconds per HTTP call")
    p.add_argument("--deadline-min", type=float, default=240.0, help="per cell")
    p.add_argument("--retry-failed", action="store_true", help="rerun cells that failed")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--runs", type=Path, default=RUNS, help="work folders of the cells")
    p.add_argument("--parts", type=Path, default=PARTS,
                   help="packed work folders of unfinished cells (committed between sessions)")
    p.add_argument("--pack-parts", action="store_true",
                   help="pack every unfinished cell's work folder into --parts and exit (at a "
                        "session's end, after stopping the harnesses); a later run unpacks "
                        "a cell's part when its work folder is absent")
    p.add_argument("--table", action="store_true", help="print the B4 table and exit")
    p.add_argument("--platform", default=None,
                   help="--table: the test platform (system_fingerprint) whose scores to show "
                        "(default: the one that scored the most cells)")
    p.add_argument("--rescore", action="store_true",
                   help="score every finished cell's final prompt (and each task's start) on "
                        "the --test-url server's platform where it has no score yet, and exit")
    p.add_argument("--budget", type=int, default=None, help="--table: only this budget")
    p.add_argument("--plan", action="store_true",
                   help="print each framework's share of the budget per task and exit")
    p.add_argument("--smoke", action="store_true",
                   help="every framework, seed 0, tiny sizes, against scripted servers; "
                        "checks the results file and the resume")
    p.add_argument("--smoke-server", choices=("test", "serve"), default="test",
                   help="--smoke: textprop's test server, or textprop serve's HTTP layer in "
                        "front of a scripted engine")
    args = p.parse_args(argv)
    args.frameworks = args.frameworks or list(FRAMEWORKS if args.smoke else CORE)
    if args.table:
        print(table(load_results(args.out), args.budget, args.platform))
        return 0
    if args.rescore:
        if not args.test_url:
            raise SystemExit("b4: --rescore needs --test-url (the deterministic test server)")
        for line in rescore(args, args.out):
            print(f"scored {line}")
        print(table(load_results(args.out), platform=server_platform(args.test_url)))
        return 0
    if args.plan:
        print(plan(args))
        return 0
    if args.pack_parts:
        for path in pack_parts(args.runs, args.parts, load_results(args.out)["cells"]):
            print(f"packed {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} "
                  f"({path.stat().st_size / 1e6:.1f} MB)")
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("b4: stopped by SIGTERM"))
    if args.smoke:
        defaults = {"seeds": [0], "val": 6, "test": 8, "max_metric_calls": 40,
                    "max_tokens": 64, "writer_max_tokens": 128, "workers": 2,
                    "deadline_min": 10.0, "call_timeout": 60.0}
        for k, v in defaults.items():
            if getattr(args, k) == p.get_default(k):
                setattr(args, k, v)
        if args.runs == RUNS:
            args.runs = _scratch() / "b4-smoke-runs"
        if args.parts == PARTS:
            args.parts = _scratch() / "b4-smoke-parts"
        return smoke(args)
    run_all(args, args.out)
    print(table(load_results(args.out), args.max_metric_calls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
