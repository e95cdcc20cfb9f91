"""`pareto`: a candidate pool searched with textual gradients, after GEPA.

Each round starts `parallel` proposals from the pool as it stood at the round's start (so
the ledger's order does not depend on timing). A mutation runs a training minibatch with its
parent's values, sends the metric's verdicts backward through the whole pipeline, and asks
the optimizer for `children` rewrites of the chosen parameters, shown the minibatch's
failures; each child runs on the same minibatch, and only the best one that beats its
parent there (the gate) is scored on validation and joins the pool. A merge combines two
candidates that changed different parameters from a common ancestor, gated on a validation
subsample. At the end the top `final_candidates` by validation are re-scored on a part of
validation the search never saw; the best over all of validation is the final pick if it
beats the starting values there by more than noise (`final_significance`), else the
starting values stay.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from textprop._sync import beside
from textprop.data.dataset import Example
from textprop.demos import Demo, Demonstrations, decode, encode
from textprop.engines.limits import low_priority
from textprop.errors import ConfigError
from textprop.functions.llm_call import cut_off_note
from textprop.ledger import CandidateRow, EvaluationRow, Ledger, Revision, StepRecord
from textprop.optim.tgd import UpdateRecord
from textprop.prompts import render
from textprop.train.context import CURRENT_STEP, Scored, step_output_rows
from textprop.train.pipelines.base import Pipeline
from textprop.train.strategies.base import Strategy
from textprop.train.strategies.demo_moves import DemoMove, moves
from textprop.train.strategies.evidence import paired_lead
from textprop.train.strategies.merge import Merge, find_merge
from textprop.train.strategies.pool import Candidate, Pool
from textprop.train.strategies.selection import selector
from textprop.variable import Variable

FINAL = "final"


@dataclass
class ParetoSettings:
    selection: Literal["pareto", "current_best", "epsilon_greedy"] = "pareto"
    epsilon: float = 0.1  # for epsilon_greedy
    minibatch: int = 3
    children: int = 1  # rewrites per parent: 0 greedy, k > 0 sampled with seed + k
    components: Literal["round_robin", "all"] = "round_robin"
    gate: Literal["strict", "non_decrease"] = "strict"
    parallel: int = 2  # proposals in flight at once
    merge: bool = False
    max_merges: int = 5
    merge_subsample: int = 5
    holdout: float = 0.25  # share of validation kept from the search, for the final pick
    final_candidates: int = 3
    # The final pick replaces the starting values only if it beats them on all of validation
    # by a one-sided paired sign test at this level; 1: the best, whatever its lead.
    final_significance: float = 0.1
    max_proposals: int | None = None  # besides the budget in metric calls
    show_failures: bool = True  # the rewrite prompt lists the minibatch's wrong outputs
    max_failures: int = 5
    # The rewrite prompt lists up to this many rewrites of the parent that failed the gate,
    # and a child repeating any rejected candidate is not gated again; 0: off.
    max_tried: int = 3
    # A parent whose last this many mutations of the same parameters proposed no new values
    # is not picked for them again (while another can be); 0: off.
    max_fruitless: int = 2
    demos: int = 0  # at most this many demonstrations per demonstrations parameter; 0: off
    max_demo_tokens: int | None = 1000  # a cap on their length (about 4 characters a token)
    demo_field: str | None = None  # a training field holding a worked answer to show

    def __post_init__(self) -> None:
        checks = {"minibatch": self.minibatch >= 1, "children": self.children >= 1,
                  "parallel": self.parallel >= 1, "holdout": 0 <= self.holdout < 1,
                  "final_candidates": self.final_candidates >= 1,
                  "merge_subsample": self.merge_subsample >= 1, "demos": self.demos >= 0,
                  "max_tried": self.max_tried >= 0, "max_fruitless": self.max_fruitless >= 0,
                  "epsilon": 0 <= self.epsilon <= 1,
                  "final_significance": 0 < self.final_significance <= 1}
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"strategy.{name} is out of range: "
                                  f"{getattr(self, name)!r}", field=f"strategy.{name}")


@dataclass
class _Proposal:
    """One proposal's first phase: what it made and the child (if any) to validate."""

    record: StepRecord
    children: list[CandidateRow] = field(default_factory=list)
    chosen: CandidateRow | None = None
    known: dict[str, float] = field(default_factory=dict)  # val scores already run (merge)
    reserved: int = 0


class ParetoStrategy(Strategy):
    kind = "pareto"

    def __init__(self, settings: ParetoSettings | None = None) -> None:
        self.settings = settings or ParetoSettings()
        self.pool = Pool()
        self.lineage: dict[int, list[int]] = {}
        self.next_id = 1
        self.merges = 0
        self.tried_merges: set[tuple[int, int, int]] = set()
        self.rejected: list[CandidateRow] = []  # children that failed the gate, in id order
        # (parent, parameters) -> its mutations in a row that proposed no new values
        self.fruitless: dict[tuple[int, tuple[str, ...]], int] = {}
        self.accepted_since_merge = False
        self.search_done = False
        self.final_pick: int | None = None
        self._select = selector(self.settings.selection, self.settings.epsilon)
        self._started: asyncio.Future[None] | None = None  # set when round 1 began early
        self._prescoring: asyncio.Future[int] | None = None  # the final pick's, begun early

    @classmethod
    def from_options(cls, **options: Any) -> ParetoStrategy:
        return cls(ParetoSettings(**options))

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, **vars(self.settings)}

    @property
    def best_val(self) -> float:
        if self.final_pick is not None and self.final_pick in self.pool.members:
            return self._full_val(self.pool[self.final_pick])
        return self.pool.best().score if len(self.pool) else 0.0

    def planned_steps(self) -> int | None:
        return self.settings.max_proposals

    # --- validation parts ----------------------------------------------------------------
    def bind(self, ctx: Any) -> None:
        super().bind(ctx)
        val = list(ctx.splits.val)
        if self.settings.max_proposals is None and ctx.metric_calls.limit is None:
            raise ConfigError("the pareto strategy needs a bound: [budget] max_metric_calls "
                              "or [strategy] max_proposals", field="strategy.max_proposals")
        if not hasattr(ctx.pipeline, "clone") and (self.settings.parallel > 1
                                                   or self.settings.children > 1):
            raise ConfigError("a pipeline without clone() runs one candidate at a time: set "
                              "[strategy] parallel = 1 and children = 1, or give the pipeline "
                              "a clone() method", field="strategy.parallel")
        n_hold = math.floor(len(val) * self.settings.holdout)
        order = sorted(val, key=lambda e: e.id)
        random.Random(f"{ctx.seed}:holdout").shuffle(order)
        held = {e.id for e in order[:n_hold]} if len(val) - n_hold >= 1 else set()
        self.search_val = [e for e in val if e.id not in held]
        self.holdout = [e for e in val if e.id in held]
        self._holdout_reserve = (self.settings.final_candidates * len(self.holdout))
        self.holdout_scores: dict[int, dict[str, float]] = {}
        self.bootstrap: dict[str, Demo] = {}  # training example id -> its pair, in order
        field = self.settings.demo_field
        if field and self.settings.demos:
            for e in ctx.splits.train:
                answer = e.target if field == "target" else e.fields.get(field)
                if answer is not None:
                    self.bootstrap[e.id] = Demo(self._question(e), answer, e.id)

    def _full_scores(self, candidate: Candidate) -> dict[str, float]:
        return {**candidate.per_example, **self.holdout_scores.get(candidate.id, {})}

    def _full_val(self, candidate: Candidate) -> float:
        scores = self._full_scores(candidate)
        return sum(scores.values()) / max(len(scores), 1)

    # --- start, restore ------------------------------------------------------------------
    def begin(self, started: asyncio.Future[None]) -> bool:
        """Round 1 may start beside the baseline's validation: its parent is the seed
        whatever the seed scores, and each proposal runs on its own copy of the pipeline."""
        if not hasattr(self.ctx.pipeline, "clone"):
            return False  # the proposals would change the values validation is running
        self.pool.add(Candidate(0, self.ctx.values(), {}, []))  # scored in `start`
        self._reserve_holdout()
        self._started = started
        return True

    def _reserve_holdout(self) -> None:
        if not self.ctx.metric_calls.reserve(self._holdout_reserve):
            self._holdout_reserve = 0

    def start(self, baseline: StepRecord) -> None:
        val = next(e.per_example for e in baseline.evaluations if e.split == "val")
        seed = Candidate(0, dict(baseline.values),
                         {e.id: val[e.id] for e in self.search_val}, [])
        self.pool.add(seed)
        self.lineage[0] = []
        self.holdout_scores[0] = {e.id: val[e.id] for e in self.holdout}
        baseline.candidates.append(CandidateRow(
            id=0, step=0, parents=[], origin="seed", values=dict(baseline.values),
            status="seed", reason="the starting values", val_score=seed.score,
            val_per_example=seed.per_example))
        if self._started is None:
            self._reserve_holdout()
        baseline.search_state = {**baseline.search_state, "holdout": [e.id for e in
                                                                       self.holdout]}

    def restore(self, ledger: Ledger) -> None:
        for row in ledger.candidates():
            self.lineage[row.id] = row.parents
            self.next_id = max(self.next_id, row.id + 1)
            if row.status in ("seed", "accepted"):
                self.pool.add(Candidate(row.id, row.values, row.val_per_example or {},
                                        row.parents))
            elif row.status == "rejected" and row.origin == "mutation":
                self.rejected.append(row)
        baseline = ledger.step(0)
        val = next(e["per_example"] for e in ledger.evaluations(0) if e["split"] == "val")
        self.holdout_scores[0] = {e.id: val[e.id] for e in self.holdout}
        steps = ledger.steps()
        statuses: dict[int, list[str]] = {}
        for row in ledger.candidates():
            statuses.setdefault(row.step, []).append(row.status)
        for s in steps:
            state = s["search_state"]
            if "parent" in state:
                self._note_fruit(state["parent"], state["components"],
                                 statuses.get(s["step"], []))
            if "merge" in state:
                self.merges += 1
                self.tried_merges.add(tuple(state["merge"]))
            if state.get("accepted_since_merge") is not None:
                self.accepted_since_merge = state["accepted_since_merge"]
            if FINAL in state:
                self.search_done = True
                self.final_pick = state[FINAL]["pick"]
                self.status = state[FINAL].get("status", self.status)
                for c in state[FINAL]["candidates"]:
                    self.holdout_scores[c["id"]] = c["holdout_per_example"]
        train = {e.id: e for e in self.ctx.splits.train}
        for row in ledger.losses():
            if row["step"] > 0 and row["score"] >= 1.0 and row["example_id"] in train:
                self._learn_pair(train[row["example_id"]], row["prediction"])
        last = steps[-1]
        self.ctx.metric_calls.used = last["search_state"].get("metric_calls", 0)
        if not self.search_done:
            self.ctx.metric_calls.reserve(self._holdout_reserve)
        if last["status"] == "pending" and FINAL in last["search_state"]:
            self.ctx.apply(baseline["values"])  # in force until a reviewer decides
        else:
            self.ctx.apply(last["values"])

    def settle_approval(self, ledger: Ledger, pending: dict[str, Any], decision: str) -> None:
        step = pending["step"]
        if decision == "approved":
            self.ctx.apply(pending["values"])
            ledger.update_step_status(step, FINAL, f"{pending['reason']}; approved")
        else:
            values = ledger.step(0)["values"]
            self.final_pick = 0
            self.ctx.apply(values)
            ledger.update_step_status(step, "rejected", f"{pending['reason']}; rejected by "
                                      "a reviewer: the starting values stay", values=values)

    # --- a round -------------------------------------------------------------------------
    def _first_phase_cost(self, kind: str) -> int:
        """What a proposal may spend before its validation: reserved when it starts."""
        s = self.settings
        return s.merge_subsample if kind == "merge" else s.minibatch * (1 + s.children)

    async def next_round(self, step: int) -> list[StepRecord]:
        if self.search_done:
            return []
        s, budget = self.settings, self.ctx.metric_calls
        slots: list[tuple[int, str, int]] = []  # (step, kind, reserved)
        merge_first = (s.merge and self.merges < s.max_merges and self.accepted_since_merge
                       and len(self.pool) >= 3)
        for slot in range(s.parallel):
            number = step + slot
            if s.max_proposals is not None and number > s.max_proposals:
                break
            kind = "merge" if merge_first and slot == 0 else "mutation"
            cost = self._first_phase_cost(kind)
            # Start it only if it could also pay for its own validation; that is reserved
            # when (and if) a child passes the gate, in proposal order.
            if budget.remaining < cost + len(self.search_val):
                break
            budget.reserve(cost)
            slots.append((number, kind, cost))
        if not slots:
            self.status = "budget_spent" if (s.max_proposals is None or step <=
                                             s.max_proposals) else "finished"
            return []
        snapshot = self.pool.copy()
        rejected = tuple(self.rejected)  # as the round started, like the pool
        merge: Merge | None = None
        if slots[0][1] == "merge":
            rng = random.Random(f"{self.ctx.seed}:merge:{slots[0][0]}")
            merge = find_merge(snapshot, self.lineage, list(snapshot.leaders()),
                               self.tried_merges, rng)
            if merge is None:  # nothing to merge: the slot mutates instead
                budget.release(slots[0][2])
                cost = self._first_phase_cost("mutation")
                if budget.remaining >= cost + len(self.search_val):
                    budget.reserve(cost)
                    slots[0] = (slots[0][0], "mutation", cost)
                else:
                    slots = slots[1:]
                    if not slots:
                        self.status = "budget_spent"
                        return []
        self._prescore_holdout(slots)
        first_phase = [asyncio.ensure_future(self._in_step(
            number, self._merge(number, merge, reserved) if kind == "merge"
            else self._mutate(number, snapshot, rejected, reserved)))
            for number, kind, reserved in slots]
        decisions: list[asyncio.Future[_Proposal]] = []
        for i in range(len(slots)):
            decisions.append(asyncio.ensure_future(self._decide(first_phase, decisions, i)))
        try:
            done = await asyncio.gather(*(self._in_step(number, self._validated(decisions[i]))
                                          for i, (number, _, _) in enumerate(slots)))
        finally:
            for task in first_phase + decisions:
                task.cancel()
        if self._started is not None:
            await self._started  # filing reads the seed's scores (a failure is raised)
        return self._file([p for p, _ in done], [e for _, e in done])

    def _surely_last(self, slots: list[tuple[int, str, int]]) -> bool:
        """Whether no round can follow this one, however its proposals turn out: all it
        could give back of the budget (a mutation always runs its parent's minibatch) would
        still not start another, or the proposals run out."""
        s = self.settings
        if s.max_proposals is not None and slots[-1][0] >= s.max_proposals:
            return True
        cheapest = min(self._first_phase_cost(k) for k in (
            ("mutation", "merge") if s.merge else ("mutation",))) + len(self.search_val)
        give_back = sum(r - len(self._minibatch(number)[1]) if kind == "mutation" else r
                        for number, kind, r in slots)
        return self.ctx.metric_calls.remaining + give_back < cheapest

    def _prescore_holdout(self, slots: list[tuple[int, str, int]]) -> None:
        """In the last round, the candidates sure to stay among the final ones (each
        proposal adds at most one above them) are scored on the held-back part while it
        runs, in the slots it leaves idle: the final pick then waits only for the rest."""
        keep = self.settings.final_candidates - len(slots)
        sure = [c for c in self.pool.ranked()[:max(keep, 0)]  # the seed's: the baseline's
                if c.id != 0 and c.id not in self.holdout_scores]
        if not (sure and self.holdout and hasattr(self.ctx.pipeline, "clone")
                and self._surely_last(slots)):
            return
        with low_priority(1):  # after the round's own calls (the final step files them)
            self._prescoring = beside(self._in_step(slots[-1][0] + 1,
                                                    self._score_holdout(sure)))

    async def _score_holdout(self, candidates: list[Candidate]) -> int:
        """Score candidates on the held-back part (spent from the budget by `finish`, so
        the counts filed with the last round do not depend on when this ends)."""
        ctx = self.ctx
        if hasattr(ctx.pipeline, "clone"):
            scored = await asyncio.gather(*(ctx.score_all(
                self.holdout, self._instance(c.values), counted=False) for c in candidates))
        else:  # one shared pipeline: one candidate at a time
            scored = [await ctx.score_all(self.holdout, self._instance(c.values),
                                          counted=False) for c in candidates]
        for c, rows in zip(candidates, scored, strict=True):
            self.holdout_scores[c.id] = {x.example.id: x.score for x in rows}
        return len(candidates) * len(self.holdout)

    @staticmethod
    async def _in_step(step: int, work: Any) -> Any:
        CURRENT_STEP.set(step)  # a fresh task per proposal: its calls are filed under it
        return await work

    # --- mutation ------------------------------------------------------------------------
    def _minibatch(self, step: int) -> tuple[int, list[Example]]:
        """(epoch, minibatch) for `step`: a seeded stream of epochs over the training set."""
        train, size = self.ctx.splits.train, self.settings.minibatch
        per_epoch = max(len(train) // size, 1) if len(train) >= size else 1
        epoch, index = divmod(step - 1, per_epoch)
        batches = train.batches(size, seed=self.ctx.seed + epoch)
        return epoch, list(batches[index % len(batches)])

    def _components(self, step: int) -> list[str]:
        names = [n for n, v in self.ctx.parameters.items()
                 if not isinstance(v, Demonstrations) or self.settings.demos > 0]
        if self.settings.components == "all":
            return names
        return [names[(step - 1) % len(names)]]

    def _instance(self, values: dict[str, str]) -> Pipeline:
        """A copy of the pipeline holding `values`, so proposals can run side by side."""
        clone = getattr(self.ctx.pipeline, "clone", None)
        pipeline = self.ctx.pipeline if clone is None else clone()
        self.ctx.apply(values, pipeline)
        return pipeline

    def _tried(self, parent: int, names: list[str], rejected: tuple[CandidateRow, ...]
               ) -> dict[str, list[str]]:
        """Per parameter, the latest rewrites of `parent` that failed the gate, newest first."""
        tried: dict[str, list[str]] = {}
        for name in names:
            texts = tried.setdefault(name, [])
            for row in reversed(rejected):
                value = row.values.get(name)
                if (row.parents == [parent] and name in row.changed and value not in texts
                        and len(texts) < self.settings.max_tried):
                    texts.append(value)
        return tried

    def _parents(self, pool: Pool, names: list[str]) -> tuple[Pool, list[int]]:
        """The candidates a mutation of `names` may start from, and those left out.

        The 1.5B writer, once it has nothing to add to a candidate, has nothing to add the
        next times either: in B4's object_counting pareto cells one parent came back
        unchanged 9 times in 9 picks (seed 1) and another 8 in 8 (seed 0), each pick paying
        its minibatch run; a third of the proposals made nothing."""
        limit = self.settings.max_fruitless
        out = [i for i in pool.members if self.fruitless.get((i, tuple(names)), 0) >= limit]
        if not limit or not out or len(out) == len(pool):
            return pool, []
        return Pool(c for i, c in pool.members.items() if i not in out), sorted(out)

    def _note_fruit(self, parent: int, names: list[str], statuses: list[str]) -> None:
        """Count a mutation that proposed nothing new (every child unchanged or a
        duplicate) against its parent; one that proposed anything resets the count."""
        if not statuses:  # nothing to learn from (all right), or no move: not the writer's
            return
        key = (parent, tuple(names))
        barren = all(status in ("unchanged", "duplicate") for status in statuses)
        self.fruitless[key] = self.fruitless.get(key, 0) + 1 if barren else 0

    async def _mutate(self, step: int, pool: Pool, rejected: tuple[CandidateRow, ...],
                      reserved: int) -> _Proposal:
        ctx, s = self.ctx, self.settings
        started = time.time()
        names = self._components(step)
        parents, left_out = self._parents(pool, names)
        parent = pool[self._select(parents, random.Random(f"{ctx.seed}:parent:{step}"))]
        epoch, minibatch = self._minibatch(step)
        pipeline = self._instance(parent.values)
        optimizer = ctx.optimizer.with_parameters(pipeline.parameters())
        scored = await ctx.score_all(minibatch, pipeline)
        before = _total(scored)
        record = StepRecord(
            step=step, epoch=epoch, status="skipped", reason="", values={},
            optimizer_state={}, batch=[e.id for e in minibatch],
            batch_score=before / len(scored), started_at=started,
            losses=[x.loss_row() for x in scored],
            search_state={"parent": parent.id, "components": names,
                          **({"left_out": left_out} if left_out else {})})
        proposal = _Proposal(record, reserved=reserved - len(minibatch))
        record.step_outputs = step_output_rows(scored)  # the parent's minibatch run
        if all(x.score >= 1.0 for x in scored):
            record.reason = (f"candidate {parent.id} got every minibatch example right: "
                             "nothing to learn from")
            return proposal
        by_child = await self._updates(step, names, pipeline, optimizer, scored,
                                       self._tried(parent.id, names, rejected))
        record.step_outputs = step_output_rows(scored)  # now with the feedback
        if not by_child:
            record.reason = "no demonstration move applies yet (no right answer to show)"
            return proposal
        record.revisions = [Revision(u.name, u.role_description, u.before, u.after,
                                     u.feedback, u.status, u.reason) for u in by_child[0]]
        feedback = {u.name: u.feedback for u in by_child[0]}
        seen: list[dict[str, str]] = []
        pending: list[tuple[CandidateRow, Pipeline]] = []
        for k, updates in enumerate(by_child):
            values = {**parent.values, **{u.name: u.after for u in updates}}
            row = CandidateRow(
                id=-1, step=step, parents=[parent.id], origin="mutation", values=values,
                status="", reason="", sample=k, feedback=feedback, minibatch=record.batch,
                changed=[u.name for u in updates if u.after != u.before],
                gate_before=before / len(scored))
            if values == parent.values:
                row.status, row.reason = "unchanged", "; ".join(
                    f"{u.name}: {u.reason or u.status}" for u in updates)
            elif values in seen or pool.holds_values(values) is not None:
                row.status, row.reason = "duplicate", "the same values as an earlier candidate"
            elif s.max_tried and (twin := next((r for r in rejected if r.values == values),
                                               None)):
                row.status, row.reason = "duplicate", (f"the same values as candidate "
                                                       f"{twin.id}, which failed the gate")
            else:
                seen.append(values)
                pending.append((row, self._instance(values)))
                row.reason = "".join(f"{u.name}: {u.reason}; " for u in updates
                                     if u.reason and u.after != u.before)
            proposal.children.append(row)
            ctx.events.on_candidate_proposed(row)
        gated = await asyncio.gather(*(ctx.score_all(minibatch, p) for _, p in pending))
        proposal.reserved -= len(minibatch) * len(pending)  # the rest is released in turn
        best: tuple[float, CandidateRow] | None = None
        for (row, _), child_scored in zip(pending, gated, strict=True):
            after = _total(child_scored)
            row.gate_after = after / len(child_scored)
            passed = after > before if s.gate == "strict" else after >= before
            row.status = "passed" if passed else "rejected"
            row.reason = (f"{row.reason}minibatch {before:g} -> {after:g} of "
                          f"{len(minibatch)}: {'passed' if passed else 'failed'} the "
                          f"{s.gate} gate")
            ctx.events.on_candidate_gated(row, passed)
            if passed and (best is None or after > best[0]):
                best = (after, row)
        if best is not None:
            proposal.chosen = best[1]
            for row, _ in pending:
                if row.status == "passed" and row is not best[1]:
                    row.status = "outscored"
                    row.reason += f"; child {best[1].sample} scored higher"
        else:
            record.status = "rejected"
            record.reason = (f"from candidate {parent.id}: no child beat it on the minibatch"
                             if pending else f"from candidate {parent.id}: no new values "
                             "were proposed")
        return proposal

    async def _updates(self, step: int, names: list[str], pipeline: Pipeline, optimizer: Any,
                       scored: list[Scored], tried: dict[str, list[str]]
                       ) -> list[list[UpdateRecord]]:
        """Per child, the change to each chosen parameter: a rewrite of a text from its
        feedback, or a move on a demonstrations list."""
        s, parameters = self.settings, pipeline.parameters()
        texts = [n for n in names if not isinstance(parameters[n], Demonstrations)]
        exclude = {x.example.id for x in scored}
        rng = random.Random(f"{self.ctx.seed}:demos:{step}")
        planned = {n: moves(decode(parameters[n].value), list(self.bootstrap.values()),
                            max_pairs=s.demos, max_tokens=s.max_demo_tokens, exclude=exclude,
                            rng=rng, count=s.children) for n in names if n not in texts}
        children = s.children if texts else min((len(m) for m in planned.values()), default=0)
        if children == 0:
            return []
        if texts or any(m.kind == "rewrite" for ms in planned.values() for m in ms):
            await self.ctx.backward(scored)
        failures = _failures(scored, s.max_failures) if s.show_failures else ""
        work = [optimizer.arewrite(n, failures=failures, sample=k, tried=tried.get(n, ()))
                if n in texts
                else self._move(parameters[n], n, planned[n][k] if k < len(planned[n])
                                else None, optimizer, failures)
                for k in range(children) for n in names]
        done = await asyncio.gather(*work)
        return [list(done[k * len(names):(k + 1) * len(names)]) for k in range(children)]

    async def _move(self, demos: Any, name: str, move: DemoMove | None, optimizer: Any,
                    failures: str) -> UpdateRecord:
        feedback = demos.get_gradient_text()
        record = dict(name=name, role_description=demos.role_description, before=demos.value,
                      feedback=feedback)
        if move is None:
            return UpdateRecord(**record, after=demos.value, status="unchanged",
                                reason="no further move applies", attempts=0)
        pairs = list(move.pairs)
        if move.kind != "rewrite":
            return UpdateRecord(**record, after=encode(pairs), status="updated",
                                reason=move.description, attempts=0)
        assert move.target is not None
        old = pairs[move.target]
        output = Variable(old.output, role_description=render(
            "demos_output_role", input=old.input))
        for gradient in demos.gradients:
            output.gradients.add(gradient)
        rewrite = await optimizer.with_parameters({"output": output}).arewrite(
            "output", failures=failures)
        pairs[move.target] = Demo(old.input, rewrite.after, old.source)
        return UpdateRecord(**record, after=encode(pairs), status=rewrite.status,
                            reason=f"{move.description}: {rewrite.reason or 'rewritten'}",
                            attempts=rewrite.attempts)

    def _question(self, example: Example) -> str:
        """What the pipeline shows the model for `example` (its template filled in)."""
        question = getattr(self.ctx.pipeline, "question_text", None)
        return question(example) if question else example.input

    def _learn_pair(self, example: Example, output: str) -> None:
        if self.settings.demos and example.id not in self.bootstrap:
            self.bootstrap[example.id] = Demo(self._question(example), output, example.id)

    # --- merge ---------------------------------------------------------------------------
    async def _merge(self, step: int, merge: Merge | None, reserved: int) -> _Proposal:
        assert merge is not None
        ctx = self.ctx
        first, second = self.pool[merge.first], self.pool[merge.second]
        record = StepRecord(step=step, epoch=0, status="rejected", reason="", values={},
                            optimizer_state={}, started_at=time.time(),
                            search_state={"merge": [merge.first, merge.second,
                                                    merge.ancestor]})
        differ = [e for e in self.search_val
                  if first.per_example.get(e.id) != second.per_example.get(e.id)]
        same = [e for e in self.search_val if e not in differ]
        rng = random.Random(f"{ctx.seed}:subsample:{step}")
        rng.shuffle(differ)
        rng.shuffle(same)
        subsample = (differ + same)[:self.settings.merge_subsample]
        record.batch = [e.id for e in subsample]
        pipeline = self._instance(merge.values)
        scored = await ctx.score_all(subsample, pipeline)
        after = _total(scored)
        before = max(sum(c.per_example[e.id] for e in subsample) for c in (first, second))
        passed = after >= before
        taken = ", ".join(f"{name} from {i}" for name, i in merge.taken.items())
        row = CandidateRow(
            id=-1, step=step, parents=[merge.first, merge.second], origin="merge",
            values=merge.values, status="passed" if passed else "rejected",
            reason=(f"merge of {merge.first} and {merge.second} over ancestor "
                    f"{merge.ancestor} ({taken}): subsample {before:g} -> {after:g} of "
                    f"{len(subsample)}"),
            changed=sorted(n for n, i in merge.taken.items()
                           if merge.values[n] != self.pool[merge.ancestor].values[n]),
            minibatch=record.batch, gate_before=before / max(len(subsample), 1),
            gate_after=after / max(len(subsample), 1))
        record.batch_score = row.gate_after
        proposal = _Proposal(record, children=[row], chosen=row if passed else None,
                             known={x.example.id: x.score for x in scored},
                             reserved=reserved - len(subsample))
        ctx.events.on_candidate_proposed(row)
        ctx.events.on_candidate_gated(row, passed)
        if not passed:
            record.reason = row.reason + ": worse than its better parent"
        return proposal

    # --- validation and filing -----------------------------------------------------------
    async def _decide(self, first_phase: list[asyncio.Future[_Proposal]],
                      decisions: list[asyncio.Future[_Proposal]], index: int) -> _Proposal:
        """Whether proposal `index` is validated, decided once it has made its children and
        every earlier proposal of the round is decided, so the outcome never depends on
        which finished first: a child that repeats an earlier one is not validated again,
        and validation is paid for in proposal order while the budget lasts."""
        proposal = await first_phase[index]
        if index:
            await decisions[index - 1]
        budget = self.ctx.metric_calls
        budget.release(proposal.reserved)  # what its first phase did not spend
        proposal.reserved = 0
        row = proposal.chosen
        if row is None:
            return proposal
        earlier = [d.result().chosen for d in decisions[:index]]
        todo = len([e for e in self.search_val if e.id not in proposal.known])
        if any(e is not None and e.values == row.values for e in earlier):
            row.status, row.reason = "duplicate", (row.reason + "; the same values as an "
                                                   "earlier proposal of this round")
            proposal.record.reason = "its child repeats an earlier proposal of the round"
        elif not budget.reserve(todo):
            row.status = "unvalidated"
            row.reason += "; the metric-call budget cannot pay for its validation"
            proposal.record.reason = "its child passed the gate; the budget was spent"
        else:
            proposal.reserved = todo
            return proposal
        proposal.chosen = None
        proposal.record.status = "rejected"
        return proposal

    async def _validated(self, decision: asyncio.Future[_Proposal]
                         ) -> tuple[_Proposal, EvaluationRow | None]:
        proposal = await decision
        row = proposal.chosen
        if row is None:
            return proposal, None
        todo = [e for e in self.search_val if e.id not in proposal.known]
        scored = await self.ctx.score_all(todo, self._instance(row.values))
        per_example = {**proposal.known, **{x.example.id: x.score for x in scored}}
        per_example = {e.id: per_example[e.id] for e in self.search_val}
        evaluation = EvaluationRow("val", sum(per_example.values()) / max(len(per_example), 1),
                                   per_example)
        self.ctx.events.on_evaluation("val", evaluation)
        return proposal, evaluation

    def _file(self, proposals: list[_Proposal],
              evaluations: list[EvaluationRow | None]) -> list[StepRecord]:
        records = []
        for proposal, evaluation in zip(proposals, evaluations, strict=True):
            record = proposal.record
            for row in proposal.children:
                row.id, self.next_id = self.next_id, self.next_id + 1
                self.lineage[row.id] = row.parents
                if row.status == "rejected" and row.origin == "mutation":
                    self.rejected.append(row)
            if evaluation is not None and proposal.chosen is not None:
                row = proposal.chosen
                row.status = "accepted"
                row.val_score, row.val_per_example = evaluation.score, evaluation.per_example
                row.reason += f"; validation {evaluation.score:.3f}: joined the pool"
                self.pool.add(Candidate(row.id, row.values, evaluation.per_example,
                                        row.parents))
                self.accepted_since_merge = self.accepted_since_merge or row.origin != "merge"
                record.status, record.val_score = "accepted", evaluation.score
                record.evaluations.append(evaluation)
                record.reason = (f"candidate {row.id} from {row.parents}: "
                                 f"{row.reason}")
                self.ctx.events.on_candidate_accepted(row)
            elif record.status == "skipped" and not record.reason:
                record.status = "rejected"
            if "parent" in record.search_state:
                self._note_fruit(record.search_state["parent"],
                                 record.search_state["components"],
                                 [row.status for row in proposal.children])
            if left_out := record.search_state.get("left_out"):
                record.reason = "; ".join(filter(None, [
                    record.reason, f"not picked as parent: candidate"
                    f"{'s' if len(left_out) > 1 else ''} {', '.join(map(str, left_out))} "
                    f"(nothing new in the last {self.settings.max_fruitless} mutations)"]))
            if "merge" in record.search_state:
                self.merges += 1
                self.tried_merges.add(tuple(record.search_state["merge"]))
                self.accepted_since_merge = False
            best = self.pool.best()
            record.values, record.best_val_score = dict(best.values), best.score
            record.candidates = sorted(proposal.children, key=lambda c: c.id)
            records.append(record)
        train = {e.id: e for e in self.ctx.splits.train}
        for record in records:  # right answers on training minibatches become demo pairs
            for row in record.losses:
                if row.score >= 1.0 and row.example_id in train:
                    self._learn_pair(train[row.example_id], row.prediction)
        self.ctx.apply(self.pool.best().values)
        for record in records:
            record.search_state.update(metric_calls=self.ctx.metric_calls.used,
                                       accepted_since_merge=self.accepted_since_merge)
            record.calls = self.ctx.take_calls(record.step)
        return records

    # --- the final pick ------------------------------------------------------------------
    async def finish(self, step: int) -> StepRecord | None:
        if self.search_done:
            return None
        self.search_done = True
        ctx = self.ctx
        CURRENT_STEP.set(step)
        runs = await self._prescoring if self._prescoring is not None else 0
        top = self.pool.ranked()[:self.settings.final_candidates]
        todo = [c for c in top if c.id not in self.holdout_scores]
        runs += await self._score_holdout(todo)
        ctx.metric_calls.release(self._holdout_reserve)
        ctx.metric_calls.spend(runs)
        best = max(top, key=lambda c: (self._full_val(c), c.score, -c.id))
        n_val = len(self.search_val) + len(self.holdout)
        rule = (f"the best of the top {len(top)} by validation over all {n_val} validation "
                f"examples, {len(self.holdout)} of them held back from the search")
        pick, evidence = best, None
        if best.id != 0:
            lead = paired_lead(self._full_scores(best), self._full_scores(self.pool[0]))
            alpha = self.settings.final_significance
            evidence = {"candidate": best.id, "wins": lead.wins, "losses": lead.losses,
                        "p_value": lead.p_value, "significance": alpha,
                        "kept_start": lead.p_value > alpha}
            said = lead.describe(f"candidate {best.id}", "the starting values", n_val)
            if lead.p_value > alpha:
                pick = self.pool[0]
                rule += (f"; {said}, above final_significance {alpha:g}: within noise, so "
                         "the starting values stay")
            else:
                rule += f"; {said}, within final_significance {alpha:g}"
        self.final_pick = pick.id
        summary = [{"id": c.id, "search_val": c.score,
                    "holdout": _mean(self.holdout_scores[c.id]),
                    "full_val": self._full_val(c),
                    "holdout_per_example": self.holdout_scores[c.id]} for c in top]
        full = self._full_scores(pick)
        record = StepRecord(
            step=step, epoch=0, status="pending" if ctx.approval else FINAL,
            reason=f"candidate {pick.id} (validation {self._full_val(pick):.3f}): {rule}",
            values=dict(pick.values), optimizer_state={}, val_score=self._full_val(pick),
            best_val_score=self._full_val(pick),
            evaluations=[EvaluationRow("val", _mean(full), full)],
            search_state={FINAL: {"pick": pick.id, "rule": rule, "candidates": summary,
                                  "evidence": evidence, "status": self.status},
                          "metric_calls": ctx.metric_calls.used})
        # With approval the starting values stay in force until a reviewer approves.
        ctx.apply(self.pool[0].values if ctx.approval else pick.values)
        record.calls = ctx.take_calls(step)
        return record


def _total(scored: list[Scored]) -> float:
    return sum(x.score for x in scored)


def _mean(scores: dict[str, float]) -> float | None:
    return sum(scores.values()) / len(scores) if scores else None


def _failures(scored: list[Scored], limit: int) -> str:
    """The minibatch's wrong outputs for the rewrite prompt, and how many of them were cut
    off at the token limit: the 1.5B writer, shown GSM8K replies cut mid-reasoning and told
    so in each, still answered with format rules or "the output should not be cut off",
    which the model cannot act on; named as a group, the cause comes with its remedy."""
    wrong = [x for x in scored if x.score < 1.0][:limit]
    items = "\n".join(render("optimizer_failure_item", input=x.example.input,
                             output=x.prediction.value, expected=x.example.target,
                             explanation=x.explanation) for x in wrong)
    cut = sum(bool(cut_off_note(x.prediction)) for x in wrong)
    if not cut:
        return items
    return items + "\n\n" + render("optimizer_failures_cut_off", count=cut, total=len(wrong))
