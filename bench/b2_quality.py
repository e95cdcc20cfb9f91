"""B2: quality per budget of TextGrad 0.1.8 vs textprop on a real local model.

TextGrad's prompt-optimization protocol (bench/tg_protocol.py; see B1) scaled down to fit a
shared 2-core machine, run by both frameworks against one llama.cpp server
(`python -m llama_cpp.server --model <Qwen2.5-Coder-1.5B-Instruct GGUF> --logits_all False`)
that serves every role (forward, feedback, optimizer), one request at a time:

* data: TextGrad's split (BBH: train 0-49, val 50-149, test 150-; GSM8K: DSPy's shuffle),
  the first --val validation and --test test examples;
* --epochs x --steps of batch --batch-size, validation after every step with a revert when
  it drops, test at the start and the end; both frameworks use TextGrad's starting prompt
  and its role description for the system prompt;
* every generation is bounded by --max-tokens (textprop: pipeline.max_tokens,
  optimizer.max_tokens, optimizer.feedback_max_tokens; TextGrad: max_tokens passed to its
  engine's generate, which its roles never set themselves);
* temperature 0 (TextGrad's default, textprop's default); one worker each (the server
  serves one request at a time);
* an equal call budget: --max-calls (default: the calls TextGrad's loop makes on this
  protocol without cache hits) is textprop's `[budget] max_calls` and a hard cap in
  TextGrad's engine wrapper; a run that hits it ends (a failure);
* each framework's own metric (TextGrad: string_based_equality_fn; textprop: numeric).

textprop's engine is `llama-server:MODEL@URL` with `[engines] timeout = 900` (a CPU server is
slow): llama-cpp-python's server answers OpenAI's `response_format: json_schema` with HTTP 500,
and that spec sends llama.cpp's own `json_object` + schema form instead.

    python bench/b2_quality.py                       # object_counting, the default sizes
    python bench/b2_quality.py --task gsm8k --val 30 --test 30 --steps 3 --max-tokens 384 \
        --threads 2 --batch-threads 2             # GSM8K as in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from bounded_run import run_bounded  # noqa: E402

TG_PYTHON = ROOT / "bench/.venv-textgrad/bin/python"
DATA = (ROOT / "../shared/data").resolve()
BBH_PROMPT = ("You will answer a reasoning question. Think step by step. The last line of "
              "your response should be of the following format: 'Answer: $VALUE' where "
              "VALUE is a numerical value.")
GSM8K_PROMPT = ("You will answer a mathemetical reasoning question. Think step by step. The "
                "last line of your response should be of the following format: 'Answer: "
                "$VALUE' where VALUE is a numerical value.")
TG_ROLE = ("structured system prompt to a somewhat capable language model that specifies "
           "the behavior and strategies for the QA task")


def _scratch() -> Path:
    folder = ROOT / "bench/results/tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def start_llama(gguf: str, port: int, threads: int, batch_threads: int, log: Path):
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--logits_all", "False",
           "--n_ctx", "4096", "--n_threads", str(threads), "--n_threads_batch",
           str(batch_threads), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2).read()
            return proc, url, cmd
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"llama server exited: {log.read_text()[-2000:]}") from None
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("llama server did not start in 120 s")


def run_textgrad(args, url: str, work: Path) -> dict:
    work.mkdir(parents=True)
    out = work / "result.json"
    task = ["--bbh", str(DATA / f"bbh/bbh/{args.task}.json")] if args.task != "gsm8k" else [
        "--gsm8k", str(DATA / "gsm8k")]
    cmd = [str(TG_PYTHON), str(ROOT / "bench/tg_protocol.py"), "--base-url", url,
           "--model", "qwen2.5-coder-1.5b", *task, "--val", str(args.val), "--test",
           str(args.test), "--epochs", str(args.epochs), "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--threads", "1", "--max-tokens",
           str(args.max_tokens), "--max-calls", str(args.max_calls), "--timeout", "900",
           "--out", str(out), *(["--seed", str(args.seed)] if args.seed is not None else [])]
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "XDG_CACHE_HOME": str(work / "cache"), "TG_DATA_ROOT": str(work / "data"),
           "OPENAI_API_KEY": "not-needed"}
    proc, wall, killed = run_bounded(cmd, args.deadline_min * 60, grace_s=180, cwd=work, env=env)
    r = json.loads(out.read_text()) if out.exists() else {}
    calls = r.get("calls") or {}
    return {"framework": "textgrad 0.1.8", "wall_s": round(wall, 1), "killed_at_deadline":
            killed, "returncode": proc.returncode,
            "failure": r.get("failure") or (None if proc.returncode == 0 else
                                            proc.stderr[-1500:]),
            "baseline_val": r.get("baseline_val"), "baseline_test": r.get("baseline_test"),
            "best_val": r.get("best_val"), "final_test": r.get("final_test"),
            "calls": calls, "calls_total": sum(calls.values()), "tokens": r.get("tokens"),
            "cache_hits": (r.get("generate_calls") or 0) - sum(calls.values()),
            "steps": [{k: s[k] for k in ("epoch", "step", "batch_score", "val_after",
                                         "accepted", "seconds")} for s in r.get("steps", [])],
            "final_prompt": r.get("final_prompt"), "stderr_tail": proc.stderr[-800:]}


def run_textprop(args, url: str, work: Path) -> dict:
    work.mkdir(parents=True)
    if args.task == "gsm8k":
        task, prompt = f'gsm8k = "{DATA / "gsm8k"}"', GSM8K_PROMPT
    else:
        task, prompt = f'bbh = "{DATA / f"bbh/bbh/{args.task}.json"}"', BBH_PROMPT
    config = work / "run.toml"
    config.write_text(f"""
[run]
name = "b2"
seed = {0 if args.seed is None else args.seed}

[task]
{task}
limit_val = {args.val}
limit_test = {args.test}

[pipeline]
system_prompt = {json.dumps(prompt)}
role_description = {json.dumps(TG_ROLE)}
max_tokens = {args.max_tokens}

[metric]
name = "numeric"

[engines]
default = "llama-server:qwen2.5-coder-1.5b@{url}"
concurrency = 1
timeout = 900

[optimizer]
max_tokens = {args.max_tokens}
feedback_max_tokens = {args.max_tokens}

[trainer]
epochs = {args.epochs}
batch_size = {args.batch_size}
steps_per_epoch = {args.steps}
acceptance = "non_decrease"

[budget]
max_calls = {args.max_calls}

[cache]
enabled = false
""")
    # the textprop of this checkout, whichever one the environment has installed
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OPENAI_API_KEY": "not-needed"}
    cmd = [str(Path(sys.executable).with_name("textprop")), "optimize", str(config),
           "--no-cache", "--run-dir", str(work / "run"), "--json"]
    proc, wall, killed = run_bounded(cmd, args.deadline_min * 60, grace_s=180, cwd=work, env=env)
    try:
        summary = json.loads(proc.stdout)
    except ValueError:
        summary = {}
    result = {"framework": "textprop", "wall_s": round(wall, 1), "killed_at_deadline": killed,
              "returncode": proc.returncode,
              "failure": None if proc.returncode == 0 and summary else proc.stderr[-1500:],
              "status": summary.get("status"), "meter_usage": summary.get("usage")}
    if (work / "run" / "ledger.sqlite3").exists():
        from textprop.ledger import Ledger

        ledger = Ledger.in_run(work / "run")
        steps = ledger.steps()
        calls = ledger.calls()
        by_role: dict[str, int] = {}
        for c in calls:
            if not c.get("cached"):
                by_role[c["role"]] = by_role.get(c["role"], 0) + 1
        base = next((s for s in steps if s["status"] == "baseline"), {})
        final = (ledger.meta().get("final") or {})
        result |= {
            "baseline_val": base.get("val_score"), "baseline_test": base.get("test_score"),
            "best_val": final.get("best_val_score", summary.get("best_val")),
            "final_test": final.get("test_score", summary.get("final_test")),
            "calls": by_role, "calls_total": sum(by_role.values()),
            "calls_failed": sum(1 for c in calls if not c.get("ok")),
            "tokens": {"prompt": sum(c.get("input_tokens") or 0 for c in calls),
                       "completion": sum(c.get("output_tokens") or 0 for c in calls)},
            "steps": [{"step": s["step"], "status": s["status"], "val": s["val_score"],
                       "batch_score": s.get("batch_score"), "reason": s["reason"]}
                      for s in steps],
            "final_prompt": (final.get("values") or {}).get("system_prompt"),
        }
    # the meters' totals, a cross-check of the ledger's (they agree since 8b379ce)
    for usage in (summary.get("usage") or {}).values():
        if isinstance(usage, dict) and "total" in usage:
            total = usage["total"]
            result["calls_total_meter"] = total.get("provider_calls")
            result["tokens_meter"] = {"prompt": total.get("input_tokens"),
                                      "completion": total.get("output_tokens")}
    result["stderr_tail"] = proc.stderr[-800:]
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="object_counting", help="a BBH task name, or gsm8k")
    p.add_argument("--val", type=int, default=8)
    p.add_argument("--test", type=int, default=8)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--max-calls", type=int, default=None,
                   help="default: TextGrad's call count for the protocol, cache hits aside")
    p.add_argument("--deadline-min", type=float, default=25.0, help="per framework")
    p.add_argument("--seed", type=int, default=None,
                   help="the training batches' shuffle seed for both (default: TextGrad's "
                        "script's 42, textprop's 0)")
    p.add_argument("--frameworks", default="textgrad,textprop")
    p.add_argument("--port", type=int, default=8742)
    p.add_argument("--threads", type=int, default=1, help="llama.cpp generation threads")
    p.add_argument("--batch-threads", type=int, default=2, help="llama.cpp prompt threads")
    p.add_argument("--gguf", default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("b2: stopped by SIGTERM"))
    if args.max_calls is None:  # test + val, then per step: batch forwards, 2 feedback
        # calls per example (the metric's and the LLM call's backward), 1 rewrite, val
        args.max_calls = (2 * args.test + args.val + args.epochs * args.steps * (
            3 * args.batch_size + 1 + args.val))
    out = args.out or ROOT / f"bench/results/b2_quality_{args.task}.json"
    if args.gguf is None:
        from textprop.engines.local import ensure_model

        args.gguf = str(ensure_model("1.5b"))
    results = {"benchmark": "b2_quality", "task": args.task,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "machine": f"{platform.machine()} {os.cpu_count()} cpu, "
                          f"{platform.python_implementation()} {platform.python_version()}",
               "command": " ".join(["python"] + sys.argv),
               "protocol": {k: getattr(args, k) for k in (
                   "val", "test", "epochs", "steps", "batch_size", "max_tokens",
                   "max_calls", "seed")}, "model": Path(args.gguf).name, "runs": []}
    # run folders, ledgers and the server log stay in bench/results/tmp (git-ignored)
    tmp = tempfile.mkdtemp(prefix=f"b2-{args.task}-", dir=_scratch())
    results["work_dir"] = tmp
    server, url, cmd = start_llama(args.gguf, args.port, args.threads, args.batch_threads,
                                   Path(tmp) / "llama.log")
    results["server"] = " ".join(cmd)
    try:
        for name in args.frameworks.split(","):
            print(f"running {name} ...", file=sys.stderr, flush=True)
            run = run_textgrad if name == "textgrad" else run_textprop
            outcome = run(args, url, Path(tmp) / name)
            results["runs"].append(outcome)
            print(json.dumps({k: outcome.get(k) for k in (
                "framework", "wall_s", "baseline_test", "final_test", "calls_total",
                "failure")}), file=sys.stderr, flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1))  # partial results survive
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    print(f"raw: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
