"""The standard stack of layers around a provider, in the one order that keeps each honest.

    engine, meter = build_stack(provider, cache="run.sqlite3", max_cost_usd=1.0)

Outside in:

    Budget            refuses a call before anything is sent or metered; reads the Meter below
    Meter             one record per logical call; sees cache hits (free, counted as hits)
    Cache             hits skip everything below: no slot, no retry, no cost
    ConcurrencyLimit  bounds requests actually sent; a retrying call keeps its slot
    Retry             retries each real request; only final answers reach the cache
    provider
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from os import PathLike
from typing import Any, Literal, TypeVar

from textprop.engines.base import Engine
from textprop.engines.budget import Budget
from textprop.engines.cache import Cache
from textprop.engines.limits import ConcurrencyLimit
from textprop.engines.metering import Meter, PriceTable
from textprop.engines.retry import Retry
from textprop.errors import ConfigError

E = TypeVar("E", bound=Engine)


def build_stack(
    provider: Engine, *,
    cache: str | PathLike[str] | None | Literal[False] = None,
    replay: bool = False,
    concurrency: int | None = 4,
    rate_per_s: float | None = None,
    retry: int | Callable[[Engine], Engine] | None = 3,
    max_calls: int | None = None,
    max_tokens: int | None = None,
    max_cost_usd: float | None = None,
    prices: PriceTable | Mapping[str, Any] | None = None,
    share_budget_with: Engine | None = None,
) -> tuple[Engine, Meter]:
    """Wrap `provider` in the standard layers; returns the outer engine and its meter.

    `cache`: a file path, None for `default_cache_path()`, or False for no cache.
    `replay`: serve only recorded answers (a miss raises `CacheMissError`).
    `concurrency`: max requests in flight (None: unbounded). `retry`: max retries of a
    transient failure (`Retry`), a factory `engine -> layer` for other settings, or None.
    A Budget is added only when a `max_*` limit is given, or when `share_budget_with` is
    another stack with a budget: both stacks then draw from that one budget (give the limits
    to the first stack only).
    """
    if replay and cache is False:
        raise ConfigError("replay needs a cache: pass cache=<path> or leave it at the default",
                          field="replay")
    engine = provider
    if callable(retry):
        engine = retry(engine)
    elif retry:
        engine = Retry(engine, max_retries=retry)
    if concurrency is not None or rate_per_s is not None:
        engine = ConcurrencyLimit(engine, concurrency or 1_000_000, rate_per_s=rate_per_s)
    cache_layer = None
    if cache is not False:
        cache_layer = Cache(engine, cache, mode="replay" if replay else "readwrite")
        engine = cache_layer
    meter = Meter(engine, prices=prices)
    engine = meter
    shared = find_layer(share_budget_with, Budget) if share_budget_with is not None else None
    if shared is not None or (max_calls, max_tokens, max_cost_usd) != (None, None, None):
        engine = Budget(meter, max_calls=max_calls, max_tokens=max_tokens,
                        max_cost_usd=max_cost_usd, share_with=shared,
                        is_cached=cache_layer.contains if cache_layer else None)
    return engine, meter


def iter_layers(engine: Engine) -> Iterator[Engine]:
    """The layers of a stack, outermost first, down to the provider."""
    current: object = engine
    while isinstance(current, Engine):
        yield current
        # Layers keep what they wrap as `inner` (Retry names it `engine`).
        current = getattr(current, "inner", None) or getattr(current, "engine", None)


def find_layer(engine: Engine, kind: type[E]) -> E | None:
    """The outermost layer of type `kind`, e.g. to print `find_layer(engine, Cache).path`."""
    return next((layer for layer in iter_layers(engine) if isinstance(layer, kind)), None)
