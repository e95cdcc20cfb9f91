"""The budget: a call that could pass a limit is refused before it is sent."""

from __future__ import annotations

import asyncio

import pytest

from textprop.engines.base import Completion, Engine, Request
from textprop.engines.budget import Budget, estimate_input_tokens
from textprop.engines.cache import Cache
from textprop.engines.limits import ConcurrencyLimit
from textprop.engines.metering import Meter, UsageSummary
from textprop.engines.retry import Retry
from textprop.engines.scripted import ScriptedEngine
from textprop.engines.stack import build_stack, find_layer, iter_layers
from textprop.errors import BudgetExceeded, ConfigError, EngineError, TransientEngineError

# ScriptedEngine counts words as tokens. REQUEST's estimate is 16 tokens: "abcdef" is
# ceil(6 bytes / 3) + 4 per message = 6 in, plus max_tokens=10 out. Its actual usage is
# 1 word in + 3 words out = 4 tokens.
REQUEST = Request.chat("abcdef", max_tokens=10)


def three_words(**kwargs) -> ScriptedEngine:
    return ScriptedEngine(default="one two three", **kwargs)


def test_a_call_past_max_calls_is_not_sent_and_reports_the_usage_so_far():
    inner = ScriptedEngine(default="fine")
    budget = Budget(inner, max_calls=2)
    budget.complete(Request.chat("first", role="forward"))
    budget.complete(Request.chat("second", role="loss"))

    with pytest.raises(BudgetExceeded, match="max_calls=2") as caught:
        budget.complete(Request.chat("third", role="backward"))

    assert inner.prompts() == ["first", "second"]  # "third" never reached the engine
    usage = caught.value.usage
    assert isinstance(usage, UsageSummary)
    assert usage.total.calls == 2 and set(usage.by_role) == {"forward", "loss"}
    assert "backward call was not sent" in str(caught.value)


def test_the_input_estimate_rounds_bytes_up_and_adds_a_per_message_overhead():
    assert estimate_input_tokens(Request.chat("abcdef")) == 2 + 4
    assert estimate_input_tokens(Request.chat("abcdefg", "s")) == 3 + 2 * 4  # ceil(8 / 3)
    assert estimate_input_tokens(Request.chat("é")) == 1 + 4  # 2 UTF-8 bytes


def test_max_tokens_counts_actual_usage_plus_the_next_calls_estimate():
    inner = three_words()
    budget = Budget(inner, max_tokens=20)

    budget.complete(REQUEST)  # 0 used + 16 estimated <= 20
    budget.complete(REQUEST)  # 4 used + 16 estimated <= 20
    with pytest.raises(BudgetExceeded, match="max_tokens=20") as caught:
        budget.complete(REQUEST)  # 8 used + 16 estimated > 20

    assert len(inner.requests) == 2
    assert caught.value.usage.total.total_tokens == 8


def test_an_unset_max_tokens_is_estimated_with_default_output_tokens():
    inner = three_words()
    budget = Budget(inner, max_tokens=500, default_output_tokens=1000)
    with pytest.raises(BudgetExceeded):
        budget.complete(Request.chat("abcdef"))
    assert inner.requests == []


def test_max_cost_prices_the_estimate_at_the_models_price():
    inner = three_words(name="acme:model-x")
    meter = Meter(inner, prices={"model-x": (1_000_000, 1_000_000)})  # $1 per token
    budget = Budget(meter, max_cost_usd=20.0)

    budget.complete(REQUEST)  # $0 + $16 estimated; $4 spent
    budget.complete(REQUEST)  # $4 + $16 estimated; $8 spent
    with pytest.raises(BudgetExceeded, match="max_cost_usd=20.0") as caught:
        budget.complete(REQUEST)  # $8 + $16 > $20

    assert len(inner.requests) == 2
    assert caught.value.usage.total.cost_usd == pytest.approx(8.0)


def test_a_cost_limit_on_an_unpriced_model_is_refused_rather_than_ignored():
    inner = three_words(name="acme:mystery")
    with pytest.raises(ConfigError, match="acme:mystery"):
        Budget(inner, max_cost_usd=1.0).complete(REQUEST)
    assert inner.requests == []


def test_calls_in_flight_are_reserved_so_concurrency_cannot_overshoot():
    inner = ScriptedEngine(default="ok", latency_s=0.05)
    budget = Budget(inner, max_calls=3)

    async def main():
        return await asyncio.gather(*[budget.acomplete(Request.chat(f"q{i}"))
                                      for i in range(10)], return_exceptions=True)

    results = asyncio.run(main())

    assert sum(isinstance(r, Completion) for r in results) == 3
    assert sum(isinstance(r, BudgetExceeded) for r in results) == 7
    assert len(inner.requests) == 3


def test_failed_calls_that_were_sent_count_against_max_calls():
    inner = ScriptedEngine(default="ok").queue(EngineError("500"))
    budget = Budget(inner, max_calls=1)
    with pytest.raises(EngineError):
        budget.complete(Request.chat("x"))
    with pytest.raises(BudgetExceeded):
        budget.complete(Request.chat("x"))
    assert len(inner.requests) == 1


def test_it_reads_the_meter_below_it_so_nothing_is_counted_twice():
    inner = ScriptedEngine(default="ok")
    meter = Meter(inner)
    budget = Budget(meter, max_calls=3)
    for i in range(3):
        budget.complete(Request.chat(f"q{i}"))
    with pytest.raises(BudgetExceeded):
        budget.complete(Request.chat("q3"))

    assert budget.meter is meter
    assert meter.usage().total.calls == 3  # the refused call is in no record
    assert budget.remaining() == {"calls": 0, "tokens": None, "cost_usd": None}


def test_without_a_meter_below_it_keeps_a_private_one():
    budget = Budget(ScriptedEngine(default="ok"), max_calls=5)
    budget.complete(Request.chat("x"))
    assert isinstance(budget.meter, Meter) and budget.remaining()["calls"] == 4


def test_cache_hits_do_not_consume_the_budget(tmp_path):
    inner = ScriptedEngine(default="ok")
    budget = Budget(Meter(Cache(inner, tmp_path / "c.sqlite3")), max_calls=2)

    budget.complete(Request.chat("a"))
    budget.complete(Request.chat("a"))  # hit
    budget.complete(Request.chat("b"))
    with pytest.raises(BudgetExceeded):
        budget.complete(Request.chat("c"))

    assert inner.prompts() == ["a", "b"]
    assert budget.usage().total.cache_hits == 1


def test_a_spent_budget_still_serves_cached_answers_in_the_standard_stack(tmp_path):
    inner = ScriptedEngine(default="ok")
    engine, meter = build_stack(inner, cache=tmp_path / "c.sqlite3", max_calls=1)

    engine.complete(Request.chat("a"))
    assert engine.complete(Request.chat("a")).cached  # free, so allowed
    with pytest.raises(BudgetExceeded):
        engine.complete(Request.chat("b"))

    assert inner.prompts() == ["a"]
    assert (meter.usage().total.calls, meter.usage().total.cache_hits) == (2, 1)


def test_stacks_sharing_a_budget_draw_from_one_budget():
    cheap, strong = ScriptedEngine(default="ok", name="scripted:a"), \
        ScriptedEngine(default="ok", name="scripted:b")
    forward = Budget(cheap, max_calls=3)
    optimizer = Budget(strong, share_with=forward)

    forward.complete(Request.chat("f1", role="forward"))
    optimizer.complete(Request.chat("o1", role="optimizer"))
    forward.complete(Request.chat("f2", role="forward"))
    with pytest.raises(BudgetExceeded) as caught:
        optimizer.complete(Request.chat("o2", role="optimizer"))

    assert (cheap.prompts(), strong.prompts()) == (["f1", "f2"], ["o1"])
    usage = caught.value.usage
    assert usage.total.calls == 3
    assert (usage.by_role["forward"].calls, usage.by_role["optimizer"].calls) == (2, 1)
    assert forward.remaining()["calls"] == optimizer.remaining()["calls"] == 0
    with pytest.raises(ConfigError, match="share_with"):
        Budget(strong, share_with=forward, max_calls=9)


def test_build_stack_can_share_one_budget_between_engine_stacks(tmp_path):
    cheap, strong = ScriptedEngine(default="ok", name="scripted:a"), \
        ScriptedEngine(default="ok", name="scripted:b")
    first, _ = build_stack(cheap, cache=False, max_calls=2)
    second, _ = build_stack(strong, cache=False, share_budget_with=first)

    first.complete(Request.chat("x"))
    second.complete(Request.chat("y"))
    with pytest.raises(BudgetExceeded):
        first.complete(Request.chat("z"))


def test_negative_limits_are_config_errors():
    with pytest.raises(ConfigError, match="max_calls"):
        Budget(ScriptedEngine(), max_calls=-1)


# -- the standard stack ---------------------------------------------------------------------


class Tag(Engine):
    """A pass-through layer standing in for the retry layer, to see where it lands."""

    def __init__(self, inner: Engine) -> None:
        self.inner, self.name = inner, inner.name

    async def acomplete(self, request: Request) -> Completion:
        return await self.inner.acomplete(request)


def layers(engine: Engine) -> list[type]:
    return [type(layer) for layer in iter_layers(engine)]


def test_build_stack_orders_budget_meter_cache_limit_retry_provider(tmp_path):
    provider = ScriptedEngine(default="ok")
    engine, meter = build_stack(provider, cache=tmp_path / "c.sqlite3", concurrency=2,
                                retry=Tag, max_cost_usd=1.0)
    assert layers(engine) == [Budget, Meter, Cache, ConcurrencyLimit, Tag, ScriptedEngine]
    assert engine.meter is meter and engine.name == "scripted"
    assert engine.complete(Request.chat("x")).text == "ok"


def test_build_stack_retries_transient_failures_below_the_cache_by_default(tmp_path):
    provider = ScriptedEngine(default="ok").queue(TransientEngineError("503", retry_after=0))
    engine, meter = build_stack(provider, cache=tmp_path / "c.sqlite3", retry=2)

    assert layers(engine) == [Meter, Cache, ConcurrencyLimit, Retry, ScriptedEngine]
    assert find_layer(engine, Retry).max_retries == 2
    assert engine.complete(Request.chat("x")).text == "ok"
    assert len(provider.requests) == 2
    assert meter.usage().total.calls == 1  # one logical call, however many attempts


def test_build_stack_leaves_out_layers_that_are_not_asked_for():
    engine, meter = build_stack(ScriptedEngine(), cache=False, concurrency=None, retry=None)
    assert layers(engine) == [Meter, ScriptedEngine] and engine is meter


def test_replay_without_a_cache_is_a_config_error():
    with pytest.raises(ConfigError, match="replay"):
        build_stack(ScriptedEngine(), cache=False, replay=True)
