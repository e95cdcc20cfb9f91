"""Turn a validated `RunConfig` into the objects of a run: data, engines, metric, trainer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textprop.data.benchmarks import load_bbh, load_gsm8k
from textprop.data.dataset import Splits, load_dataset
from textprop.data.tasks import builtin_task
from textprop.engines.base import Engine
from textprop.engines.budget import Budget
from textprop.engines.cache import Cache, default_cache_path
from textprop.engines.metering import Meter, PriceTable
from textprop.engines.stack import build_stack, find_layer
from textprop.errors import ConfigError
from textprop.optim.tgd import TextualGradientDescent
from textprop.train.config import RunConfig
from textprop.train.events import RunCallback
from textprop.train.pipelines import PipelineBuild, build_pipeline
from textprop.train.strategies import build_strategy
from textprop.train.trainer import Trainer, TrainerSettings
from textprop.user_code import import_user_module


def build_splits(config: RunConfig) -> Splits:
    task, seed = config.task, config.run.seed
    if task.builtin:
        try:
            splits = builtin_task(task.builtin, n_train=task.n_train, n_val=task.n_val,
                                  n_test=task.n_test, seed=seed)
        except ConfigError as error:
            raise ConfigError(error.message, source=_source(config),
                              field="task.builtin") from None
    elif task.bbh:
        splits = load_bbh(config.resolve(task.bbh))
    elif task.gsm8k:
        folder = config.resolve(task.gsm8k)
        splits = load_gsm8k(folder / "train.jsonl", folder / "test.jsonl")
    else:
        fields = {"input_field": task.input_field, "target_field": task.target_field}
        splits = Splits(
            load_dataset(config.resolve(task.train), **fields),
            load_dataset(config.resolve(task.val), **fields),
            load_dataset(config.resolve(task.test), **fields) if task.test else
            load_dataset(config.resolve(task.val), **fields)[:0])
    field = config.strategy.demo_field
    if field and field != "target" and not any(field in e.fields for e in splits.train):
        names = sorted({name for e in splits.train for name in e.fields})
        raise ConfigError(f"no training example has a field {field!r} to take worked answers "
                          f"from (fields: {', '.join(names) or 'none'}; or 'target')",
                          source=_source(config), field="strategy.demo_field")
    return Splits(splits.train, splits.val[:task.limit_val] if task.limit_val else splits.val,
                  splits.test[:task.limit_test] if task.limit_test is not None else splits.test)


def provider_engine(spec: str, timeout: float | None = None) -> Engine:
    """`get_engine(spec)`, plus `python:module:factory` for an engine built by user code."""
    if spec.startswith("python:"):  # user code, found as `module:function` metrics are
        module_name, _, attr = spec.removeprefix("python:").rpartition(":")
        label = f"engine factory {spec!r}"
        if not module_name or not attr:
            raise ConfigError(f"{label} is not of the form 'python:module:function'",
                              field="engines")
        module = import_user_module(module_name, label, "engine")
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise ConfigError(f"{label}: module {module_name!r} has no function {attr!r}",
                              field="engines")
        engine = factory()
        if not isinstance(engine, Engine):
            raise ConfigError(f"{spec} returned {type(engine).__name__}, not an Engine",
                              field="engines")
        return engine
    from textprop.engines.registry import get_engine

    return get_engine(spec, **({"timeout": timeout} if timeout else {}))


def _source(config: RunConfig) -> str | None:
    return str(config.source) if config.source else None


def _spec_field(config: RunConfig, role: str) -> str:
    """The config field a role's engine spec came from."""
    return f"engines.{role}" if getattr(config.engines, role) else "engines.default"


def _provider_for(config: RunConfig, spec: str, field: str) -> Engine:
    """The provider engine of `spec`; a bad spec or a missing extra names the config field."""
    from textprop.errors import EngineUnavailableError

    try:
        return provider_engine(spec, config.engines.timeout)
    except ConfigError as error:
        raise ConfigError(error.message, source=_source(config), field=field) from None
    except EngineUnavailableError as error:
        hint = ""
        if field == "engines.default" and "default" not in config.engines.model_fields_set:
            hint = (" (no [engines] default is set, so the embedded local model is used; "
                    "to use an API engine instead, set [engines] default = "
                    "\"openai:gpt-4o-mini\" or \"openai-compatible:MODEL@http://host/v1\")")
        where = f"{_source(config)}, field {field!r}: " if config.source else ""
        raise EngineUnavailableError(f"{where}{error}{hint}",
                                     provider=error.provider) from None


def _cache_path(config: RunConfig) -> Path:
    path = config.resolve(config.cache.path) if config.cache.path else default_cache_path()
    if path.is_dir():
        raise ConfigError(f"{str(path)!r} is a directory; give the cache's file path",
                          source=_source(config), field="cache.path")
    return path


def _prices(config: RunConfig) -> PriceTable:
    return PriceTable(config.budget.prices or {}, source=_source(config))


def _check_priced(config: RunConfig, field: str, engine: Engine, prices: PriceTable) -> None:
    """`max_cost_usd` can only be enforced on engines with a price: say so before any call."""
    model = getattr(engine, "model", None)
    if prices.price_for(model, engine.name) is None:
        raise ConfigError(
            f"[budget] max_cost_usd needs a price for engine {engine.name!r} "
            f"({field}); give it as [budget] prices = "
            f"{{ \"{engine.name}\" = {{ input = 0.15, output = 0.60 }} }} "
            "(USD per 1M tokens), or use max_calls / max_tokens instead",
            source=_source(config), field="budget.max_cost_usd")


@dataclass
class Engines:
    forward: Engine
    feedback: Engine
    optimizer: Engine
    meters: list[Meter] = field(default_factory=list)
    cache_path: Path | None = None
    unpriced: list[str] = field(default_factory=list)  # engines whose cost is unknown
    by_spec: dict[str, Engine] = field(default_factory=dict)  # every stack, by its spec


def build_engines(config: RunConfig) -> Engines:
    """One layered stack per distinct engine spec, shared by the roles that use it."""
    cache: Any = False
    if config.cache.enabled:
        cache = _cache_path(config)
    prices = _prices(config)
    stacks: dict[str, tuple[Engine, Meter]] = {}
    unpriced: list[str] = []
    first: Engine | None = None  # the stack holding the budget; the others share it
    b = config.budget
    pipeline = getattr(config, "pipeline", None)  # a refine config has none
    wanted = [(config.engine_spec(role), _spec_field(config, role))
              for role in ("forward", "feedback", "optimizer")] + [
        (s.engine, f"pipeline.steps.{i}.engine")
        for i, s in enumerate(getattr(pipeline, "steps", None) or []) if s.engine]
    for spec, where in wanted:
        if spec not in stacks:
            limits = ({"max_calls": b.max_calls, "max_tokens": b.max_tokens,
                       "max_cost_usd": b.max_cost_usd} if first is None
                      else {"share_budget_with": first})
            provider = _provider_for(config, spec, where)
            if b.max_cost_usd is not None:
                _check_priced(config, where, provider, prices)
            if prices.price_for(getattr(provider, "model", None), provider.name) is None:
                unpriced.append(provider.name)
            stacks[spec] = build_stack(
                provider, cache=cache, prices=prices,
                replay=config.cache.replay, concurrency=config.engines.concurrency, **limits)
            first = first or stacks[spec][0]
    pick = {role: stacks[config.engine_spec(role)][0]
            for role in ("forward", "feedback", "optimizer")}
    cache_layer = find_layer(pick["forward"], Cache)
    return Engines(**pick, meters=[meter for _, meter in stacks.values()],
                   cache_path=cache_layer.path if cache_layer else None, unpriced=unpriced,
                   by_spec={spec: engine for spec, (engine, _) in stacks.items()})


def build_metric(config: RunConfig, engines: Engines) -> Any:
    from textprop.metrics import get_metric
    from textprop.metrics.judge import LLMJudge

    if config.metric.name == "judge":
        if not config.metric.judge_instruction:
            raise ConfigError("the judge metric needs judge_instruction",
                              source=str(config.source), field="metric.judge_instruction")
        return LLMJudge(engines.feedback, config.metric.judge_instruction)
    name = config.metric.name
    if name is None:
        from textprop.data.tasks import BUILTIN_TASKS

        task = BUILTIN_TASKS.get(config.task.builtin or "")
        name = task.metric if task else "exact_match"
    try:
        return get_metric(name)
    except ConfigError as error:
        raise ConfigError(str(error), source=str(config.source), field="metric.name") from None


def build_config_pipeline(config: RunConfig, engines: Engines, splits: Splits) -> Any:
    """The config's pipeline, its templates checked against the first example of each split
    (a field no example has is an error before any call)."""
    where = str(config.source) if config.source else None
    try:
        pipeline = build_pipeline(config.pipeline, PipelineBuild(
            engines.forward, engine_for=engines.by_spec.__getitem__,
            demos=bool(config.strategy.demos)))
        check = getattr(pipeline, "check_example", None)
        for dataset in (splits.train, splits.val, splits.test):
            if check is not None and len(dataset):
                check(dataset[0])
    except ConfigError as error:
        raise ConfigError(error.message, source=where,
                          field=f"pipeline.{error.field}" if error.field else "pipeline"
                          ) from None
    return pipeline


def build_trainer(config: RunConfig, run_dir: Path,
                  progress: Callable[[str], None] | None = None,
                  counter: Callable[[str, int, int], None] | None = None,
                  callbacks: list[RunCallback] | None = None,
                  ) -> tuple[Trainer, Engines]:
    splits = build_splits(config)
    engines = build_engines(config)
    pipeline = build_config_pipeline(config, engines, splits)
    check = getattr(pipeline, "check", None)
    for example in (*splits.train, *splits.val, *splits.test) if check else ():
        check(example, source=_source(config))  # every row fits the template
    o = config.optimizer
    optimizer = TextualGradientDescent(
        pipeline.parameters(), engine=engines.optimizer,
        constraints=o.constraints, in_context_examples=o.in_context_examples,
        gradient_memory=o.gradient_memory, max_parse_retries=o.max_parse_retries,
        max_tokens=o.max_tokens, seed=config.run.seed, edit=o.edit)
    t = config.trainer
    settings = TrainerSettings(
        epochs=t.epochs, batch_size=t.batch_size, steps_per_epoch=t.steps_per_epoch,
        acceptance=t.acceptance, alpha=t.alpha, test_every_step=t.test_every_step,
        early_stopping=t.early_stopping, approval=t.approval, seed=config.run.seed,
        condense_batch_feedback=t.condense_batch_feedback,
        feedback_sentences=o.feedback_sentences, feedback_max_tokens=o.feedback_max_tokens,
        max_metric_calls=config.budget.max_metric_calls)
    s = config.strategy
    try:
        strategy = build_strategy(
            s.kind, **({**vars(settings.tgd()), **s.demo_options()} if s.kind == "tgd"
                       else s.options()))
    except ConfigError as error:
        raise ConfigError(error.message, source=str(config.source), field=error.field) from None
    metric = build_metric(config, engines)
    check = getattr(metric, "check", None)
    for example in (*splits.train, *splits.val, *splits.test) if check else ():
        check(example)  # every target is one the metric can read
    budgets = [b for e in engines.by_spec.values() if (b := find_layer(e, Budget)) is not None]
    trainer = Trainer(pipeline, metric, optimizer, engines.feedback,
                      splits, settings, run_dir, strategy=strategy, meters=engines.meters,
                      budgets=budgets, progress=progress, counter=counter,
                      callbacks=callbacks or [])
    return trainer, engines
