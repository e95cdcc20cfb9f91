"""The run config (TOML): validated with pydantic, errors naming the file and the field.

    [task]      builtin = "object_counting" | bbh = PATH | gsm8k = DIR | train/val/test = PATHS
    [pipeline]  kind = "prompt" (system_prompt, role_description, template, max_tokens)
                | "chain" ([[pipeline.steps]]: name, system_prompt, template, ...)
                | "python" (factory = "module:function", options)
    [metric]    name = "numeric" | "exact_match" | "contains" | "judge" | "module:function"
    [engines]   default, forward, feedback, optimizer  (specs for textprop.get_engine)
    [optimizer] constraints, gradient_memory, in_context_examples, max_parse_retries, max_tokens,
                edit ("rewrite" | "append")
    [trainer]   epochs, batch_size, steps_per_epoch, acceptance, early_stopping, approval, ...
    [strategy]  kind = "tgd" | "pareto", and the pareto search's settings
    [cache]     enabled, path, replay
    [budget]    max_calls, max_tokens, max_cost_usd, max_metric_calls, prices
    [tracking]  mlflow = URI, experiment, otlp = ENDPOINT, otlp_content (textprop.tracking)
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from textprop.errors import ConfigError

# Upper bounds on counts: far above any real run, low enough that a typo (or 2**63) fails
# here instead of paying for a baseline and then filling memory with a schedule.
MAX_EPOCHS = 1000
MAX_STEPS_PER_EPOCH = 10_000
MAX_EXAMPLES = 1_000_000
MAX_TOKENS = 1_000_000


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def is_plain_name(name: str) -> bool:
    """One file or folder name: not empty, not '.' or '..', no separator or NUL."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")


class RunSection(_Section):
    name: str = "run"
    dir: str = "runs"
    seed: int = 0

    @field_validator("name")
    @classmethod
    def one_folder_name(cls, name: str) -> str:
        if not is_plain_name(name):
            raise ValueError(f"{name!r} is not a folder name (one path component, not empty, "
                             "'.' or '..'); the run folder is run.dir/run.name")
        return name


class TaskSection(_Section):
    builtin: str | None = None
    n_train: int = Field(30, ge=1, le=MAX_EXAMPLES)
    n_val: int = Field(30, ge=1, le=MAX_EXAMPLES)
    n_test: int = Field(50, ge=0, le=MAX_EXAMPLES)
    bbh: str | None = None
    gsm8k: str | None = None
    train: str | None = None
    val: str | None = None
    test: str | None = None
    input_field: str = "input"
    target_field: str = "target"
    limit_val: int | None = Field(None, ge=1, le=MAX_EXAMPLES)
    limit_test: int | None = Field(None, ge=0, le=MAX_EXAMPLES)

    @model_validator(mode="after")
    def one_source(self) -> TaskSection:
        sources = [s for s in ("builtin", "bbh", "gsm8k", "train") if getattr(self, s)]
        if len(sources) != 1:
            raise ValueError("give exactly one of builtin, bbh, gsm8k or train (+ val, test)"
                             f"; got {sources or 'none'}")
        if self.train and not self.val:
            raise ValueError("a train file needs a val file for validation")
        return self


class ChainStepSection(_Section):
    """One `[[pipeline.steps]]` table of a chain."""

    name: str
    system_prompt: str
    role_description: str | None = None
    template: str = "{input}"  # {input}, the example's fields, other steps by name
    max_tokens: int | None = Field(512, ge=1)
    engine: str | None = None  # an engine spec of its own (default: [engines] forward)
    optimize: bool = True
    demos: bool = False  # a demonstrations parameter for this step
    demos_placement: Literal["system", "turns"] | None = None  # default: the pipeline's


class PipelineSection(_Section):
    """`kind`: "prompt" (one system prompt, the default), "chain" (`[[pipeline.steps]]`) or
    "python" (`factory = "module:function"`, called with the forward engine and `options`)."""

    kind: str = "prompt"
    system_prompt: str | None = None
    role_description: str | None = None
    template: str = "{input}"
    max_tokens: int | None = Field(512, ge=1, le=MAX_TOKENS)
    demos_placement: Literal["system", "turns"] = "system"  # where demonstrations go
    steps: list[ChainStepSection] = []
    factory: str | None = None
    options: dict[str, Any] = {}

    @model_validator(mode="after")
    def fields_of_its_kind(self) -> PipelineSection:
        given = self.model_fields_set
        own = {"prompt": {"system_prompt", "role_description", "template", "max_tokens"},
               "chain": {"steps"}, "python": {"factory", "options"}}
        for kind, names in own.items():
            stray = sorted(given & names)
            if kind != self.kind and stray:
                raise ValueError(f"{stray[0]} belongs to kind = {kind!r}, not {self.kind!r}")
        if self.kind == "prompt" and self.system_prompt is None:
            raise ValueError("system_prompt is required (kind = 'prompt')")
        return self


class MetricSection(_Section):
    name: str | None = None  # default: the built-in task's metric, else exact_match
    judge_instruction: str | None = None


class EnginesSection(_Section):
    default: str = "local"
    forward: str | None = None
    feedback: str | None = None
    optimizer: str | None = None
    concurrency: int = Field(8, ge=1, le=1024)  # requests in flight per engine
    timeout: float | None = Field(None, gt=0, le=86400)


class OptimizerSection(_Section):
    constraints: list[str] = []
    gradient_memory: int = Field(0, ge=0, le=100)
    in_context_examples: list[str] = []
    max_parse_retries: int = Field(2, ge=0, le=20)
    max_tokens: int | None = Field(512, ge=1, le=MAX_TOKENS)
    feedback_max_tokens: int | None = Field(300, ge=1, le=MAX_TOKENS)
    feedback_sentences: int = Field(4, ge=1, le=100)
    # "rewrite": the writer replies with the whole new text; "append": with one instruction
    # added at the end (small writers copy a whole text back unchanged)
    edit: Literal["rewrite", "append"] = "rewrite"


class TrainerSection(_Section):
    epochs: int = Field(1, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(3, ge=1, le=MAX_EXAMPLES)
    steps_per_epoch: int | None = Field(None, ge=1, le=MAX_STEPS_PER_EPOCH)
    acceptance: Literal["non_decrease", "strict", "paired"] = "non_decrease"
    alpha: float = Field(0.1, gt=0, lt=1)
    test_every_step: bool = False
    early_stopping: int = Field(0, ge=0, le=MAX_EPOCHS * MAX_STEPS_PER_EPOCH)
    approval: bool = False
    condense_batch_feedback: bool = True


class StrategySection(_Section):
    """How the run searches. `tgd` uses [trainer]'s schedule; `pareto` the fields below
    (defaults in `textprop.train.strategies.pareto.ParetoSettings`)."""

    kind: Literal["tgd", "pareto"] = "tgd"
    selection: Literal["pareto", "current_best", "epsilon_greedy"] = "pareto"
    epsilon: float = Field(0.1, ge=0, le=1)
    minibatch: int = Field(3, ge=1, le=1000)
    children: int = Field(1, ge=1, le=16)
    components: Literal["round_robin", "all"] = "round_robin"
    gate: Literal["strict", "non_decrease"] = "strict"
    parallel: int = Field(2, ge=1, le=256)
    merge: bool = False
    max_merges: int = Field(5, ge=0, le=1000)
    merge_subsample: int = Field(5, ge=1, le=10000)
    holdout: float = Field(0.25, ge=0, lt=1)
    final_candidates: int = Field(3, ge=1, le=100)
    # the final pick replaces the starting values only if it beats them on validation by a
    # one-sided paired sign test at this level; 1: the best, whatever its lead
    final_significance: float = Field(0.1, gt=0, le=1)
    max_proposals: int | None = Field(None, ge=1, le=100000)
    show_failures: bool = True
    max_failures: int = Field(5, ge=0, le=100)
    # rewrites of the parent that failed the gate, shown to the writer; 0: off
    max_tried: int = Field(3, ge=0, le=100)
    # a parent whose last this many mutations of the same prompts proposed nothing new is
    # not picked for them again while another candidate can be; 0: off
    max_fruitless: int = Field(2, ge=0, le=1000)
    demos: int = Field(0, ge=0, le=64)  # demonstrations per prompt; 0: off
    max_demo_tokens: int | None = Field(1000, ge=1)
    # a training field with a worked answer (GSM8K: answer), or "target": the label itself
    demo_field: str | None = None

    def options(self) -> dict[str, Any]:
        return self.model_dump(exclude={"kind"})

    def demo_options(self) -> dict[str, Any]:
        """What the tgd strategy takes of these: the demonstrations bounds."""
        return {"demos": self.demos, "max_demo_tokens": self.max_demo_tokens}


class CacheSection(_Section):
    enabled: bool = True
    path: str | None = None
    replay: bool = False


class BudgetSection(_Section):
    max_calls: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    max_cost_usd: float | None = Field(None, gt=0)
    max_metric_calls: int | None = Field(None, ge=1)  # pipeline runs, validation included
    # USD per 1M tokens by engine or model name: {"openai-compatible:m" = {input=, output=}}
    prices: dict[str, dict[str, float] | list[float]] | None = None


class TrackingSection(_Section):
    """Where the run is also reported (`textprop.tracking`; each needs its extra)."""

    mlflow: str | None = None  # a tracking URI: "file:./mlruns", "http://host:5000"
    experiment: str | None = None  # default: the run's name
    otlp: str | None = None  # an OTLP/HTTP traces endpoint: "http://host:4318/v1/traces"
    otlp_content: bool = False  # also export each call's prompt messages and reply text

    @model_validator(mode="after")
    def content_needs_an_endpoint(self) -> TrackingSection:
        if self.otlp_content and not self.otlp:
            raise ValueError("otlp_content = true needs otlp = ENDPOINT, where the spans go")
        return self


class RunConfig(_Section):
    run: RunSection = RunSection()
    task: TaskSection
    pipeline: PipelineSection
    metric: MetricSection = MetricSection()
    engines: EnginesSection = EnginesSection()
    optimizer: OptimizerSection = OptimizerSection()
    trainer: TrainerSection = TrainerSection()
    strategy: StrategySection = StrategySection()
    cache: CacheSection = CacheSection()
    budget: BudgetSection = BudgetSection()
    tracking: TrackingSection = TrackingSection()

    source: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def bounded_search(self) -> RunConfig:
        if self.strategy.kind == "pareto" and self.strategy.max_proposals is None \
                and self.budget.max_metric_calls is None:
            raise ValueError("the pareto strategy needs a bound: set [budget] "
                             "max_metric_calls or [strategy] max_proposals")
        return self

    def engine_spec(self, role: Literal["forward", "feedback", "optimizer"]) -> str:
        return getattr(self.engines, role) or self.engines.default

    def resolve(self, path: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() or self.source is None else self.source.parent / p


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("no such config file", source=str(path)) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, expected a TOML config file",
                          source=str(path)) from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"not UTF-8 text ({error.reason} at byte {error.start})",
                          source=str(path)) from None
    except OSError as error:
        raise ConfigError(f"cannot read the config file ({error.strerror})",
                          source=str(path)) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"not valid TOML: {error}", source=str(path)) from None
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        data.setdefault(section, {})[key] = value
    return parse_config(data, source=path)


def parse_config(data: dict[str, Any], source: Path | None = None) -> RunConfig:
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as error:
        raise _config_error(error, source) from None
    config.source = source.resolve() if source else None
    _check_pipeline(config)
    return config


def _check_pipeline(config: RunConfig) -> None:
    """What can be checked without data or engines: the kind, a chain's step names and
    templates (duplicates, cycles, dead steps), the factory's module and function."""
    from textprop.train.pipelines import PIPELINES, chain_steps, load_factory, order_steps

    p, where = config.pipeline, str(config.source) if config.source else None
    try:
        if p.kind not in PIPELINES:
            raise ConfigError(f"unknown pipeline kind {p.kind!r}; known: "
                              f"{', '.join(sorted(PIPELINES))}", field="kind")
        if p.kind == "chain":
            order_steps(chain_steps(p))
            if any(s.demos for s in p.steps) and not config.strategy.demos:
                i = next(i for i, s in enumerate(p.steps) if s.demos)
                raise ConfigError("demos = true needs [strategy] demos > 0 (how many "
                                  "demonstrations a step may hold)", field=f"steps[{i}].demos")
            if any(s.demos for s in p.steps) and config.strategy.kind == "pareto":
                raise ConfigError("the pareto strategy does not yet move a chain step's "
                                  "demonstrations; use [strategy] kind = 'tgd'",
                                  field="steps")
        elif p.kind == "python":
            load_factory(p.factory)
    except ConfigError as error:
        raise ConfigError(error.message, source=where,
                          field=f"pipeline.{error.field}" if error.field else "pipeline"
                          ) from None


def _config_error(error: ValidationError, source: Path | None) -> ConfigError:
    problems = error.errors()
    first = problems[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field (check the spelling)"
    elif first["type"] == "missing":
        message = "required field is missing"
    elif first["type"] == "value_error":
        message = message.removeprefix("Value error, ")
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    return ConfigError(message + more, source=str(source) if source else None, field=field)
