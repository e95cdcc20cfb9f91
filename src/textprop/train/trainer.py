"""The training loop: forward a batch, score it, backward, rewrite, validate, record.

Every step is one ledger transaction holding the values in force after it, so a run killed
at any point resumes from the last recorded step (`resume=True`). Calls of a step that was
cut off are not paid again: with the persistent cache on, the replayed step's requests are
identical (the batch order is seeded, sampling is deterministic) and served from the cache.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textprop._sync import run_sync
from textprop.backward import run_backward
from textprop.data.dataset import Dataset, Example, Splits
from textprop.engines.base import Engine
from textprop.functions.combine import reduce
from textprop.functions.combine import sum as sum_losses
from textprop.ledger import EvaluationRow, Ledger, LossRow, Revision, StepRecord
from textprop.losses import MetricLoss
from textprop.optim.tgd import TextualGradientDescent
from textprop.train.acceptance import Rule, decide
from textprop.train.pipeline import Pipeline


@dataclass
class TrainerSettings:
    epochs: int = 1
    batch_size: int = 3
    steps_per_epoch: int | None = None  # None: every batch of the epoch
    acceptance: Rule = "non_decrease"
    alpha: float = 0.1  # significance level of the "paired" rule
    test_every_step: bool = False
    early_stopping: int = 0  # stop after this many steps without improvement; 0: never
    approval: bool = False  # a validated revision waits for `textprop approve`
    seed: int = 0
    condense_batch_feedback: bool = True  # BatchReduce (one condensed gradient) or Sum
    feedback_sentences: int = 4
    feedback_max_tokens: int | None = 300


@dataclass
class RunResult:
    run_dir: Path
    status: str  # finished | awaiting_approval | stopped_early
    baseline_val: float
    baseline_test: float | None
    best_val: float
    final_test: float | None
    values: dict[str, str]
    steps: int
    message: str = ""


@dataclass
class _Scored:
    example: Example
    prediction: Any  # Variable
    score: float
    explanation: str


@dataclass
class _State:
    best_val: float = 0.0
    best_per_example: dict[str, float] = field(default_factory=dict)
    since_improvement: int = 0


class Trainer:
    def __init__(self, pipeline: Pipeline, metric: Any, optimizer: TextualGradientDescent,
                 feedback_engine: Engine, splits: Splits, settings: TrainerSettings,
                 run_dir: str | Path, *, meters: Sequence[Any] = (),
                 progress: Callable[[str], None] | None = None,
                 counter: Callable[[str, int, int], None] | None = None) -> None:
        self.pipeline, self.metric, self.optimizer = pipeline, metric, optimizer
        self.feedback_engine, self.splits, self.settings = feedback_engine, splits, settings
        self.run_dir = Path(run_dir)
        self.ledger = Ledger.in_run(self.run_dir)
        self.parameters = pipeline.parameters()
        self.progress = progress or (lambda message: None)
        self.counter = counter or (lambda label, done, total: None)  # for progress bars
        self._calls: list[dict[str, Any]] = []
        for meter in meters:
            meter.on_call(self._on_call)

    def _on_call(self, record: Any) -> None:
        self._calls.append(record.to_dict() if hasattr(record, "to_dict") else dict(record))

    def _take_calls(self) -> list[dict[str, Any]]:
        calls, self._calls = self._calls, []
        return calls

    # --- schedule ------------------------------------------------------------------------
    def schedule(self) -> list[tuple[int, Dataset]]:
        """(epoch, batch) for every step, fixed by the seed: resumes see the same batches."""
        steps = []
        for epoch in range(self.settings.epochs):
            batches = self.splits.train.batches(self.settings.batch_size,
                                                seed=self.settings.seed + epoch)
            steps += [(epoch, b) for b in batches[:self.settings.steps_per_epoch]]
        return steps

    # --- evaluation ----------------------------------------------------------------------
    async def _score(self, example: Example) -> _Scored:
        prediction = await self.pipeline.aforward(example)
        result = await self.metric.ascore(prediction.value, example)
        return _Scored(example, prediction, float(result.score), result.explanation)

    async def evaluate(self, dataset: Dataset, split: str) -> EvaluationRow:
        done = 0

        async def score(example: Example) -> _Scored:
            nonlocal done
            result = await self._score(example)
            done += 1
            self.counter(split, done, len(dataset))
            return result

        scored = await asyncio.gather(*(score(e) for e in dataset))
        per_example = {s.example.id: s.score for s in scored}
        mean = sum(per_example.values()) / max(len(per_example), 1)
        return EvaluationRow(split, mean, per_example)

    # --- the run -------------------------------------------------------------------------
    def run(self, *, resume: bool = False) -> RunResult:
        return run_sync(self.arun(resume=resume))

    async def arun(self, *, resume: bool = False) -> RunResult:
        last = self.ledger.last_step()
        if last is not None and not resume:
            raise FileExistsError(f"{self.run_dir} already holds a run; resume it with "
                                  "--resume or choose another run folder")
        state = _State()
        if last is None:
            baseline = await self._baseline()
            state.best_val = baseline.val_score or 0.0
            state.best_per_example = _per_example(baseline, "val")
            start = 1
        else:
            self._restore(last)
            state.best_val = last["best_val_score"] or 0.0
            state.best_per_example = self._best_per_example()
            if last["status"] == "pending":
                outcome = self._settle_approval(last, state)
                if outcome is not None:
                    return outcome
            start = last["step"] + 1
            self.progress(f"resuming after step {last['step']} "
                          f"(best validation {state.best_val:.3f})")

        schedule = self.schedule()
        status = "finished"
        for step in range(start, len(schedule) + 1):
            epoch, batch = schedule[step - 1]
            record = await self._step(step, epoch, batch, state)
            self.ledger.record_step(record)
            self.progress(f"step {step}/{len(schedule)} epoch {epoch + 1}: {record.status} "
                          f"({record.reason})")
            if record.status == "pending":
                return self._result("awaiting_approval", state, None,
                                    f"step {step} awaits approval: textprop approve "
                                    f"{self.run_dir} {step} (or reject), then --resume")
            if self.settings.early_stopping and \
                    state.since_improvement >= self.settings.early_stopping:
                status = "stopped_early"
                break
        final_test = await self.evaluate(self.splits.test, "test") if len(
            self.splits.test) else None
        result = self._result(status, state, final_test.score if final_test else None, "")
        self.ledger.record_calls(result.steps, self._take_calls())  # the final test's calls
        self.ledger.set_meta(status=status, final={
            "test_score": result.final_test, "best_val_score": state.best_val,
            "values": result.values,
            "test_per_example": final_test.per_example if final_test else {}})
        return result

    async def _baseline(self) -> StepRecord:
        self.progress(f"baseline: evaluating {len(self.splits.val)} validation and "
                      f"{len(self.splits.test)} test examples")
        if len(self.splits.test):  # independent: evaluated side by side
            val, test = await asyncio.gather(self.evaluate(self.splits.val, "val"),
                                             self.evaluate(self.splits.test, "test"))
        else:
            val, test = await self.evaluate(self.splits.val, "val"), None
        record = StepRecord(
            step=0, epoch=0, status="baseline", reason="the starting values",
            values=self._values(), optimizer_state=self.optimizer.state_dict(),
            val_score=val.score, best_val_score=val.score,
            test_score=test.score if test else None,
            evaluations=[val] + ([test] if test else []), calls=self._take_calls())
        self.ledger.record_step(record)
        self.progress(f"baseline: validation {val.score:.3f}"
                      + (f", test {test.score:.3f}" if test else ""))
        return record

    async def _step(self, step: int, epoch: int, batch: Dataset, state: _State) -> StepRecord:
        started = time.time()
        before = self._values()
        optimizer_before = self.optimizer.state_dict()
        self.optimizer.zero_grad()
        scored = await asyncio.gather(*(self._score(e) for e in batch))
        batch_score = sum(s.score for s in scored) / len(scored)
        record = StepRecord(
            step=step, epoch=epoch, status="skipped", reason="", values=before,
            optimizer_state=optimizer_before, batch=[e.id for e in batch],
            batch_score=batch_score, best_val_score=state.best_val, started_at=started,
            losses=[LossRow(s.example.id, s.prediction.value, s.example.target, s.score,
                            s.explanation) for s in scored])
        losses = [MetricLoss(_fixed(s.score, s.explanation), name=_metric_name(self.metric))(
            s.prediction, s.example.target) for s in scored]
        combine = reduce if self.settings.condense_batch_feedback else sum_losses
        await run_backward(combine(losses), self.feedback_engine,
                           max_sentences=self.settings.feedback_sentences,
                           max_tokens=self.settings.feedback_max_tokens)
        updates = await self.optimizer.astep()
        names = list(self.parameters)
        record.revisions = [Revision(names[u.index], u.role_description, u.before, u.after,
                                     u.feedback, u.status, u.reason) for u in updates]
        proposal = self._values()
        if proposal == before:
            record.reason = ("every example in the batch was right: no feedback"
                             if all(u.status == "no_feedback" for u in updates)
                             else "the optimizer proposed no change")
            state.since_improvement += 1
            record.calls = self._take_calls()
            return record
        val = await self.evaluate(self.splits.val, "val")
        record.val_score = val.score
        record.evaluations.append(val)
        decision = decide(self.settings.acceptance, state.best_val, val.score,
                          state.best_per_example, val.per_example, self.settings.alpha)
        record.reason = decision.reason
        if decision.accepted and self.settings.approval:
            record.status = "pending"
            record.values = proposal  # what approval would put in force
            self._apply(before)
        elif decision.accepted:
            record.status, record.values = "accepted", proposal
            improved = val.score > state.best_val
            state.since_improvement = 0 if improved else state.since_improvement + 1
            state.best_val, state.best_per_example = val.score, val.per_example
        else:
            record.status = "rejected"
            self._apply(before)
            state.since_improvement += 1
        record.best_val_score = state.best_val
        record.optimizer_state = self.optimizer.state_dict()
        if self.settings.test_every_step and len(self.splits.test):
            test = await self.evaluate(self.splits.test, "test")
            record.test_score = test.score
            record.evaluations.append(test)
        record.calls = self._take_calls()
        return record

    # --- approval, restore ---------------------------------------------------------------
    def _settle_approval(self, last: dict[str, Any], state: _State) -> RunResult | None:
        step = last["step"]
        decision = self.ledger.approval(step)
        if decision is None:
            return self._result("awaiting_approval", state, None,
                                f"step {step} still awaits approval: textprop approve "
                                f"{self.run_dir} {step} (or reject)")
        if decision == "approved":
            self._apply(last["values"])
            val = next(e for e in self.ledger.evaluations(step) if e["split"] == "val")
            state.best_val, state.best_per_example = val["score"], val["per_example"]
            self.ledger.update_step_status(step, "accepted", f"{last['reason']}; approved",
                                           best_val_score=state.best_val)
        else:
            previous = self.ledger.step(step - 1)
            values = previous["values"] if previous else self._values()
            self._apply(values)
            self.ledger.update_step_status(step, "rejected", f"{last['reason']}; rejected "
                                                             "by a reviewer", values=values)
        return None

    def _restore(self, last: dict[str, Any]) -> None:
        values = last["values"]
        if last["status"] == "pending":
            previous = self.ledger.step(last["step"] - 1)
            values = previous["values"] if previous else values
        self._apply(values)
        self.optimizer.load_state_dict({"values": [values[n] for n in self.parameters],
                                        "memory": last["optimizer_state"].get("memory", [])})

    def _best_per_example(self) -> dict[str, float]:
        for step in reversed(self.ledger.steps()):
            if step["status"] in ("baseline", "accepted"):
                for e in self.ledger.evaluations(step["step"]):
                    if e["split"] == "val":
                        return e["per_example"]
        return {}

    def _values(self) -> dict[str, str]:
        return {name: v.value for name, v in self.parameters.items()}

    def _apply(self, values: dict[str, str]) -> None:
        for name, variable in self.parameters.items():
            variable.set_value(values[name])

    def _result(self, status: str, state: _State, final_test: float | None,
                message: str) -> RunResult:
        baseline = self.ledger.step(0)
        return RunResult(self.run_dir, status, baseline["val_score"], baseline["test_score"],
                         state.best_val, final_test, self._values(),
                         (self.ledger.last_step() or {"step": 0})["step"], message)


def _per_example(record: StepRecord, split: str) -> dict[str, float]:
    return next((e.per_example for e in record.evaluations if e.split == split), {})


def _fixed(score: float, explanation: str) -> Callable[[str, str], tuple[float, str]]:
    """The metric's verdict, already computed, as a MetricLoss scorer."""
    return lambda prediction, target: (score, explanation)


def _metric_name(metric: Any) -> str:
    return getattr(metric, "name", type(metric).__name__)
