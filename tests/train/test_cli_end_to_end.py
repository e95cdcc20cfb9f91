"""The CLI end to end on a scripted engine: optimize, history, diff, export, report, eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from textprop.cli import main
from textprop.ledger import Ledger

from .fake_pipeline import IMPROVED, write_run_config

START = "You are a helpful assistant."


def write_config(tmp_path: Path, **trainer: object) -> Path:
    return Path(write_run_config(
        tmp_path, engine="python:tests.train.fake_pipeline:make_engine",
        train=[(1, 2), (3, 4), (5, 6), (7, 8)], val=[(2, 2), (4, 5), (6, 1)],
        test=[(9, 9), (1, 1), (3, 3), (2, 7)], system_prompt=START,
        run={"name": "arith", "dir": str(tmp_path / "runs")},
        trainer={"batch_size": 2, "steps_per_epoch": 2, **trainer}))


def run_cli(*args: str, capsys) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_optimize_improves_the_prompt_and_records_every_step(tmp_path, capsys):
    config = write_config(tmp_path)

    code, out, err = run_cli("optimize", str(config), "--json", capsys=capsys)

    assert code == 0, err
    summary = json.loads(out)
    run = Path(summary["run"])
    assert (summary["baseline_test"], summary["final_test"]) == (0.0, 1.0)
    assert (summary["baseline_val"], summary["best_val"]) == (0.0, 1.0)
    assert summary["values"] == {"system_prompt": IMPROVED}
    steps = Ledger.in_run(run).steps()
    assert [(s["step"], s["status"]) for s in steps] == [(0, "baseline"), (1, "accepted"),
                                                          (2, "skipped")]
    assert steps[2]["reason"] == "every example in the batch was right: no feedback"
    revision = Ledger.in_run(run).revisions(1)[0]
    assert (revision["before"], revision["after"]) == (START, IMPROVED)
    assert "Tell the model to end with a line 'Answer: <number>'." in revision["feedback"]
    losses = Ledger.in_run(run).losses(1)
    assert [row["explanation"].startswith("expected") for row in losses] == [True, True]
    assert (run / "config.toml").exists() and (run / "report.html").exists()
    usage = Ledger.in_run(run).usage_by_role()
    assert set(usage) == {"forward", "backward", "optimizer"}
    metered = sum(u["total"]["calls"] for u in summary["usage"].values())
    assert sum(role["calls"] for role in usage.values()) == metered  # the final test's too


def test_history_diff_export_and_report_read_the_run(tmp_path, capsys):
    config = write_config(tmp_path)
    run_cli("optimize", str(config), "--quiet", capsys=capsys)
    run = next((tmp_path / "runs").iterdir())

    _, history, _ = run_cli("history", str(run), capsys=capsys)
    assert history.splitlines()[1].split()[:3] == ["0", "1", "baseline"]
    assert history.splitlines()[2].split()[:3] == ["1", "1", "accepted"]

    _, diff, _ = run_cli("diff", str(run), "0", "1", capsys=capsys)
    assert f"-{START}" in diff and f"+{IMPROVED}" in diff

    _, exported, _ = run_cli("export", str(run), "--json", capsys=capsys)
    folder = Path(json.loads(exported)["folder"])
    assert (folder / "system_prompt.txt").read_text() == IMPROVED + "\n"
    assert json.loads((folder / "prompts.json").read_text()) == {"system_prompt": IMPROVED}

    _, report, _ = run_cli("report", str(run), "--json", capsys=capsys)
    assert Path(json.loads(report)["report"]).read_text().count("<svg") >= 1

    code, scored, _ = run_cli("eval", str(config), "--run", str(run), "--split", "test",
                              "--json", capsys=capsys)
    assert code == 0 and json.loads(scored) == {"split": "test", "score": 1.0, "n": 4}


def test_a_revision_can_wait_for_a_reviewer(tmp_path, capsys):
    config = write_config(tmp_path, approval=True)
    code, out, _ = run_cli("optimize", str(config), "--json", capsys=capsys)
    summary = json.loads(out)
    run = summary["run"]
    assert summary["status"] == "awaiting_approval"
    assert summary["values"] == {"system_prompt": START}  # not in force before approval

    code, _, _ = run_cli("approve", run, "1", "--note", "looks right", capsys=capsys)
    assert code == 0
    code, out, _ = run_cli("optimize", str(config), "--run-dir", run, "--resume", "--json",
                           capsys=capsys)
    summary = json.loads(out)
    assert summary["values"] == {"system_prompt": IMPROVED}
    assert Ledger.in_run(Path(run)).step(1)["status"] == "accepted"


@pytest.mark.parametrize("toml, field", [
    ('[task]\nbuiltin = "object_counting"\n[pipeline]\nsystem_prompt = "x"\n'
     '[trainer]\nbatch_sise = 2\n', "trainer.batch_sise"),
    ('[task]\nbuiltin = "object_counting"\n[pipeline]\nsystem_prompt = "x"\n'
     '[trainer]\nbatch_size = "two"\n', "trainer.batch_size"),
    ('[task]\nbuiltin = "object_counting"\n', "pipeline"),
])
def test_a_bad_config_names_the_file_and_the_field(tmp_path, capsys, toml, field):
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    code, _, err = run_cli("optimize", str(config), capsys=capsys)
    assert code == 1
    assert err.startswith(f"textprop: error: {config}, field '{field}': ")


def test_a_bad_dataset_row_names_the_file_and_line_and_keeps_the_ledger(tmp_path, capsys):
    config = write_config(tmp_path)
    run_cli("optimize", str(config), "--quiet", capsys=capsys)
    run = next((tmp_path / "runs").iterdir())
    before = Ledger.in_run(run).steps()

    val = tmp_path / "data" / "val.jsonl"
    val.write_text(val.read_text() + '{"question": "What is 1 + 1?"}\n')
    code, _, err = run_cli("optimize", str(config), "--run-dir", str(run), "--resume",
                           capsys=capsys)

    assert code == 1
    assert f"{val}, line 4" in err and "'answer'" in err
    assert Ledger.in_run(run).steps() == before


def test_early_stopping_and_testing_every_step(tmp_path, capsys):
    config = write_config(tmp_path, epochs=3, early_stopping=1, test_every_step=True)
    code, out, _ = run_cli("optimize", str(config), "--json", capsys=capsys)
    summary = json.loads(out)
    steps = Ledger.in_run(Path(summary["run"])).steps()

    assert code == 0 and summary["status"] == "stopped_early"
    assert [s["status"] for s in steps] == ["baseline", "accepted", "skipped"]  # of 6 planned
    assert steps[1]["test_score"] == 1.0


def write_search_config(tmp_path: Path, **strategy: object) -> Path:
    return Path(write_run_config(
        tmp_path, engine="python:tests.train.fake_pipeline:make_engine",
        train=[(i, i + 1) for i in range(8)], val=[(2, 2), (4, 6), (6, 1), (3, 3)],
        test=[(9, 9), (1, 1)], system_prompt=START,
        run={"name": "search", "dir": str(tmp_path / "runs")},
        strategy={"kind": "pareto", "max_proposals": 4, "minibatch": 2, "parallel": 2,
                  **strategy}))


def test_export_and_report_read_a_pareto_run(tmp_path, capsys):
    config = write_search_config(tmp_path)
    code, out, err = run_cli("optimize", str(config), "--json", capsys=capsys)
    assert code == 0, err
    run = Path(json.loads(out)["run"])
    ledger = Ledger.in_run(run)
    final = ledger.last_step()
    pick = final["search_state"]["final"]["pick"]
    picked = next(c for c in ledger.candidates() if c.id == pick)
    assert final["status"] == "final" and picked.values == {"system_prompt": IMPROVED}

    _, exported, _ = run_cli("export", str(run), "--json", capsys=capsys)
    folder = Path(json.loads(exported)["folder"])
    assert json.loads((folder / "prompts.json").read_text()) == picked.values
    assert (folder / "system_prompt.txt").read_text() == IMPROVED + "\n"

    _, report, _ = run_cli("report", str(run), "--json", capsys=capsys)
    page = Path(json.loads(report)["report"]).read_text()
    assert '<section class="card" id="search">' in page
    for c in ledger.candidates():
        assert f'<g class="node node-{c.status}" data-id="{c.id}"' in page
        assert f'<details class="candidate cand-{c.status}' in page
    assert page.count('class="pick-row"') == 1
