"""The run's mechanics: baseline, ledger, resume, approval, the final test, events.

How the run searches is its `Strategy` (`tgd` by default: TextGrad's loop; `pareto`: a
candidate pool). Every round of steps is one ledger transaction holding the values in force
after it, so a run killed at any point resumes from the last recorded round
(`resume=True`). Calls of a round that was cut off are not paid again: with the persistent
cache on, the replayed round's requests are identical (batches and parents are seeded,
sampling is deterministic) and served from the cache.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from textprop._sync import beside, run_sync
from textprop.data.dataset import Dataset, Splits
from textprop.engines.base import Engine
from textprop.engines.limits import low_priority
from textprop.engines.metering import CONTENT_FIELDS
from textprop.errors import ConfigError
from textprop.ledger import EvaluationRow, Ledger, StepRecord
from textprop.optim.optimizer import Optimizer
from textprop.train.context import (
    CURRENT_STEP,
    FeedbackSettings,
    MetricCalls,
    RunContext,
)
from textprop.train.events import Events, FunctionCallbacks, RunCallback
from textprop.train.pipelines.base import Pipeline
from textprop.train.run_folder import exists_error, run_lock
from textprop.train.strategies.base import Strategy
from textprop.train.strategies.tgd import TGDSettings, TGDStrategy

T = TypeVar("T")


@dataclass
class TrainerSettings(TGDSettings):
    """The run's settings; the inherited ones are the default `tgd` strategy's."""

    approval: bool = False  # a validated revision waits for `textprop approve`
    seed: int = 0
    condense_batch_feedback: bool = True  # BatchReduce (one condensed gradient) or Sum
    feedback_sentences: int = 4
    feedback_max_tokens: int | None = 300
    max_metric_calls: int | None = None  # pipeline runs of train and validation examples

    def __post_init__(self) -> None:
        from textprop.train.config import MAX_EPOCHS, MAX_STEPS_PER_EPOCH

        for name, value, bound in (("epochs", self.epochs, MAX_EPOCHS),
                                   ("steps_per_epoch", self.steps_per_epoch,
                                    MAX_STEPS_PER_EPOCH)):
            if value is not None and not 1 <= value <= bound:
                raise ConfigError(f"must be between 1 and {bound}, got {value}", field=name)

    def tgd(self) -> TGDSettings:
        """The settings of the default `tgd` strategy."""
        return TGDSettings(**{f.name: getattr(self, f.name) for f in fields(TGDSettings)})


@dataclass
class RunResult:
    run_dir: Path
    status: str  # finished | awaiting_approval | stopped_early | budget_spent
    baseline_val: float
    baseline_test: float | None
    best_val: float
    final_test: float | None
    values: dict[str, str]
    steps: int
    message: str = ""
    metric_calls: int = 0
    already_finished: bool = False  # a resumed run that had finished: nothing was run

    def _repr_html_(self) -> str:
        from textprop.notebook import result_html

        return result_html(self)


class Trainer:
    def __init__(self, pipeline: Pipeline, metric: Any, optimizer: Optimizer,
                 feedback_engine: Engine, splits: Splits, settings: TrainerSettings,
                 run_dir: str | Path, *, strategy: Strategy | None = None,
                 meters: Sequence[Any] = (), budgets: Sequence[Any] = (),
                 callbacks: Sequence[RunCallback] = (),
                 progress: Callable[[str], None] | None = None,
                 counter: Callable[[str, int, int], None] | None = None) -> None:
        self.pipeline, self.metric, self.optimizer = pipeline, metric, optimizer
        self.feedback_engine, self.splits, self.settings = feedback_engine, splits, settings
        self.strategy = strategy or TGDStrategy(settings.tgd())
        self.run_dir = Path(run_dir)
        self.parameters = pipeline.parameters()
        self.events = Events([FunctionCallbacks(progress, counter), *callbacks])
        self._calls: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self._budgets = list(budgets)  # resumed, they count what earlier parts paid
        for meter in meters:  # the calls' text is copied only while a callback wants it
            meter.on_call(self._on_call, content=lambda: self.events.wants_call_content)
        self.context = RunContext(
            pipeline, metric, optimizer, feedback_engine, splits, seed=settings.seed,
            events=self.events, metric_calls=MetricCalls(settings.max_metric_calls),
            feedback=FeedbackSettings(settings.condense_batch_feedback,
                                      settings.feedback_sentences,
                                      settings.feedback_max_tokens),
            approval=settings.approval, run_dir=self.run_dir, take_calls=self._take_calls)
        self.strategy.bind(self.context)
        self._ledger: Ledger | None = None
        # A fresh run's step 0 until it is filed, its test still running beside the search,
        # and the records of rounds that finished meanwhile (filed after it, in order).
        self._opening: StepRecord | None = None
        self._baseline_test: asyncio.Future[EvaluationRow] | None = None
        self._held: list[tuple[list[StepRecord], bool]] = []
        self._test_pipeline: Pipeline = pipeline

    @property
    def ledger(self) -> Ledger:
        """The run's ledger, opened (and the run folder made) on first use, so building a
        Trainer writes nothing: a check that fails leaves no folder behind."""
        if self._ledger is None:
            self._ledger = Ledger.in_run(self.run_dir)
        return self._ledger

    def use_run_dir(self, run_dir: str | Path) -> None:
        """Write the run to `run_dir` instead (before the ledger is opened)."""
        if self._ledger is not None:
            raise RuntimeError("the run folder is fixed once the ledger is open")
        self.run_dir = self.context.run_dir = Path(run_dir)

    @classmethod
    def build(cls, pipeline: Pipeline, metric: Any, splits: Splits, run_dir: str | Path, *,
              engine: Any, feedback_engine: Any = None, optimizer_engine: Any = None,
              optimizer: Optimizer | None = None, strategy: Strategy | None = None,
              callbacks: Sequence[RunCallback] = (), **settings: Any) -> Trainer:
        """A trainer with defaults: `metric` may be a name ("numeric", "exact_match", ...),
        feedback and rewrites come from `engine` unless given their own, the optimizer is
        TGD over the pipeline's parameters, and `settings` are `TrainerSettings` fields.
        Calls are filed in the ledger when the engines carry a `Meter` layer (as those of
        `textprop.get_engine` do)."""
        from textprop.engines.base import as_engine
        from textprop.engines.budget import Budget
        from textprop.engines.metering import Meter
        from textprop.engines.stack import find_layer
        from textprop.metrics import get_metric
        from textprop.optim.tgd import TextualGradientDescent

        engine = as_engine(engine)
        feedback = as_engine(feedback_engine) if feedback_engine is not None else engine
        rewriter = as_engine(optimizer_engine) if optimizer_engine is not None else feedback
        meters: list[Meter] = []  # the ledger's calls table listens to the engines' meters
        budgets: list[Budget] = []
        for e in (engine, feedback, rewriter, getattr(pipeline, "engine", None)):
            meter = find_layer(e, Meter) if isinstance(e, Engine) else None
            if meter is not None and not any(m is meter for m in meters):
                meters.append(meter)
            budget = find_layer(e, Budget) if isinstance(e, Engine) else None
            if budget is not None and not any(b is budget for b in budgets):
                budgets.append(budget)
        if isinstance(metric, str):
            metric = get_metric(metric)
        if optimizer is None:
            optimizer = TextualGradientDescent(pipeline.parameters(), engine=rewriter)
        return cls(pipeline, metric, optimizer, feedback, splits, TrainerSettings(**settings),
                   run_dir, strategy=strategy, callbacks=callbacks, meters=meters,
                   budgets=budgets)

    def _on_call(self, record: Any) -> None:
        call = record.to_dict() if hasattr(record, "to_dict") else dict(record)
        step = CURRENT_STEP.get()
        # The ledger files the call's metadata only; its text goes to the events, which
        # hand it to the callbacks that asked for it.
        self._calls[step].append({k: v for k, v in call.items() if k not in CONTENT_FIELDS})
        if not call.get("cached"):
            self.ledger.record_paid_call(call["engine"], call["role"], call["input_tokens"]
                                         + call["output_tokens"], call["cost_usd"])
        self.events.on_call(call, step)

    def _take_calls(self, step: int) -> list[dict[str, Any]]:
        return self._calls.pop(step, [])

    def schedule(self) -> list[tuple[int, Dataset]]:
        """The `tgd` strategy's (epoch, batch) for every step."""
        assert isinstance(self.strategy, TGDStrategy), "only tgd has a fixed schedule"
        return self.strategy.schedule()

    async def evaluate(self, dataset: Dataset, split: str) -> EvaluationRow:
        return await self.context.evaluate(dataset, split)

    # --- the run -------------------------------------------------------------------------
    def run(self, *, resume: bool = False) -> RunResult:
        return run_sync(self.arun(resume=resume))

    async def arun(self, *, resume: bool = False) -> RunResult:
        """Hold the run folder's lock (one process at a time) and run or resume the run."""
        with run_lock(self.run_dir):
            return await self._arun(resume)

    async def _arun(self, resume: bool) -> RunResult:
        last = self.ledger.last_step()
        if last is not None and not resume:
            raise exists_error(self.run_dir)
        meta = self.ledger.meta() if last is not None else {}
        if last is not None and "final" in meta and last["status"] != "pending":
            return self._already_finished(meta)
        first_round: asyncio.Future[list[StepRecord]] | None = None
        if last is None:
            # The baseline's validation is reserved while it runs, so a first round started
            # beside it sees the budget it will leave; scoring it spends the reservation.
            started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            early = (self.context.metric_calls.reserve(len(self.splits.val))
                     and self.strategy.begin(started))
            if early:  # started first, so its first calls go out before validation's
                first_round = beside(self.strategy.next_round(1))
            opening = beside(self._open(started, beside_search=early))
            if first_round is not None:
                baseline, test = await _beside(opening, first_round)
            else:
                baseline, test = await opening
            self._opening = baseline
            if test is None:
                self._file_baseline(None)
            elif self._test_pipeline is self.pipeline:  # no copy: the search must wait
                self._file_baseline(await test)
            else:  # the search needs only validation: it goes on while the test runs
                self._baseline_test = test
            step = 1
        else:
            paid = self.ledger.paid()
            for budget in self._budgets:
                budget.carry_over(*paid)
            self.strategy.restore(self.ledger)
            if last["status"] == "pending":
                decision = self.ledger.approval(last["step"])
                if decision is None:
                    return self._awaiting(last["step"], "still awaits")
                self.strategy.settle_approval(self.ledger, last, decision)
            step = last["step"] + 1
            self.events.on_message(f"resuming after step {last['step']} "
                                   f"(best validation {self.strategy.best_val:.3f})")
        while records := await self._beside_baseline(first_round
                                                     or self.strategy.next_round(step)):
            first_round = None
            self._file(records)
            step = records[-1].step + 1
            if records[-1].status == "pending":
                await self._settle_baseline()
                return self._awaiting(records[-1].step, "awaits")
        final = await self._beside_baseline(self.strategy.finish(step))
        if final is not None:
            self._file([final], final=True)
            if final.status == "pending":
                await self._settle_baseline()
                return self._awaiting(final.step, "awaits")
        return await self._finish(final.step if final is not None else step - 1)

    # --- filing ----------------------------------------------------------------------------
    async def _beside_baseline(self, work: Awaitable[T]) -> T:
        """`work` (a round), while the baseline's test may still run: step 0 is filed the
        moment its test is scored (then the rounds held meanwhile), and a failure of either
        is raised at once."""
        task = beside(work)
        test = self._baseline_test
        while test is not None and not test.done() and not task.done():
            await asyncio.wait({task, test}, return_when=asyncio.FIRST_COMPLETED)
        if test is not None and test.done():
            self._baseline_test = None
            self._file_baseline(test.result())
        return await task

    async def _settle_baseline(self) -> None:
        """Wait for the baseline's test, if it still runs, and file everything held."""
        if self._baseline_test is not None:
            test, self._baseline_test = self._baseline_test, None
            self._file_baseline(await test)

    def _file_baseline(self, test: EvaluationRow | None) -> None:
        """Step 0, with its test once scored; then the rounds that finished meanwhile."""
        baseline, self._opening = self._opening, None
        assert baseline is not None
        if test is not None:
            baseline.test_score = test.score
            baseline.evaluations.append(test)
        baseline.calls = self._take_calls(0)
        self.ledger.set_meta(strategy=self.strategy.describe())
        self.ledger.record_step(baseline)
        self.events.on_step(baseline, self.strategy.planned_steps())
        self.events.on_message(f"baseline: validation {baseline.val_score:.3f}" + (
            f", test {baseline.test_score:.3f}" if baseline.test_score is not None else ""))
        held, self._held = self._held, []
        for records, final in held:
            self._file(records, final=final)

    def _file(self, records: list[StepRecord], *, final: bool = False) -> None:
        """A round's records in one transaction; held in memory while step 0 waits for its
        test (a run killed meanwhile replays them, from the cache when it is on)."""
        if self._opening is not None:
            self._held.append((records, final))
            return
        planned = self.strategy.planned_steps()
        self.ledger.record_steps(records)
        for record in records:
            self.events.on_step(record, planned)
            self.events.on_message(
                f"final pick: {record.reason}" if final else
                f"step {record.step}{f'/{planned}' if planned else ''} epoch "
                f"{record.epoch + 1}: {record.status} ({record.reason})")
        self._report_budget()

    async def _finish(self, last_step: int) -> RunResult:
        CURRENT_STEP.set(last_step)  # the final test's calls are filed with the last step
        final_test = await self._beside_baseline(self.context.evaluate(
            self.splits.test, "test")) if len(self.splits.test) else None
        await self._settle_baseline()  # the baseline's test may end after the final one
        status = self.strategy.status
        result = self._result(status, final_test.score if final_test else None, "")
        self.ledger.record_calls(last_step, self._take_calls(last_step))
        self.ledger.set_meta(status=status, final={
            "test_score": result.final_test, "best_val_score": self.strategy.best_val,
            "values": result.values, "metric_calls": self.context.metric_calls.used,
            "test_per_example": final_test.per_example if final_test else {}})
        self.events.on_run_finished(result)
        return result

    async def _baseline(self) -> tuple[StepRecord, asyncio.Future[EvaluationRow] | None]:
        """Step 0 once validation is scored, and the test run still going on beside it: it
        takes only the slots validation (and then the search) leaves idle."""
        self.events.on_message(f"baseline: evaluating {len(self.splits.val)} validation and "
                               f"{len(self.splits.test)} test examples")
        CURRENT_STEP.set(0)
        # The test scores a copy of the starting values: the search may change the
        # pipeline's own while it runs (without clone() it waits for the test instead).
        clone = getattr(self.pipeline, "clone", None)
        self._test_pipeline = clone() if clone is not None else self.pipeline
        test = beside(self._low_priority_test()) if len(
            self.splits.test) else None
        used = self.context.metric_calls.used
        val = await self.context.evaluate(self.splits.val, "val")  # on failure, the test's
        # calls in flight still finish into the cache (run_sync settles them)
        record = StepRecord(
            step=0, epoch=0, status="baseline", reason="the starting values",
            values=self.context.values(), optimizer_state=self.optimizer.state_dict(),
            val_score=val.score, best_val_score=val.score, evaluations=[val],
            # its own count: a first round running beside it spends from the same budget
            search_state={"metric_calls": used + len(self.splits.val)})
        return record, test

    async def _open(self, started: asyncio.Future[None], *, beside_search: bool
                    ) -> tuple[StepRecord, asyncio.Future[EvaluationRow] | None]:
        """The baseline, then the strategy's `start` (`started` tells a first round running
        beside it). That round's calls come first: it files its records only once this is
        done, many dependent calls later, so validation fills the slots the round leaves
        idle; the test, needed only at the end, comes after both."""
        try:
            with low_priority(1) if beside_search else nullcontext():
                baseline, test = await self._baseline()
            self.strategy.start(baseline)  # may add its own state (e.g. the seed candidate)
        except asyncio.CancelledError:
            started.cancel()
            raise
        except BaseException as error:
            started.set_exception(error)
            started.exception()  # raised here; a round that awaits it raises it too
            raise
        started.set_result(None)
        return baseline, test

    async def _low_priority_test(self) -> EvaluationRow:
        with low_priority(2):
            return await self.context.evaluate(self.splits.test, "test",
                                               self._test_pipeline)

    def _report_budget(self) -> None:
        used = {"metric_calls": self.context.metric_calls.used}
        self.events.on_budget(used, {"metric_calls": self.context.metric_calls.limit})

    def _already_finished(self, meta: dict[str, Any]) -> RunResult:
        """A resumed run that had finished: its result, read from the ledger; nothing runs."""
        final, baseline = meta["final"], self.ledger.step(0)
        status = str(meta.get("status", "finished"))
        last = self.ledger.last_step() or {"step": 0}
        result = RunResult(
            self.run_dir, status, baseline["val_score"], baseline["test_score"],
            final.get("best_val_score", baseline["val_score"]), final.get("test_score"),
            final.get("values") or last["values"], last["step"],
            f"{self.run_dir} is finished (status {status}); nothing to resume",
            final.get("metric_calls", 0), already_finished=True)
        self.events.on_run_finished(result)
        return result

    def _awaiting(self, step: int, verb: str) -> RunResult:
        result = self._result("awaiting_approval", None,
                              f"step {step} {verb} approval: textprop approve {self.run_dir} "
                              f"{step} (or reject)" + (", then --resume" if verb == "awaits"
                                                       else ""))
        self.events.on_run_finished(result)
        return result

    # --- values --------------------------------------------------------------------------
    def _values(self) -> dict[str, str]:
        return self.context.values()

    def _apply(self, values: dict[str, str]) -> None:
        self.context.apply(values)

    def _result(self, status: str, final_test: float | None, message: str) -> RunResult:
        baseline = self.ledger.step(0)
        return RunResult(self.run_dir, status, baseline["val_score"], baseline["test_score"],
                         self.strategy.best_val, final_test, self._values(),
                         (self.ledger.last_step() or {"step": 0})["step"], message,
                         self.context.metric_calls.used)


async def _beside(work: asyncio.Future[T], search: asyncio.Future[Any]) -> T:
    """The result of `work` (part of the baseline), awaited while the search's first round
    runs. A failure of either is raised at once; the other's calls in flight are left to
    finish into the cache, as a `gather` leaves them (run_sync settles them before the
    error surfaces)."""
    while not work.done():
        await asyncio.wait({work} if search.done() else {work, search},
                           return_when=asyncio.FIRST_COMPLETED)
        if search.done() and not search.cancelled() and search.exception() is not None:
            search.result()
    return work.result()
