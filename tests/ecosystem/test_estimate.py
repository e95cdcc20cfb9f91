"""`textprop optimize --estimate`: the most a run can spend, with no LLM call; then the same
config run for real spends no more calls or tokens than that, per role and in total."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from textprop.cli import main
from textprop.testing.server import TestServer
from textprop.train.config import load_config
from textprop.train.estimate import estimate

from ..train.chain_model import STEPS as CHAIN_STEPS
from ..train.chain_model import server_reply as chain_reply
from ..train.fake_pipeline import server_reply, write_run_config

TRAIN = [(i, i + 1) for i in range(8)]
VAL = [(2, 2), (4, 6), (6, 1), (3, 3)]
TEST = [(9, 9), (1, 1)]
SMALL = {"pipeline": {"system_prompt": "You are a helpful assistant.", "max_tokens": 40},
         "optimizer": {"max_tokens": 60, "feedback_max_tokens": 30, "max_parse_retries": 2}}
STRATEGIES = {
    "tgd": {"trainer": {"batch_size": 3, "steps_per_epoch": 2, "epochs": 2}},
    "tgd-budget": {"trainer": {"batch_size": 2, "epochs": 3, "test_every_step": True},
                   "budget": {"max_metric_calls": 25}},
    "tgd-judge": {"trainer": {"batch_size": 3, "steps_per_epoch": 2},
                  "metric": {"name": "judge", "judge_instruction": "The answer is the sum."}},
    "pareto": {"strategy": {"kind": "pareto", "minibatch": 2, "children": 2, "parallel": 2,
                            "max_proposals": 4}},
    "pareto-budget": {"strategy": {"kind": "pareto", "minibatch": 2, "parallel": 3,
                                   "merge": True}, "budget": {"max_metric_calls": 40}},
}


def judged(reply):
    """`reply`, with an LLM judge that explains at length and gives every answer 0."""
    def answer(body: dict) -> str:
        system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
        if "You are the evaluator" in system:
            n = (body.get("max_tokens") or 50) - 4
            return json.dumps({"explanation": " ".join(["wrong"] * n), "score": 0})
        return reply(body)
    answer.__name__ = reply.__name__
    return answer


def unparseable(body: dict) -> str:
    """The worst case for calls: answers are wrong and no rewrite can ever be parsed, so
    every one is retried to the limit."""
    return " ".join(f"w{i}" for i in range(5000))


def longest(body: dict) -> str:
    """The worst case for tokens: every reply (answer, feedback, rewrite) is as long as its
    `max_tokens` allows and well formed, and answers stay wrong, so every rewrite is kept
    (non_decrease) and the prompts grow to their bounds."""
    n = body.get("max_tokens") or 50
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    words = " ".join(f"w{i}" for i in range(n - 1))
    if "optimization system that improves text" in system:
        seed = len(body["messages"])
        words = " ".join(f"v{seed}x{i}" for i in range(n - 1))
        return (json.dumps({"improved_variable": words}) if "response_format" in body
                else f"<IMPROVED_VARIABLE>{words}</IMPROVED_VARIABLE>")
    if "response_format" in body:
        return json.dumps({"feedback": words})
    return words


def config_for(tmp_path: Path, engine: str, sections: dict) -> str:
    tables = {name: dict(values) for name, values in SMALL.items()}
    for name, values in sections.items():
        tables.setdefault(name, {}).update(values)
    system_prompt = tables["pipeline"].pop("system_prompt")
    return write_run_config(tmp_path, engine=engine, train=TRAIN, val=VAL, test=TEST,
                            system_prompt=system_prompt,
                            run={"name": "bounded", "dir": str(tmp_path / "runs")},
                            cache={"enabled": False}, **tables)


def check_within(estimated: dict, spent: dict) -> None:
    assert spent["calls"]["total"] > 0
    for what in ("calls", "tokens"):
        for role, used in spent[what].items():
            assert role in estimated[what], (what, role)
            assert used <= estimated[what][role], (what, role, used, estimated[what][role])


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("reply", [server_reply, unparseable, longest],
                         ids=["learns", "unparseable", "longest"])
def test_a_run_spends_no_more_than_its_estimate(tmp_path, capsys, strategy, reply):
    with TestServer(reply=judged(reply)) as server:
        config = config_for(tmp_path, f"openai-compatible:fake@{server.base_url}",
                            STRATEGIES[strategy])
        assert main(["optimize", config, "--estimate", "--json"]) == 0
        estimated = json.loads(capsys.readouterr().out)
        assert server.requests == []  # the preview calls no model
        assert main(["optimize", config, "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
    assert summary["estimate"]["calls"] == estimated["calls"]
    check_within(estimated, summary["spent"])
    if "judge" in strategy:  # every scored answer is a judge call
        assert summary["spent"]["calls"]["loss"] == summary["spent"]["calls"]["forward"]


def test_the_scripted_engine_run_stays_within_its_estimate(tmp_path, capsys):
    config = config_for(tmp_path, "python:tests.train.fake_pipeline:make_engine",
                        STRATEGIES["tgd"])
    assert main(["optimize", config, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    check_within(summary["estimate"], summary["spent"])


def test_the_estimate_counts_the_schedule_and_prices_known_models(tmp_path):
    config = load_config(config_for(tmp_path, "openai:gpt-4o-mini", STRATEGIES["tgd"]))
    bound = estimate(config)
    # baseline 4 val + 2 test; 4 steps of 3 + 4 val; final test 2
    assert bound.to_dict()["calls"]["forward"] == 6 + 4 * (3 + 4) + 2
    assert bound.to_dict()["calls"]["backward"] == 4 * (3 + 1)  # per example + condense
    assert bound.to_dict()["calls"]["optimizer"] == 4 * 3  # one rewrite, two retries
    forward = bound.roles["forward"]
    expected = (forward.input_tokens * 0.15 + forward.output_tokens * 0.60) / 1e6
    assert bound.cost_usd["forward"] == pytest.approx(expected)
    assert bound.cost_usd["total"] > 0
    text = bound.format()
    assert "forward" in text and "optimizer" in text


def test_a_role_without_max_tokens_has_no_token_bound(tmp_path, capsys):
    config = config_for(tmp_path, "openai:gpt-4o-mini", STRATEGIES["tgd"])
    assert main(["optimize", config, "--estimate", "--json",
                 "--set", "optimizer.max_tokens=0"]) == 1  # validated: ge=1
    capsys.readouterr()
    parsed = load_config(config)
    parsed.pipeline.max_tokens = None
    bound = estimate(parsed).to_dict()
    assert bound["tokens"]["forward"] is None and bound["tokens"]["total"] is None
    assert bound["cost_usd"]["total"] is None
    assert any("forward" in note and "max_tokens" in note for note in bound["notes"])


CHAIN_STRATEGIES = {
    "tgd": {"trainer": {"batch_size": 2, "steps_per_epoch": 2}},
    "pareto": {"strategy": {"kind": "pareto", "minibatch": 2, "children": 2, "parallel": 2,
                            "components": "all", "max_proposals": 3}},
}


@pytest.mark.parametrize("strategy", list(CHAIN_STRATEGIES))
@pytest.mark.parametrize("reply", [chain_reply, unparseable, longest],
                         ids=["learns", "unparseable", "longest"])
def test_a_chain_run_makes_no_more_calls_than_its_estimate(tmp_path, capsys, strategy, reply):
    """Three steps, the last not optimized: per run 3 calls; per example backward, the two
    prompts and the outputs of plan (read by draft) and draft (read by polish)."""
    with TestServer(reply=reply) as server:
        config = write_run_config(
            tmp_path, engine=f"openai-compatible:fake@{server.base_url}", train=TRAIN,
            val=VAL, test=TEST, system_prompt=None, steps=CHAIN_STEPS,
            run={"name": "chain", "dir": str(tmp_path / "runs")}, cache={"enabled": False},
            optimizer=SMALL["optimizer"], pipeline={"kind": "chain"},
            **CHAIN_STRATEGIES[strategy])
        assert main(["optimize", config, "--estimate", "--json"]) == 0
        estimated = json.loads(capsys.readouterr().out)
        assert server.requests == []
        assert main(["optimize", config, "--json"]) == 0
        spent = json.loads(capsys.readouterr().out)["spent"]
    for role, used in spent["calls"].items():
        assert used <= estimated["calls"][role], (role, used, estimated["calls"][role])
    assert estimated["tokens"]["total"] is None  # a chain's tokens are not bounded yet
    if reply is longest:  # every branch taken: the backward bound is reached exactly
        assert spent["calls"]["backward"] == estimated["calls"]["backward"]
    if strategy == "tgd":  # baseline 4 + 2, two steps of 2 + 4, final test 2: 3 calls each
        assert estimated["calls"]["forward"] == 3 * (6 + 2 * 6 + 2)
        assert estimated["calls"]["backward"] == 2 * (2 * 4 + 2)  # + a condensation a prompt
        assert estimated["calls"]["optimizer"] == 2 * 2 * 3  # two prompts, two retries


def test_a_python_pipeline_gets_one_clear_error_instead_of_an_estimate(tmp_path, capsys):
    config = write_run_config(tmp_path, engine="openai:gpt-4o-mini", train=TRAIN, val=VAL,
                              test=TEST, system_prompt=None,
                              pipeline={"kind": "python", "factory": "tests.train.two_step:build"})
    assert main(["optimize", config, "--estimate"]) != 0
    err = capsys.readouterr().err
    assert "run.toml" in err and "pipeline.kind" in err
    assert "the estimate covers [pipeline] kind = 'prompt' and 'chain', not 'python'" in err


def test_appended_instructions_leave_the_tokens_unbounded_and_say_why(tmp_path):
    config = load_config(config_for(tmp_path, "openai:gpt-4o-mini", STRATEGIES["tgd"]))
    rewrite = estimate(config).to_dict()
    config.optimizer.edit = "append"
    append = estimate(config).to_dict()
    assert append["calls"] == rewrite["calls"]  # the same loop
    assert rewrite["tokens"]["total"] is not None and append["tokens"]["total"] is None
    assert any('edit = "append"' in note for note in append["notes"])
    assert not any("max_tokens" in note for note in append["notes"])
