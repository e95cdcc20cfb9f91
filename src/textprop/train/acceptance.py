"""When a proposed revision is accepted: the validation gate."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from math import comb
from typing import Literal

Rule = Literal["non_decrease", "strict", "paired"]


@dataclass(frozen=True)
class Decision:
    accepted: bool
    reason: str


def decide(rule: Rule, best: float, new: float, best_per_example: Mapping[str, float],
           new_per_example: Mapping[str, float], alpha: float = 0.1) -> Decision:
    """Accept the proposal or not, given validation scores before (`best`) and after."""
    change = f"validation {best:.3f} -> {new:.3f}"
    if rule == "non_decrease":
        ok = new >= best
        return Decision(ok, f"{change}: {'kept or improved' if ok else 'dropped'}")
    if rule == "strict":
        ok = new > best
        return Decision(ok, f"{change}: {'improved' if ok else 'did not improve'}")
    if rule == "paired":
        wins = sum(1 for k, v in new_per_example.items() if v > best_per_example.get(k, 0.0))
        losses = sum(1 for k, v in new_per_example.items() if v < best_per_example.get(k, 0.0))
        p = sign_test_p(wins, losses)
        ok = new > best and p < alpha
        return Decision(ok, f"{change}: {wins} examples better, {losses} worse, one-sided "
                            f"sign test p={p:.3f} ({'<' if p < alpha else '>='} {alpha})")
    raise ValueError(f"unknown acceptance rule {rule!r}")


def sign_test_p(wins: int, losses: int) -> float:
    """One-sided exact sign test: P(at least `wins` of the discordant pairs by chance)."""
    n = wins + losses
    if n == 0:
        return 1.0
    return sum(comb(n, k) for k in range(wins, n + 1)) / 2 ** n
