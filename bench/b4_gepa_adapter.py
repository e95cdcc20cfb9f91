"""GEPA 0.1.4 on B4's pipeline: run in bench/.venv-gepa by bench/b4_quality.py, never by textprop.

    bench/.venv-gepa/bin/python bench/b4_gepa_adapter.py SPEC.json OUT.json

with PYTHONPATH=src, so the metric is textprop's own (`textprop.metrics`, which imports
nothing outside the standard library). SPEC gives the servers, the starting prompt, the user
template, the metric, the train and validation rows, `max_metric_calls`, the seed, `use_merge`,
max_tokens and the workers.

`gepa.optimize` is called through its public API with GEPA's defaults (Pareto candidate
selection, reflection minibatch 3, round-robin components, strict-improvement acceptance,
full validation evaluation, merge off unless asked) and our `B4Adapter`, because GEPA's
`DefaultAdapter` scores by substring containment: this one runs exactly B4's pipeline (system
= the candidate's `system_prompt`, user = the template filled with the question, temperature
0, the task model's max_tokens) and scores with B4's metric, and its reflective dataset is
the DefaultAdapter's ({"Inputs", "Generated Outputs", "Feedback"}) with the metric's verdict
as feedback, preceded, when a wrong reply stopped at max_tokens, by the sentence textprop's
trainer puts there ("The reply was cut off at its limit of N tokens ..."), so both searches
are told the same. `reflection_lm` is a plain callable on the feedback server at
`reflection_temperature` (1.0, what DSPy's GEPA documentation sets for its reflection LM:
at temperature 0 the 1.5B writer proposed the same text in 10 of 11 iterations), seeded
per call (seed x 100,000 + the call's number), so a run is repeatable.

Resuming: `gepa.optimize` evaluates the seed candidate on the whole validation set before it
looks at `run_dir` for a saved state, so every resumed part would pay that evaluation again
(30 task calls, discarded when the state loads; an uninterrupted run pays it once). The
adapter therefore keeps each task answer in `task_answers.jsonl` next to `run_dir` and
serves a request that an earlier part already answered from there; within a part every
request goes to the server, as in a run that was never cut. Reflections likewise
(`reflection_answers.jsonl`): an iteration a cut interrupted is redone with the recorded
reflection, and the next new reflection gets the seed it would have had in one run.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

T0 = time.perf_counter()
import gepa  # noqa: E402
from gepa.core.adapter import EvaluationBatch  # noqa: E402
from openai import OpenAI  # noqa: E402

from textprop.functions.llm_call import cut_off_sentence  # noqa: E402
from textprop.metrics.numeric import numeric_match  # noqa: E402
from textprop.metrics.text import exact_match  # noqa: E402

IMPORT_S = time.perf_counter() - T0
METRICS = {"exact_match": exact_match, "numeric": numeric_match}


class B4Adapter:
    """B4's one-prompt pipeline and metric as a GEPAAdapter (gepa/core/adapter.py)."""

    propose_new_texts = None  # GEPA's default reflective proposer

    def __init__(self, spec: dict[str, Any]) -> None:
        self.client = OpenAI(base_url=spec["task_url"], api_key="not-needed",
                             timeout=spec.get("timeout", 900), max_retries=2)
        self.model = spec["task_model"]
        self.template = spec.get("template", "{input}")
        self.max_tokens = spec["max_tokens"]
        self.metric = METRICS[spec["metric"]]
        self.workers = spec.get("workers", 1)
        self.calls = 0
        self.earlier_parts = 0  # requests answered from an earlier part's record
        run_dir = spec.get("run_dir")
        self._record = Path(run_dir).parent / "task_answers.jsonl" if run_dir else None
        self._answered = earlier_answers(self._record)  # by request, from earlier parts only
        self._lock = threading.Lock()

    def _answer(self, system: str, row: dict) -> tuple[str, str | None]:
        """The reply and its finish reason."""
        user = self.template.format(input=row["input"])
        key = json.dumps([self.model, system, user, self.max_tokens])
        if key in self._answered:
            with self._lock:
                self.earlier_parts += 1
            return self._answered[key]
        reply = self.client.chat.completions.create(
            model=self.model, temperature=0.0, max_tokens=self.max_tokens,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}])
        text = reply.choices[0].message.content or ""
        finish = reply.choices[0].finish_reason
        with self._lock:
            self.calls += 1
            record_answer(self._record, key, text, finish)
        return text, finish

    def evaluate(self, batch: list[dict], candidate: dict[str, str],
                 capture_traces: bool = False) -> EvaluationBatch:
        system = candidate["system_prompt"]
        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(batch)))) as pool:
            answers = list(pool.map(lambda row: self._answer(system, row), batch))
        replies = [text for text, _ in answers]
        scores, trajectories = [], []
        for row, (reply, finish) in zip(batch, answers, strict=True):
            result = self.metric(reply, row["target"])
            if finish == "length":
                result = result.with_cause(cut_off_sentence(self.max_tokens))
            scores.append(float(result.score))
            if result.score >= 1:
                feedback = f"The generated response is correct ({result.explanation})."
            else:
                feedback = (f"The generated response is incorrect ({result.explanation}). "
                            f"The correct answer is '{row['target']}'.")
            trajectories.append({"data": row, "full_assistant_response": reply,
                                 "feedback": feedback})
        return EvaluationBatch(outputs=[{"full_assistant_response": r} for r in replies],
                               scores=scores,
                               trajectories=trajectories if capture_traces else None)

    def make_reflective_dataset(self, candidate, eval_batch, components_to_update):
        items = [{"Inputs": t["data"]["input"], "Generated Outputs": t["full_assistant_response"],
                  "Feedback": t["feedback"]} for t in eval_batch.trajectories or []]
        if not items:
            raise RuntimeError("no trajectories to reflect on")
        return {name: items for name in components_to_update}


def earlier_answers(record: Path | None) -> dict[str, tuple[str, str | None]]:
    """The answers (reply, finish reason) an earlier part recorded, by request; a line cut
    by a kill is skipped."""
    answered: dict[str, tuple[str, str | None]] = {}
    if record is not None and record.exists():
        for line in record.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            answered[row["key"]] = (row["reply"], row.get("finish"))
    return answered


def record_answer(record: Path | None, key: str, reply: str, finish: str | None) -> None:
    """Append one answer for later parts (`earlier_answers` reads them back)."""
    if record is not None:
        with record.open("a") as f:
            f.write(json.dumps({"key": key, "reply": reply, "finish": finish}) + "\n")


def reflection_lm(spec: dict[str, Any]):
    client = OpenAI(base_url=spec["reflection_url"], api_key="not-needed",
                    timeout=spec.get("timeout", 900), max_retries=2)
    run_dir = spec.get("run_dir")
    record = Path(run_dir).parent / "reflection_answers.jsonl" if run_dir else None
    answered = earlier_answers(record)
    # Numbered across parts: the next new reflection gets the seed it would have had.
    calls = {"n": len(answered), "earlier_parts": 0}

    def call(prompt: str | list[dict[str, Any]]) -> str:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        key = json.dumps([spec["reflection_model"], messages])
        if key in answered:
            calls["earlier_parts"] += 1
            return answered[key][0]
        calls["n"] += 1
        reply = client.chat.completions.create(
            model=spec["reflection_model"], messages=messages,
            temperature=spec.get("reflection_temperature", 1.0),
            seed=spec["seed"] * 100_000 + calls["n"], max_tokens=spec["reflection_max_tokens"])
        text = reply.choices[0].message.content or ""
        record_answer(record, key, text, reply.choices[0].finish_reason)
        return text

    return call, calls


def main() -> int:
    spec_path, out_path = Path(sys.argv[1]), Path(sys.argv[2])
    spec = json.loads(spec_path.read_text())
    started = time.perf_counter()
    result: dict[str, Any] = {"framework": "gepa", "version": getattr(gepa, "__version__", None),
                              "import_s": IMPORT_S, "failure": None}
    adapter = B4Adapter(spec)
    lm, lm_calls = reflection_lm(spec)
    try:
        run = gepa.optimize(
            seed_candidate={"system_prompt": spec["system_prompt"]},
            trainset=spec["train"], valset=spec["val"], adapter=adapter, reflection_lm=lm,
            reflection_minibatch_size=spec.get("minibatch", 3),
            use_merge=bool(spec.get("use_merge")),
            max_metric_calls=spec["max_metric_calls"], seed=spec["seed"],
            run_dir=spec.get("run_dir"), display_progress_bar=False,
            raise_on_exception=True)
        best = run.best_idx
        result |= {
            "final_prompt": run.candidates[best]["system_prompt"],
            "best_val": run.val_aggregate_scores[best],
            "baseline_val": run.val_aggregate_scores[0],
            "candidates": len(run.candidates),
            "val_scores": run.val_aggregate_scores,
            "parents": run.parents,
            "metric_calls": run.total_metric_calls,
            "full_val_evals": run.num_full_val_evals,
        }
    except Exception as error:  # an exception that ends the run is a failure
        result["failure"] = f"{type(error).__name__}: {error}"
        result["traceback"] = traceback.format_exc()
        print(result["traceback"], file=sys.stderr)
    result["task_calls"] = adapter.calls
    result["task_answers_from_earlier_parts"] = adapter.earlier_parts
    result["reflection_calls"] = lm_calls["n"]  # numbered across parts
    result["reflections_from_earlier_parts"] = lm_calls["earlier_parts"]
    result["loop_s"] = time.perf_counter() - started
    out_path.write_text(json.dumps(result, indent=1))
    return 1 if result["failure"] else 0


if __name__ == "__main__":
    sys.exit(main())
