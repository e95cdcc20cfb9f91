"""The pareto strategy: pool and front, parent selection, the gate, merge, the metric-call
budget, the final pick, and the exact prompts of one mutation of a two-step pipeline."""

from __future__ import annotations

import random
import zlib
from pathlib import Path

import pytest

from textprop.data.dataset import Dataset, Example, Splits
from textprop.engines.scripted import ScriptedEngine
from textprop.errors import ConfigError, ContextWindowError, EngineError
from textprop.ledger import Ledger
from textprop.metrics import get_metric
from textprop.optim import TGD
from textprop.prompts import render
from textprop.train.strategies import ParetoSettings, ParetoStrategy
from textprop.train.strategies.evidence import paired_lead
from textprop.train.strategies.merge import combine, find_merge
from textprop.train.strategies.pool import Candidate, Pool
from textprop.train.strategies.selection import current_best, epsilon_greedy, pareto
from textprop.train.trainer import Trainer, TrainerSettings

from .two_step import TwoStepPipeline


def pool_of(**scores: list[float]) -> Pool:
    """Candidates 0, 1, ... in keyword order, scored on examples e0, e1, ..."""
    return Pool(Candidate(i, {"p": name}, {f"e{j}": s for j, s in enumerate(row)})
                for i, (name, row) in enumerate(scores.items()))


# --- the front and parent selection ---------------------------------------------------------
def test_the_front_holds_every_best_candidate_per_example_and_drops_the_dominated():
    pool = pool_of(seed=[0, 0, 0, 0], a=[1, 1, 0, 0], b=[0, 1, 1, 0], c=[0, 1, 0, 0])

    assert pool.front() == {"e0": [1], "e1": [1, 2, 3], "e2": [2], "e3": [0, 1, 2, 3]}
    # c is best only where a or b are too; the seed only where everyone ties
    assert pool.leaders() == {1: 3, 2: 3}


def test_pareto_selection_samples_front_candidates_by_the_examples_they_lead():
    pool = pool_of(seed=[0, 0, 0, 0, 0], a=[1, 1, 1, 0, 0], b=[0, 0, 0, 1, 0])
    rng = random.Random(7)

    picks = [pareto(pool, rng) for _ in range(12)]

    # e4, where all tie at 0, counts for both survivors; the seed is dominated everywhere
    assert pool.leaders() == {1: 4, 2: 2}
    assert picks == [1, 1, 1, 2, 1, 1, 2, 1, 1, 2, 1, 2]
    assert 0 not in picks


def test_current_best_and_epsilon_greedy_selection():
    pool = pool_of(seed=[0, 0], a=[1, 0], b=[1, 1])
    assert current_best(pool, random.Random(0)) == 2
    picks = [epsilon_greedy(0.5)(pool, random.Random(s)) for s in range(8)]
    assert picks == [2, 0, 2, 2, 0, 2, 2, 0]  # a random member when rng < 0.5
    assert [epsilon_greedy(0.0)(pool, random.Random(s)) for s in range(4)] == [2, 2, 2, 2]


# --- merge -----------------------------------------------------------------------------------
def test_merge_takes_from_each_parent_the_parameter_it_changed():
    pool = Pool([
        Candidate(0, {"plan": "P0", "answer": "A0"}, {"e0": 0, "e1": 0}),
        Candidate(1, {"plan": "P1", "answer": "A0"}, {"e0": 1, "e1": 0}, [0]),
        Candidate(2, {"plan": "P0", "answer": "A2"}, {"e0": 0, "e1": 1}, [0]),
    ])
    merge = combine(pool, 1, 2, 0)
    assert merge.values == {"plan": "P1", "answer": "A2"}
    assert merge.taken == {"plan": 1, "answer": 2}


def test_merge_needs_one_sided_changes_and_a_common_ancestor():
    pool = Pool([
        Candidate(0, {"plan": "P0", "answer": "A0"}, {"e0": 0}),
        Candidate(1, {"plan": "P1", "answer": "A1"}, {"e0": 1}, [0]),
        Candidate(2, {"plan": "P2", "answer": "A2"}, {"e0": 1}, [0]),
    ])
    assert combine(pool, 1, 2, 0) is None  # both changed everything: nothing to combine
    lineage = {0: [], 1: [0], 2: [1]}  # 2 descends from 1: not a merge
    assert find_merge(pool, lineage, [1, 2], set(), random.Random(0)) is None


# --- runs on a scripted engine ---------------------------------------------------------------
def dataset(name: str, pairs: list[tuple[int, int]]) -> Dataset:
    return Dataset([Example(f"{name}-{i}", f"What is {a} + {b}?", str(a + b))
                    for i, (a, b) in enumerate(pairs)], name)


LISTED = "List the numbers to add."
SUM_ONLY = "Add the listed numbers; reply with the sum only."


def arithmetic_engine(*, plan_rewrite: str | Exception = LISTED,
                      answer_rewrite: str = SUM_ONLY) -> ScriptedEngine:
    """Right answers only once the plan lists the numbers and the answer step adds them."""
    engine = ScriptedEngine()
    engine.on(lambda r: r.role == "optimizer" and "planning step</ROLE>" in r.prompt,
              plan_rewrite if isinstance(plan_rewrite, Exception)
              else f"<IMPROVED_VARIABLE>{plan_rewrite}</IMPROVED_VARIABLE>")
    engine.on(lambda r: r.role == "optimizer",
              f"<IMPROVED_VARIABLE>{answer_rewrite}</IMPROVED_VARIABLE>")
    engine.on(lambda r: r.role == "backward", "Say the sum as a number.")
    engine.on(lambda r: r.system_prompt == LISTED,
              lambda r: "numbers: " + r.prompt.removeprefix("What is ").removesuffix("?"))
    engine.on(lambda r: r.system_prompt == SUM_ONLY and r.prompt.startswith("numbers:"),
              lambda r: str(sum(int(x) for x in r.prompt.removeprefix("numbers: ")
                                .split(" + "))))
    engine.on(lambda r: r.system_prompt == "Make a plan.", "Plan: think.")
    engine.on(lambda r: r.role == "forward", "I do not know.")
    return engine


def two_step_run(tmp_path: Path, engine: ScriptedEngine, *, train, val, test=(),
                 max_metric_calls: int | None = None, approval: bool = False,
                 **settings) -> tuple[Trainer, Path]:
    pipeline = TwoStepPipeline(engine, "Make a plan.", "Answer.")
    splits = Splits(dataset("train", train), dataset("val", val), dataset("test", list(test)))
    run_dir = tmp_path / "run"
    trainer = Trainer(pipeline, get_metric("numeric"), TGD(pipeline.parameters(), engine=engine),
                      engine, splits, TrainerSettings(max_metric_calls=max_metric_calls,
                                                      approval=approval),
                      run_dir, strategy=ParetoStrategy(ParetoSettings(**settings)))
    return trainer, run_dir


PLAN_UPDATE_PROMPT = """\
Here is the role of the variable you will improve: <ROLE>system prompt of the planning step</ROLE>.

The variable is the text within the following span: <VARIABLE> Make a plan. </VARIABLE>

Here is the context and feedback we got for the variable:

<CONTEXT>Here is a conversation:

<CONVERSATION><LM_SYSTEM_PROMPT> Make a plan. </LM_SYSTEM_PROMPT>

<LM_INPUT> What is 1 + 2? </LM_INPUT>

<LM_OUTPUT> Plan: think. </LM_OUTPUT>

<LM_SYSTEM_PROMPT> Make a plan. </LM_SYSTEM_PROMPT>

<LM_INPUT> What is 5 + 6? </LM_INPUT>

<LM_OUTPUT> Plan: think. </LM_OUTPUT></CONVERSATION>

What was wrong with the output, according to the evaluation downstream:

<OUTPUT_FEEDBACK>Say the sum as a number.
Say the sum as a number.</OUTPUT_FEEDBACK>

This conversation is potentially part of a larger system. The output is used as plan for \
answering the question

Here is the feedback we got for system prompt of the planning step in the conversation:

<FEEDBACK>Say the sum as a number.</FEEDBACK></CONTEXT>

Improve the variable (system prompt of the planning step) using the feedback provided in \
<FEEDBACK> tags.

Here are examples from the batch that went wrong with the current system prompt of the \
planning step: the input, the output it led to, what was expected, and why the output was \
judged wrong. The improved variable should fix these cases without naming them:

<FAILURES>
<EXAMPLE>
Input: What is 1 + 2?
Output: I do not know.
Expected: 3
Why it is wrong: expected 3, but the prediction contains no number
</EXAMPLE>
<EXAMPLE>
Input: What is 5 + 6?
Output: I do not know.
Expected: 11
Why it is wrong: expected 11, but the prediction contains no number
</EXAMPLE>
</FAILURES>

Send the improved variable in the following format:

<IMPROVED_VARIABLE>{the improved variable}</IMPROVED_VARIABLE>

Send ONLY the improved variable between the <IMPROVED_VARIABLE> tags, and nothing else."""


def test_one_mutation_of_a_two_step_pipeline_sends_feedback_to_both_prompts(tmp_path):
    engine = arithmetic_engine()
    # two validation examples are too few to show a lead beyond noise: take the best
    trainer, run_dir = two_step_run(tmp_path, engine, train=[(1, 2), (3, 4), (5, 6)],
                                    val=[(2, 2), (4, 4)], minibatch=2, components="all",
                                    parallel=1, max_proposals=1, holdout=0,
                                    final_significance=1)

    result = trainer.run()

    backward = [r for r in engine.requests if r.role == "backward"]
    targets = [r.prompt.split("</ROLE>")[0].split("<ROLE>")[1].strip() for r in backward]
    # per example: the answer step's prompt and its input (the plan); condensed; then the
    # planning step's prompt from the feedback on its output, per example, condensed
    assert targets == ["system prompt of the answering step", "plan for answering the question",
                       "system prompt of the answering step", "plan for answering the question",
                       "system prompt of the answering step",
                       "system prompt of the planning step", "system prompt of the planning step",
                       "system prompt of the planning step"]
    assert "expected 3, but the prediction contains no number" in backward[0].prompt
    assert "<LM_INPUT> What is 1 + 2? </LM_INPUT>" in backward[5].prompt
    assert "following feedback on the output of this step: Say the sum as a number." \
        in backward[5].prompt
    updates = engine.prompts("optimizer")  # both rewrites are asked side by side
    [plan_update] = [u for u in updates if "planning step</ROLE>" in u]
    [answer_update] = [u for u in updates if u is not plan_update]
    assert plan_update == PLAN_UPDATE_PROMPT
    assert "<ROLE>system prompt of the answering step</ROLE>" in answer_update
    assert result.values == {"plan": LISTED, "answer": SUM_ONLY}
    [seed, child] = Ledger.in_run(run_dir).candidates()
    assert (child.origin, child.parents, child.status) == ("mutation", [0], "accepted")
    assert child.changed == ["plan", "answer"]
    assert (child.gate_before, child.gate_after, child.val_score) == (0.0, 1.0, 1.0)


def test_a_child_that_fails_the_gate_costs_no_validation_call(tmp_path):
    engine = arithmetic_engine(answer_rewrite="Answer politely.")  # still no number
    trainer, run_dir = two_step_run(tmp_path, engine, train=[(1, 2), (3, 4)],
                                    val=[(2, 2), (4, 4), (6, 6)], minibatch=2,
                                    components="round_robin", parallel=1, max_proposals=2,
                                    holdout=0)

    trainer.run()

    ledger = Ledger.in_run(run_dir)
    steps = {s["step"]: s for s in ledger.steps()}
    candidates = ledger.candidates()
    # step 1 rewrites the plan (round robin) and passes; step 2 rewrites the answer, fails
    assert [(c.id, c.changed, c.status) for c in candidates] == [
        (0, [], "seed"), (1, ["plan"], "rejected"), (2, ["answer"], "rejected")]
    assert steps[1]["status"] == steps[2]["status"] == "rejected"
    val_questions = {f"What is {a} + {b}?" for a, b in [(2, 2), (4, 4), (6, 6)]}
    asked = [r.prompt for r in engine.requests if r.role == "forward"
             and r.prompt in val_questions]
    assert len(asked) == 3  # the baseline's validation only
    assert ledger.evaluations(1) == [] and ledger.evaluations(2) == []


def test_max_metric_calls_stops_the_search_exactly(tmp_path):
    engine = arithmetic_engine(answer_rewrite="Answer politely.")
    # per proposal at most 2 (parent) + 2 (child) + 3 (validation) = 7; baseline 3
    trainer, run_dir = two_step_run(tmp_path, engine, train=[(1, 2), (3, 4), (5, 6), (7, 8)],
                                    val=[(2, 2), (4, 4), (6, 6)], minibatch=2, parallel=1,
                                    holdout=0, max_metric_calls=3 + 4 * 4 + 3,
                                    max_tried=0)  # the same rewrite gated every time

    result = trainer.run()

    planning_calls = [r for r in engine.requests if r.role == "forward"
                      and r.prompt.startswith("What is")]
    steps = Ledger.in_run(run_dir).steps()
    # every gate fails (4 runs each); four proposals fit, a fifth could not be validated
    assert [s["status"] for s in steps] == ["baseline"] + ["rejected"] * 4 + ["final"]
    assert result.status == "budget_spent"
    assert result.metric_calls == 3 + 4 * 4 == len(planning_calls)
    assert Ledger.in_run(run_dir).meta()["final"]["metric_calls"] == 19


def rewriting_engine(plan_rewrites: list[str], answer_rewrite: str) -> ScriptedEngine:
    """Rewrites that never help: the plan's in the order given, then the last one forever."""
    engine = ScriptedEngine()
    def plan(r):
        return r.role == "optimizer" and "planning step</ROLE>" in r.messages[1].content
    for text in plan_rewrites[:-1]:
        engine.on(plan, f"<IMPROVED_VARIABLE>{text}</IMPROVED_VARIABLE>", times=1)
    engine.on(plan, f"<IMPROVED_VARIABLE>{plan_rewrites[-1]}</IMPROVED_VARIABLE>")
    engine.on(lambda r: r.role == "optimizer",
              f"<IMPROVED_VARIABLE>{answer_rewrite}</IMPROVED_VARIABLE>")
    engine.on(lambda r: r.role == "backward", "Say the sum as a number.")
    engine.on(lambda r: r.role == "forward", "I do not know.")
    return engine


TRIED_PLAN_SECTION = """\
These versions of the system prompt of the planning step were already tried in place of \
the current one and did not do better on such examples. Do not propose any of them again; \
make a different change:

<TRIED>
<TRIED-1> Plan more. </TRIED-1>
</TRIED>"""


def test_a_rewrite_that_repeats_a_rejected_one_is_asked_again_and_never_gated_twice(tmp_path):
    engine = rewriting_engine(["Plan more."], "Answer politely.")
    # round robin: step 1 rewrites the plan, step 2 the answer, step 3 the plan again
    trainer, run_dir = two_step_run(tmp_path, engine, train=[(1, 2), (3, 4), (5, 6), (7, 8)],
                                    val=[(2, 2)], minibatch=2, parallel=1, max_proposals=3,
                                    holdout=0)

    result = trainer.run()

    plan_updates = [r for r in engine.requests  # the first user message asks for the rewrite
                    if r.role == "optimizer" and "planning step</ROLE>" in r.messages[1].content]
    first, *again = plan_updates
    assert "<TRIED>" not in first.prompt  # step 1: nothing tried yet
    # step 3: shown the rejected rewrite; it repeats it, is asked twice more, then gives up
    assert len(again) == 3 and TRIED_PLAN_SECTION in again[0].prompt
    assert [r.messages[-1].content for r in again[1:]] == [render("optimizer_repeated")] * 2
    assert all(r.temperature > 0 for r in again[1:])  # seeded sampling, not greedy repeats
    candidates = Ledger.in_run(run_dir).candidates()
    assert [(c.id, c.changed, c.status) for c in candidates] == [
        (0, [], "seed"), (1, ["plan"], "rejected"), (2, ["answer"], "rejected"),
        (3, [], "unchanged")]
    assert candidates[3].reason == "plan: every rewrite repeated one already tried"
    # baseline 1; steps 1 and 2: parent 2 + child 2; step 3: the parent's minibatch only
    assert result.metric_calls == 1 + 4 + 4 + 2


def test_a_rewrite_request_too_long_for_the_writer_ends_that_proposal_not_the_search(tmp_path):
    engine = arithmetic_engine(plan_rewrite=ContextWindowError(
        "Requested tokens (4142) exceed context window of 4096"))
    # round robin: step 1 rewrites the plan (too long for the writer), step 2 the answer
    trainer, run_dir = two_step_run(tmp_path, engine, train=[(1, 2), (5, 6)], val=[(2, 2)],
                                    minibatch=2, parallel=1, max_proposals=2, holdout=0)

    result = trainer.run()

    plan_updates = [r for r in engine.requests
                    if r.role == "optimizer" and "planning step</ROLE>" in r.prompt]
    assert len(plan_updates) == 1  # not asked again: a retry's turns only make it longer
    candidates = Ledger.in_run(run_dir).candidates()
    assert [(c.id, c.changed, c.status) for c in candidates] == [
        (0, [], "seed"), (1, [], "unchanged"), (2, ["answer"], "rejected")]
    assert candidates[1].reason == (
        "plan: the rewrite request did not fit the writer's context window: Requested tokens "
        "(4142) exceed context window of 4096")
    assert result.status == "finished"


def test_a_child_equal_to_a_rejected_candidate_is_filed_as_a_duplicate_without_a_gate(tmp_path):
    # the prompt shows only the newest rejected plan (max_tried = 1), so the writer's return
    # to its first rewrite is caught by the values, not by the prompt
    engine = rewriting_engine(["Plan A.", "Plan B.", "Plan A."], "Answer politely.")
    trainer, run_dir = two_step_run(tmp_path, engine, train=[(1, 2), (3, 4), (5, 6), (7, 8)],
                                    val=[(2, 2)], minibatch=2, parallel=1, max_proposals=5,
                                    holdout=0, max_tried=1)

    result = trainer.run()

    candidates = Ledger.in_run(run_dir).candidates()
    assert [(c.id, c.values["plan"], c.status) for c in candidates] == [
        (0, "Make a plan.", "seed"), (1, "Plan A.", "rejected"), (2, "Make a plan.", "rejected"),
        (3, "Plan B.", "rejected"), (4, "Make a plan.", "unchanged"),
        (5, "Plan A.", "duplicate")]
    assert candidates[5].reason == "the same values as candidate 1, which failed the gate"
    step5_plan_update = [r for r in engine.requests if r.role == "optimizer"
                         and "planning step</ROLE>" in r.prompt][-1]
    assert "<TRIED-1> Plan B. </TRIED-1>" in step5_plan_update.prompt
    assert "Plan A." not in step5_plan_update.prompt.split("<TRIED>")[1]
    # baseline 1; steps 1-3: parent 2 + child 2; steps 4 and 5: the parent's minibatch only
    assert result.metric_calls == 1 + 3 * 4 + 2 * 2


def test_the_final_pick_is_rescored_on_validation_the_search_never_saw(tmp_path):
    engine = arithmetic_engine()
    trainer, run_dir = two_step_run(tmp_path, engine, train=[(1, 2), (3, 4)],
                                    val=[(2, 2), (4, 4), (6, 6), (1, 1)], minibatch=2,
                                    components="all", parallel=1, max_proposals=1,
                                    holdout=0.5, final_candidates=2)

    result = trainer.run()

    ledger = Ledger.in_run(run_dir)
    final = ledger.steps()[-1]
    summary = final["search_state"]["final"]
    assert final["status"] == "final" and summary["pick"] == 1
    assert [c["id"] for c in summary["candidates"]] == [1, 0]
    assert [len(c["holdout_per_example"]) for c in summary["candidates"]] == [2, 2]
    assert [c["full_val"] for c in summary["candidates"]] == [1.0, 0.0]
    assert "2 of them held back from the search" in final["reason"]
    assert len(ledger.candidates()[1].val_per_example) == 2  # the search's half only
    assert result.best_val == 1.0 and result.values["answer"] == SUM_ONLY
    # 4 to 0 is a one-sided sign test's p = 1/16, within the default 0.1
    assert summary["evidence"] == {"candidate": 1, "wins": 4, "losses": 0, "p_value": 0.0625,
                                   "significance": 0.1, "kept_start": False}
    assert final["reason"].endswith(
        "; candidate 1 led the starting values 4 to 0 on 4 validation examples (one-sided "
        "sign test p = 0.0625), within final_significance 0.1")


def test_a_final_pick_whose_lead_is_within_noise_leaves_the_starting_values(tmp_path):
    engine = arithmetic_engine()
    trainer, run_dir = two_step_run(tmp_path, engine, train=[(1, 2), (3, 4)],
                                    val=[(2, 2), (4, 4), (6, 6)], minibatch=2,
                                    components="all", parallel=1, max_proposals=1, holdout=0)

    result = trainer.run()

    ledger = Ledger.in_run(run_dir)
    assert ledger.candidates()[1].status == "accepted"  # the search found a better child
    final = ledger.steps()[-1]
    summary = final["search_state"]["final"]
    assert summary["pick"] == 0 and summary["evidence"]["kept_start"] is True
    assert final["reason"] == (
        "candidate 0 (validation 0.000): the best of the top 2 by validation over all 3 "
        "validation examples, 0 of them held back from the search; candidate 1 led the "
        "starting values 3 to 0 on 3 validation examples (one-sided sign test p = 0.125), "
        "above final_significance 0.1: within noise, so the starting values stay")
    assert final["values"] == {"plan": "Make a plan.", "answer": "Answer."}
    assert result.values == {"plan": "Make a plan.", "answer": "Answer."}
    assert result.best_val == 0.0


def test_the_sign_test_counts_only_the_examples_where_the_two_differ():
    lead = paired_lead({"a": 1, "b": 1, "c": 0, "d": 1, "e": 0.5},
                       {"a": 0, "b": 1, "c": 1, "d": 0, "e": 0.0, "f": 1})
    assert (lead.wins, lead.losses) == (3, 1)  # b ties; f was not scored for both
    assert lead.p_value == 5 / 16  # P(at least 3 of 4 fair coin flips)
    assert paired_lead({"a": 1}, {"a": 1}).p_value == 1.0
    assert paired_lead({}, {}).p_value == 1.0
    assert paired_lead({f"e{i}": 1 for i in range(5)},
                       {f"e{i}": 0 for i in range(5)}).p_value == 1 / 32


def test_final_significance_must_be_a_level_above_zero():
    with pytest.raises(ConfigError, match="strategy.final_significance is out of range"):
        ParetoSettings(final_significance=0)


def test_approval_holds_the_final_pick_until_a_reviewer_decides(tmp_path):
    engine = arithmetic_engine()
    trainer, run_dir = two_step_run(tmp_path, engine, train=[(1, 2), (3, 4)],
                                    val=[(2, 2), (4, 4)], minibatch=2, components="all",
                                    parallel=1, max_proposals=1, holdout=0, approval=True,
                                    final_significance=1)

    waiting = trainer.run()
    assert waiting.status == "awaiting_approval"
    assert waiting.values == {"plan": "Make a plan.", "answer": "Answer."}
    Ledger.in_run(run_dir).decide(2, "approved")

    resumed, _ = two_step_run(tmp_path, engine, train=[(1, 2), (3, 4)], val=[(2, 2), (4, 4)],
                              minibatch=2, components="all", parallel=1, max_proposals=1,
                              holdout=0, approval=True, final_significance=1)
    result = resumed.run(resume=True)

    assert result.status == "finished" and result.values == {"plan": LISTED, "answer": SUM_ONLY}
    assert Ledger.in_run(run_dir).step(2)["status"] == "final"


def test_the_search_must_be_bounded_and_an_unbounded_one_leaves_no_run_folder(tmp_path):
    engine = ScriptedEngine(default="x")
    with pytest.raises(ConfigError, match="needs a bound"):
        two_step_run(tmp_path, engine, train=[(1, 1)], val=[(1, 1)])
    assert not (tmp_path / "run").exists()


def test_a_child_the_budget_cannot_validate_is_recorded_and_not_validated(tmp_path):
    from textprop.train.pipeline import PromptPipeline

    from .fake_pipeline import reply

    engine = ScriptedEngine()
    # every rewrite works, and each minibatch's rewrite reads differently
    engine.on(lambda r: r.role == "optimizer", lambda r: "<IMPROVED_VARIABLE>End with "
              f"'Answer: <n>' ({zlib.crc32(r.prompt.encode())}).</IMPROVED_VARIABLE>")
    engine.on(lambda r: True, lambda r: reply(r.system_prompt or "", r.prompt, False))
    pipeline = PromptPipeline(engine, "Be brief.")
    splits = Splits(dataset("train", [(1, 2), (3, 4), (15, 16), (17, 18)]),
                    dataset("val", [(2, 2), (4, 4)]), dataset("test", []))
    # baseline 2; each proposal starts only if 4 + 2 remain: two start, one validation fits
    trainer = Trainer(pipeline, get_metric("numeric"), TGD(pipeline.parameters(), engine=engine),
                      engine, splits, TrainerSettings(max_metric_calls=12), tmp_path / "run",
                      strategy=ParetoStrategy(ParetoSettings(minibatch=2, parallel=2,
                                                             holdout=0)))
    result = trainer.run()

    candidates = Ledger.in_run(tmp_path / "run").candidates()
    assert [c.status for c in candidates] == ["seed", "accepted", "unvalidated"]
    assert candidates[2].reason.endswith("the metric-call budget cannot pay for its validation")
    assert candidates[2].val_score is None
    assert result.metric_calls == 2 + 4 + 2 + 4 and result.status == "budget_spent"


class Unclonable:
    """A user's pipeline with no clone(): the search must run one candidate at a time."""

    def __init__(self, inner: TwoStepPipeline) -> None:
        self.inner = inner

    def parameters(self):
        return self.inner.parameters()

    async def aforward(self, example):
        return await self.inner.aforward(example)


def test_a_pipeline_without_clone_is_searched_one_candidate_at_a_time(tmp_path):
    engine = arithmetic_engine()
    pipeline = Unclonable(TwoStepPipeline(engine, "Make a plan.", "Answer."))
    splits = Splits(dataset("train", [(1, 2), (3, 4)]), dataset("val", [(2, 2), (4, 4)]),
                    dataset("test", []))

    def trainer(**settings):
        return Trainer(pipeline, get_metric("numeric"),
                       TGD(pipeline.parameters(), engine=engine), engine, splits,
                       TrainerSettings(), tmp_path / "run", strategy=ParetoStrategy(
                           ParetoSettings(minibatch=2, components="all", max_proposals=1,
                                          holdout=0.5, final_significance=1, **settings)))

    with pytest.raises(ConfigError, match="without clone"):
        trainer(parallel=2)
    assert not (tmp_path / "run").exists()
    result = trainer(parallel=1).run()
    assert result.values == {"plan": LISTED, "answer": SUM_ONLY}


# --- parents with nothing more to give ------------------------------------------------------
def echoing_engine(fail_at: int | None = None) -> ScriptedEngine:
    """The writer turns "Answer." into "Answer carefully." (which answers 4 to everything),
    and has nothing to add to that or to the plan: it sends them back unchanged. With
    `fail_at`, its answer rewrite number `fail_at` fails (the run stops there)."""
    engine = ScriptedEngine()
    asked = []

    def answer_rewrite(request):
        asked.append(request)
        if len(asked) == fail_at:
            raise EngineError("the writer's server went away", provider="scripted")
        return "<IMPROVED_VARIABLE>Answer carefully.</IMPROVED_VARIABLE>"
    engine.on(lambda r: r.role == "optimizer" and "planning step</ROLE>" in r.messages[1].content,
              "<IMPROVED_VARIABLE>Make a plan.</IMPROVED_VARIABLE>")
    engine.on(lambda r: r.role == "optimizer" and "<VARIABLE> Answer. </VARIABLE>"
              in r.messages[1].content, answer_rewrite)
    engine.on(lambda r: r.role == "optimizer",
              "<IMPROVED_VARIABLE>Answer carefully.</IMPROVED_VARIABLE>")
    engine.on(lambda r: r.role == "backward", "Say the sum as a number.")
    engine.on(lambda r: r.system_prompt == "Answer carefully.", "4")
    engine.on(lambda r: r.system_prompt == "Make a plan.", "Plan: think.")
    engine.on(lambda r: r.role == "forward", "I do not know.")
    return engine


ECHO_RUN = dict(train=[(2, 2), (1, 2), (5, 6), (7, 8)], val=[(2, 2), (1, 1)], minibatch=2,
                components="all", parallel=1, holdout=0, selection="current_best",
                gate="non_decrease", max_proposals=5)


def parents_and_left_out(run_dir: Path) -> list[tuple[int, list[int]]]:
    return [(s["search_state"]["parent"], s["search_state"].get("left_out", []))
            for s in Ledger.in_run(run_dir).steps() if "parent" in s["search_state"]]


def test_a_parent_that_proposed_nothing_new_twice_is_not_picked_while_another_can_be(tmp_path):
    trainer, run_dir = two_step_run(tmp_path, echoing_engine(), **ECHO_RUN)

    trainer.run()

    # candidate 1 ("Answer carefully.") is the best; the writer sends it back unchanged at
    # steps 2 and 3, so steps 4 and 5 start from the seed, whose rewrite is candidate 1 again
    assert parents_and_left_out(run_dir) == [(0, []), (1, []), (1, []), (0, [1]), (0, [1])]
    assert [c.status for c in Ledger.in_run(run_dir).candidates()] == [
        "seed", "accepted", "unchanged", "unchanged", "duplicate", "duplicate"]
    assert Ledger.in_run(run_dir).step(4)["reason"] == (  # what `textprop history` shows
        "from candidate 0: no new values were proposed; not picked as parent: candidate 1 "
        "(nothing new in the last 2 mutations)")
    # with both left out, the rule gives way: every candidate may be picked again
    trainer, run_dir = two_step_run(tmp_path / "six", echoing_engine(),
                                    **{**ECHO_RUN, "max_proposals": 6})
    trainer.run()
    assert parents_and_left_out(run_dir)[-1] == (1, [])


def test_max_fruitless_zero_keeps_picking_the_best_parent(tmp_path):
    trainer, run_dir = two_step_run(tmp_path, echoing_engine(), **ECHO_RUN, max_fruitless=0)

    trainer.run()

    assert parents_and_left_out(run_dir) == [(0, []), (1, []), (1, []), (1, []), (1, [])]


def test_a_resumed_search_remembers_which_parents_proposed_nothing(tmp_path):
    trainer, run_dir = two_step_run(tmp_path, echoing_engine(fail_at=2), **ECHO_RUN)
    with pytest.raises(EngineError, match="went away"):
        trainer.run()  # the seed's second answer rewrite (step 4) fails
    assert len(parents_and_left_out(run_dir)) == 3

    resumed, _ = two_step_run(tmp_path, echoing_engine(), **ECHO_RUN)
    resumed.run(resume=True)

    assert parents_and_left_out(run_dir) == [(0, []), (1, []), (1, []), (0, [1]), (0, [1])]
