"""What pareto's final-pick rule (`final_significance`) does to B4's textprop cells that ran
before it: for each finished cell, its pick's lead over the starting prompt on all of
validation (wins, losses, one-sided sign test), whether the rule keeps the start, and the
test scores either way (the start's is shared, so nothing is evaluated again).

    python bench/b4_final_pick.py [--runs bench/runs/b4] [--results bench/results/b4_quality.json]

Reads the cells' ledgers, which live in `bench/runs/` (not committed): run it on the
machine that ran the cells.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from textprop.ledger import Ledger  # noqa: E402
from textprop.train.strategies.evidence import paired_lead  # noqa: E402


def val_scores(ledger: Ledger, step: int) -> dict[str, float]:
    [row] = [e for e in ledger.evaluations(step) if e["split"] == "val"]
    return row["per_example"]


def picked_step(steps: list[dict]) -> int:
    """pareto: its final step; tgd: the last step it kept (the baseline if none)."""
    kept = [s["step"] for s in steps if s["status"] in ("baseline", "accepted", "final")]
    return kept[-1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, default=ROOT / "bench/runs/b4")
    p.add_argument("--results", type=Path, default=ROOT / "bench/results/b4_quality.json")
    p.add_argument("--significance", type=float, default=0.1)
    args = p.parse_args()
    cells = json.loads(args.results.read_text())["cells"]
    print("| cell | val: start -> pick | pick vs start on validation | rule | test: start -> "
          "pick | test with the rule |")
    print("| --- | --- | --- | --- | --- | --- |")
    for key, cell in sorted(cells.items()):
        if cell["framework"] not in ("pareto", "tgd") or cell["status"] != "ok":
            continue
        run = Path(cell["work_dir"]).name
        folder = args.runs / run / "run"
        if not (folder / "ledger.sqlite3").exists():
            print(f"| {key} | no ledger in {folder} | | | | |")
            continue
        ledger = Ledger.in_run(folder)
        steps = ledger.steps()
        start, final = val_scores(ledger, 0), val_scores(ledger, picked_step(steps))
        lead = paired_lead(final, start)
        kept = lead.p_value > args.significance and final != start
        with_rule = cell["start_test"] if kept else cell["final_test"]
        print(f"| {key} | {sum(start.values()) / len(start):.3f} -> "
              f"{sum(final.values()) / len(final):.3f} | {lead.wins} to {lead.losses}, "
              f"p = {lead.p_value:.3g} | {'keeps the start' if kept else 'keeps the pick'} | "
              f"{cell['start_test']:.2f} -> {cell['final_test']:.2f} | {with_rule:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
