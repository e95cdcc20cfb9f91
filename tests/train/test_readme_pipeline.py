"""The README's "Optimize your own pipeline" example, run as written (at most 30 lines) with
the engine swapped for the scripted model of `chain_model`."""

from __future__ import annotations

from pathlib import Path

import textprop
from textprop.engines.metering import Meter
from textprop.engines.scripted import ScriptedEngine

from .chain_model import DRAFT, LISTED, PLAN, reply

README = Path(__file__).parents[2] / "README.md"


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- pipeline-example -->", 1)[1].split("<!-- /pipeline-example -->")[0]
    return block.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_pipeline_example_runs_and_rewrites_the_first_step(tmp_path, monkeypatch,
                                                                     capsys):
    code = readme_example()
    assert len(code.strip().splitlines()) <= 30
    scripted = ScriptedEngine(name="scripted:chain")
    scripted.on(lambda r: True, lambda r: reply(r.system_prompt or "", r.prompt,
                                                r.json_schema is not None))
    engine = Meter(scripted, prices={"scripted:chain": (0.0, 0.0)})  # as get_engine meters
    monkeypatch.setattr(textprop, "get_engine", lambda spec: engine)
    monkeypatch.chdir(tmp_path)

    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)

    assert namespace["result"].values == {"plan": LISTED, "draft": DRAFT}
    out = capsys.readouterr().out
    assert "dataset-0 draft 'There are no numbers to add.' <- The numbers never arrived" in out
    assert f"0 baseline {PLAN}\n1 accepted {LISTED}\n" in out
    assert "'forward': {'calls': 30" in out  # 10 pipeline runs x 3 steps
    assert (tmp_path / "runs" / "chain" / "ledger.sqlite3").exists()
