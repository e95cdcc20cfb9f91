"""Instance optimization: improve one text (an answer, a solution, a code snippet) against
a loss for a fixed number of iterations, TextGrad's test-time use.

    result = textprop.refine("def add(a, b): return a - b", tests("my_tests:check"),
                             engine="openai:gpt-4o-mini", iterations=3,
                             role_description="a Python function add(a, b)",
                             run_dir="runs/add")
    result.best, result.best_score

Each iteration scores the current text with the loss, sends the loss's explanation to the
text as its feedback (the graph: a `Variable` and a `MetricLoss`), and asks TGD for a
rewrite. The best version by the loss's score is kept (a worse rewrite is recorded and
reverted); the run stops early once the score reaches 1. Every iteration is a step of a
ledger like a run's (`textprop history`, `diff`, `report` read it).

A loss is any object with `async ascore(text) -> (score, explanation)`; three are built in:
`judge(engine, instruction)` (an LLM judge), `metric(name, reference)` (a metric against a
reference) and `tests(function)` (a Python function of the text returning its failures,
or `(score, explanation)`: for code, run its tests and return what failed).
"""

from __future__ import annotations

import inspect
import sys
import time
import tomllib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from textprop._sync import run_sync
from textprop.backward import run_backward
from textprop.data.dataset import Example
from textprop.engines.base import Engine, as_engine
from textprop.errors import ConfigError
from textprop.ledger import EvaluationRow, LossRow, Revision, StepRecord
from textprop.losses import MetricLoss
from textprop.prompts import render
from textprop.train.config import BudgetSection, CacheSection, EnginesSection, RunSection
from textprop.variable import Variable

NAME = "text"  # the refined text's parameter name in the ledger


# --- losses ---------------------------------------------------------------------------------
class Loss(ABC):
    """`await loss.ascore(text)` -> (score in [0, 1], explanation used as the feedback)."""

    name = "loss"

    @abstractmethod
    async def ascore(self, text: str) -> tuple[float, str]:
        """Score `text`; the explanation becomes the feedback."""


@dataclass
class _MetricLoss(Loss):
    metric: Any
    example: Example
    name: str = "metric"

    async def ascore(self, text: str) -> tuple[float, str]:
        result = await self.metric.ascore(text, self.example)
        return float(result.score), result.explanation


def judge(engine: Any, instruction: str, *, question: str = "") -> Loss:
    """An LLM judge scoring the text by `instruction` (what a good text does)."""
    from textprop.metrics.judge import LLMJudge

    return _MetricLoss(LLMJudge(as_engine(engine), instruction),
                       Example("instance", question, ""), name="judge")


def metric(name_or_metric: Any, reference: str, *, question: str = "") -> Loss:
    """A metric (`"numeric"`, `"exact_match"`, ..., or a metric object) against `reference`."""
    from textprop.metrics import get_metric

    m = get_metric(name_or_metric) if isinstance(name_or_metric, str) else name_or_metric
    return _MetricLoss(m, Example("instance", question, reference),
                       name=getattr(m, "name", str(name_or_metric)))


@dataclass
class _TestsLoss(Loss):
    function: Callable[[str], Any]
    name: str = "tests"

    async def ascore(self, text: str) -> tuple[float, str]:
        result = self.function(text)
        if inspect.isawaitable(result):
            result = await result
        score = None
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], int | float):
            score, result = float(result[0]), result[1]  # graded: (passed / total, failures)
            if isinstance(result, str):
                return score, result
        failures = [str(f) for f in (result or [])]
        if not failures:
            return (1.0 if score is None else score), "every test passed"
        return (0.0 if score is None else score), render(
            "refine_failures", n=len(failures), failures="\n".join(f"- {f}" for f in failures))


def tests(function: Callable[[str], Any] | str) -> Loss:
    """A Python function of the text (or "module:function") returning its failures (a list
    of strings, empty when it passes: score 1, else 0), or `(score, failures)` for a graded
    score (e.g. the share of tests passed), or `(score, explanation)`."""
    if isinstance(function, str):
        from textprop.train.pipelines.python import load_factory

        try:
            function = load_factory(function)
        except ConfigError as error:
            raise ConfigError(error.message, field="loss.function") from None
    return _TestsLoss(function)


# --- the loop -------------------------------------------------------------------------------
@dataclass
class RefineResult:
    run_dir: Path | None
    best: str
    best_score: float
    initial_score: float
    iterations: int  # rewrites asked for
    history: list[tuple[str, float]] = field(default_factory=list)  # every version scored


async def arefine(text: str, loss: Loss, *, engine: Any, iterations: int = 3,
                  role_description: str = "a text to improve",
                  feedback_engine: Any = None, optimizer_engine: Any = None,
                  constraints: list[str] | None = None, gradient_memory: int = 0,
                  run_dir: str | Path | None = None,
                  meters: list[Any] | None = None,
                  progress: Callable[[str], None] | None = None) -> RefineResult:
    from textprop.ledger import Ledger
    from textprop.optim.tgd import TextualGradientDescent

    engine = as_engine(engine)
    feedback = as_engine(feedback_engine) if feedback_engine is not None else engine
    rewriter = as_engine(optimizer_engine) if optimizer_engine is not None else feedback
    say = progress or (lambda message: None)
    variable = Variable(text, role_description=role_description)
    optimizer = TextualGradientDescent({NAME: variable}, engine=rewriter,
                                       constraints=constraints or [],
                                       gradient_memory=gradient_memory)  # earlier feedback
    ledger = Ledger.in_run(run_dir) if run_dir is not None else None
    if ledger is not None and ledger.last_step() is not None:
        raise FileExistsError(f"{run_dir} already holds a run; choose another run folder")
    calls: list[dict[str, Any]] = []
    for m in meters or ():
        m.on_call(lambda r: calls.append(r.to_dict() if hasattr(r, "to_dict") else dict(r)))

    def take() -> list[dict[str, Any]]:
        out = list(calls)
        calls.clear()
        return out

    started = time.time()
    score, explanation = await loss.ascore(text)
    history = [(text, score)]
    best, best_score, initial = text, score, score
    if ledger is not None:
        ledger.set_meta(kind="refine", name=Path(run_dir).name, started_at=started,
                        status="running", loss=loss.name, task="refine",
                        strategy={"kind": "refine", "iterations": iterations})
        ledger.record_step(StepRecord(
            step=0, epoch=0, status="baseline", reason="the starting text",
            values={NAME: text}, optimizer_state={}, val_score=score, best_val_score=score,
            losses=[LossRow("instance", text, "", score, explanation)],
            evaluations=[EvaluationRow("val", score, {"instance": score})], calls=take(),
            started_at=started))
    say(f"start: {loss.name} score {score:.3f}")
    done = 0
    for step in range(1, iterations + 1):
        if best_score >= 1.0:
            say("the loss is satisfied: stopping")
            break
        started = time.time()
        variable.set_value(best)
        optimizer.zero_grad()
        evaluation = MetricLoss(lambda prediction, target, s=best_score, e=explanation: (s, e),
                                name=loss.name)(variable, "")
        await run_backward(evaluation, feedback)
        [update] = await optimizer.astep([NAME])
        done += 1
        new = variable.value
        revision = Revision(NAME, variable.role_description, update.before, update.after,
                            update.feedback, update.status, update.reason)
        if new == best:
            status, reason, new_score, new_explanation = "skipped", \
                "the optimizer proposed no change", best_score, explanation
        else:
            new_score, new_explanation = await loss.ascore(new)
            history.append((new, new_score))
            if new_score >= best_score:
                status = "accepted"
                reason = f"{loss.name} {best_score:.3f} -> {new_score:.3f}: kept"
                best, best_score, explanation = new, new_score, new_explanation
            else:
                status = "rejected"
                reason = (f"{loss.name} {best_score:.3f} -> {new_score:.3f}: worse, the "
                          "best version is kept")
        say(f"iteration {step}: {status} ({reason})")
        if ledger is not None:
            ledger.record_step(StepRecord(
                step=step, epoch=0, status=status, reason=reason, values={NAME: best},
                optimizer_state=optimizer.state_dict(), val_score=new_score,
                best_val_score=best_score, revisions=[revision],
                losses=[LossRow("instance", new, "", new_score, new_explanation)],
                evaluations=[EvaluationRow("val", new_score, {"instance": new_score})],
                calls=take(), started_at=started))
    variable.set_value(best)
    if ledger is not None:
        ledger.set_meta(status="finished", final={
            "values": {NAME: best}, "best_val_score": best_score, "test_score": None,
            "initial_score": initial})
        ledger.close()
    return RefineResult(Path(run_dir) if run_dir is not None else None, best, best_score,
                        initial, done, history)


def refine(text: str, loss: Loss, **options: Any) -> RefineResult:
    """Improve `text` against `loss`; see the module docstring and `arefine`'s options."""
    return run_sync(arefine(text, loss, **options))


# --- the config of `textprop refine` --------------------------------------------------------
class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RefineSection(_Section):
    text: str | None = None
    file: str | None = None  # the text from a file (relative to the config)
    role_description: str = "a text to improve"
    iterations: int = Field(3, ge=1, le=100)
    constraints: list[str] = []
    gradient_memory: int = Field(0, ge=0)  # show the optimizer the last N feedbacks too

    @model_validator(mode="after")
    def one_text(self) -> RefineSection:
        if (self.text is None) == (self.file is None):
            raise ValueError("give exactly one of text or file")
        return self


class LossSection(_Section):
    kind: Literal["judge", "metric", "tests"]
    instruction: str | None = None   # judge
    question: str = ""               # judge / metric: what the text answers, if anything
    metric: str | None = None        # metric
    reference: str | None = None     # metric
    function: str | None = None      # tests: "module:function"

    @model_validator(mode="after")
    def fields_of_its_kind(self) -> LossSection:
        needs = {"judge": ["instruction"], "metric": ["metric", "reference"],
                 "tests": ["function"]}[self.kind]
        missing = [n for n in needs if getattr(self, n) is None]
        if missing:
            raise ValueError(f"kind = {self.kind!r} needs {' and '.join(missing)}")
        return self


class RefineConfig(_Section):
    """`textprop refine CONFIG`: [refine] the text, [loss] how it is scored, and the
    [run], [engines], [cache] and [budget] tables of a run config."""

    run: RunSection = RunSection(name="refine")
    refine: RefineSection
    loss: LossSection
    engines: EnginesSection = EnginesSection()
    cache: CacheSection = CacheSection()
    budget: BudgetSection = BudgetSection()

    source: Path | None = Field(None, exclude=True)

    def engine_spec(self, role: Literal["forward", "feedback", "optimizer"]) -> str:
        return getattr(self.engines, role) or self.engines.default

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() or self.source is None else self.source.parent / p


def load_refine_config(path: str | Path) -> RefineConfig:
    from textprop.train.config import _config_error

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("no such config file", source=str(path)) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"not valid TOML: {error}", source=str(path)) from None
    try:
        config = RefineConfig.model_validate(data)
    except ValidationError as error:
        raise _config_error(error, path) from None
    config.source = path.resolve()
    return config


def config_loss(config: RefineConfig, feedback: Engine) -> Loss:
    spec = config.loss
    try:
        if spec.kind == "judge":
            return judge(feedback, spec.instruction or "", question=spec.question)
        if spec.kind == "metric":
            return metric(spec.metric, spec.reference or "", question=spec.question)
        folder = str(config.source.parent) if config.source else None
        if folder and folder not in sys.path:  # a checks module next to the config
            sys.path.insert(0, folder)
        return tests(spec.function or "")
    except ConfigError as error:
        raise ConfigError(error.message, source=str(config.source),
                          field=error.field or "loss") from None


def config_text(config: RefineConfig) -> str:
    r = config.refine
    if r.text is not None:
        return r.text
    assert r.file is not None and config.source is not None
    file = Path(r.file) if Path(r.file).is_absolute() else config.source.parent / r.file
    try:
        return file.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read {file}: {error.strerror}", source=str(config.source),
                          field="refine.file") from None


__all__ = ["Loss", "RefineConfig", "RefineResult", "arefine", "judge", "load_refine_config",
           "metric", "refine", "tests"]
