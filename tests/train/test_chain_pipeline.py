"""`[pipeline] kind = "chain"` and `kind = "python"` through `textprop optimize`, against
the OpenAI-compatible test server (which sees every request sent), and the errors a bad
pipeline config gives before any call and before any run folder exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from textprop.cli import main
from textprop.ledger import Ledger
from textprop.testing.server import TestServer

from .chain_model import DRAFT, LISTED, PLAN, STEPS, TO_OTHERS, TO_PLAN, server_reply
from .fake_pipeline import write_run_config

PLAN_ROLE = "system prompt of the 'plan' step of the pipeline"

# The feedback request for the first step's system prompt, on the first training example:
# it carries what the draft step's output was told, which came from the metric's verdict on
# the polished answer two steps later.
PLAN_FEEDBACK_PROMPT = f"""\
You will give feedback to a variable with the following role: <ROLE> {PLAN_ROLE} </ROLE>. \
Here is a step of a larger system that used the variable:

<LM_SYSTEM_PROMPT> {PLAN} </LM_SYSTEM_PROMPT>

<LM_INPUT> What is 1 + 2? </LM_INPUT>

<LM_OUTPUT> Let me think. </LM_OUTPUT>

The output of this step was later used as: output of the 'plan' step of the pipeline.

<OBJECTIVE_FUNCTION>Your goal is to give feedback to the variable that addresses the \
following feedback on the output of this step: {TO_PLAN}</OBJECTIVE_FUNCTION>

We are interested in giving feedback to the {PLAN_ROLE} for this step. Specifically, give \
feedback to the following span of text:

<VARIABLE> {PLAN} </VARIABLE>

Given the above, describe how the {PLAN_ROLE} could be improved to improve the \
<OBJECTIVE_FUNCTION>. Be specific and concise: at most 4 sentences.

Reply with a JSON object of the form {{"feedback": "<your feedback>"}}."""


def chain_config(tmp_path: Path, engine: str, steps: list[dict] = STEPS, **sections) -> Path:
    return Path(write_run_config(
        tmp_path, engine=engine, train=[(1, 2), (3, 4)], val=[(2, 2), (4, 5)],
        test=[(9, 9)], system_prompt=None, steps=steps,
        run={"name": "chain", "dir": str(tmp_path / "runs")},
        cache={"enabled": False}, trainer={"batch_size": 2, "steps_per_epoch": 1},
        **{"pipeline": {"kind": "chain"}, **sections}))


def feedback_requests(bodies: list[dict]) -> dict[str, list[str]]:
    """The backward prompts by the role of the variable they are about, in order sent."""
    out: dict[str, list[str]] = {}
    for body in bodies:
        system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
        prompt = body["messages"][-1]["content"]
        if "gradient (feedback) engine" in system and "<ROLE>" in prompt:
            role = prompt.split("<ROLE> ", 1)[1].split(" </ROLE>", 1)[0]
            out.setdefault(role, []).append(prompt)
    return out


def test_a_three_step_chain_sends_the_last_steps_feedback_back_to_the_first(tmp_path, capsys):
    with TestServer(reply=server_reply) as server:
        config = chain_config(tmp_path, f"openai-compatible:fake@{server.base_url}")
        code = main(["optimize", str(config), "--json"])
        bodies = [r.body for r in server.requests if r.path.endswith("/chat/completions")]

    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    # polish has optimize = false: only plan and draft are parameters, named by step
    assert summary["values"] == {"plan": LISTED, "draft": DRAFT}
    assert (summary["baseline_val"], summary["best_val"]) == (0.0, 1.0)
    asked = feedback_requests(bodies)
    # the metric's verdict on polish's output reaches the draft's output ...
    objectives = sorted(p.split("<OBJECTIVE_FUNCTION>")[1].split("</OBJECTIVE")[0]
                        for p in asked["output of the 'draft' step of the pipeline"])
    lead = "Your goal is to give feedback to the variable that addresses the following " \
           "feedback on the output of this step: "
    assert objectives == [f"{lead}expected 3, but the prediction contains no number",
                          f"{lead}expected 7, but the prediction contains no number"]
    # ... what the draft's output was told reaches the plan's output ...
    assert [f"on the output of this step: {TO_OTHERS}</OBJECTIVE_FUNCTION>" in p
            for p in asked["output of the 'plan' step of the pipeline"]] == [True, True]
    # ... and the first step's system prompt gets feedback from it, per example
    assert PLAN_FEEDBACK_PROMPT in asked[PLAN_ROLE]
    assert PLAN_FEEDBACK_PROMPT.replace("1 + 2", "3 + 4") in asked[PLAN_ROLE]
    assert len(asked["system prompt of the 'draft' step of the pipeline"]) == 2
    assert "system prompt of the 'polish' step of the pipeline" not in asked

    run = Path(summary["run"])
    rows = Ledger.in_run(run).step_outputs(1)
    first = [(r["name"], r["input"], r["output"], r["feedback"])
             for r in rows if r["example_id"] == "train-0"]
    assert first == [
        ("plan", "What is 1 + 2?", "Let me think.", TO_PLAN),
        ("draft", "Plan: Let me think.", "There are no numbers to add.", TO_OTHERS),
        ("polish", "Draft: There are no numbers to add.", "Answer: unknown",
         "expected 3, but the prediction contains no number")]
    assert {r["example_id"] for r in rows} == {"train-0", "train-1"}
    report = (run / "report.html").read_text()
    assert "There are no numbers to add." in report  # the middle step, for review


def test_history_variable_shows_one_prompts_history(tmp_path, capsys):
    with TestServer(reply=server_reply) as server:
        config = chain_config(tmp_path, f"openai-compatible:fake@{server.base_url}")
        assert main(["optimize", str(config), "--quiet"]) == 0
    run = next((tmp_path / "runs").iterdir())
    capsys.readouterr()

    assert main(["history", str(run), "--variable", "plan", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["step"], r["status"], r["value"]) for r in rows] == [
        (0, "baseline", PLAN), (1, "accepted", LISTED)]
    assert TO_PLAN in rows[1]["feedback"]

    assert main(["history", str(run), "--variable", "plan"]) == 0
    text = capsys.readouterr().out
    assert LISTED in text and "accepted" in text

    assert main(["history", str(run), "--variable", "polish"]) == 1
    assert "no parameter 'polish' (known: draft, plan)" in capsys.readouterr().err


def test_a_python_pipeline_runs_through_the_cli(tmp_path, capsys):
    config = write_run_config(
        tmp_path, engine="python:tests.train.fake_pipeline:make_engine",
        train=[(1, 2), (3, 4)], val=[(2, 2)], test=[(9, 9)], system_prompt=None,
        run={"name": "py", "dir": str(tmp_path / "runs")},
        pipeline={"kind": "python", "factory": "tests.train.two_step:build"},
        trainer={"batch_size": 2, "steps_per_epoch": 1})
    (tmp_path / "run.toml").write_text((tmp_path / "run.toml").read_text()
                                       + '[pipeline.options]\nplan = "List the numbers."\n')

    code = main(["optimize", config, "--json"])

    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    assert set(summary["values"]) == {"plan", "answer"}
    run = Path(summary["run"])
    assert Ledger.in_run(run).step(0)["values"]["plan"] == "List the numbers."
    names = [r["name"] for r in Ledger.in_run(run).step_outputs(1)]
    assert names == ["plan for answering the question", "answer to the question"] * 2


def _step(name: str, template: str, **extra) -> dict:
    return {"name": name, "system_prompt": f"Do the {name}.", "template": template, **extra}


BAD = {
    "unknown step": (
        [_step("plan", "{input}"), _step("draft", "Plan: {plann}")],
        "field 'pipeline.steps[1].template': step 'draft' uses {plann}, which is neither a "
        "step nor a field of example train-0 (known: input, plan)"),
    "cycle": (
        [_step("plan", "{input} {draft}"), _step("draft", "Plan: {plan}")],
        "field 'pipeline.steps[1].template': the steps' templates form a cycle: {plan} -> "
        "{draft} -> {plan}"),
    "duplicate": (
        [_step("plan", "{input}"), _step("plan", "Plan: {plan}")],
        "field 'pipeline.steps[1].name': duplicate step name 'plan' (also steps[0])"),
    "unused step": (
        [_step("plan", "{input}"), _step("draft", "{input}")],
        "field 'pipeline.steps[0].template': the output of step 'plan' reaches no later "
        "step, so it cannot affect the prediction (the last step, 'draft'); use {plan} in a "
        "template or remove the step"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_chain_is_one_error_naming_the_file_and_field_and_makes_no_run(
        case, tmp_path, capsys):
    steps, message = BAD[case]
    config = chain_config(tmp_path, "python:tests.train.fake_pipeline:make_engine", steps)

    code = main(["optimize", str(config)])

    err = capsys.readouterr().err
    assert code == 1
    assert err == f"textprop: error: {config.resolve()}, {message}\n"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("pipeline", "message"), [
    ({"kind": "python"}, "field 'pipeline.factory': kind = \"python\" needs factory = "
                         "\"module:function\""),
    ({"kind": "python", "factory": "tests.train.no_such_module:build"},
     "field 'pipeline.factory': cannot import 'tests.train.no_such_module' for factory "
     "'tests.train.no_such_module:build': No module named 'tests.train.no_such_module'"),
    ({"kind": "python", "factory": "tests.train.two_step:no_such_function"},
     "field 'pipeline.factory': module 'tests.train.two_step' has no function "
     "'no_such_function'"),
    ({"kind": "graph"}, "field 'pipeline.kind': unknown pipeline kind 'graph'; known: chain, "
                        "prompt, python"),
])
def test_a_missing_factory_or_kind_is_one_error_and_makes_no_run(pipeline, message, tmp_path,
                                                                  capsys):
    config = write_run_config(
        tmp_path, engine="python:tests.train.fake_pipeline:make_engine", train=[(1, 2)],
        val=[(2, 2)], test=[(9, 9)], system_prompt=None, pipeline=pipeline,
        run={"name": "py", "dir": str(tmp_path / "runs")})

    code = main(["optimize", config])

    assert code == 1
    assert capsys.readouterr().err == f"textprop: error: {Path(config).resolve()}, {message}\n"
    assert not (tmp_path / "runs").exists()


def test_a_pareto_step_records_the_parents_minibatch_run_step_by_step(tmp_path, capsys):
    with TestServer(reply=server_reply) as server:
        config = chain_config(tmp_path, f"openai-compatible:fake@{server.base_url}",
                              strategy={"kind": "pareto", "minibatch": 2, "parallel": 1,
                                        "max_proposals": 1, "holdout": 0,
                                        "components": "all"})
        code = main(["optimize", str(config), "--json"])

    out, err = capsys.readouterr()
    assert code == 0, err
    run = Path(json.loads(out)["run"])
    ledger = Ledger.in_run(run)
    step = ledger.step(1)
    assert step["search_state"]["parent"] == 0
    rows = ledger.step_outputs(1)
    assert sorted({r["example_id"] for r in rows}) == sorted(step["batch"])
    by_example = [(r["name"], r["input"].startswith(("What is", "Plan: Let", "Draft: There")),
                   bool(r["feedback"])) for r in rows if r["example_id"] == step["batch"][0]]
    # the parent (the starting prompts) ran it; every step got feedback
    assert by_example == [("plan", True, True), ("draft", True, True), ("polish", True, True)]


def test_a_ledger_written_before_step_outputs_existed_still_reads(tmp_path):
    import sqlite3

    from textprop.ledger import SCHEMA

    old = SCHEMA.split("CREATE TABLE IF NOT EXISTS step_outputs")[0] + SCHEMA.split(
        "PRIMARY KEY (step, example_id, position)\n);")[1]
    db = sqlite3.connect(tmp_path / "ledger.sqlite3")
    db.executescript(old)
    db.close()

    ledger = Ledger.in_run(tmp_path)

    assert ledger.step_outputs() == [] and ledger.steps() == []
