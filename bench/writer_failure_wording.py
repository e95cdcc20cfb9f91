"""Probe: what the writer makes of minibatch failures whose replies were cut off.

In B4's GSM8K pareto cells about 40 % of the 0.5B model's replies stop at the 256-token cap
before their answer. Each such failure reaches the writer as "The reply was cut off at its
limit of 256 tokens before it finished; it has to finish within that limit. expected 124,
got 10 (the last number in the reply, which marks no final answer such as 'Answer: ...')",
and the 1.5B writer's instructions are format rules. This asks the writer again for each
mutation of the seed in a pareto cell's ledger (the same parent, critic feedback and
minibatch failures the cell had) in up to three wordings, and counts the instructions
that speak of length and of the answer format:

    as-run  the failures as the cell showed them;
    plain   a cut reply's explanation ending after the cut-off sentence and the expected
            answer (no "marks no final answer such as 'Answer: ...'");
    note    as run, followed by the note textprop now adds after the failures (how many
            were cut off, and that a shorter method fixes them: `pareto._failures`).

    python bench/writer_failure_wording.py --writer-url http://127.0.0.1:8782/v1 \\
        --ledger bench/runs/b4/gsm8k-pareto-s0-mmc300/run/ledger.sqlite3 --wordings as-run note
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from pathlib import Path

from textprop.engines import get_engine
from textprop.ledger import Ledger
from textprop.optim.tgd import TextualGradientDescent
from textprop.prompts import render
from textprop.variable import Gradient, Variable

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench/results/writer_failure_wording.json"
CUT = re.compile(r"^(The reply was cut off at .*? within that limit\.) expected (\S+?),")
LENGTH = re.compile(r"\b(short|shorter|brief|briefly|fewer|limit|limits|tokens?|length|"
                    r"lengthy|long|words|within|cut)\b", re.IGNORECASE)
FORMAT = re.compile(r"answer:|\$value|\bformat", re.IGNORECASE)


def plain(explanation: str) -> str:
    """A cut reply's explanation without the metric's clause on where its number came from."""
    match = CUT.match(explanation)
    return f"{match.group(1)} Expected {match.group(2)}." if match else explanation


def mutations(ledger: Path) -> list[dict]:
    """The seed's mutations with at least one cut-off failure: the parent value, the critic's
    feedback and the minibatch's failures."""
    book = Ledger(ledger, read_only=True)
    candidates = book.candidates()
    seed = candidates[0].values
    found = []
    for c in candidates:
        if c.parents != [0] or c.origin != "mutation":
            continue
        name = (c.changed or ["system_prompt"])[0]
        inputs = {o["example_id"]: o["input"] for o in book.step_outputs(c.step)
                  if o["position"] == 0}
        wrong = [{"input": inputs[loss["example_id"]], "output": loss["prediction"],
                  "expected": loss["target"], "explanation": loss["explanation"]}
                 for loss in book.losses(c.step) if loss["score"] < 1.0]
        if any(CUT.match(w["explanation"]) for w in wrong):
            found.append({"step": c.step, "name": name, "value": seed[name],
                          "feedback": c.feedback.get(name, ""), "failures": wrong})
    return found


async def ask(engine, row: dict, wording: str) -> dict:
    variable = Variable(row["value"], role_description="structured system prompt to a "
                        "somewhat capable language model that specifies the behavior and "
                        "strategies for the QA task")
    variable.gradients.add(Gradient(row["feedback"], role_description="feedback"))
    optimizer = TextualGradientDescent({row["name"]: variable}, engine=engine,
                                       max_tokens=400, edit="append")
    failures = "\n".join(render("optimizer_failure_item", input=f["input"], output=f["output"],
                                expected=f["expected"],
                                explanation=(plain(f["explanation"]) if wording == "plain"
                                             else f["explanation"]))
                         for f in row["failures"])
    if wording == "note":
        cut = sum(bool(CUT.match(f["explanation"])) for f in row["failures"])
        failures += "\n\n" + render("optimizer_failures_cut_off", count=cut,
                                     total=len(row["failures"]))
    record = await optimizer.arewrite(row["name"], failures=failures)
    added = record.after[len(row["value"]):].strip() if record.status == "updated" else ""
    return {"step": row["step"], "wording": wording, "status": record.status,
            "instruction": added, "length": bool(LENGTH.search(added)),
            "format": bool(FORMAT.search(added))}


async def run(args) -> dict:
    engine = get_engine(f"openai-compatible:{args.writer_model}@{args.writer_url}",
                        timeout=900)  # its server is busy with B4's cells
    rows = mutations(args.ledger)[:args.limit]
    results = []
    for row in rows:  # one at a time: the writer's server is shared with B4's cells
        for wording in args.wordings:
            results.append(await ask(engine, row, wording))
            print(json.dumps(results[-1])[:300], flush=True)
    summary = {w: {"asked": sum(r["wording"] == w for r in results),
                   "updated": sum(r["wording"] == w and r["status"] == "updated"
                                  for r in results),
                   "length": sum(r["wording"] == w and r["length"] for r in results),
                   "format": sum(r["wording"] == w and r["format"] for r in results)}
               for w in args.wordings}
    return {"probe": "writer_failure_wording", "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                      time.gmtime()),
            "ledger": str(args.ledger), "writer": args.writer_model, "summary": summary,
            "results": results}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ledger", type=Path, required=True)
    p.add_argument("--writer-url", required=True)
    p.add_argument("--writer-model", default="local:qwen2.5-coder-1.5b-q4_0+batch8")
    p.add_argument("--limit", type=int, default=12, help="mutations to ask again")
    p.add_argument("--wordings", nargs="+", default=["as-run", "plain", "note"],
                   choices=["as-run", "plain", "note"])
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    out = asyncio.run(run(args))
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["summary"], indent=1))


if __name__ == "__main__":
    main()
