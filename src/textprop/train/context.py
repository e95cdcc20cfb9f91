"""What a strategy may use from the run: scoring, evaluation, feedback, the metric-call budget.

The `Trainer` builds one `RunContext` and hands it to its strategy, so a strategy proposes
and accepts without touching the ledger, the schedule or the engines' wiring.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from textprop.backward import run_backward
from textprop.data.dataset import Dataset, Example, Splits
from textprop.engines.base import Engine
from textprop.functions.combine import reduce
from textprop.functions.combine import sum as sum_losses
from textprop.functions.llm_call import cut_off_note
from textprop.ledger import EvaluationRow, LossRow, StepOutputRow
from textprop.losses import MetricLoss
from textprop.optim.optimizer import Optimizer
from textprop.train.events import Events
from textprop.train.pipelines.base import Pipeline
from textprop.train.pipelines.trace import trace

# The step a call belongs to, for the ledger's calls table: set per task, so the calls of
# proposals running side by side are filed under their own steps.
CURRENT_STEP: contextvars.ContextVar[int] = contextvars.ContextVar("textprop_step", default=0)


@dataclass
class Scored:
    example: Example
    prediction: Any  # Variable
    score: float
    explanation: str

    def loss_row(self) -> LossRow:
        return LossRow(self.example.id, self.prediction.value, self.example.target,
                       self.score, self.explanation)


def step_output_rows(scored: Sequence[Scored]) -> list[StepOutputRow]:
    """Each pipeline step's input, output and feedback per example (after backward, the
    feedback is filled in)."""
    return [StepOutputRow(s.example.id, i, row.name, row.input, row.output, row.feedback)
            for s in scored for i, row in enumerate(trace(s.prediction))]


class MetricCalls:
    """The budget in task-model runs, counted as GEPA counts them: every example the
    pipeline runs, validation included (the held-out test is not part of the search).

    Strategies `reserve` what a proposal may need before starting it and `release` what it
    did not use, so proposals in flight together never overdraw it."""

    def __init__(self, limit: int | None, used: int = 0) -> None:
        self.limit, self.used, self.reserved = limit, used, 0

    @property
    def remaining(self) -> float:
        return float("inf") if self.limit is None else self.limit - self.used - self.reserved

    def reserve(self, n: int) -> bool:
        if n > self.remaining:
            return False
        self.reserved += n
        return True

    def spend(self, n: int) -> None:
        """Count `n` runs against an earlier reservation."""
        self.reserved = max(self.reserved - n, 0)
        self.used += n

    def release(self, n: int) -> None:
        self.reserved = max(self.reserved - n, 0)


@dataclass
class FeedbackSettings:
    condense_batch: bool = True  # BatchReduce (one condensed gradient) or Sum
    sentences: int = 4
    max_tokens: int | None = 300


class RunContext:
    def __init__(self, pipeline: Pipeline, metric: Any, optimizer: Optimizer,
                 feedback_engine: Engine, splits: Splits, *, seed: int, events: Events,
                 metric_calls: MetricCalls, feedback: FeedbackSettings,
                 approval: bool = False, run_dir: Any = None,
                 take_calls: Callable[[int], list[dict[str, Any]]] = lambda step: []) -> None:
        self.pipeline, self.metric, self.optimizer = pipeline, metric, optimizer
        self.feedback_engine, self.splits, self.seed = feedback_engine, splits, seed
        self.events, self.metric_calls, self.feedback = events, metric_calls, feedback
        self.approval, self.run_dir, self.take_calls = approval, run_dir, take_calls
        self.parameters = pipeline.parameters()

    # --- values --------------------------------------------------------------------------
    def values(self, pipeline: Pipeline | None = None) -> dict[str, str]:
        return {name: v.value for name, v in (pipeline or self.pipeline).parameters().items()}

    def apply(self, values: dict[str, str], pipeline: Pipeline | None = None) -> None:
        for name, variable in (pipeline or self.pipeline).parameters().items():
            variable.set_value(values[name])

    # --- scoring -------------------------------------------------------------------------
    async def score(self, example: Example, pipeline: Pipeline | None = None) -> Scored:
        prediction = await (pipeline or self.pipeline).aforward(example)
        result = await self.metric.ascore(prediction.value, example)
        result = result.with_cause(cut_off_note(prediction))
        return Scored(example, prediction, float(result.score), result.explanation)

    async def score_all(self, examples: Sequence[Example], pipeline: Pipeline | None = None,
                        *, counted: bool = True) -> list[Scored]:
        """Score examples concurrently; `counted` runs spend the metric-call budget."""
        scored = await asyncio.gather(*(self.score(e, pipeline) for e in examples))
        if counted:
            self.metric_calls.spend(len(examples))
        return list(scored)

    async def evaluate(self, dataset: Dataset | Sequence[Example], split: str,
                       pipeline: Pipeline | None = None) -> EvaluationRow:
        examples = list(dataset)
        done = 0

        async def one(example: Example) -> Scored:
            nonlocal done
            result = await self.score(example, pipeline)
            done += 1
            self.events.on_evaluation_progress(split, done, len(examples))
            return result

        scored = await asyncio.gather(*(one(e) for e in examples))
        if split != "test":
            self.metric_calls.spend(len(examples))
        per_example = {s.example.id: s.score for s in scored}
        row = EvaluationRow(split, sum(per_example.values()) / max(len(per_example), 1),
                            per_example)
        self.events.on_evaluation(split, row)
        return row

    # --- feedback ------------------------------------------------------------------------
    async def backward(self, scored: Sequence[Scored]) -> None:
        """Textual gradients from a batch's metric verdicts to every parameter behind it."""
        losses = [MetricLoss(_fixed(s.score, s.explanation), name=metric_name(self.metric))(
            s.prediction, s.example.target) for s in scored]
        combine = reduce if self.feedback.condense_batch else sum_losses
        await run_backward(combine(losses), self.feedback_engine,
                           max_sentences=self.feedback.sentences,
                           max_tokens=self.feedback.max_tokens)


def _fixed(score: float, explanation: str) -> Callable[[str, str], tuple[float, str]]:
    """The metric's verdict, already computed, as a MetricLoss scorer."""
    return lambda prediction, target: (score, explanation)


def metric_name(metric: Any) -> str:
    return getattr(metric, "name", type(metric).__name__)
