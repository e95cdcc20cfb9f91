"""Metering: a record per call, usage per role and in total, prices, listeners."""

from __future__ import annotations

import asyncio
import json
import threading
import warnings

import pytest

from textprop.engines.base import Request
from textprop.engines.cache import Cache
from textprop.engines.metering import CallRecord, Meter, Price, PriceTable
from textprop.engines.scripted import ScriptedEngine
from textprop.errors import ConfigError, EngineError

# ScriptedEngine counts words as tokens: "one two three" in, the reply's words out.


def priced_engine(name: str = "acme:model-x") -> ScriptedEngine:
    return ScriptedEngine(default="a b c d", name=name)


def test_each_call_is_recorded_with_role_tokens_cost_and_latency():
    meter = Meter(ScriptedEngine(default="a b c d", name="acme:model-x", latency_s=0.02),
                  prices={"model-x": (1_000_000, 2_000_000)})  # $1 per input, $2 per output token

    meter.complete(Request.chat("one two three", role="forward"))

    [record] = meter.records
    assert (record.role, record.engine, record.model) == ("forward", "acme:model-x",
                                                          "acme:model-x")
    assert (record.input_tokens, record.output_tokens) == (3, 4)
    assert record.cost_usd == pytest.approx(3 * 1 + 4 * 2)
    assert record.latency_s >= 0.02
    assert record.ok and record.error is None and not record.cached


def test_usage_is_summed_per_role_and_in_total():
    meter = Meter(priced_engine(), prices={"model-x": (1_000_000, 0)})
    for role, prompt in [("forward", "w1 w2"), ("forward", "w1"), ("loss", "w1 w2 w3")]:
        meter.complete(Request.chat(prompt, role=role))

    usage = meter.usage()

    assert set(usage.by_role) == {"forward", "loss"}
    assert (usage.by_role["forward"].calls, usage.by_role["forward"].input_tokens) == (2, 3)
    assert (usage.by_role["loss"].calls, usage.by_role["loss"].input_tokens) == (1, 3)
    assert (usage.total.calls, usage.total.input_tokens, usage.total.output_tokens) == (3, 6, 12)
    assert usage.total.cost_usd == pytest.approx(6.0)
    assert "forward" in usage.format() and "total" in usage.format()
    as_dict = usage.to_dict()
    assert as_dict["total"]["calls"] == 3 and as_dict["total"]["provider_calls"] == 3
    assert as_dict["by_role"]["loss"]["input_tokens"] == 3
    assert json.loads(json.dumps(as_dict)) == as_dict


def test_cache_hits_are_counted_as_hits_that_cost_nothing_and_add_no_tokens(tmp_path):
    meter = Meter(Cache(priced_engine(), tmp_path / "c.sqlite3"),
                  prices={"model-x": (1_000_000, 1_000_000)})

    meter.complete(Request.chat("one two", role="forward"))
    meter.complete(Request.chat("one two", role="forward"))

    total = meter.usage().total
    assert (total.calls, total.cache_hits, total.provider_calls) == (2, 1, 1)
    assert (total.input_tokens, total.output_tokens) == (2, 4)
    assert total.cost_usd == pytest.approx(6.0)
    hit = meter.records[1]
    assert hit.cached and hit.cost_usd == 0.0


def test_a_failed_call_is_recorded_and_its_error_still_raised():
    meter = Meter(ScriptedEngine().queue(EngineError("server said no")))

    with pytest.raises(EngineError, match="server said no"):
        asyncio.run(meter.acomplete(Request.chat("x", role="backward")))

    [record] = meter.records
    assert not record.ok and record.error == "EngineError: server said no"
    assert meter.usage().by_role["backward"].errors == 1


def test_listeners_get_every_record_and_a_broken_listener_does_not_fail_the_call():
    meter = Meter(priced_engine("scripted"))
    seen: list[CallRecord] = []
    meter.on_call(seen.append)

    @meter.on_call
    def broken(record: CallRecord) -> None:
        raise OSError("disk full")

    with pytest.warns(RuntimeWarning, match="disk full"):
        completion = meter.complete(Request.chat("x", role="optimizer"))

    assert completion.text == "a b c d"
    assert [r.role for r in seen] == ["optimizer"]
    assert seen[0].to_dict()["role"] == "optimizer"


def test_only_a_listener_that_asks_for_content_gets_the_prompt_and_reply():
    meter = Meter(priced_engine("scripted"))
    bare: list[CallRecord] = []
    full: list[CallRecord] = []
    meter.on_call(bare.append)
    meter.on_call(full.append, content=True)

    meter.complete(Request.chat("count these", system_prompt="You count.", role="forward"))

    [plain], [rich] = bare, full
    assert (plain.messages, plain.reply, plain.finish_reason) == (None, None, None)
    assert not {"messages", "reply", "finish_reason"} & set(plain.to_dict())
    assert rich.messages == ({"role": "system", "content": "You count."},
                             {"role": "user", "content": "count these"})
    assert (rich.reply, rich.finish_reason) == ("a b c d", "stop")
    data = rich.to_dict()
    assert tuple(data.pop("messages")) == rich.messages
    assert (data.pop("reply"), data.pop("finish_reason")) == ("a b c d", "stop")
    assert data == plain.to_dict()
    assert meter.records[0].messages is None  # the meter keeps no text of its own


def test_content_can_be_asked_for_call_by_call_and_a_failed_call_has_no_reply():
    meter = Meter(ScriptedEngine(default="fine").queue(EngineError("no")))
    wanted = [True]
    seen: list[CallRecord] = []
    meter.on_call(seen.append, content=lambda: wanted[0])

    with pytest.raises(EngineError):
        meter.complete(Request.chat("first"))
    wanted[0] = False
    meter.complete(Request.chat("second"))

    failed, quiet = seen
    assert failed.messages == ({"role": "user", "content": "first"},)
    assert not failed.ok and failed.reply is None
    assert (quiet.messages, quiet.reply) == (None, None)


def test_counters_are_exact_under_threads_and_tasks():
    meter = Meter(ScriptedEngine(default="ok", latency_s=0.001))

    def work() -> None:
        for _ in range(50):
            meter.complete(Request.chat("x", role="forward"))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()

    async def tasks() -> None:
        await asyncio.gather(*[meter.acomplete(Request.chat("y", role="loss"))
                               for _ in range(200)])

    asyncio.run(tasks())
    for thread in threads:
        thread.join()

    usage = meter.usage()
    assert usage.by_role["forward"].calls == 400
    assert usage.by_role["loss"].calls == 200
    assert usage.total.calls == len(meter.records) == 600


def test_an_unpriced_model_costs_zero_with_a_single_warning():
    meter = Meter(priced_engine("acme:mystery"))
    with pytest.warns(RuntimeWarning, match="acme:mystery") as caught:
        meter.complete(Request.chat("x"))
        meter.complete(Request.chat("y"))
    assert len([w for w in caught if "mystery" in str(w.message)]) == 1
    assert meter.usage().total.cost_usd == 0.0


def test_scripted_and_local_engines_are_free_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ["scripted", "local:qwen2.5-coder-0.5b", "llamacpp:model.gguf",
                     "test:echo"]:
            meter = Meter(ScriptedEngine(default="x", name=name))
            meter.complete(Request.chat("x"))
            assert meter.usage().total.cost_usd == 0.0


# -- price table ----------------------------------------------------------------------------


def test_prices_match_exactly_then_by_longest_prefix_with_or_without_provider():
    table = PriceTable()
    assert table.lookup("gpt-4o-mini") == Price(0.15, 0.60)
    assert table.lookup("openai:gpt-4o-mini") == Price(0.15, 0.60)
    assert table.lookup("gpt-4o-mini-2024-07-18") == Price(0.15, 0.60)
    assert table.lookup("gpt-4o-2024-08-06") == Price(2.50, 10.00)
    assert table.lookup("anthropic:claude-3-5-sonnet-20241022") == Price(3.00, 15.00)
    assert table.lookup("gpt-4oo") is None  # a prefix must end at a word boundary
    assert table.lookup("unknown-model") is None
    assert table.price_for(None, "unknown", "gpt-4o") == Price(2.50, 10.00)


def test_user_prices_override_and_extend_the_defaults():
    table = PriceTable.from_dict({"prices": {"gpt-4o": {"input": 1, "output": 2},
                                             "my-model": [0.5, 0.25]}})
    assert table.lookup("gpt-4o") == Price(1, 2)
    assert table.lookup("my-model-v2") == Price(0.5, 0.25)
    assert table.lookup("gpt-4o-mini") == Price(0.15, 0.60)  # defaults kept
    assert PriceTable({"my-model": (1, 1)}, defaults=False).lookup("gpt-4o") is None


def test_prices_load_from_toml(tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text('[prices]\n"gpt-4o" = { input = 1.5, output = 6.0 }\n'
                    '"house:llm" = [0.1, 0.2]\n')
    table = PriceTable.from_toml(path)
    assert table.lookup("openai:gpt-4o") == Price(1.5, 6.0)
    assert table.lookup("house:llm") == Price(0.1, 0.2)


def test_a_malformed_price_names_the_file_and_the_model(tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text('"gpt-4o" = { input = 1.5 }\n')
    with pytest.raises(ConfigError, match=r"prices.toml.*gpt-4o"):
        PriceTable.from_toml(path)


def test_latency_is_the_providers_time_not_the_wait_for_a_concurrency_slot():
    from textprop.engines.base import Completion, Engine
    from textprop.engines.limits import ConcurrencyLimit

    class Slow(Engine):
        name = "slow"

        async def acomplete(self, request):
            await asyncio.sleep(0.05)
            return Completion("ok", latency_s=1.25)  # what the provider reports

    meter = Meter(ConcurrencyLimit(Slow(), 1), prices={"slow": (0, 0)})

    async def three() -> None:
        await asyncio.gather(*(meter.acomplete(Request.chat(f"q{i}")) for i in range(3)))

    asyncio.run(three())
    assert [r.latency_s for r in meter.records] == [1.25, 1.25, 1.25]
