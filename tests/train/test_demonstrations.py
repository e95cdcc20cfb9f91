"""Demonstrations as a parameter: how they are shown to the model, where they come from,
and how the search moves them under the same minibatch gate as the instructions."""

from __future__ import annotations

import json
import re

import pytest

from textprop._sync import run_sync
from textprop.data.dataset import Dataset, Example, Splits
from textprop.demos import Demo, Demonstrations, decode, encode
from textprop.engines.base import Message
from textprop.engines.scripted import ScriptedEngine
from textprop.errors import GraphError
from textprop.ledger import Ledger
from textprop.metrics import get_metric
from textprop.optim import TGD
from textprop.train.pipeline import PromptPipeline
from textprop.train.strategies import ParetoSettings, ParetoStrategy
from textprop.train.strategies.demo_moves import moves
from textprop.train.trainer import Trainer, TrainerSettings

PAIRS = [Demo("What is 1 + 1?", "Answer: 2", "train-0"),
         Demo("What is 2 + 3?", "Answer: 5", "train-1")]


def test_demonstrations_in_the_system_prompt_are_one_block_after_the_instructions():
    engine = ScriptedEngine(default="Answer: 9")
    pipeline = PromptPipeline(engine, "Add the numbers.", demonstrations=PAIRS,
                              template="Q: {input}")
    run_sync(pipeline.aforward(Example("val-0", "What is 4 + 5?", "9")))

    [request] = engine.requests
    assert request.messages == (
        Message("system", "Add the numbers.\n\n"
                          "Here are worked examples of inputs and the outputs expected for them:"
                          "\n\n<EXAMPLE>\nInput: What is 1 + 1?\nOutput: Answer: 2\n</EXAMPLE>"
                          "\n<EXAMPLE>\nInput: What is 2 + 3?\nOutput: Answer: 5\n</EXAMPLE>"),
        Message("user", "Q: What is 4 + 5?"))
    assert list(pipeline.parameters()) == ["system_prompt", "demonstrations"]


def test_demonstrations_as_turns_come_between_the_system_prompt_and_the_question():
    engine = ScriptedEngine(default="Answer: 9")
    pipeline = PromptPipeline(engine, "Add the numbers.", demonstrations=PAIRS,
                              placement="turns")
    run_sync(pipeline.aforward(Example("val-0", "What is 4 + 5?", "9")))

    [request] = engine.requests
    assert request.messages == (
        Message("system", "Add the numbers."),
        Message("user", "What is 1 + 1?"), Message("assistant", "Answer: 2"),
        Message("user", "What is 2 + 3?"), Message("assistant", "Answer: 5"),
        Message("user", "What is 4 + 5?"))


def test_a_demonstrations_value_is_a_json_list_a_diff_can_read():
    text = encode(PAIRS)
    assert decode(text) == PAIRS
    assert text.splitlines()[:3] == ["[", "  {", '    "input": "What is 1 + 1?",']
    with pytest.raises(GraphError, match="JSON list"):
        Demonstrations().set_value("not a list")


def test_demonstrations_receive_their_steps_output_feedback_without_a_call():
    engine = ScriptedEngine()
    engine.on(lambda r: r.role == "forward", "no idea")
    engine.on(lambda r: r.role == "backward", "State the sum.")
    pipeline = PromptPipeline(engine, "Add.", demonstrations=PAIRS)
    example = Example("t", "What is 4 + 5?", "9")
    prediction = run_sync(pipeline.aforward(example))
    from textprop.losses import MetricLoss

    loss = MetricLoss(lambda p, t: (0.0, "expected 9, got 'no idea'"))(prediction, "9")
    loss.backward(engine)

    backward = [r for r in engine.requests if r.role == "backward"]
    assert len(backward) == 1 and "<ROLE> system prompt" in backward[0].prompt
    assert pipeline.demonstrations.get_gradient_text() == "expected 9, got 'no idea'"


# --- the search --------------------------------------------------------------------------
def dataset(name: str, pairs: list[tuple[int, int]]) -> Dataset:
    return Dataset([Example(f"{name}-{i}", f"What is {a} + {b}?", str(a + b))
                    for i, (a, b) in enumerate(pairs)], name)


def even_sums_engine() -> ScriptedEngine:
    """Right exactly when the sum is even, whatever the prompt or the demonstrations."""
    engine = ScriptedEngine()
    engine.on(lambda r: r.role == "optimizer",
              "<IMPROVED_VARIABLE>Be exact.</IMPROVED_VARIABLE>")
    engine.on(lambda r: r.role == "backward", "Give the sum.")

    def forward(request):
        a, b = map(int, re.findall(r"\d+", request.prompt))
        return f"Answer: {a + b}" if (a + b) % 2 == 0 else "Answer: 0"

    engine.on(lambda r: r.role == "forward", forward)
    return engine


TRAIN = [(1, 1), (1, 2), (2, 2), (3, 4), (3, 3), (5, 6)]
VAL = [(10, 10), (10, 11), (12, 12)]


def search(tmp_path, engine, initial=(), **settings):
    pipeline = PromptPipeline(engine, "Add the numbers.", demonstrations=list(initial))
    splits = Splits(dataset("train", TRAIN), dataset("val", VAL), dataset("test", []))
    trainer = Trainer(pipeline, get_metric("numeric"), TGD(pipeline.parameters(), engine=engine),
                      engine, splits, TrainerSettings(), tmp_path / "run",
                      strategy=ParetoStrategy(ParetoSettings(
                          minibatch=2, parallel=1, holdout=0, **settings)))
    return trainer, tmp_path / "run"


def test_demonstrations_only_ever_come_from_training_examples_scored_right(tmp_path):
    engine = even_sums_engine()
    trainer, run_dir = search(tmp_path, engine, demos=2, children=3, max_proposals=6)
    trainer.run()

    ledger = Ledger.in_run(run_dir)
    right = {(r["example_id"], r["prediction"]) for r in ledger.losses()
             if r["score"] == 1.0}
    shown = {(d.source, d.output) for c in ledger.candidates()
             for d in decode(c.values["demonstrations"])}
    assert shown, "some move added a pair"
    assert {source for source, _ in shown} <= {f"train-{i}" for i in range(len(TRAIN))}
    assert shown <= right


def test_demonstration_moves_run_on_the_parents_minibatch_and_a_failed_gate_costs_no_validation(
        tmp_path):
    engine = even_sums_engine()  # demonstrations change nothing: every move fails the gate
    given = Demo("What is 7 + 7?", "Answer: 14", "given")
    trainer, run_dir = search(tmp_path, engine, initial=[given], demos=1, children=3,
                              max_proposals=2)
    trainer.run()

    ledger = Ledger.in_run(run_dir)
    demo_step = ledger.step(2)  # round robin: the instructions first, then the demonstrations
    assert demo_step["search_state"]["components"] == ["demonstrations"]
    moved = [c for c in ledger.candidates() if c.step == 2]
    assert [c.reason.split(" (")[0] for c in moved] == [  # one child of each kind, seeded
        "demonstrations: drop pair 1", "demonstrations: swap pair 1",
        "demonstrations: rewrite the output of pair 1"]
    assert [c.status for c in moved] == ["rejected"] * 3
    assert all(c.minibatch == demo_step["batch"] for c in moved)
    swapped = decode(moved[1].values["demonstrations"])
    assert len(swapped) == 1 and swapped[0].source in {"train-2", "train-4"}  # step 1's right
    rewritten = decode(moved[2].values["demonstrations"])
    assert rewritten == [Demo(given.input, "Be exact.", "given")]  # the optimizer's reply
    val_questions = {f"What is {a} + {b}?" for a, b in VAL}
    assert len([r for r in engine.requests if r.prompt in val_questions]) == len(VAL)


def test_moves_never_show_an_example_of_the_minibatch_and_respect_the_caps():
    import random

    pool = [Demo(f"q{i}", "a" * 40, f"train-{i}") for i in range(4)]
    chosen = moves([], pool, max_pairs=2, max_tokens=None, exclude={"train-0"},
                   rng=random.Random(0), count=10)
    assert {m.kind for m in chosen} == {"add"}
    assert all(m.pairs[-1].source != "train-0" for m in chosen)
    capped = moves([pool[1]], pool, max_pairs=2, max_tokens=pool[1].tokens(), exclude=set(),
                   rng=random.Random(0), count=10)
    assert {m.kind for m in capped} == {"swap", "drop", "rewrite"}  # no room to add one


def test_tgd_adds_the_batchs_right_answers_as_demonstrations(tmp_path):
    engine = even_sums_engine()
    pipeline = PromptPipeline(engine, "Add the numbers.", demonstrations=[])
    splits = Splits(dataset("train", TRAIN), dataset("val", VAL), dataset("test", []))
    from textprop.train.strategies import TGDSettings, TGDStrategy

    trainer = Trainer(pipeline, get_metric("numeric"), TGD(pipeline.parameters(), engine=engine),
                      engine, splits, TrainerSettings(), tmp_path / "run",
                      strategy=TGDStrategy(TGDSettings(batch_size=3, steps_per_epoch=1,
                                                       demos=1)))
    trainer.run()

    [revision_of_demos] = [r for r in Ledger.in_run(tmp_path / "run").revisions(1)
                           if r["name"] == "demonstrations"]
    added = json.loads(revision_of_demos["after"])
    assert len(added) == 1 and added[0]["output"].startswith("Answer: ")


def test_demo_field_target_bootstraps_pairs_from_training_labels_only(tmp_path):
    engine = ScriptedEngine()
    engine.on(lambda r: r.role == "optimizer",
              "<IMPROVED_VARIABLE>Be exact.</IMPROVED_VARIABLE>")
    engine.on(lambda r: r.role == "backward", "Give the sum.")
    engine.on(lambda r: r.role == "forward", "Answer: 0")  # never right: no own outputs
    trainer, run_dir = search(tmp_path, engine, demos=2, children=2, max_proposals=6,
                              demo_field="target")
    trainer.run()

    shown = {(d.source, d.input, d.output) for c in Ledger.in_run(run_dir).candidates()
             for d in decode(c.values["demonstrations"])}
    assert shown, "a move added a labelled pair although no answer was ever right"
    labels = {(f"train-{i}", f"What is {a} + {b}?", str(a + b))
              for i, (a, b) in enumerate(TRAIN)}
    assert shown <= labels


def test_a_demo_field_no_training_example_has_is_one_config_error_before_any_call(tmp_path):
    from textprop.errors import ConfigError
    from textprop.train.build import build_splits
    from textprop.train.config import load_config

    config = tmp_path / "run.toml"
    config.write_text('[task]\nbuiltin = "date_normalization"\n[pipeline]\n'
                      'system_prompt = "Rewrite the date."\n'
                      '[strategy]\nkind = "pareto"\nmax_proposals = 2\ndemos = 2\n'
                      'demo_field = "worked"\n')
    with pytest.raises(ConfigError) as caught:
        build_splits(load_config(config))
    assert caught.value.field == "strategy.demo_field"
    assert "no training example has a field 'worked'" in str(caught.value)
    assert "or 'target'" in str(caught.value)
