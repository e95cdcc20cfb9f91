"""The backward scheduler: order, concurrency of independent edges, determinism."""

from __future__ import annotations

import asyncio

import pytest

import textprop as tp
from textprop.engines.base import Completion, Engine, Request
from textprop.errors import MissingEngineError

from .prompts_helpers import feedback_engine


class InFlightEngine(Engine):
    """Answers after a short sleep and remembers how many calls overlapped."""

    name = "in-flight"

    def __init__(self, inner: Engine) -> None:
        self.inner, self.in_flight, self.max_in_flight = inner, 0, 0

    async def acomplete(self, request: Request) -> Completion:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.02)
            return await self.inner.acomplete(request)
        finally:
            self.in_flight -= 1


def run_batch(engine, size: int = 4) -> tp.Variable:
    system_prompt = tp.Variable("Count.", role_description="system prompt")
    model = tp.BlackboxLLM(engine, system_prompt)
    losses = [tp.TextLoss("Correct?", engine)(model(tp.Variable(
        f"question {i}", role_description="question", requires_grad=False)))
        for i in range(size)]
    tp.sum(losses).backward(engine)
    return system_prompt


def test_independent_feedback_calls_run_concurrently():
    engine = InFlightEngine(feedback_engine())
    run_batch(engine)
    assert engine.max_in_flight >= 4  # the four examples' feedback was written side by side


def test_a_step_waits_for_every_consumer_of_its_output():
    """The shared prompt's feedback comes only after all answers got theirs."""
    inner = feedback_engine()
    run_batch(InFlightEngine(inner))
    backward_roles = [r.prompt.split("<ROLE> ")[1].split(" </ROLE>")[0]
                      for r in inner.requests if r.role == "backward"]
    assert backward_roles == ["response from the language model"] * 4 + ["system prompt"] * 4


def test_the_same_run_twice_sends_the_identical_sequence_of_requests():
    def run() -> list[Request]:
        engine = feedback_engine(optimizer="<IMPROVED_VARIABLE>new</IMPROVED_VARIABLE>")
        system_prompt = run_batch(engine, size=3)
        tp.TGD([system_prompt], engine=engine).step()
        return engine.requests

    first, second = run(), run()
    assert len(first) == 3 + 3 + 6 + 1
    assert first == second


def test_gradient_order_follows_the_graph_not_completion_time():
    """Later examples answer faster, yet gradients stay in example order."""

    class SlowFirst(Engine):
        name = "slow-first"

        def __init__(self, inner):
            self.inner = inner

        async def acomplete(self, request):
            delay = 0.05 if "question 0" in request.prompt else 0.0
            await asyncio.sleep(delay)
            return await self.inner.acomplete(request)

    system_prompt = run_batch(SlowFirst(feedback_engine()), size=3)
    inputs = [g.context.conversation.split("<LM_INPUT> ")[1].split(" </LM_INPUT>")[0]
              for g in system_prompt.gradients]
    assert inputs == ["question 0", "question 1", "question 2"]


def test_backward_without_an_engine_says_how_to_give_one():
    loss = tp.Variable("bad", role_description="loss")
    with pytest.raises(MissingEngineError, match=r"loss.backward\(engine\)"):
        loss.backward()


def test_an_engine_error_during_backward_propagates_unwrapped():
    engine = feedback_engine()
    engine._rules.insert(0, type(engine._rules[0])(
        lambda r: r.role == "backward", RuntimeError("provider down"), None))
    with pytest.raises(RuntimeError, match="provider down"):
        run_batch(engine)


def test_async_backward_is_awaitable_inside_a_running_loop():
    engine = feedback_engine()
    system_prompt = tp.Variable("Count.", role_description="system prompt")
    question = tp.Variable("q", role_description="question", requires_grad=False)

    async def pipeline() -> None:
        answer = await tp.BlackboxLLM(engine, system_prompt).aforward(question)
        loss = await tp.TextLoss("Correct?", engine).aforward(answer)
        await loss.abackward(engine)

    asyncio.run(pipeline())
    assert system_prompt.get_gradient_text() == "Make the system prompt more precise."
