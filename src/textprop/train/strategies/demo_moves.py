"""Search moves on a demonstrations parameter: add, swap, drop, reorder, rewrite one output.

Pairs come only from the bootstrap pool, which holds training examples the pipeline
answered right (its own output, in the format the metric accepts) or, with `demo_field`,
training examples with a worked answer in that field; never validation or test examples.
A move never shows an example of the minibatch it is gated on (that would hand the child
the answer).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from textprop.demos import Demo

KINDS = ("add", "swap", "drop", "reorder", "rewrite")


@dataclass(frozen=True)
class DemoMove:
    kind: str
    pairs: tuple[Demo, ...]  # the demonstrations after the move (rewrite: before the LLM call)
    description: str
    target: int | None = None  # rewrite: the index of the pair whose output is rewritten


def fits(pairs: Sequence[Demo], max_pairs: int, max_tokens: int | None) -> bool:
    return len(pairs) <= max_pairs and (
        max_tokens is None or sum(d.tokens() for d in pairs) <= max_tokens)


def moves(current: Sequence[Demo], pool: Sequence[Demo], *, max_pairs: int,
          max_tokens: int | None, exclude: set[str], rng: random.Random,
          count: int) -> list[DemoMove]:
    """Up to `count` different moves, sampled with `rng` among those that apply."""
    current = list(current)
    shown = {d.source for d in current}
    fresh = [d for d in pool if d.source not in shown and d.source not in exclude]
    options: list[DemoMove] = []
    if len(current) < max_pairs:
        for d in fresh:
            after = (*current, d)
            if fits(after, max_pairs, max_tokens):
                options.append(DemoMove("add", after, f"add the pair of {d.source}"))
    for i, old in enumerate(current):
        for d in fresh:
            after = (*current[:i], d, *current[i + 1:])
            if fits(after, max_pairs, max_tokens):
                options.append(DemoMove("swap", after,
                                        f"swap pair {i + 1} ({old.source}) for {d.source}"))
        options.append(DemoMove("drop", (*current[:i], *current[i + 1:]),
                                f"drop pair {i + 1} ({old.source})"))
        options.append(DemoMove("rewrite", tuple(current),
                                f"rewrite the output of pair {i + 1} ({old.source}) from "
                                "the feedback", target=i))
    if len(current) >= 2:
        order = current[1:] + current[:1]
        options.append(DemoMove("reorder", tuple(order), "move the first pair to the end"))
    # One kind at a time, so a child of each kind is tried before two of the same kind.
    by_kind = {k: [m for m in options if m.kind == k] for k in KINDS}
    chosen: list[DemoMove] = []
    while len(chosen) < count and any(by_kind.values()):
        kinds = [k for k in KINDS if by_kind[k]]
        kind = rng.choice(kinds)
        move = by_kind[kind].pop(rng.randrange(len(by_kind[kind])))
        chosen.append(move)
        if kind in ("reorder",):
            by_kind[kind] = []
    return chosen
