"""B1 pareto: how long the strategy's structure alone takes, and what a change would save.

A discrete-event model of B1's pareto run with a client that costs nothing: W slots served
first come first served (textprop's `Slots` are FIFO), every call 200 ms, the canned replies'
odds (training questions right with probability `--train-right`, feedback only for wrong
answers, a batch reduction when there are two or more, one rewrite per child, the strict
gate). Each run also counts its calls, so the bound calls / W x 0.2 s is the same as B1's.
What B1 measures above the model is the client and the machine (bench/b1_orchestration.py
`--frameworks floor` measures that part alone).

Layouts (`--layout`):

    rounds   what src/textprop/train/strategies/pareto.py does: `parallel` proposals start
             together and the next round starts when the last of them is filed; a
             proposal's validation starts once it and the proposals before it have made
             their children; each slot reserves minibatch x (1 + children) + |search val|
             of the budget at the round's start
    window   no barrier: proposal n starts as soon as proposal n - parallel is filed (its
             parent chosen from the pool as it stood then, which keeps the order
             deterministic); same reservations
    rounds-lazy / window-lazy   as above, but a proposal reserves only its minibatch runs
             at the start and its validation when its child passes the gate

    python bench/b1_pareto_sim.py                                   # the table of layouts
    python bench/b1_pareto_sim.py --parallel 16 --max-proposals 32  # one setting
"""

from __future__ import annotations

import argparse
import collections
import heapq
import itertools
import json
import random
import statistics
import sys

LATENCY = 0.2


class Server:
    """W slots, FIFO; a call holds a slot for LATENCY seconds."""

    def __init__(self, workers: int) -> None:
        self.workers, self.t, self.busy, self.calls = workers, 0.0, 0, 0
        self.queue: collections.deque = collections.deque()
        self.events: list = []
        self.seq = itertools.count()

    def at(self, t: float, fn) -> None:
        heapq.heappush(self.events, (t, next(self.seq), fn))

    def batch(self, n: int, done) -> None:
        """Submit n calls now; `done()` when the last of them has ended."""
        if n == 0:
            self.at(self.t, done)
            return
        left = [n]

        def one() -> None:
            left[0] -= 1
            if left[0] == 0:
                done()
        self.queue.extend([one] * n)
        self.pump()

    def pump(self) -> None:
        while self.busy < self.workers and self.queue:
            fn = self.queue.popleft()
            self.busy += 1
            self.calls += 1

            def end(fn=fn) -> None:
                self.busy -= 1
                self.pump()  # the slot passes to the next waiter first, as in Slots
                fn()
            self.at(self.t + LATENCY, end)

    def run(self) -> None:
        while self.events:
            self.t, _, fn = heapq.heappop(self.events)
            fn()


def simulate(*, parallel: int, max_proposals: int | None, budget: int | None,
             layout: str, workers: int = 32, minibatch: int = 3, children: int = 1,
             val: int = 100, holdout: float = 0.25, test: int = 100, final: int = 3,
             train_right: float = 0.4, seed: int = 0) -> dict:
    rng = random.Random(seed)
    srv = Server(workers)
    n_hold = int(val * holdout)
    search_val = val - n_hold
    window, lazy = layout.startswith("window"), layout.endswith("-lazy")
    state = {"used": val, "reserved": final * n_hold, "started": 0, "accepted": 0,
             "filed": 0, "search_end": 0.0, "rounds": 0}
    first_done: dict[int, bool] = {}
    waiting_validation: dict[int, tuple] = {}
    in_round: list[int] = []
    full_cost = minibatch * (1 + children) + search_val
    start_cost = minibatch * (1 + children) if lazy else full_cost

    def remaining() -> float:
        return float("inf") if budget is None else budget - state["used"] - state["reserved"]

    def right(n: int) -> int:
        return sum(rng.random() < train_right for _ in range(n))

    def may_start() -> bool:
        if max_proposals is not None and state["started"] >= max_proposals:
            return False
        if remaining() < start_cost:
            return False
        state["reserved"] += start_cost
        return True

    def proposal(n: int, filed) -> None:
        """minibatch -> feedback -> reduce -> rewrite -> gate -> (validation) -> filed"""
        first_done[n] = False
        held = [start_cost]

        def spend(k: int) -> None:
            state["used"] += k
            state["reserved"] -= k
            held[0] -= k

        def give_back() -> None:
            state["reserved"] -= held[0]
            held[0] = 0

        def after_minibatch() -> None:
            spend(minibatch)
            wrong = minibatch - right(minibatch)
            if wrong == 0:
                return first_phase_done(None)
            srv.batch(wrong, lambda: srv.batch(1 if wrong > 1 else 0, lambda: srv.batch(
                children, lambda: srv.batch(minibatch * children,
                                            lambda: gate(minibatch - wrong)))))

        def gate(before: int) -> None:
            spend(minibatch * children)
            best = max(right(minibatch) for _ in range(children))
            first_phase_done(best > before)

        def first_phase_done(passed) -> None:
            first_done[n] = True
            waiting_validation[n] = (passed,)
            release_validations()

        def validate(passed) -> None:
            if passed and lazy:
                if remaining() >= search_val:
                    state["reserved"] += search_val
                    held[0] += search_val
                else:
                    passed = False
            if not passed:
                give_back()
                return filed(n, False)

            def done() -> None:
                spend(search_val)
                give_back()
                filed(n, True)
            srv.batch(search_val, done)

        proposal.validate[n] = validate
        srv.batch(minibatch, after_minibatch)

    proposal.validate = {}

    def release_validations() -> None:
        """A proposal validates once it and every earlier unfiled proposal made children."""
        for n in sorted(waiting_validation):
            if all(first_done.get(m, True) for m in first_done if m < n):
                passed = waiting_validation.pop(n)[0]
                proposal.validate.pop(n)(passed)
            else:
                break

    def on_filed(n: int, accepted: bool) -> None:
        state["accepted"] += accepted
        state["filed"] += 1
        first_done.pop(n, None)
        if window:
            state["search_end"] = srv.t
            launch()
        else:
            in_round.remove(n)
            if not in_round:
                state["search_end"] = srv.t
                new_round()

    def launch() -> None:
        while state["started"] - state["filed"] < parallel and may_start():
            state["started"] += 1
            proposal(state["started"], on_filed)
        if state["started"] == state["filed"]:
            finish()

    def new_round() -> None:
        for _ in range(parallel):
            if not may_start():
                break
            state["started"] += 1
            in_round.append(state["started"])
        if not in_round:
            return finish()
        state["rounds"] += 1
        for n in list(in_round):
            proposal(n, on_filed)

    def finish() -> None:
        if state.get("finished"):
            return
        state["finished"] = True
        state["search_end"] = srv.t
        state["reserved"] -= final * n_hold
        k = min(final, state["accepted"])  # the seed's held-out scores are known
        srv.batch(k * n_hold, lambda: srv.batch(test, lambda: None))

    srv.batch(val + test, launch if window else new_round)  # the baseline, val and test
    srv.run()
    bound = srv.calls / workers * LATENCY
    return {"wall_s": srv.t, "calls": srv.calls, "bound_s": bound, "proposals":
            state["started"], "validated": state["accepted"], "rounds": state["rounds"],
            "wall_over_bound": srv.t / bound}


def summary(runs: list[dict]) -> dict:
    return {k: round(statistics.mean(r[k] for r in runs), 2) for k in runs[0]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parallel", type=int, action="append")
    p.add_argument("--max-proposals", type=int)
    p.add_argument("--budget", type=int, help="max_metric_calls")
    p.add_argument("--layout", action="append",
                   choices=["rounds", "window", "rounds-lazy", "window-lazy"])
    p.add_argument("--train-right", type=float, default=0.4)
    p.add_argument("--seeds", type=int, default=50)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    rows = []
    for layout in args.layout or ["rounds", "window", "rounds-lazy", "window-lazy"]:
        for parallel in args.parallel or [8, 12, 16, 24, 32]:
            runs = [simulate(parallel=parallel, max_proposals=args.max_proposals,
                             budget=args.budget, layout=layout, seed=s,
                             train_right=args.train_right) for s in range(args.seeds)]
            rows.append({"layout": layout, "parallel": parallel} | summary(runs))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("layout        parallel  rounds  proposals  validated  calls   bound   model wall  "
          "wall/bound")
    for r in rows:
        print(f"{r['layout']:13} {r['parallel']:8} {r['rounds']:7} {r['proposals']:10} "
              f"{r['validated']:10} {r['calls']:6.0f} {r['bound_s']:6.2f} s "
              f"{r['wall_s']:8.2f} s {r['wall_over_bound']:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
