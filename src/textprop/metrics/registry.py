"""Metrics by name: the built-in ones, or any Python scorer as "module:function".

Specs come from config files and the command line, so every failure is a `ConfigError`
saying what was looked for and where.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

from textprop.errors import ConfigError
from textprop.metrics.base import Metric
from textprop.metrics.function import FunctionMetric
from textprop.metrics.numeric import NumericMatch
from textprop.metrics.text import Contains, ExactMatch
from textprop.user_code import import_user_module

BUILTIN_METRICS: dict[str, Callable[[], Metric]] = {
    "exact_match": ExactMatch,
    "numeric": NumericMatch,
    "numeric_match": NumericMatch,
    "contains": Contains,
}


def get_metric(metric: str | Metric | Callable[..., Any]) -> Metric:
    """A metric from a built-in name, a "module:function" spec, a Metric or a function."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        if metric in BUILTIN_METRICS:
            return BUILTIN_METRICS[metric]()
        if ":" in metric:
            return load_metric(metric)
        raise ConfigError(f"unknown metric {metric!r}; use one of "
                          f"{', '.join(BUILTIN_METRICS)}, or 'module:function' for your own")
    if callable(metric):
        return FunctionMetric(metric)
    raise ConfigError(f"not a metric: {metric!r}")


def load_metric(spec: str) -> Metric:
    """Load "module:function" (or "path/to/file.py:function") as a metric.

    The function takes `(prediction, target)` and returns a bool, a number in [0, 1], a
    `(score, explanation)` pair or a `MetricResult`; a Metric instance or subclass is used
    as is. Like `python -m`, the current directory is searched for the module (as for
    `python:` engine factories: `textprop.user_code`). The config runs this code: trust it.
    """
    module_name, _, attribute = spec.rpartition(":")
    if not module_name or not attribute:
        raise ConfigError(f"metric {spec!r} is not of the form 'module:function'")
    module = _import(module_name, spec)
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            defined = [n for n, v in vars(module).items()
                       if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__]
            hint = f" (it defines: {', '.join(defined)})" if defined else ""
            raise ConfigError(f"metric {spec!r}: module {module_name!r} has no "
                              f"{attribute!r}{hint}")
        target = getattr(target, part)
    if isinstance(target, Metric):
        return target
    if inspect.isclass(target) and issubclass(target, Metric):
        return target()
    if not callable(target):
        raise ConfigError(f"metric {spec!r}: {attribute!r} is a {type(target).__name__}, "
                          "not a function")
    return FunctionMetric(target, name=spec)


def _import(module_name: str, spec: str) -> ModuleType:
    return import_user_module(module_name, f"metric {spec!r}", "metric")
