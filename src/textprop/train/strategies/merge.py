"""Merging two candidates: per parameter, take the version that changed from their common
ancestor, so improvements found on separate branches of the search meet in one candidate."""

from __future__ import annotations

import random
from dataclasses import dataclass

from textprop.train.strategies.pool import Pool


@dataclass(frozen=True)
class Merge:
    first: int
    second: int
    ancestor: int
    values: dict[str, str]
    taken: dict[str, int]  # parameter name -> the candidate its value came from


def combine(pool: Pool, first: int, second: int, ancestor: int) -> Merge | None:
    """The merged values, or None when no parameter changed on one side only.

    Where both sides changed a parameter, the better-scoring candidate's version is kept
    (ties: `first`); where neither did, the ancestor's."""
    a, b, base = pool[first], pool[second], pool[ancestor]
    better = first if a.score >= b.score else second
    values, taken, one_sided = {}, {}, False
    for name, old in base.values.items():
        va, vb = a.values[name], b.values[name]
        if va == old and vb != old:
            values[name], taken[name], one_sided = vb, second, True
        elif vb == old and va != old:
            values[name], taken[name], one_sided = va, first, True
        elif va == vb:
            values[name], taken[name] = va, better
        else:
            values[name], taken[name] = pool[better].values[name], better
    return Merge(first, second, ancestor, values, taken) if one_sided else None


def find_merge(pool: Pool, lineage: dict[int, list[int]], candidates: list[int],
               tried: set[tuple[int, int, int]], rng: random.Random,
               attempts: int = 10) -> Merge | None:
    """A pair of (front) candidates with a common ancestor no better than either, that
    yields values not yet in the pool; sampled with `rng`."""
    candidates = sorted(candidates)
    if len(candidates) < 2:
        return None
    for _ in range(attempts):
        first, second = sorted(rng.sample(candidates, 2))
        up_first = pool.ancestors(first, lineage)
        up_second = pool.ancestors(second, lineage)
        if first in up_second or second in up_first:
            continue
        common = sorted(i for i in up_first & up_second if i in pool.members
                        and pool[i].score <= min(pool[first].score, pool[second].score)
                        and (first, second, i) not in tried)
        for ancestor in common[::-1]:  # the most recent common ancestor first
            merge = combine(pool, first, second, ancestor)
            if merge is not None and pool.holds_values(merge.values) is None:
                return merge
            tried.add((first, second, ancestor))
    return None
