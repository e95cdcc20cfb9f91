"""`kind = "python"`: `factory = "module:function"` builds any pipeline written in Python.

The factory is called as `factory(engine, **options)` with the forward engine and the
config's `[pipeline.options]` table, and returns an object with `parameters()` and
`async aforward(example)` (see `textprop.train.pipelines.base.Pipeline`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from textprop.errors import ConfigError


def load_factory(spec: str | None) -> Callable[..., Any]:
    if not spec:
        raise ConfigError('kind = "python" needs factory = "module:function"',
                          field="factory")
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"factory {spec!r} must be written module:function",
                          field="factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"cannot import {module_name!r} for factory {spec!r}: {error}",
                          field="factory") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"module {module_name!r} has no function {attr!r}",
                          field="factory")
    return factory


def build_python_pipeline(spec: str | None, engine: Any, options: dict[str, Any]) -> Any:
    factory = load_factory(spec)
    pipeline = factory(engine, **options)
    missing = [m for m in ("parameters", "aforward") if not hasattr(pipeline, m)]
    if missing:
        raise ConfigError(f"factory {spec!r} returned a {type(pipeline).__name__} without "
                          f"{' or '.join(missing)}()", field="factory")
    return pipeline
