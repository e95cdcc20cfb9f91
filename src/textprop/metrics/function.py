"""Any Python scorer as a metric: `(prediction, target) -> score`, in whatever form it returns.

User scorers are written quickly; accepting a bool, a number, a `(score, explanation)` pair
or a `MetricResult` keeps them one-liners, and a missing explanation is written for them.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

from textprop._sync import run_sync
from textprop.data.dataset import Example
from textprop.errors import ConfigError
from textprop.metrics.base import Metric, MetricResult, shown, target_of

RETURN_FORMS = "a bool, a number in [0, 1], a (score, explanation) pair or a MetricResult"


class FunctionMetric(Metric):
    """Wraps `function(prediction, target)`; async functions are awaited.

    When the function has a parameter named `example`, the whole `Example` is passed there
    too (for scorers that need the input or extra fields).
    """

    def __init__(self, function: Callable[..., Any], name: str | None = None) -> None:
        self.function = function
        self.name = name or getattr(function, "__qualname__", None) or repr(function)
        self._wants_example = _has_parameter(function, "example")

    def score(self, prediction: str, example: Example | str) -> MetricResult:
        value = self._call(prediction, example)
        if inspect.isawaitable(value):
            value = run_sync(_awaited(value))
        return self._result(value, prediction, target_of(example))

    async def ascore(self, prediction: str, example: Example | str) -> MetricResult:
        value = self._call(prediction, example)
        if inspect.isawaitable(value):
            value = await value
        return self._result(value, prediction, target_of(example))

    def _call(self, prediction: str, example: Example | str) -> Any:
        target = target_of(example)
        if not self._wants_example:
            return self.function(prediction, target)
        if isinstance(example, str):
            example = Example(id="", input="", target=example)
        return self.function(prediction, target, example=example)

    def _result(self, value: Any, prediction: str, target: str) -> MetricResult:
        if isinstance(value, MetricResult):
            return value
        if isinstance(value, tuple) and len(value) == 2:
            return MetricResult(self._checked(value[0]), str(value[1]))
        score = self._checked(value)
        return MetricResult(score, default_explanation(score, prediction, target))

    def _checked(self, score: Any) -> float:
        if isinstance(score, bool):
            return float(score)
        if not isinstance(score, int | float):
            raise ConfigError(f"metric {self.name!r} returned {score!r}; return {RETURN_FORMS}")
        if not (math.isfinite(score) and 0 <= score <= 1):
            raise ConfigError(f"metric {self.name!r} returned score {score!r}; scores must "
                              "lie in [0, 1]")
        return float(score)


def default_explanation(score: float, prediction: str, target: str) -> str:
    """Feedback for a scorer that gave only a score."""
    if not target.strip():
        return f"score {score:g}"
    if score == 1:
        return f"correct: {shown(target)}"
    comparison = f"expected {shown(target)}, got {shown(prediction)}"
    return comparison if score == 0 else f"partly correct (score {score:g}): {comparison}"


async def _awaited(value: Any) -> Any:
    return await value


def _has_parameter(function: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False
