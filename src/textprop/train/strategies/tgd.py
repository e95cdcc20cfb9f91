"""`tgd`: TextGrad's loop. One rewrite per step from a training batch's feedback, the whole
validation set scored after it, kept or reverted by the acceptance rule."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from textprop.data.dataset import Dataset
from textprop.demos import Demo, Demonstrations, encode
from textprop.ledger import Ledger, Revision, StepRecord
from textprop.train.acceptance import Rule, decide
from textprop.train.context import CURRENT_STEP, step_output_rows
from textprop.train.strategies.base import Strategy
from textprop.train.strategies.demo_moves import fits


@dataclass
class TGDSettings:
    epochs: int = 1
    batch_size: int = 3
    steps_per_epoch: int | None = None  # None: every batch of the epoch
    acceptance: Rule = "non_decrease"
    alpha: float = 0.1  # significance level of the "paired" rule
    test_every_step: bool = False
    early_stopping: int = 0  # stop after this many steps without improvement; 0: never
    demos: int = 0  # with a demonstrations parameter: add the batch's right answers, up to
    max_demo_tokens: int | None = 1000


class TGDStrategy(Strategy):
    kind = "tgd"

    def __init__(self, settings: TGDSettings | None = None) -> None:
        self.settings = settings or TGDSettings()
        self._best_val = 0.0
        self._best_per_example: dict[str, float] = {}
        self._since_improvement = 0
        self._schedule: list[tuple[int, Dataset]] | None = None

    @classmethod
    def from_options(cls, **options: Any) -> TGDStrategy:
        return cls(TGDSettings(**options))

    @property
    def best_val(self) -> float:
        return self._best_val

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, **vars(self.settings)}

    # --- schedule ------------------------------------------------------------------------
    def schedule(self) -> list[tuple[int, Dataset]]:
        """(epoch, batch) for every step, fixed by the seed: resumes see the same batches."""
        if self._schedule is None:
            steps = []
            for epoch in range(self.settings.epochs):
                batches = self.ctx.splits.train.batches(self.settings.batch_size,
                                                        seed=self.ctx.seed + epoch)
                steps += [(epoch, b) for b in batches[:self.settings.steps_per_epoch]]
            self._schedule = steps
        return self._schedule

    def planned_steps(self) -> int:
        return len(self.schedule())

    # --- start, restore, approval --------------------------------------------------------
    def start(self, baseline: StepRecord) -> None:
        self._best_val = baseline.val_score or 0.0
        self._best_per_example = next(
            (e.per_example for e in baseline.evaluations if e.split == "val"), {})

    def restore(self, ledger: Ledger) -> None:
        last = ledger.last_step()
        assert last is not None
        values = last["values"]
        if last["status"] == "pending":
            previous = ledger.step(last["step"] - 1)
            values = previous["values"] if previous else values
        self.ctx.apply(values)
        self.ctx.optimizer.load_state_dict(last["optimizer_state"])
        self._best_val = last["best_val_score"] or 0.0
        self._best_per_example = _best_per_example(ledger)
        self.ctx.metric_calls.used = last["search_state"].get("metric_calls", 0)

    def settle_approval(self, ledger: Ledger, pending: dict[str, Any], decision: str) -> None:
        step = pending["step"]
        if decision == "approved":
            self.ctx.apply(pending["values"])
            val = next(e for e in ledger.evaluations(step) if e["split"] == "val")
            self._best_val, self._best_per_example = val["score"], val["per_example"]
            ledger.update_step_status(step, "accepted", f"{pending['reason']}; approved",
                                      best_val_score=self._best_val)
        else:
            previous = ledger.step(step - 1)
            values = previous["values"] if previous else self.ctx.values()
            self.ctx.apply(values)
            ledger.update_step_status(step, "rejected", f"{pending['reason']}; rejected "
                                                        "by a reviewer", values=values)

    # --- one step ------------------------------------------------------------------------
    async def next_round(self, step: int) -> list[StepRecord]:
        schedule = self.schedule()
        if self.settings.early_stopping and \
                self._since_improvement >= self.settings.early_stopping:
            self.status = "stopped_early"
            return []
        if step > len(schedule):
            return []
        epoch, batch = schedule[step - 1]
        if not self.ctx.metric_calls.reserve(len(batch) + len(self.ctx.splits.val)):
            self.status = "budget_spent"
            return []
        CURRENT_STEP.set(step)
        record = await self._step(step, epoch, batch)
        self.ctx.metric_calls.release(len(self.ctx.splits.val))  # unused when not validated
        record.search_state = {"metric_calls": self.ctx.metric_calls.used}
        record.calls = self.ctx.take_calls(step)
        return [record]

    async def _step(self, step: int, epoch: int, batch: Dataset) -> StepRecord:
        ctx, optimizer = self.ctx, self.ctx.optimizer
        started = time.time()
        before = ctx.values()
        optimizer_before = optimizer.state_dict()
        optimizer.zero_grad()
        scored = await ctx.score_all(list(batch))
        batch_score = sum(s.score for s in scored) / len(scored)
        record = StepRecord(
            step=step, epoch=epoch, status="skipped", reason="", values=before,
            optimizer_state=optimizer_before, batch=[e.id for e in batch],
            batch_score=batch_score, best_val_score=self._best_val, started_at=started,
            losses=[s.loss_row() for s in scored])
        await ctx.backward(scored)
        record.step_outputs = step_output_rows(scored)
        texts = [n for n, v in ctx.parameters.items() if not isinstance(v, Demonstrations)]
        updates = await optimizer.astep(texts)
        record.revisions = [Revision(u.name, u.role_description, u.before, u.after,
                                     u.feedback, u.status, u.reason) for u in updates]
        record.revisions += self._add_demos(scored)
        proposal = ctx.values()
        if proposal == before:
            record.reason = ("every example in the batch was right: no feedback"
                             if all(u.status == "no_feedback" for u in updates)
                             else "the optimizer proposed no change")
            self._since_improvement += 1
            return record
        val = await ctx.evaluate(ctx.splits.val, "val")
        record.val_score = val.score
        record.evaluations.append(val)
        decision = decide(self.settings.acceptance, self._best_val, val.score,
                          self._best_per_example, val.per_example, self.settings.alpha)
        record.reason = decision.reason
        if decision.accepted and ctx.approval:
            record.status = "pending"
            record.values = proposal  # what approval would put in force
            ctx.apply(before)
        elif decision.accepted:
            record.status, record.values = "accepted", proposal
            improved = val.score > self._best_val
            self._since_improvement = 0 if improved else self._since_improvement + 1
            self._best_val, self._best_per_example = val.score, val.per_example
        else:
            record.status = "rejected"
            ctx.apply(before)
            self._since_improvement += 1
        record.best_val_score = self._best_val
        record.optimizer_state = optimizer.state_dict()
        if self.settings.test_every_step and len(ctx.splits.test):
            test = await ctx.evaluate(ctx.splits.test, "test")
            record.test_score = test.score
            record.evaluations.append(test)
        return record


    def _add_demos(self, scored: list[Any]) -> list[Revision]:
        """The tgd option of the demonstrations issue: the batch's right answers join the
        demonstrations (the oldest pair leaves when the list is full); the validation gate
        decides on the whole proposal."""
        if not self.settings.demos:
            return []
        revisions = []
        question = getattr(self.ctx.pipeline, "question_text", None)
        pair_of = getattr(self.ctx.pipeline, "demo_pair", None)  # a step's own exchange
        for name, demos in self.ctx.parameters.items():
            if not isinstance(demos, Demonstrations):
                continue
            before, pairs = demos.value, demos.pairs
            for x in scored:
                shown = {d.source for d in pairs}
                if x.score < 1.0 or x.example.id in shown:
                    continue
                new = (pair_of(name, x.example, x.prediction) if pair_of else None) or Demo(
                    question(x.example) if question else x.example.input,
                    x.prediction.value, x.example.id)
                while pairs and not fits([*pairs, new], self.settings.demos,
                                         self.settings.max_demo_tokens):
                    pairs = pairs[1:]
                if fits([*pairs, new], self.settings.demos, self.settings.max_demo_tokens):
                    pairs = [*pairs, new]
            if encode(pairs) != before:
                demos.set_pairs(pairs)
                revisions.append(Revision(name, demos.role_description, before, demos.value,
                                          "", "updated", "the batch's right answers added"))
        return revisions


def _best_per_example(ledger: Ledger) -> dict[str, float]:
    for step in reversed(ledger.steps()):
        if step["status"] in ("baseline", "accepted"):
            for e in ledger.evaluations(step["step"]):
                if e["split"] == "val":
                    return e["per_example"]
    return {}

