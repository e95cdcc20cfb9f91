"""Probe: the rewrites a B4 tgd cell lost at the token cap, asked again with today's TGD.

In B4's object_counting tgd seed 1, 6 of 15 steps proposed nothing: the 1.5B writer's JSON
rewrite ran into the 400-token cap on all three tries. Now a reply cut off in a
loop is kept up to its first repeated sentence. This asks each lost step's rewrite again
(its value and feedback from the cell's ledger; the feedback shown plain, without the
conversation it came with, which the ledger does not keep) and files what TGD makes of it.

    python bench/b4_cutoff_probe.py --writer-url http://127.0.0.1:8782/v1 \
        --ledger bench/runs/b4/object_counting-tgd-s1-mmc300/run/ledger.sqlite3  # a cell's
    python bench/b4_cutoff_probe.py --writer-url ...   # again, from the inputs filed last time
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import subprocess
import time
from pathlib import Path

from textprop.engines import get_engine
from textprop.optim.tgd import TextualGradientDescent
from textprop.variable import Gradient, Variable

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench/results/b4_cutoff_probe.json"
WRITER = "local:qwen2.5-coder-1.5b-q4_0+batch8"


def lost_steps(ledger: Path) -> list[dict]:
    """The revisions whose rewrite was cut at max_tokens on every try."""
    db = sqlite3.connect(ledger)
    rows = db.execute("select step, name, role_description, before, feedback from revisions "
                      "where update_reason like '%cut at max_tokens%' order by step")
    return [dict(zip(("step", "name", "role_description", "before", "feedback"), r,
                     strict=True)) for r in rows]


async def ask_again(engine, row: dict, max_tokens: int) -> dict:
    variable = Variable(row["before"], role_description=row["role_description"])
    variable.gradients.add(Gradient(row["feedback"], role_description="feedback"))
    optimizer = TextualGradientDescent({row["name"]: variable}, engine=engine,
                                       max_tokens=max_tokens, edit="rewrite")
    record = await optimizer.arewrite(row["name"])
    added = (record.after[len(row["before"]):] if record.after.startswith(row["before"])
             else record.after)
    return {"step": row["step"], "status": record.status, "reason": record.reason,
            "attempts": record.attempts, "new_text": added.strip()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ledger", type=Path, help="a finished tgd cell's ledger (else the "
                   "inputs filed in --out last time)")
    p.add_argument("--writer-url", required=True)
    p.add_argument("--max-tokens", type=int, default=400)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    inputs = (lost_steps(args.ledger) if args.ledger
              else json.loads(args.out.read_text())["inputs"])
    engine = get_engine(f"openai-compatible:{WRITER}@{args.writer_url}", timeout=3600)

    async def run() -> list[dict]:
        return await asyncio.gather(*(ask_again(engine, row, args.max_tokens)
                                      for row in inputs))
    started = time.time()
    results = asyncio.run(run())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    args.out.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)), "commit": commit,
        "max_tokens": args.max_tokens, "inputs": inputs, "results": results}, indent=1) + "\n")
    for r in results:
        print(f"step {r['step']:>2}: {r['status']:<10} {r['reason'] or ''} {r['new_text']!r}")
    print(f"{sum(r['status'] == 'updated' for r in results)} of {len(results)} made a new "
          f"text ({sum('loop' in r['reason'] for r in results)} kept from a loop)")


if __name__ == "__main__":
    main()
