"""A task-model reply cut off at its token limit is named as such to the critic and the
writer: a small model's reasoning cut before its answer otherwise reads as a format error."""

from __future__ import annotations

import asyncio
import re

from textprop.data.dataset import Dataset, Example, Splits
from textprop.engines.base import Completion, Request
from textprop.engines.scripted import ScriptedEngine
from textprop.ledger import Ledger
from textprop.metrics import get_metric
from textprop.optim import TGD
from textprop.train.context import Scored
from textprop.train.pipeline import PromptPipeline
from textprop.train.strategies import ParetoSettings, ParetoStrategy
from textprop.train.strategies.pareto import _failures
from textprop.train.trainer import Trainer, TrainerSettings

CUT = ("The reply was cut off at its limit of 40 tokens before it finished; it has to "
       "finish within that limit.")


def answer(request: Request) -> Completion | str:
    """Rambles to the token limit on 1 + 2; answers 3 + 4 after rambling to the limit too
    (a right answer that was cut); answers everything else in a line."""
    a, b = (int(n) for n in re.findall(r"\d+", request.prompt))
    if (a, b) == (1, 2):
        return Completion(text="First, let us restate the question. We want to add",
                          finish_reason="length")
    if (a, b) == (3, 4):
        return Completion(text="Well, 3 and 4 make Answer: 7", finish_reason="length")
    return f"Answer: {a + b}"


def test_a_cut_off_wrong_reply_says_so_in_its_explanation_feedback_and_failure_list(tmp_path):
    engine = ScriptedEngine()
    engine.on(lambda r: r.role == "optimizer", "<IMPROVED_VARIABLE>Answer in one line: "
              "'Answer: <n>'.</IMPROVED_VARIABLE>")
    engine.on(lambda r: r.role == "backward", "Keep the reasoning short.")
    engine.on(lambda r: r.role == "forward", answer)
    pipeline = PromptPipeline(engine, "Think it through.", max_tokens=40)
    data = [Example("t-0", "What is 1 + 2?", "3"), Example("t-1", "What is 3 + 4?", "7")]
    splits = Splits(Dataset(data, "train"),
                    Dataset([Example("v-0", "What is 5 + 6?", "11")], "val"),
                    Dataset([], "test"))
    trainer = Trainer(pipeline, get_metric("numeric"), TGD(pipeline.parameters(),
                                                            engine=engine),
                      engine, splits, TrainerSettings(), tmp_path / "run",
                      strategy=ParetoStrategy(ParetoSettings(minibatch=2, parallel=1,
                                                             max_proposals=1, holdout=0)))
    trainer.run()

    losses = {row["example_id"]: row for row in Ledger.in_run(tmp_path / "run").losses(1)}
    # the wrong reply was cut: the cause first, then the metric's verdict
    assert losses["t-0"]["explanation"] == (
        f"{CUT} expected 3, but the prediction contains no number")
    # the right one was cut too, but the cut did not make it wrong: no note
    assert losses["t-1"]["score"] == 1.0 and CUT not in losses["t-1"]["explanation"]
    # the critic reads the note after the output it was cut from
    [critique] = [r.prompt for r in engine.requests if r.role == "backward"
                  and "We want to add" in r.prompt]
    assert "<LM_OUTPUT> First, let us restate the question. We want to add </LM_OUTPUT>\n\n" \
           + CUT in critique
    # and the writer in the minibatch's failures
    [rewrite] = [r.prompt for r in engine.requests if r.role == "optimizer"]
    assert ("Output: First, let us restate the question. We want to add\nExpected: 3\n"
            f"Why it is wrong: {CUT} expected 3, but the prediction contains no number\n"
            "</EXAMPLE>\n\n"
            "In 1 of these 1 examples the reply was cut off at its token limit before it "
            "reached its answer. The model does not see its limit: what fixes them is a "
            "method that makes its replies shorter, such as fewer and shorter steps, or no "
            "repeating of the question.\n</FAILURES>") in rewrite


def test_failures_without_a_cut_off_reply_carry_no_note_about_length():
    engine = ScriptedEngine().on(lambda r: True, "Answer: 4")
    pipeline = PromptPipeline(engine, "Add.", max_tokens=40)
    wrong = Example("t-0", "What is 1 + 2?", "3")
    prediction = asyncio.run(pipeline.aforward(wrong))
    text = _failures([Scored(wrong, prediction, 0.0, "expected 3, got 4")], limit=5)
    assert "cut off" not in text and text.endswith("Why it is wrong: expected 3, got 4\n"
                                                   "</EXAMPLE>")
