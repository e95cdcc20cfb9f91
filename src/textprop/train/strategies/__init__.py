"""Search strategies by kind: the config's `[strategy] kind` names one of these.

Adding a strategy is one module with a `Strategy` subclass and one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textprop.errors import ConfigError
from textprop.train.strategies.base import Strategy
from textprop.train.strategies.pareto import ParetoSettings, ParetoStrategy
from textprop.train.strategies.tgd import TGDSettings, TGDStrategy

STRATEGIES: dict[str, Callable[..., Strategy]] = {
    "tgd": TGDStrategy.from_options,
    "pareto": ParetoStrategy.from_options,
}


def build_strategy(kind: str, **options: Any) -> Strategy:
    try:
        factory = STRATEGIES[kind]
    except KeyError:
        raise ConfigError(f"unknown strategy {kind!r}; known: {', '.join(sorted(STRATEGIES))}",
                          field="strategy.kind") from None
    return factory(**options)


__all__ = ["STRATEGIES", "ParetoSettings", "ParetoStrategy", "Strategy", "TGDSettings",
           "TGDStrategy", "build_strategy"]
