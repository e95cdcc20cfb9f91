"""`textprop optimize` with `[strategy] kind = "pareto"` against the OpenAI-compatible test
server, which sees every request actually sent: the gate, the CLI's readers, and a search
killed with SIGKILL that resumes into the ledger of an uninterrupted run."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from textprop.cli import main
from textprop.ledger import Ledger
from textprop.testing.server import TestServer

from .fake_pipeline import IMPROVED, reply, server_reply, write_run_config
from .test_resume_after_kill import kill_mid_request, optimize, recorded_steps

VAL = [(2, 2), (4, 6), (6, 1), (3, 3)]  # none of them in train
VAL_QUESTIONS = {f"What is {a} + {b}?" for a, b in VAL}


def pareto_config(tmp_path: Path, base_url: str, **strategy: object) -> Path:
    return Path(write_run_config(
        tmp_path, engine=f"openai-compatible:fake@{base_url}",
        train=[(i, i + 1) for i in range(8)], val=VAL, test=[(9, 9), (1, 1)],
        run={"name": "search", "dir": str(tmp_path / "runs")}, engines={"concurrency": 4},
        strategy={"kind": "pareto", "minibatch": 2, "holdout": 0.25, **strategy}))


def last_user(body: dict) -> str:
    return next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")


def polite_rewrites(body: dict) -> str:
    """The optimizer only ever proposes prompts that still get every answer wrong, each new:
    "Be polite." and then "Be polite. (2)" and so on (a repeat would not be gated again)."""
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    if "optimization system that improves text" in system:
        tried = last_user(body).count("<TRIED-")
        text = "Be polite." + (f" ({tried + 1})" if tried else "")
        return json.dumps({"improved_variable": text}) if "response_format" in body \
            else f"<IMPROVED_VARIABLE>{text}</IMPROVED_VARIABLE>"
    return reply(system, last_user(body), "response_format" in body)


def test_children_that_fail_the_gate_send_no_validation_request(tmp_path, capsys):
    with TestServer(reply=polite_rewrites) as server:
        config = pareto_config(tmp_path, server.base_url, max_proposals=3, parallel=1)
        code = main(["optimize", str(config), "--json"])
        bodies = [r.body for r in server.requests if r.path.endswith("/chat/completions")]

    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    run = Path(summary["run"])
    statuses = [c.status for c in Ledger.in_run(run).candidates()]
    assert statuses == ["seed", "rejected", "rejected", "rejected"]
    val_runs = [b for b in bodies if last_user(b) in VAL_QUESTIONS]
    assert len(val_runs) == len(VAL)  # the baseline's, and no other
    assert summary["values"] == {"system_prompt": "You are a helpful assistant."}


def test_progress_history_and_diff_show_a_search(tmp_path, capsys):
    with TestServer(reply=server_reply) as server:
        config = pareto_config(tmp_path, server.base_url, max_proposals=2, parallel=2)
        assert main(["optimize", str(config)]) == 0
    run = next((tmp_path / "runs").iterdir())
    progress = capsys.readouterr().err  # the CLI's display of the run's events
    assert "candidate 1 (mutation of 0) joined the pool: validation 1.000" in progress
    assert "final pick: candidate 1 (validation 1.000)" in progress

    assert main(["history", str(run), "--candidates"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["id", "step", "parents", "origin"]
    assert lines[1].split()[:5] == ["0", "0", "-", "seed", "seed"]
    assert lines[2].split()[:5] == ["1", "1", "0", "mutation", "accepted"]

    assert main(["diff", str(run), "0", "1", "--candidates"]) == 0
    diff = capsys.readouterr().out
    assert "-You are a helpful assistant." in diff and f"+{IMPROVED}" in diff


def comparable(run_dir: Path) -> dict[str, object]:
    """Everything a ledger records but the clock and the cache hits."""
    ledger = Ledger.in_run(run_dir)
    steps = [{k: v for k, v in s.items() if k not in ("started_at", "finished_at")}
             for s in ledger.steps()]
    return {"steps": steps, "candidates": ledger.candidates(), "revisions": ledger.revisions(),
            "losses": ledger.losses(), "evaluations": ledger.evaluations(),
            "final": ledger.meta()["final"]}


@pytest.mark.parametrize("extra", [{}, {"demos": 2, "children": 2}],
                         ids=["instructions", "with-demonstrations"])
def test_sigkill_mid_search_then_resume_equals_an_uninterrupted_run(tmp_path, extra):
    with TestServer(latency=0.15, reply=server_reply) as server:
        whole = tmp_path / "whole"
        whole.mkdir()
        config = pareto_config(whole, server.base_url, max_proposals=6, parallel=2, **extra)
        uninterrupted = optimize(config, whole / "run")
        assert uninterrupted.wait(timeout=120) == 0, uninterrupted.stderr.read()
        server.reset()

        cut = tmp_path / "cut"
        cut.mkdir()
        config = pareto_config(cut, server.base_url, max_proposals=6, parallel=2, **extra)
        first = optimize(config, cut / "run")
        in_flight_at_kill = kill_mid_request(first, server, cut / "run",
                                             after_steps=3)  # baseline + 1 round
        second = optimize(config, cut / "run", "--resume")
        out, err = second.communicate(timeout=120)

    assert second.returncode == 0, err
    assert comparable(cut / "run") == comparable(whole / "run")
    if extra:  # the demonstrations in force were restored, not rebuilt differently
        final = Ledger.in_run(cut / "run").meta()["final"]["values"]
        assert "demonstrations" in final
    sent = Counter(json.dumps(r.body, sort_keys=True) for r in server.requests
                   if r.path.endswith("/chat/completions"))
    assert {body for body, n in sent.items() if n > 1} <= in_flight_at_kill


def test_optimizer_edit_append_adds_the_writers_instruction_to_the_parents_prompt(
        tmp_path, capsys):
    rule = "End your reply with a line 'Answer: <number>'."

    def instruction(body: dict) -> str:
        system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
        if "optimization system that improves text" in system:
            return json.dumps({"new_instruction": rule})
        return server_reply(body)

    with TestServer(reply=instruction) as server:
        config = pareto_config(tmp_path, server.base_url, max_proposals=1, parallel=1)
        config.write_text(config.read_text() + '[optimizer]\nedit = "append"\n')
        assert main(["optimize", str(config), "--json"]) == 0, capsys.readouterr().err
        bodies = [r.body for r in server.requests if r.path.endswith("/chat/completions")]

    rewrites = [b for b in bodies if "new_instruction" in json.dumps(b.get("response_format"))]
    assert len(rewrites) == 1 and "Write ONE new instruction" in last_user(rewrites[0])
    summary = json.loads(capsys.readouterr().out)
    candidates = Ledger.in_run(Path(summary["run"])).candidates()
    assert [c.status for c in candidates] == ["seed", "accepted"]
    assert candidates[1].values == {"system_prompt": f"You are a helpful assistant.\n{rule}"}
    assert summary["values"] == candidates[1].values


def questions_asked(tmp_path: Path, *, test: list[tuple[int, int]], concurrency: int,
                    max_proposals: int) -> list[str]:
    """A search of one proposal a round, no holdout; the questions the server got, in
    order."""
    config = write_run_config(
        tmp_path, engine="openai-compatible:fake@{url}", train=[(i, i + 1) for i in range(8)],
        val=VAL, test=test, engines={"concurrency": concurrency},
        run={"name": "search", "dir": str(tmp_path / "runs")},
        strategy={"kind": "pareto", "minibatch": 2, "holdout": 0, "parallel": 1,
                  "max_proposals": max_proposals})
    with TestServer(latency=0.02, reply=server_reply) as server:
        Path(config).write_text(Path(config).read_text().replace("{url}", server.base_url))
        assert main(["optimize", config]) == 0
        return [last_user(r.body) for r in server.requests
                if r.path.endswith("/chat/completions")]


def test_the_first_round_runs_beside_the_baseline_and_the_test_fills_idle_slots(tmp_path):
    """Round 1's parent is the seed whatever it scores, so the round starts beside the
    baseline's validation, whose calls take only the slots the round's calls leave idle
    (it is needed only when the round files its records); the baseline's test, needed only
    at the end, comes after both. One slot here. The ledger is as if each had waited for
    the one before."""
    asked = questions_asked(tmp_path, test=[(9, 9), (1, 1), (5, 5)], concurrency=1,
                            max_proposals=1)

    test_questions = {"What is 9 + 9?", "What is 1 + 1?", "What is 5 + 5?"}
    train_questions = {f"What is {i} + {i + 1}?" for i in range(8)}
    first_test = next(i for i, q in enumerate(asked) if q in test_questions)
    before_test = asked[:first_test]
    assert VAL_QUESTIONS <= set(before_test)  # all of validation before any of the test
    last_val = max(i for i, q in enumerate(before_test) if q in VAL_QUESTIONS)
    minibatch = [i for i, q in enumerate(before_test) if q in train_questions]
    writer = [i for i, q in enumerate(before_test) if q.startswith("You will give feedback")]
    assert minibatch[0] < last_val  # the round began beside it
    assert writer and writer[0] < last_val  # its dependent calls went first
    assert len(before_test) > len(VAL) + 2  # the round's calls too went out before the test
    run = next((tmp_path / "runs").iterdir())
    ledger = Ledger.in_run(run)
    baseline = ledger.step(0)
    assert baseline["test_score"] == 0.0  # the starting prompt asks for no 'Answer:' line
    assert [e["split"] for e in ledger.evaluations(0)] == ["val", "test"]
    assert len(ledger.calls(0)) == len(VAL) + 3  # the test's calls are filed with step 0
    assert baseline["search_state"]["metric_calls"] == len(VAL)  # its own, not the round's


def test_a_refused_call_during_the_baseline_ends_the_first_round_too(tmp_path):
    """The round started beside the baseline's validation fails with it at once: one error
    (not repeated as a task's 'never retrieved' exception), nothing filed, and no call sent
    after the refusal."""
    with TestServer(latency=0.05, reply=server_reply) as server:
        config = pareto_config(tmp_path, server.base_url, max_proposals=2, parallel=2)
        server.inject("401")
        started = time.monotonic()
        run = optimize(config, tmp_path / "run")
        _, err = run.communicate(timeout=60)
        took = time.monotonic() - started
        sent = len(server.requests)

    assert run.returncode == 1
    lines = [x for x in err.splitlines() if x.strip() and "no price known" not in x]
    assert len(lines) == 1 and "refused the API key" in lines[0], err
    assert took < 10  # not left waiting for a baseline that will never be scored
    assert sent <= 4  # the first wave of the 4 slots; none after the refusal
    assert recorded_steps(tmp_path / "run") == 0


def test_the_search_goes_on_while_the_baselines_test_runs_and_step_0_is_filed_first(
        tmp_path):
    """The test is needed only for the report: the next rounds do not wait for it. Step 0
    is filed, with its test, the moment the test is scored, and the rounds that finished
    meanwhile after it, in order."""
    test = [(i, i) for i in range(10, 50)]
    asked = questions_asked(tmp_path, test=test, concurrency=2, max_proposals=3)

    ledger = Ledger.in_run(next((tmp_path / "runs").iterdir()))
    steps = ledger.steps()
    assert [s["step"] for s in steps] == [0, 1, 2, 3, 4]
    round_2 = [f"What is {k} + {k + 1}?" for k in
               (int(e.removeprefix("train-")) for e in steps[2]["batch"])]
    baseline_test_done = max(asked.index(f"What is {a} + {b}?") for a, b in test)
    assert not set(round_2) & {f"What is {k} + {k + 1}?" for k in  # one epoch: new ones
                               (int(e.removeprefix("train-")) for e in steps[1]["batch"])}
    assert min(asked.index(q) for q in round_2) < baseline_test_done
    assert steps[0]["test_score"] == 0.0
    assert [e["split"] for e in ledger.evaluations(0)] == ["val", "test"]
    assert len(ledger.calls(0)) == len(VAL) + len(test)


def system_of(body: dict) -> str:
    return next((m["content"] for m in body["messages"] if m["role"] == "system"), "")


def test_the_last_round_scores_the_sure_final_candidates_on_the_holdout_while_it_runs(
        tmp_path):
    """Round 2 is the last (max_proposals); its one proposal can push at most one candidate
    down, so the best candidate so far is surely among the final two: its held-back
    examples are scored as the round starts, not after it."""
    with TestServer(latency=0.05, reply=server_reply) as server:
        config = pareto_config(tmp_path, server.base_url, max_proposals=2, parallel=1,
                               final_candidates=2)
        assert main(["optimize", str(config)]) == 0
        server.wait_idle()
        calls = [r for r in server.requests if r.path.endswith("/chat/completions")]

    ledger = Ledger.in_run(next((tmp_path / "runs").iterdir()))
    steps = ledger.steps()
    [held] = steps[0]["search_state"]["holdout"]
    a, b = VAL[int(held.removeprefix("val-"))]
    best = next(c for c in ledger.candidates() if c.status == "accepted")
    assert best.step == 1
    holdout_run = next(r for r in calls if last_user(r.body) == f"What is {a} + {b}?"
                       and system_of(r.body) == best.values["system_prompt"])
    round_2 = [r for r in calls if last_user(r.body) in {
        f"What is {k} + {k + 1}?" for k in
        (int(e.removeprefix("train-")) for e in steps[2]["batch"])}]
    assert len(round_2) == 2  # right on both: nothing to learn, the round ends there
    assert holdout_run.arrived < max(r.ended for r in round_2)  # beside the round
    final = steps[-1]["search_state"]["final"]
    assert [c["id"] for c in final["candidates"]] == [best.id, 0]
    assert final["candidates"][0]["holdout_per_example"] == {held: 1.0}
    # counted once, by the final pick: 4 baseline + 2 x (2 + 2 minibatch) + 3 validation
    # of candidate 1 + 1 held back
    assert steps[-1]["search_state"]["metric_calls"] == 4 + 2 + 2 + 3 + 2 + 1


def test_a_one_round_search_begun_beside_the_baseline_scores_the_seeds_holdout_once(
        tmp_path):
    """Round 1 is then both the first and the last: the seed is surely a final candidate,
    but its held-back scores are the baseline's, not scored again."""
    with TestServer(latency=0.05, reply=server_reply) as server:
        config = pareto_config(tmp_path, server.base_url, max_proposals=1, parallel=1,
                               final_candidates=3)
        assert main(["optimize", str(config)]) == 0
        bodies = [r.body for r in server.requests if r.path.endswith("/chat/completions")]

    ledger = Ledger.in_run(next((tmp_path / "runs").iterdir()))
    [held] = ledger.step(0)["search_state"]["holdout"]
    a, b = VAL[int(held.removeprefix("val-"))]
    start = ledger.step(0)["values"]["system_prompt"]
    assert sum(last_user(body) == f"What is {a} + {b}?" and system_of(body) == start
               for body in bodies) == 1
    # 4 baseline + 2 + 2 minibatch + 3 validation of candidate 1 + its 1 held back
    assert ledger.steps()[-1]["search_state"]["metric_calls"] == 4 + 2 + 2 + 3 + 1


def test_the_final_test_does_not_wait_for_the_baselines(tmp_path):
    """A short search ends while the baseline's test (lowest priority) still runs: the
    final pick's test goes out beside it, ahead of it, and both are filed."""
    test = [(i, i) for i in range(10, 50)]
    with TestServer(latency=0.02, reply=server_reply) as server:
        config = Path(write_run_config(
            tmp_path, engine=f"openai-compatible:fake@{server.base_url}",
            train=[(i, i + 1) for i in range(8)], val=VAL, test=test,
            engines={"concurrency": 2}, run={"name": "search", "dir": str(tmp_path / "runs")},
            strategy={"kind": "pareto", "minibatch": 2, "holdout": 0, "parallel": 1,
                      "max_proposals": 1}))
        assert main(["optimize", str(config)]) == 0
        bodies = [r.body for r in server.requests if r.path.endswith("/chat/completions")]

    ledger = Ledger.in_run(next((tmp_path / "runs").iterdir()))
    start, final = ledger.step(0)["values"], ledger.meta()["final"]["values"]
    assert start != final
    questions = {f"What is {a} + {b}?" for a, b in test}
    baseline_test = [i for i, b in enumerate(bodies) if last_user(b) in questions
                     and system_of(b) == start["system_prompt"]]
    final_test = [i for i, b in enumerate(bodies) if last_user(b) in questions
                  and system_of(b) == final["system_prompt"]]
    assert len(baseline_test) == len(final_test) == len(test)
    assert final_test[0] < baseline_test[-1]
    assert ledger.step(0)["test_score"] == 0.0 and ledger.meta()["final"]["test_score"] == 1.0
