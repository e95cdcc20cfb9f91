"""`textprop refine` and `textprop.refine`: one text improved against a loss, every
iteration in a ledger like a run's, the best version kept."""

from __future__ import annotations

import json
from pathlib import Path

import textprop
from textprop import refinement
from textprop._sync import run_sync
from textprop.cli import main
from textprop.engines.scripted import ScriptedEngine
from textprop.ledger import Ledger

from .refine_code import BROKEN, FIXED, make_engine

ROLE = "Python function add(a, b) that returns the sum"

# The rewrite request: the failing tests are the feedback, word for word.
REWRITE_PROMPT = f"""\
Here is the role of the variable you will improve: <ROLE>{ROLE}</ROLE>.

The variable is the text within the following span: <VARIABLE> {BROKEN} </VARIABLE>

Here is the context and feedback we got for the variable:

<CONTEXT>Here is a conversation:

<CONVERSATION><METRIC> tests </METRIC>

<PREDICTION> {BROKEN} </PREDICTION>

<SCORE> 0 </SCORE>

<EXPLANATION> 2 failing check(s):
- add(2, 3) returned -1, expected 5
- add(-1, 4) returned -5, expected 3 </EXPLANATION></CONVERSATION>

This conversation is potentially part of a larger system. The output is used as evaluation \
of the {ROLE}

Here is the feedback we got for {ROLE} in the conversation:

<FEEDBACK>2 failing check(s):
- add(2, 3) returned -1, expected 5
- add(-1, 4) returned -5, expected 3</FEEDBACK></CONTEXT>

Improve the variable ({ROLE}) using the feedback provided in <FEEDBACK> tags.

Send the improved variable in the following format:

<IMPROVED_VARIABLE>{{the improved variable}}</IMPROVED_VARIABLE>

Send ONLY the improved variable between the <IMPROVED_VARIABLE> tags, and nothing else."""


def refine_config(tmp_path: Path, **loss: str) -> Path:
    (tmp_path / "add.py").write_text(BROKEN)
    config = tmp_path / "refine.toml"
    table = {"kind": "tests", "function": "tests.train.refine_code:check_add", **loss}
    config.write_text(
        f'[run]\nname = "add"\ndir = "{tmp_path / "runs"}"\n'
        f'[refine]\nfile = "add.py"\nrole_description = "{ROLE}"\niterations = 3\n'
        "[loss]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
        + '[engines]\ndefault = "python:tests.train.refine_code:make_engine"\n'
        "[cache]\nenabled = false\n")
    return config


def test_refine_fixes_code_whose_tests_fail_and_stops_when_they_pass(tmp_path, capsys):
    code = main(["refine", str(refine_config(tmp_path)), "--json"])

    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["initial_score"], summary["best_score"]) == (0.0, 1.0)
    assert summary["iterations"] == 1  # the tests pass: no second rewrite is asked for
    run = Path(summary["run"])
    assert (run / "best.txt").read_text() == FIXED.rstrip("\n")
    ledger = Ledger.in_run(run)
    assert [(s["step"], s["status"], s["val_score"]) for s in ledger.steps()] == [
        (0, "baseline", 0.0), (1, "accepted", 1.0)]
    [revision] = ledger.revisions(1)
    assert (revision["name"], revision["before"]) == ("text", BROKEN)
    assert "add(2, 3) returned -1, expected 5" in revision["feedback"]
    assert ledger.losses(1)[0]["explanation"] == "every test passed"
    assert [c["role"] for c in ledger.calls()] == ["optimizer"]
    assert (run / "report.html").exists()


def test_the_rewrite_request_carries_the_failing_tests(tmp_path):
    engine = make_engine()

    result = textprop.refine(BROKEN, textprop.refine_tests(
        "tests.train.refine_code:check_add"), engine=engine, role_description=ROLE)

    assert result.best == FIXED.rstrip("\n") and result.run_dir is None
    [request] = engine.requests
    assert request.prompt == REWRITE_PROMPT


def closeness(text: str) -> tuple[float, str]:
    """A graded loss: how near the number in the text is to 42."""
    number = int("".join(c for c in text if c.isdigit()) or 0)
    return max(0.0, 1 - abs(number - 42) / 10), f"{number} is {abs(number - 42)} away from 42"


def test_a_worse_rewrite_is_recorded_and_the_best_version_kept(tmp_path):
    engine = ScriptedEngine(name="scripted:worse")
    engine.on(lambda r: True, lambda r: "<IMPROVED_VARIABLE>The answer is 40.</IMPROVED_VARIABLE>")

    result = refinement.refine("The answer is 41.", refinement.tests(closeness),
                               engine=engine, iterations=2, run_dir=tmp_path / "run",
                               role_description="answer to 'what is 6 x 7?'")

    assert (result.best, result.best_score) == ("The answer is 41.", 0.9)
    assert result.history == [("The answer is 41.", 0.9), ("The answer is 40.", 0.8),
                              ("The answer is 40.", 0.8)]
    steps = Ledger.in_run(tmp_path / "run").steps()
    assert [s["status"] for s in steps] == ["baseline", "rejected", "rejected"]
    assert steps[1]["values"] == {"text": "The answer is 41."}
    assert "41 is 1 away from 42" in Ledger.in_run(tmp_path / "run").revisions(2)[0]["feedback"]


def test_a_refine_config_without_its_loss_function_is_one_error_and_no_run(tmp_path, capsys):
    config = refine_config(tmp_path, function="tests.train.refine_code:no_such_check")

    assert main(["refine", str(config)]) == 1
    assert capsys.readouterr().err == (
        f"textprop: error: {config.resolve()}, field 'loss.function': module "
        "'tests.train.refine_code' has no function 'no_such_check'\n")
    assert not (tmp_path / "runs").exists()


def test_an_llm_judge_loss_scores_each_version_and_its_verdict_is_the_feedback(tmp_path):
    def reply(request) -> str:
        if "optimization system that improves text" in (request.system_prompt or ""):
            return "<IMPROVED_VARIABLE>Paris is the capital of France.</IMPROVED_VARIABLE>"
        good = "Paris is the capital" in request.prompt
        return json.dumps({"explanation": "complete" if good else "say which city it is",
                           "score": 1.0 if good else 0.2})

    engine = ScriptedEngine(name="scripted:judge")
    engine.on(lambda r: True, reply)
    loss = refinement.judge(engine, "Is this a complete answer to 'capital of France?'")

    result = refinement.refine("Paris.", loss, engine=engine, iterations=3,
                               role_description="answer to a geography question")

    assert (result.initial_score, result.best_score) == (0.2, 1.0)
    assert result.best == "Paris is the capital of France."
    rewrite = next(r for r in engine.requests if "<IMPROVED_VARIABLE>" in r.prompt)
    assert "<FEEDBACK>say which city it is</FEEDBACK>" in rewrite.prompt


def test_a_graded_test_function_scores_the_share_passed_and_keeps_its_failures_as_feedback():
    loss = refinement.tests(lambda code: (2 / 3, ["add(2, 3) returned -1, expected 5"]))

    score, explanation = run_sync(loss.ascore(BROKEN))

    assert (score, explanation) == (2 / 3, "1 failing check(s):\n- add(2, 3) returned -1, "
                                           "expected 5")
