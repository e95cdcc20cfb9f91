"""A hard budget on calls, tokens and dollars: a call that could pass it is never sent.

    engine = Budget(Meter(Cache(ConcurrencyLimit(Retry(provider)))), max_cost_usd=2.0)

Recommended order, outside in: Budget -> Meter -> Cache -> ConcurrencyLimit -> Retry ->
provider (`textprop.engines.stack.build_stack` builds it). The budget sits right above a
`Meter` and reads the meter's usage instead of counting itself, so nothing is counted twice
and refused calls appear in no record. Without a Meter under it, the budget puts a private one
there. Because the meter sits above the cache, cache hits count as hits that cost nothing and
consume no budget; with `is_cached=cache.contains` (build_stack wires it) a spent budget still
serves recorded answers. Stacks of different engines can draw from one budget (`share_with`).

Before sending, the budget reserves a conservative estimate for the call and refuses it when
usage so far + reservations of calls in flight + this estimate would pass a limit:

    calls   1 per call that is not a cache hit (failed calls that were sent count too)
    tokens  input estimate + output estimate, where
              input estimate  = ceil(UTF-8 bytes of all messages / 3) + 4 per message
                                (English averages ~4 bytes per token, so this overestimates)
              output estimate = request.max_tokens, or `default_output_tokens` when unset
    cost    the same token estimates at the model's price (an unpriced model is a ConfigError
            when `max_cost_usd` is set: the limit could not be enforced)

A resumed run's budget starts from what its earlier parts paid (`carry_over`, from the
ledger's journal of paid calls), so a limit holds for the run, not for each process.

When the call returns, its reservation is replaced by what the meter recorded. A reply longer
than its estimate (no max_tokens) can still pass the limit once; the next call is then refused.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from textprop.engines.base import Completion, Engine, Request
from textprop.engines.metering import Meter, PriceTable, UsageSummary
from textprop.errors import BudgetExceeded, ConfigError

MESSAGE_OVERHEAD_TOKENS = 4
BYTES_PER_TOKEN = 3


def estimate_input_tokens(request: Request) -> int:
    """Conservative input token count, without a tokenizer (see the module docstring)."""
    size = sum(len(m.content.encode("utf-8")) for m in request.messages)
    return math.ceil(size / BYTES_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS * len(request.messages)


@dataclass
class _Reserved:
    calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class _Account:
    """The limits, the meters and the in-flight reservations of one budget, which several
    Budget layers (one per engine stack) may share."""

    max_calls: int | None
    max_tokens: int | None
    max_cost_usd: float | None
    meters: list[Meter] = field(default_factory=list)
    reserved: _Reserved = field(default_factory=_Reserved)
    earlier: _Reserved = field(default_factory=_Reserved)  # paid by earlier parts of the run
    lock: threading.Lock = field(default_factory=threading.Lock)

    def usage(self) -> UsageSummary:
        return UsageSummary.combine(meter.usage() for meter in self.meters)


class Budget(Engine):
    """Refuse, before sending, any call that could take usage past a limit."""

    def __init__(self, inner: Engine, *, max_calls: int | None = None,
                 max_tokens: int | None = None, max_cost_usd: float | None = None,
                 meter: Meter | None = None, prices: PriceTable | None = None,
                 default_output_tokens: int = 1024,
                 is_cached: Callable[[Request], bool] | None = None,
                 share_with: Budget | None = None) -> None:
        """`meter` defaults to `inner` when that is a Meter, else a new Meter around `inner`.
        A meter given explicitly must sit below the budget, so it sees every call let through.

        `is_cached(request)` (e.g. `Cache.contains`) lets a request the cache will answer
        through even when the budget is spent: it costs nothing.

        `share_with`: another stack's Budget whose limits this one shares, so calls through
        both count against one budget (e.g. a cheap forward model and a strong optimizer).
        """
        limits = (("max_calls", max_calls), ("max_tokens", max_tokens),
                  ("max_cost_usd", max_cost_usd))
        for name, value in limits:
            if value is not None and value < 0:
                raise ConfigError(f"must be >= 0, got {value}", field=name)
        if share_with is not None and any(value is not None for _, value in limits):
            raise ConfigError("a budget shared with another takes its limits from it; "
                              "give max_* only to the first", field="share_with")
        if meter is None:
            meter = inner if isinstance(inner, Meter) else Meter(inner, prices=prices)
            inner = meter
        self.inner = inner
        self.meter = meter
        self.name = inner.name
        self.supports_json_schema = inner.supports_json_schema
        self.prices = prices or meter.prices
        self.default_output_tokens = default_output_tokens
        self.is_cached = is_cached
        self._account = (share_with._account if share_with is not None
                         else _Account(max_calls, max_tokens, max_cost_usd))
        if not any(m is meter for m in self._account.meters):
            self._account.meters.append(meter)

    @property
    def max_calls(self) -> int | None:
        return self._account.max_calls

    @property
    def max_tokens(self) -> int | None:
        return self._account.max_tokens

    @property
    def max_cost_usd(self) -> float | None:
        return self._account.max_cost_usd

    def usage(self) -> UsageSummary:
        """Usage counted against this budget (of every stack sharing it)."""
        return self._account.usage()

    def carry_over(self, calls: int, tokens: int, cost_usd: float) -> None:
        """Count what earlier parts of the same run paid (a resumed run), so the limits hold
        for the run as a whole, not afresh for each process that works on it."""
        with self._account.lock:
            self._account.earlier = _Reserved(calls, tokens, cost_usd)

    def remaining(self) -> dict[str, float | None]:
        """What is left of each limit (None: no limit), not counting calls in flight."""
        total, e = self.usage().total, self._account.earlier
        return {
            "calls": None if self.max_calls is None
            else self.max_calls - total.provider_calls - e.calls,
            "tokens": None if self.max_tokens is None
            else self.max_tokens - total.total_tokens - e.tokens,
            "cost_usd": None if self.max_cost_usd is None
            else self.max_cost_usd - total.cost_usd - e.cost_usd,
        }

    async def acomplete(self, request: Request) -> Completion:
        reserved = self._reserve(request)
        try:
            return await self.inner.acomplete(request)
        finally:
            self._release(reserved)

    def complete(self, request: Request) -> Completion:
        reserved = self._reserve(request)
        try:
            return self.inner.complete(request)
        finally:
            self._release(reserved)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def estimate(self, request: Request) -> tuple[int, float | None]:
        """(tokens, cost in USD or None if the model has no price) this request may use."""
        tokens_in = estimate_input_tokens(request)
        tokens_out = (request.max_tokens if request.max_tokens is not None
                      else self.default_output_tokens)
        price = self.prices.price_for(request.model, self.inner.name)
        cost = None if price is None else price.cost(tokens_in, tokens_out)
        return tokens_in + tokens_out, cost

    def _reserve(self, request: Request) -> _Reserved:
        tokens, cost = self.estimate(request)
        if self.max_cost_usd is not None and cost is None:
            raise ConfigError(f"cannot enforce max_cost_usd: no price known for "
                              f"{request.model or self.inner.name!r}; pass prices=... "
                              "(USD per 1M input/output tokens)", field="max_cost_usd")
        account = self._account
        with account.lock:
            total, r, e = account.usage().total, account.reserved, account.earlier
            calls, used_tokens, spent = (total.provider_calls + e.calls,
                                         total.total_tokens + e.tokens, total.cost_usd + e.cost_usd)
            earlier = " by this run so far" if e.calls else ""
            over = []
            if self.max_calls is not None and calls + r.calls + 1 > self.max_calls:
                over.append(f"{calls} calls made{earlier} and {r.calls} in flight, "
                            f"max_calls={self.max_calls}")
            if self.max_tokens is not None and \
                    used_tokens + r.tokens + tokens > self.max_tokens:
                over.append(f"{used_tokens} tokens used{earlier}, {r.tokens} reserved in flight "
                            f"and up to {tokens} for this call, max_tokens={self.max_tokens}")
            if self.max_cost_usd is not None and \
                    spent + r.cost_usd + (cost or 0.0) > self.max_cost_usd:
                over.append(f"${spent:.4f} spent{earlier}, ${r.cost_usd:.4f} reserved in flight "
                            f"and up to ${cost:.4f} for this call, "
                            f"max_cost_usd={self.max_cost_usd}")
            if not over:
                r.calls, r.tokens, r.cost_usd = r.calls + 1, r.tokens + tokens, \
                    r.cost_usd + (cost or 0.0)
                return _Reserved(1, tokens, cost or 0.0)
        if self.is_cached is not None and self.is_cached(request):
            return _Reserved()  # answered from the cache: free, reserve nothing
        raise BudgetExceeded(
            f"budget exceeded, so this {request.role} call was not sent: " + "; ".join(over),
            usage=self.usage())

    def _release(self, reserved: _Reserved) -> None:
        with self._account.lock:
            r = self._account.reserved
            r.calls -= reserved.calls
            r.tokens -= reserved.tokens
            r.cost_usd -= reserved.cost_usd
