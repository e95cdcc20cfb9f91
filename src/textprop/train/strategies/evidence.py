"""Whether one candidate's lead over another on the same validation examples is more than
noise: on 30 examples a lead of one or two is what a reworded prompt gets by chance (B4)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Lead:
    wins: int  # examples where the challenger scored higher
    losses: int  # ... lower
    p_value: float  # one-sided sign test: the chance of at least `wins` of the split ones

    def describe(self, challenger: str, incumbent: str, n: int) -> str:
        return (f"{challenger} led {incumbent} {self.wins} to {self.losses} on {n} "
                f"validation examples (one-sided sign test p = {self.p_value:.3g})")


def paired_lead(challenger: dict[str, float], incumbent: dict[str, float]) -> Lead:
    """The exact sign test over the examples both were scored on; ties carry no evidence."""
    shared = challenger.keys() & incumbent.keys()
    wins = sum(challenger[e] > incumbent[e] for e in shared)
    losses = sum(challenger[e] < incumbent[e] for e in shared)
    split = wins + losses
    tail = sum(math.comb(split, k) for k in range(wins, split + 1))
    return Lead(wins, losses, tail / 2 ** split if split else 1.0)
