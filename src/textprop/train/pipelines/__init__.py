"""Pipelines by kind: the config's `[pipeline] kind` names one of these.

    prompt  one system prompt + a user template (the default)
    chain   several LLM calls, each step's template using the outputs of others by name
    python  `factory = "module:function"`: any pipeline written in Python

Adding a kind is one module with a builder `(section, build) -> pipeline` and one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from textprop.engines.base import Engine
from textprop.errors import ConfigError
from textprop.train.pipelines.base import Pipeline
from textprop.train.pipelines.chain import ChainPipeline, ChainStep, order_steps
from textprop.train.pipelines.prompt import DEFAULT_ROLE, PromptPipeline
from textprop.train.pipelines.python import build_python_pipeline, load_factory
from textprop.train.pipelines.trace import TraceRow, trace


@dataclass
class PipelineBuild:
    """What a builder gets besides its config section."""

    engine: Engine  # the forward engine
    engine_for: Callable[[str], Engine]  # a step's own engine spec -> its engine stack
    demos: bool = False  # the strategy adds demonstrations ([strategy] demos > 0)


def _prompt(p: Any, build: PipelineBuild) -> PromptPipeline:
    if p.system_prompt is None:
        raise ConfigError("required field is missing", field="system_prompt")
    return PromptPipeline(build.engine, p.system_prompt,
                          role_description=p.role_description or DEFAULT_ROLE,
                          template=p.template, max_tokens=p.max_tokens,
                          demonstrations=[] if build.demos else None,
                          placement=p.demos_placement)


def chain_steps(p: Any, engine_for: Callable[[str], Engine] | None = None) -> list[ChainStep]:
    return [ChainStep(
        s.name, s.system_prompt, template=s.template, role_description=s.role_description,
        max_tokens=s.max_tokens, optimize=s.optimize, demos=s.demos,
        placement=s.demos_placement or p.demos_placement,
        engine=engine_for(s.engine) if s.engine and engine_for else None) for s in p.steps]


def _chain(p: Any, build: PipelineBuild) -> ChainPipeline:
    return ChainPipeline(build.engine, chain_steps(p, build.engine_for))


def _python(p: Any, build: PipelineBuild) -> Any:
    return build_python_pipeline(p.factory, build.engine, dict(p.options))


PIPELINES: dict[str, Callable[[Any, PipelineBuild], Any]] = {
    "prompt": _prompt,
    "chain": _chain,
    "python": _python,
}


def build_pipeline(section: Any, build: PipelineBuild) -> Any:
    """The pipeline `[pipeline]` describes; `ConfigError` fields are relative to it."""
    try:
        factory = PIPELINES[section.kind]
    except KeyError:
        raise ConfigError(f"unknown pipeline kind {section.kind!r}; known: "
                          f"{', '.join(sorted(PIPELINES))}", field="kind") from None
    return factory(section, build)


__all__ = ["DEFAULT_ROLE", "PIPELINES", "ChainPipeline", "ChainStep", "Pipeline",
           "PipelineBuild", "PromptPipeline", "TraceRow", "build_pipeline", "load_factory",
           "order_steps", "trace"]
