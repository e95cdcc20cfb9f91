"""How a search picks the parent of its next proposal, by kind (`[strategy] selection`)."""

from __future__ import annotations

import random
from collections.abc import Callable

from textprop.errors import ConfigError
from textprop.train.strategies.pool import Pool

Selector = Callable[[Pool, random.Random], int]


def pareto(pool: Pool, rng: random.Random) -> int:
    """A front candidate, sampled by how many validation examples it leads on."""
    weighted = [i for i, n in pool.leaders().items() for _ in range(n)]
    return rng.choice(weighted) if weighted else pool.best().id


def current_best(pool: Pool, rng: random.Random) -> int:
    return pool.best().id


def epsilon_greedy(epsilon: float) -> Selector:
    def select(pool: Pool, rng: random.Random) -> int:
        if rng.random() < epsilon:
            return rng.choice(sorted(pool.members))
        return pool.best().id
    return select


SELECTORS: dict[str, Callable[..., Selector]] = {
    "pareto": lambda epsilon: pareto,
    "current_best": lambda epsilon: current_best,
    "epsilon_greedy": epsilon_greedy,
}


def selector(kind: str, epsilon: float = 0.1) -> Selector:
    try:
        return SELECTORS[kind](epsilon)
    except KeyError:
        raise ConfigError(f"unknown parent selection {kind!r}; known: "
                          f"{', '.join(sorted(SELECTORS))}", field="strategy.selection") from None
