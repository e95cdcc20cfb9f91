"""A search strategy: how a run proposes new values and decides which to keep.

The `Trainer` owns the run's mechanics (baseline, ledger, resume, approval, the final test,
events); a strategy owns "propose, then accept". It returns `StepRecord`s for the trainer to
file, and restores itself from the ledger's rows, never from memory, so a run killed
anywhere resumes exactly.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from textprop.ledger import Ledger, StepRecord
from textprop.train.context import RunContext


class Strategy(ABC):
    kind: ClassVar[str]
    status: str = "finished"  # finished | stopped_early | budget_spent, once next_round is []

    def bind(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def begin(self, started: asyncio.Future[None]) -> bool:
        """A fresh run, before its baseline is scored (`started` resolves once `start` has
        run, or raises the baseline's error). True lets the trainer run `next_round(1)`
        beside the baseline's validation, whose calls are reserved from the metric-call
        budget meanwhile; the round must await `started` before it reads a baseline score."""
        return False

    @abstractmethod
    def start(self, baseline: StepRecord) -> None:
        """A fresh run: the baseline's validation (step 0) was just scored."""

    @abstractmethod
    def restore(self, ledger: Ledger) -> None:
        """A resumed run: rebuild the search state from the ledger (values already applied
        are the trainer's business)."""

    @abstractmethod
    async def next_round(self, step: int) -> list[StepRecord]:
        """The next steps, numbered from `step`, written by the trainer in one transaction;
        an empty list when the search is over."""

    async def finish(self, step: int) -> StepRecord | None:
        """After the search: a last step (e.g. the final pick), or None."""
        return None

    @abstractmethod
    def settle_approval(self, ledger: Ledger, pending: dict[str, Any], decision: str) -> None:
        """A reviewer approved or rejected the pending step: put the right values in force
        and update the ledger's row."""

    @property
    @abstractmethod
    def best_val(self) -> float:
        """The validation score of the values in force."""

    def planned_steps(self) -> int | None:
        return None

    def describe(self) -> dict[str, Any]:
        """The strategy's settings, for the ledger's meta."""
        return {"kind": self.kind}
