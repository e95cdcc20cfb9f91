"""Metrics by name: the built-in ones, or any Python scorer as "module:function".

Specs come from config files and the command line, so every failure is a `ConfigError`
saying what was looked for and where.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from textprop.errors import ConfigError
from textprop.metrics.base import Metric
from textprop.metrics.function import FunctionMetric
from textprop.metrics.numeric import NumericMatch
from textprop.metrics.text import Contains, ExactMatch

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
    as is. Like `python -m`, the current directory is searched for the module.
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
    if module_name.endswith(".py"):
        return _import_file(Path(module_name), spec)
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name + ".").startswith(error.name + "."):
            raise ConfigError(f"metric {spec!r}: cannot import module {module_name!r} "
                              "(not installed, and not found in the current directory)"
                              ) from None
        raise _import_failed(spec, module_name, error) from error
    except Exception as error:  # the user's module itself failed while importing
        raise _import_failed(spec, module_name, error) from error
    finally:
        if added:
            sys.path.remove(cwd)


def _import_file(path: Path, spec: str) -> ModuleType:
    if not path.is_file():
        raise ConfigError(f"metric {spec!r}: no such file {str(path)!r}")
    name = f"textprop_user_metric_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None  # a .py file path
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # as `import` does: dataclasses and pickle look modules up there
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise _import_failed(spec, str(path), error) from error
    return module


def _import_failed(spec: str, module_name: str, error: BaseException) -> ConfigError:
    return ConfigError(f"metric {spec!r}: importing {module_name!r} failed: "
                       f"{type(error).__name__}: {error}")
