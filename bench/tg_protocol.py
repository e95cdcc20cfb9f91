"""TextGrad 0.1.8's prompt-optimization loop, run in bench/.venv-textgrad (never by textprop).

Written the way TextGrad's own example writes it (evaluation/prompt_optimization.py and
examples/notebooks/Tutorial-Prompt-Optimization.ipynb in the TextGrad repository; neither is
in the 0.1.8 sdist): `load_task` for the data and the string-based metric, a shuffled
`tg.tasks.DataLoader`, `BlackboxLLM` + `TextualGradientDescent`, one `tg.sum(losses).backward()`
per batch, `run_validation_revert` after every step, `eval_dataset` with a ThreadPoolExecutor
(`--threads`: 32 is the script's default, 2 the notebook's). Differences from the example,
all applied to textprop too: the test split is scored at the start and the end only (the
script scores it after every step), `--val`/`--test` may take the first N examples of a split,
and `--max-tokens` bounds every generation (TextGrad's roles never pass max_tokens: the
engine's default of 2000 applies unless it is set here).

    python bench/tg_protocol.py --base-url http://127.0.0.1:8123/v1 --bbh PATH --out R.json

B4 (bench/b4_quality.py) adds two options, off by default: `--backward-base-url` (and
`--backward-model`, `--backward-max-tokens`) sends feedback and rewrites to a second server
(the task model answers, a larger model writes feedback), and `--no-test` skips both test
evaluations (B4's harness scores the final prompt itself); the final prompt is in the JSON.

Run it with cwd in a scratch folder: `import textgrad` writes ./logs. The engine's disk cache
goes under $XDG_CACHE_HOME/textgrad: point it at a fresh folder for a cold run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

T0 = time.perf_counter()
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import textgrad as tg  # noqa: E402
from openai import OpenAI  # noqa: E402
from textgrad.engine.local_model_openai_api import ChatExternalClient  # noqa: E402
from textgrad.tasks import load_task  # noqa: E402

IMPORT_S = time.perf_counter() - T0

GSM8K_PROMPT = ("You will answer a mathemetical reasoning question. Think step by step. The "
                "last line of your response should be of the following format: 'Answer: "
                "$VALUE' where VALUE is a numerical value.")


class BudgetExceeded(RuntimeError):
    pass


class Killed(BaseException):
    """SIGTERM from the harness (its deadline): the partial result is still written.

    A BaseException, so that TextGrad's tenacity retries (on Exception) do not swallow it."""


def _on_sigterm(signum, frame):
    raise Killed("stopped by SIGTERM (the harness's deadline)")


class Counted(ChatExternalClient):
    """TextGrad's engine for an OpenAI-compatible server, counting the calls it sends.

    Counting wraps the OpenAI client, below TextGrad's cache: a cache hit is not counted.
    `max_tokens` (if set) is passed to every generation; `max_calls` stops the run.
    """

    def __init__(self, *args, max_tokens=None, max_calls=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.bound = max_tokens
        self.max_calls = max_calls
        self.lock = threading.Lock()
        self.counts = {"forward": 0, "feedback": 0, "optimizer": 0}
        self.tokens = {"prompt": 0, "completion": 0}
        self.requested = 0  # generate() calls, cache hits included
        create = self.client.chat.completions.create

        def counted_create(**params):
            kind = _kind(params.get("messages") or [])
            with self.lock:
                if self.max_calls is not None and sum(self.counts.values()) >= self.max_calls:
                    raise BudgetExceeded(f"call budget of {self.max_calls} reached")
                self.counts[kind] += 1
            reply = create(**params)
            usage = getattr(reply, "usage", None)
            if usage is not None:
                with self.lock:
                    self.tokens["prompt"] += usage.prompt_tokens or 0
                    self.tokens["completion"] += usage.completion_tokens or 0
            return reply

        self.client.chat.completions.create = counted_create

    def generate(self, content, system_prompt=None, **kwargs):
        with self.lock:
            self.requested += 1
        if self.bound is not None:
            kwargs.setdefault("max_tokens", self.bound)
        return super().generate(content, system_prompt=system_prompt, **kwargs)


def _kind(messages) -> str:
    system = next((m.get("content") for m in messages if m.get("role") == "system"), "") or ""
    if "You are part of an optimization system" in system:
        return "feedback" if "gradient (feedback) engine" in system else "optimizer"
    return "forward"


def prepare_bbh(json_path: Path, root: Path) -> str:
    """Write TextGrad's BBH csv files from a local JSON, exactly as its loader would.

    BigBenchHard._check_or_download_dataset wgets the JSON from GitHub and splits it
    examples[:50] / [50:150] / [150:]; here the same code runs on the local copy.
    """
    task = json_path.stem
    examples = json.loads(json_path.read_text())["examples"]
    (root / task).mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", examples[:50]), ("val", examples[50:150]),
                        ("test", examples[150:])):
        pd.DataFrame([{"x": e["input"], "y": e["target"]} for e in rows]).to_csv(
            root / task / f"{split}.csv")
    return task


def load_gsm8k(folder: Path):
    """GSM8K as TextGrad's GSM8K_DSPy splits it (DSPy's GSM8K: shuffle with Random(0);
    train = first 200, val = next 300, test = the shuffled test file), from local jsonl.

    TextGrad's own loader downloads from the Hugging Face hub, which is not reachable here;
    the evaluation function is the one load_task gives GSM8K_DSPy (string-based).
    """
    from textgrad.autograd.string_based_ops import StringBasedFunction
    from textgrad.tasks.big_bench_hard import string_based_equality_fn

    def rows(name):
        out = []
        for line in (folder / f"{name}.jsonl").read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                out.append((r["question"], r["answer"].split("####")[-1].strip()
                            .replace(",", "")))
        return out

    train, test = rows("train"), rows("test")
    random.Random(0).shuffle(train)
    random.Random(0).shuffle(test)
    fn = StringBasedFunction(string_based_equality_fn, function_purpose=(
        "The runtime of string-based function that checks if the prediction is correct."))
    return train[:200], train[200:500], test, fn, GSM8K_PROMPT


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--model", default="bench-model")
    p.add_argument("--bbh", type=Path, help="a BBH task JSON (object_counting)")
    p.add_argument("--gsm8k", type=Path, help="a folder with GSM8K train/test.jsonl")
    p.add_argument("--val", type=int, default=None, help="first N validation examples")
    p.add_argument("--test", type=int, default=None, help="first N test examples")
    p.add_argument("--batch-size", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=4, help="steps per epoch")
    p.add_argument("--threads", type=int, default=32)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-tokens", type=int, default=None)
    p.add_argument("--max-calls", type=int, default=None)
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--backward-base-url", default=None,
                   help="a second server for feedback and rewrites (default: --base-url)")
    p.add_argument("--backward-model", default=None, help="default: --model")
    p.add_argument("--backward-max-tokens", type=int, default=None,
                   help="default: --max-tokens")
    p.add_argument("--no-test", action="store_true",
                   help="no test evaluation at the start or the end (B4 scores it itself)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.perf_counter()
    result = {"framework": "textgrad", "version": getattr(tg, "__version__", "0.1.8"),
              "import_s": IMPORT_S, "args": {k: str(v) for k, v in vars(args).items()},
              "steps": [], "failure": None}

    def set_seed(seed):
        np.random.seed(seed)
        random.seed(seed)

    def eval_sample(item, eval_fn, model):
        x, y = item
        x = tg.Variable(x, requires_grad=False, role_description="query to the language model")
        y = tg.Variable(str(y), requires_grad=False,
                        role_description="correct answer for the query")
        response = model(x)
        try:
            eval_output_variable = eval_fn(inputs=dict(prediction=response,
                                                       ground_truth_answer=y))
            return int(eval_output_variable.value)
        except Exception:  # the example's bare except, narrowed for ruff
            eval_output_variable = eval_fn([x, y, response])
            return int(eval_fn.parse_output(eval_output_variable))

    def eval_dataset(test_set, eval_fn, model):
        accuracy_list = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.threads) as executor:
            futures = [executor.submit(eval_sample, s, eval_fn, model) for s in test_set]
            for future in concurrent.futures.as_completed(futures):
                accuracy_list.append(future.result())
        return accuracy_list

    def run_validation_revert(system_prompt, results, model, eval_fn, val_set):
        val_performance = np.mean(eval_dataset(val_set, eval_fn, model))
        previous_performance = np.mean(results["validation_acc"][-1])
        previous_prompt = results["prompt"][-1]
        accepted = True
        if val_performance < previous_performance:
            system_prompt.set_value(previous_prompt)
            val_performance = previous_performance
            accepted = False
        results["validation_acc"].append(val_performance)
        return accepted

    engine = backward = None
    try:
        set_seed(args.seed)
        client = OpenAI(base_url=args.base_url, api_key="not-needed",
                        **({"timeout": args.timeout} if args.timeout else {}))
        engine = Counted(client=client, model_string=args.model, max_tokens=args.max_tokens,
                         max_calls=args.max_calls)
        backward = engine
        if args.backward_base_url:  # B4: the task model answers, a second model writes
            backward = Counted(
                client=OpenAI(base_url=args.backward_base_url, api_key="not-needed",
                              **({"timeout": args.timeout} if args.timeout else {})),
                model_string=args.backward_model or args.model,
                max_tokens=args.backward_max_tokens or args.max_tokens,
                max_calls=args.max_calls)
        tg.set_backward_engine(backward, override=True)
        if args.bbh:
            root = Path(os.environ.get("TG_DATA_ROOT", "tg-data"))
            task = prepare_bbh(args.bbh, root)
            train_set, val_set, test_set, eval_fn = load_task(
                f"BBH_{task}", evaluation_api=backward, root=str(root))
            start_prompt = train_set.get_task_description()
        else:
            train_set, val_set, test_set, eval_fn, start_prompt = load_gsm8k(args.gsm8k)
        val_set = [val_set[i] for i in range(len(val_set))][:args.val]
        test_set = [test_set[i] for i in range(len(test_set))][:args.test]
        result["sizes"] = {"train": len(train_set), "val": len(val_set), "test": len(test_set)}
        train_loader = tg.tasks.DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
        system_prompt = tg.Variable(
            start_prompt, requires_grad=True,
            role_description="structured system prompt to a somewhat capable language model "
                             "that specifies the behavior and strategies for the QA task")
        model = tg.BlackboxLLM(engine, system_prompt)
        optimizer = tg.TextualGradientDescent(engine=backward, parameters=[system_prompt])

        results = {"test_acc": [], "prompt": [], "validation_acc": []}
        if not args.no_test:
            results["test_acc"].append(eval_dataset(test_set, eval_fn, model))
            result["baseline_test"] = float(np.mean(results["test_acc"][0]))
        results["validation_acc"].append(eval_dataset(val_set, eval_fn, model))
        results["prompt"].append(system_prompt.get_value())
        result["baseline_val"] = float(np.mean(results["validation_acc"][0]))
        print(f"baseline test {result.get('baseline_test')} val {result['baseline_val']:.3f}",
              flush=True)

        for epoch in range(args.epochs):
            for steps, (batch_x, batch_y) in enumerate(train_loader):
                t = time.perf_counter()
                optimizer.zero_grad()
                losses = []
                for (x, y) in zip(batch_x, batch_y, strict=True):
                    x = tg.Variable(x, requires_grad=False,
                                    role_description="query to the language model")
                    y = tg.Variable(str(y), requires_grad=False,
                                    role_description="correct answer for the query")
                    response = model(x)
                    try:
                        eval_output_variable = eval_fn(inputs=dict(prediction=response,
                                                                   ground_truth_answer=y))
                    except Exception:
                        eval_output_variable = eval_fn([x, y, response])
                    losses.append(eval_output_variable)
                total_loss = tg.sum(losses)
                total_loss.backward()
                optimizer.step()
                proposed = system_prompt.get_value()
                accepted = run_validation_revert(system_prompt, results, model, eval_fn,
                                                      val_set)
                results["prompt"].append(system_prompt.get_value())
                result["steps"].append({
                    "epoch": epoch, "step": steps,
                    "batch_score": float(np.mean([int(v.value) for v in losses])),
                    "val_after": float(results["validation_acc"][-1]),
                    "accepted": accepted, "proposed": proposed,
                    "seconds": time.perf_counter() - t})
                print(f"epoch {epoch} step {steps}: {'accepted' if accepted else 'reverted'}"
                      f" val {results['validation_acc'][-1]:.3f}", flush=True)
                if steps == args.steps - 1:
                    break
        if not args.no_test:
            result["final_test"] = float(np.mean(eval_dataset(test_set, eval_fn, model)))
            print(f"final test {result['final_test']:.3f}", flush=True)
        result["final_prompt"] = system_prompt.get_value()
        result["best_val"] = float(results["validation_acc"][-1])
    except (Exception, Killed) as error:  # an exception that ends the run is a failure
        result["failure"] = f"{type(error).__name__}: {error}"
        result["traceback"] = traceback.format_exc()
        print(result["traceback"], file=sys.stderr)
    result["loop_s"] = time.perf_counter() - started
    if engine is not None:
        result["calls"] = dict(engine.counts)
        result["tokens"] = dict(engine.tokens)
        result["generate_calls"] = engine.requested
    if backward is not None and backward is not engine:
        result["calls"] = {k: v + backward.counts[k] for k, v in engine.counts.items()}
        result["tokens"] = {k: v + backward.tokens[k] for k, v in engine.tokens.items()}
        result["generate_calls"] += backward.requested
        result["forward_engine_calls"] = dict(engine.counts)
    args.out.write_text(json.dumps(result, indent=1))
    return 1 if result["failure"] else 0


if __name__ == "__main__":
    sys.exit(main())
