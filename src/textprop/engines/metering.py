"""Metering: one `CallRecord` per call, and usage summed per call role and in total.

    meter = Meter(engine)                       # or Meter(engine, prices={"my-model": (1, 3)})
    meter.on_call(ledger.append)                # persist each record as it happens
    ...
    print(meter.usage().format())

Put the meter above the cache (`Meter(Cache(...))`) so it sees cache hits: they are counted
as calls and hits, cost nothing, and add no tokens. Tokens and cost count only calls that
reached the provider. Latency is wall time measured around the inner engine, so it includes
waiting for a concurrency slot and retries when those layers sit below the meter.

A record carries no prompt or reply text unless a listener asks for it
(`meter.on_call(listener, content=True)`): only that listener's records then hold the
request's messages, the reply and its finish reason.
"""

from __future__ import annotations

import threading
import time
import tomllib
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from os import PathLike
from typing import Any

from textprop.engines.base import Completion, Engine, Request
from textprop.errors import ConfigError, EngineReplyError


@dataclass(frozen=True)
class Price:
    """USD per one million input and output tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


FREE = Price(0.0, 0.0)

# List prices in USD per 1M tokens (input, output), checked 2025. Prices change: override them
# with `Meter(prices=...)` or a TOML file. Every key also matches as a prefix, longest first,
# so "gpt-4o-mini" prices "gpt-4o-mini-2024-07-18"; a "provider:" prefix is tried stripped too.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    # OpenAI
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o1": (15.00, 60.00),
    "o1-mini": (1.10, 4.40),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    # Anthropic
    "claude-3-haiku": (0.25, 1.25),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-3-opus": (15.00, 75.00),
    "claude-opus-4": (15.00, 75.00),
    "claude-opus-4-5": (5.00, 25.00),
    # Engines that cost nothing: embedded and local servers, scripted and test engines.
    "local": (0.0, 0.0),
    "llamacpp": (0.0, 0.0),
    "scripted": (0.0, 0.0),
    "test": (0.0, 0.0),
}


def _as_price(value: Any, name: str, source: str | None) -> Price:
    if isinstance(value, Price):
        return value
    if isinstance(value, Mapping):
        try:
            return Price(float(value["input"]), float(value["output"]))
        except (KeyError, TypeError, ValueError):
            pass
    elif isinstance(value, list | tuple) and len(value) == 2:
        try:
            return Price(float(value[0]), float(value[1]))
        except (TypeError, ValueError):
            pass
    raise ConfigError(f"price must be {{input = <usd/1M>, output = <usd/1M>}} or "
                      f"[input, output], got {value!r}", source=source, field=name)


class PriceTable:
    """Model name -> `Price`, matched exactly or by the longest key that is a prefix.

    A name "provider:model" is looked up as given, then as "model". User prices are laid
    over the defaults unless `defaults=False`.
    """

    def __init__(self, prices: Mapping[str, Price | tuple[float, float] | Mapping[str, float]]
                 | None = None, *, defaults: bool = True, source: str | None = None) -> None:
        table = {k: Price(*v) for k, v in DEFAULT_PRICES.items()} if defaults else {}
        for name, value in (prices or {}).items():
            table[name] = _as_price(value, name, source)
        self._prices = table

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, defaults: bool = True,
                  source: str | None = None) -> PriceTable:
        """Prices from `{"model": {"input": 2.5, "output": 10}}`, or that under a "prices" key."""
        if isinstance(data.get("prices"), Mapping):
            data = data["prices"]
        return cls(data, defaults=defaults, source=source)

    @classmethod
    def from_toml(cls, path: str | PathLike[str], *, defaults: bool = True) -> PriceTable:
        """Prices from a TOML file: `"gpt-4o" = { input = 2.5, output = 10.0 }` per line,
        at top level or in a `[prices]` table."""
        try:
            with open(path, "rb") as file:
                data = tomllib.load(file)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(exc), source=str(path)) from exc
        return cls.from_dict(data, defaults=defaults, source=str(path))

    def lookup(self, name: str | None) -> Price | None:
        """The price of `name`, or None when no key matches it."""
        if not name:
            return None
        candidates = [name]
        if ":" in name:
            candidates.append(name.split(":", 1)[1])
        for candidate in candidates:
            if candidate in self._prices:
                return self._prices[candidate]
        for candidate in candidates:
            # Prefix keys must end at a word boundary: "gpt-4o" prices "gpt-4o-2024" not "gpt-4oo".
            matches = [k for k in self._prices
                       if candidate.startswith(k) and candidate[len(k)] in "-:.@/_"]
            if matches:
                return self._prices[max(matches, key=len)]
        return None

    def price_for(self, *names: str | None) -> Price | None:
        """The price of the first of `names` that has one."""
        for name in names:
            price = self.lookup(name)
            if price is not None:
                return price
        return None

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {k: {"input": p.input_per_mtok, "output": p.output_per_mtok}
                for k, p in sorted(self._prices.items())}


CONTENT_FIELDS = ("messages", "reply", "finish_reason")  # a record's text, when asked for


@dataclass(frozen=True)
class CallRecord:
    """One call through a `Meter`. `error` is "ExceptionType: message" when `ok` is False.

    `messages` ({"role", "content"} per message, in order), `reply` and `finish_reason` are
    filled only for a listener registered with `content=True`; otherwise they are None and
    `to_dict()` leaves them out.
    """

    role: str
    engine: str
    model: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_s: float
    cached: bool
    ok: bool
    error: str | None = None
    started_at: float = 0.0  # time.time() when the call began
    messages: tuple[dict[str, str], ...] | None = None
    reply: str | None = None  # None when the call failed
    finish_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain dict; the content fields only when they were captured."""
        data = asdict(self)
        if self.messages is None:
            for name in CONTENT_FIELDS:
                del data[name]
        return data


@dataclass(frozen=True)
class RoleUsage:
    """Sums over calls. Tokens and cost count only calls that reached the provider."""

    calls: int = 0
    cache_hits: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0

    @property
    def provider_calls(self) -> int:
        """Calls that were not cache hits: sent to the provider (successful or not)."""
        return self.calls - self.cache_hits

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: RoleUsage) -> RoleUsage:
        return RoleUsage(*(getattr(self, f.name) + getattr(other, f.name)
                           for f in fields(RoleUsage)))

    def add(self, record: CallRecord) -> RoleUsage:
        return replace(
            self,
            calls=self.calls + 1,
            cache_hits=self.cache_hits + record.cached,
            errors=self.errors + (not record.ok),
            input_tokens=self.input_tokens + (0 if record.cached else record.input_tokens),
            output_tokens=self.output_tokens + (0 if record.cached else record.output_tokens),
            cost_usd=self.cost_usd + record.cost_usd,
            latency_s=self.latency_s + record.latency_s,
        )


@dataclass(frozen=True)
class UsageSummary:
    """Usage per call role (forward, loss, backward, optimizer, other) and in total."""

    by_role: Mapping[str, RoleUsage] = field(default_factory=dict)
    total: RoleUsage = field(default_factory=RoleUsage)

    @classmethod
    def combine(cls, summaries: Iterable[UsageSummary]) -> UsageSummary:
        """The sum of several summaries (e.g. the meters of several engine stacks)."""
        by_role: dict[str, RoleUsage] = {}
        total = RoleUsage()
        for summary in summaries:
            for role, usage in summary.by_role.items():
                by_role[role] = by_role.get(role, RoleUsage()) + usage
            total = total + summary.total
        return cls(by_role=by_role, total=total)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready numbers, per role and in total (with provider_calls)."""
        def row(u: RoleUsage) -> dict[str, Any]:
            return {**asdict(u), "provider_calls": u.provider_calls}
        return {"by_role": {role: row(u) for role, u in sorted(self.by_role.items())},
                "total": row(self.total)}

    def format(self) -> str:
        """A small fixed-width table, for the CLI and logs."""
        header = f"{'role':<10} {'calls':>6} {'hits':>6} {'errors':>6} {'tok in':>9} " \
                 f"{'tok out':>9} {'cost $':>9} {'time s':>8}"
        rows = [header]
        for role, u in [*sorted(self.by_role.items()), ("total", self.total)]:
            rows.append(f"{role:<10} {u.calls:>6} {u.cache_hits:>6} {u.errors:>6} "
                        f"{u.input_tokens:>9} {u.output_tokens:>9} {u.cost_usd:>9.4f} "
                        f"{u.latency_s:>8.2f}")
        return "\n".join(rows)


Listener = Callable[[CallRecord], None]
WantsContent = bool | Callable[[], bool]


class Meter(Engine):
    """Records every call through it and sums usage per role; safe across threads and tasks."""

    def __init__(self, inner: Engine, *,
                 prices: PriceTable | Mapping[str, Any] | None = None,
                 keep_records: bool = True) -> None:
        self.inner = inner
        self.name = inner.name
        self.supports_json_schema = inner.supports_json_schema
        self.prices = prices if isinstance(prices, PriceTable) else PriceTable(prices)
        self.keep_records = keep_records
        self._lock = threading.Lock()
        self._records: list[CallRecord] = []
        self._by_role: dict[str, RoleUsage] = {}
        self._total = RoleUsage()
        self._listeners: list[tuple[Listener, WantsContent]] = []
        self._unpriced: set[str] = set()

    def on_call(self, listener: Listener | None = None, *,
                content: WantsContent = False) -> Any:
        """Call `listener(record)` after every call (usable as a decorator).

        With `content` true (or a function answering, per call, whether it is), the
        listener's records also carry the request's messages and the reply
        (`CallRecord.messages`, `reply`, `finish_reason`); other listeners never see them.
        """
        def register(listener: Listener) -> Listener:
            with self._lock:
                self._listeners.append((listener, content))
            return listener
        return register if listener is None else register(listener)

    def usage(self) -> UsageSummary:
        with self._lock:
            return UsageSummary(by_role=dict(self._by_role), total=self._total)

    @property
    def records(self) -> list[CallRecord]:
        with self._lock:
            return list(self._records)

    async def acomplete(self, request: Request) -> Completion:
        started, start = time.time(), time.perf_counter()
        try:
            completion = await self.inner.acomplete(request)
        except BaseException as exc:
            self._record(request, None, exc, started, time.perf_counter() - start)
            raise
        self._record(request, completion, None, started, time.perf_counter() - start)
        return completion

    def complete(self, request: Request) -> Completion:
        started, start = time.time(), time.perf_counter()
        try:
            completion = self.inner.complete(request)
        except BaseException as exc:
            self._record(request, None, exc, started, time.perf_counter() - start)
            raise
        self._record(request, completion, None, started, time.perf_counter() - start)
        return completion

    async def aclose(self) -> None:
        await self.inner.aclose()

    def cost(self, names: Iterable[str | None], input_tokens: int, output_tokens: int) -> float:
        """Cost by the first priced name; an unpriced model costs 0 with a one-time warning."""
        names = [n for n in names if n]
        price = self.prices.price_for(*names)
        if price is None:
            label = names[0] if names else self.name
            with self._lock:
                first_time = label not in self._unpriced
                self._unpriced.add(label)
            if first_time:
                warnings.warn(f"no price known for {label!r}: its calls are metered at $0; "
                              f"set [budget] prices = {{ \"{label}\" = {{ input = ..., "
                              "output = ... } } (USD per 1M tokens), or pass "
                              f"prices={{{label!r}: (usd_in_per_1M, usd_out_per_1M)}}",
                              RuntimeWarning, stacklevel=4)
            return 0.0
        return price.cost(input_tokens, output_tokens)

    def _record(self, request: Request, completion: Completion | None,
                error: BaseException | None, started: float, latency: float) -> None:
        if completion is None and isinstance(error, EngineReplyError):
            completion = error.completion  # a malformed reply is still a paid reply
        if completion is not None:
            # The provider's own time: waiting for a concurrency slot is not the call's latency.
            latency = completion.latency_s if completion.latency_s or completion.cached \
                else latency
            cached = completion.cached
            tokens_in, tokens_out = completion.usage.input_tokens, completion.usage.output_tokens
            cost = 0.0 if cached else self.cost(
                (completion.model, request.model, self.inner.name), tokens_in, tokens_out)
            model = completion.model or request.model
        else:
            cached, tokens_in, tokens_out, cost, model = False, 0, 0, 0.0, request.model
        record = CallRecord(
            role=request.role, engine=self.inner.name, model=model,
            input_tokens=tokens_in, output_tokens=tokens_out, cost_usd=cost,
            latency_s=latency, cached=cached, ok=error is None,
            error=None if error is None else f"{type(error).__name__}: {error}"[:500],
            started_at=started)
        with self._lock:
            if self.keep_records:
                self._records.append(record)
            self._by_role[record.role] = self._by_role.get(record.role, RoleUsage()).add(record)
            self._total = self._total.add(record)
            listeners = list(self._listeners)
        full: CallRecord | None = None
        for listener, content in listeners:
            try:
                if content is True or (callable(content) and content()):
                    if full is None:  # the text is copied only when someone asked for it
                        full = _with_content(record, request, completion)
                    listener(full)
                else:
                    listener(record)
            except Exception as exc:  # a broken ledger must not turn a paid answer into an error
                warnings.warn(f"Meter listener {listener!r} failed: {exc!r}", RuntimeWarning,
                              stacklevel=2)


def _with_content(record: CallRecord, request: Request,
                  completion: Completion | None) -> CallRecord:
    """The record with the request's messages (their text; an image by its description) and
    the reply."""
    return replace(record, messages=tuple({"role": m.role, "content": m.content}
                                          for m in request.messages),
                   reply=None if completion is None else completion.text,
                   finish_reason=None if completion is None else completion.finish_reason)
