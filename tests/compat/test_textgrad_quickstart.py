"""TextGrad's README quick start, unchanged but for `import textprop as tg` and the engine."""

from __future__ import annotations

import pytest

import textprop as tg
from textprop.engines.scripted import ScriptedEngine


@pytest.fixture
def global_engine_reset():
    yield
    tg.SingletonBackwardEngine().set_engine(None, override=True)


def test_textgrad_quick_start_runs_with_one_changed_import(global_engine_reset):
    engine = ScriptedEngine()
    engine.on(lambda r: r.role == "forward",
              "So, it will take 1.2 hours (or 1 hour and 12 minutes) to dry 30 shirts.")
    engine.on(lambda r: r.role == "loss",
              "The reasoning wrongly assumes drying time is proportional to the number of "
              "shirts.")
    engine.on(lambda r: r.role == "backward",
              "Shirts dry in parallel; the time does not depend on their number.")
    engine.on(lambda r: r.role == "optimizer",
              "<IMPROVED_VARIABLE>It will still take 1 hour to dry 30 shirts under the sun, "
              "assuming they are all laid out properly to receive equal sunlight."
              "</IMPROVED_VARIABLE>")

    # --- TextGrad's README, with "gpt-4o" replaced by the scripted engine ---
    tg.set_backward_engine(engine, override=True)

    model = tg.BlackboxLLM(engine)
    question_string = ("If it takes 1 hour to dry 25 shirts under the sun, "
                       "how long will it take to dry 30 shirts under the sun? "
                       "Reason step by step")

    question = tg.Variable(question_string,
                           role_description="question to the LLM",
                           requires_grad=False)

    answer = model(question)
    answer.set_role_description("concise and accurate answer to the question")

    optimizer = tg.TGD(parameters=[answer])
    evaluation_instruction = (f"Here's a question: {question_string}. "
                              "Evaluate any given answer to this question, "
                              "be smart, logical, and very critical. "
                              "Just provide concise feedback.")

    loss_fn = tg.TextLoss(evaluation_instruction)
    loss = loss_fn(answer)
    loss.backward()
    optimizer.step()
    # --- end of the README ---

    assert answer.value == ("It will still take 1 hour to dry 30 shirts under the sun, assuming "
                            "they are all laid out properly to receive equal sunlight.")
    assert [r.role for r in engine.requests] == ["forward", "loss", "backward", "optimizer"]
    assert engine.requests[1].system_prompt == evaluation_instruction
    assert "<ROLE> concise and accurate answer to the question </ROLE>" in \
        engine.requests[2].prompt


def test_the_textgrad_names_exist():
    from textprop.autograd import FormattedLLMCall, LLMCall, StringBasedFunction  # noqa: F401
    from textprop.engine import EngineLM, get_engine  # noqa: F401
    from textprop.loss import MultiFieldEvaluation, TextLoss  # noqa: F401
    from textprop.optimizer import TGD, TextualGradientDescent  # noqa: F401

    for name in ("Variable", "BlackboxLLM", "TextLoss", "TGD", "TextualGradientDescent",
                 "sum", "set_backward_engine", "get_engine", "EngineLM"):
        assert hasattr(tg, name), name
    assert tg.autograd.FormattedLLMCall is FormattedLLMCall
    assert tg.loss.MultiFieldEvaluation is MultiFieldEvaluation


def test_a_textgrad_style_custom_engine_works_everywhere():
    class Echo(tg.EngineLM):
        def generate(self, prompt, system_prompt=None, **kwargs):
            return "<IMPROVED_VARIABLE>improved</IMPROVED_VARIABLE>" if system_prompt and \
                "optimization system that improves text" in system_prompt else f"echo: {prompt}"

    engine = Echo()
    evaluation = tg.MultiFieldEvaluation(
        tg.Variable("Compare.", role_description="instruction", requires_grad=False),
        ["prediction", "correct answer"], engine=engine)
    prediction = tg.Variable("5", role_description="prediction")
    target = tg.Variable("4", role_description="target", requires_grad=False)
    loss = evaluation([prediction, target])
    loss.backward(engine)
    tg.TGD([prediction], engine=engine).step()

    assert loss.value == "echo: Compare.\n**prediction**: 5\n**correct answer**: 4"
    assert prediction.value == "improved"
    assert target.role_description == "target"  # not overwritten, unlike TextGrad
