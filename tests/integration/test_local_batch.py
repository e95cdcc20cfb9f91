"""The batched embedded engine on the real 0.5B model: concurrent calls share llama.cpp
batches, JSON-schema calls keep their own grammar, shared system prompts are prefilled once.
Determinism is measured: the default engine's answers do not depend on other calls; the
batched engine's can, and its name says so.

Run with: pytest tests/integration -m local_model  (needs `pip install 'textprop[local]'`).
Without the extra these tests skip, unless TEXTPROP_REQUIRE_LOCAL=1 (as in CI): then they fail.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from textprop.engines.base import Completion, Request
from textprop.engines.local import LocalEngine

from .local_model import require_local_model

pytestmark = pytest.mark.local_model

SYSTEM = ("You are a careful assistant that answers questions about dates, numbers and "
          "words. Answer briefly and exactly, without explanations.")
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "maxLength": 40},
                   "confident": {"type": "boolean"}},
    "required": ["answer", "confident"],
}
QUESTIONS = [
    "Write 24 February 1990 as YYYY-MM-DD.",
    "What is 17 + 25?",
    "Name the capital of France.",
    "Spell the word 'necessary' backwards.",
    "Which is larger, 0.3 or 0.25?",
    "Write March 3rd, 2001 in ISO format.",
    "How many legs does a spider have?",
    "What comes after Tuesday?",
    "Convert 2 hours to minutes.",
    "Give a synonym of 'quick'.",
    "Is 91 a prime number?",
    "Write the number twelve in digits.",
]


@pytest.fixture(scope="module")
def engine() -> Iterator[LocalEngine]:
    require_local_model()
    engine = LocalEngine(n_parallel=8)
    yield engine
    engine.close()


def _gather(engine: LocalEngine, requests: list[Request]) -> list[Completion]:
    async def main() -> list[Completion]:
        return await asyncio.gather(*(engine.acomplete(r) for r in requests))

    return asyncio.run(main())


def _requests(n: int, max_tokens: int = 16) -> list[Request]:
    out = []
    for i, question in enumerate(QUESTIONS[:n]):
        schema = VERDICT_SCHEMA if i % 3 == 0 else None
        out.append(Request.chat(question, system_prompt=SYSTEM, max_tokens=
                                48 if schema else max_tokens, json_schema=schema))
    return out


def test_eight_concurrent_calls_share_batches_and_schema_replies_parse(
        engine: LocalEngine) -> None:
    requests = _requests(8)
    steps_before = engine._decoder.steps if engine._decoder else 0
    completions = _gather(engine, requests)
    decoder = engine._decoder
    assert decoder.max_in_flight == 8  # all eight were decoded together
    generated = sum(c.usage.output_tokens for c in completions)
    assert decoder.steps - steps_before < generated / 2  # far fewer passes than tokens
    for request, completion in zip(requests, completions, strict=True):
        assert completion.text
        assert completion.usage.input_tokens > 20
        assert 0 < completion.usage.output_tokens <= request.max_tokens
        assert completion.finish_reason in ("stop", "length")
        if request.json_schema is not None:
            assert completion.parsed == json.loads(completion.text)
            assert set(completion.parsed) == {"answer", "confident"}
            assert isinstance(completion.parsed["confident"], bool)
        else:
            assert completion.parsed is None


def test_the_shared_system_prompt_is_prefilled_once(engine: LocalEngine) -> None:
    _gather(engine, _requests(4))
    decoder = engine._decoder
    assert len(decoder._prefixes) >= 1
    head = next(reversed(decoder._prefixes))
    assert len(head) > 30  # the template head with the system prompt


def test_default_engine_answers_do_not_depend_on_other_calls() -> None:
    """The determinism measurement of the default mode (n_parallel=1): N answers given
    together equal the same N given one by one, byte for byte (greedy, same seed)."""
    engine = LocalEngine()
    try:
        requests = _requests(8)
        alone = [engine.complete(r) for r in requests]
        together = _gather(engine, requests[::-1])[::-1]
    finally:
        engine.close()
    assert [a.text for a in alone] == [b.text for b in together]
    assert [a.usage for a in alone] == [b.usage for b in together]


def test_batched_answers_are_measured_and_named_apart(engine: LocalEngine) -> None:
    """Batched, an answer may change with its batch-mates (CPU kernels round differently for
    other batch shapes); the count is reported, and the engine's name keeps the cache from
    mixing these answers with the deterministic engine's."""
    requests = _requests(8)
    alone = [engine.complete(r).text for r in requests]
    together = [c.text for c in _gather(engine, requests)]
    differ = sum(a != b for a, b in zip(alone, together, strict=True))
    print(f"batched: {differ} of {len(requests)} answers differ between alone and together")
    assert engine.name == "local:qwen2.5-coder-0.5b+batch8"
    assert all(together)


def test_sync_calls_from_threads_batch_too(engine: LocalEngine) -> None:
    from concurrent.futures import ThreadPoolExecutor

    requests = _requests(4)
    before = engine._decoder.steps
    with ThreadPoolExecutor(4) as pool:
        completions = list(pool.map(engine.complete, requests))
    assert all(c.text for c in completions)
    generated = sum(c.usage.output_tokens for c in completions)
    assert engine._decoder.steps - before < generated  # some steps decoded several calls


def test_stop_max_tokens_and_seeded_sampling(engine: LocalEngine) -> None:
    cut, stopped, warm_a, warm_b = _gather(engine, [
        Request.chat("Write a long essay about rivers.", max_tokens=6),
        Request.chat("Count from 1 to 10, separated by commas.", max_tokens=40, stop=["5"]),
        Request.chat("Invent a name for a cat.", temperature=0.9, seed=3, max_tokens=12),
        Request.chat("Invent a name for a cat.", temperature=0.9, seed=3, max_tokens=12),
    ])
    assert (cut.finish_reason, cut.usage.output_tokens) == ("length", 6)
    assert stopped.finish_reason == "stop"
    assert "4" in stopped.text and "5" not in stopped.text
    assert warm_a.text and warm_b.text  # seeded sampling runs side by side


def test_a_prompt_longer_than_the_context_is_a_context_window_error(engine: LocalEngine
                                                                   ) -> None:
    from textprop.errors import ContextWindowError

    with pytest.raises(ContextWindowError, match="exceed context window"):
        engine.complete(Request.chat("word " * 5000, max_tokens=4))


def test_calls_that_finish_at_different_steps_free_their_slots_for_the_waiting_ones() -> None:
    """More calls than slots, each with its own length: a call joining takes a slot a
    finished one left anywhere in the batch, never one still running (every call answers,
    each at most its own max_tokens)."""
    require_local_model()
    engine = LocalEngine(n_parallel=3)
    try:
        requests = [Request.chat(q, system_prompt=SYSTEM, max_tokens=2 + (i * 5) % 11)
                    for i, q in enumerate(QUESTIONS[:9])]

        async def main() -> list[Completion]:
            return await asyncio.wait_for(
                asyncio.gather(*(engine.acomplete(r) for r in requests)), timeout=600)

        completions = asyncio.run(main())
        assert engine._decoder.max_in_flight == 3
    finally:
        engine.close()
    for request, completion in zip(requests, completions, strict=True):
        assert completion.text
        assert 0 < completion.usage.output_tokens <= request.max_tokens


def test_with_a_cpu_lock_every_decode_takes_a_machine_wide_turn(tmp_path) -> None:
    """While another process holds the lock file the engine waits; once it is free every
    llama_decode (prefills and steps) runs inside a turn."""
    import fcntl
    import os
    import threading
    import time

    require_local_model()
    lock = tmp_path / "cores.lock"
    engine = LocalEngine(n_parallel=2, cpu_lock=lock)
    holder = os.open(lock, os.O_RDWR | os.O_CREAT)  # "another server" decoding
    fcntl.flock(holder, fcntl.LOCK_EX)
    released_at: list[float] = []

    def release_later() -> None:
        time.sleep(3)
        released_at.append(time.perf_counter())
        fcntl.flock(holder, fcntl.LOCK_UN)

    try:
        engine._load_locked()  # loading does not decode: it needs no turn
        threading.Thread(target=release_later).start()
        completions = _gather(engine, _requests(2))
        done_at = time.perf_counter()
        assert released_at and done_at > released_at[0]  # it waited for the turn
        assert all(c.text for c in completions)
        assert engine._turns.waits > engine._decoder.steps > 0  # prefills took turns too
    finally:
        engine.close()
        os.close(holder)


def test_a_cancelled_call_stops_decoding_at_once_and_its_slot_serves_the_next(
        engine: LocalEngine) -> None:
    """A caller that gives up (a timeout; `textprop serve`'s client gone) does not leave its
    sequence generating to max_tokens for nobody."""
    long = Request.chat("Count from 1 to 500, one number per line.", system_prompt=SYSTEM,
                        max_tokens=400)
    engine.complete(Request.chat(QUESTIONS[0], max_tokens=4))  # loaded: the decoder exists
    decoder = engine._decoder
    before, start = decoder.abandoned, decoder.steps

    async def main() -> Completion:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(engine.acomplete(long), timeout=1.5)
        for _ in range(600):  # dropped at the next decode step (slow on a busy machine)
            if decoder.abandoned > before:
                break
            await asyncio.sleep(0.1)
        steps = decoder.steps
        await asyncio.sleep(1.0)
        assert decoder.steps == steps  # nothing runs any more
        return await engine.acomplete(Request.chat(QUESTIONS[1], system_prompt=SYSTEM,
                                                   max_tokens=8))

    answer = asyncio.run(main())
    assert decoder.abandoned == before + 1
    assert decoder.steps - start < 300  # far from the 400 tokens it was allowed
    assert answer.text
