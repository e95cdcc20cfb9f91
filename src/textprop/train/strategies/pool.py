"""The candidate pool of a search and its per-example Pareto front (GEPA's, by example)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class Candidate:
    """A full assignment of values to every parameter, scored per validation example."""

    id: int
    values: dict[str, str]
    per_example: dict[str, float]
    parents: list[int] = field(default_factory=list)

    @property
    def score(self) -> float:
        return sum(self.per_example.values()) / max(len(self.per_example), 1)


class Pool:
    def __init__(self, candidates: Iterable[Candidate] = ()) -> None:
        self.members: dict[int, Candidate] = {}
        for c in candidates:
            self.add(c)

    def copy(self) -> Pool:
        return Pool(self.members.values())

    def add(self, candidate: Candidate) -> None:
        self.members[candidate.id] = candidate

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, candidate_id: int) -> Candidate:
        return self.members[candidate_id]

    def holds_values(self, values: dict[str, str]) -> int | None:
        """The id of a member with exactly these values, if any."""
        return next((c.id for c in self.members.values() if c.values == values), None)

    def best(self) -> Candidate:
        """Highest mean validation score; ties go to the older candidate."""
        return max(self.members.values(), key=lambda c: (c.score, -c.id))

    def ranked(self) -> list[Candidate]:
        return sorted(self.members.values(), key=lambda c: (-c.score, c.id))

    def front(self) -> dict[str, list[int]]:
        """For every validation example, the candidates with its best score (ties kept)."""
        examples = sorted({e for c in self.members.values() for e in c.per_example})
        front = {}
        for example in examples:
            best = max(c.per_example.get(example, 0.0) for c in self.members.values())
            front[example] = sorted(c.id for c in self.members.values()
                                    if c.per_example.get(example, 0.0) == best)
        return front

    def leaders(self) -> dict[int, int]:
        """Non-dominated candidates and how many examples' fronts each is on.

        A candidate is dominated when every front it is on also holds another surviving
        candidate; those are removed one at a time, weakest first (GEPA's rule), so the
        sample weights favour candidates that are best somewhere no one else is."""
        front = self.front()
        alive = set(self.members)
        for candidate in sorted(self.members.values(), key=lambda c: (c.score, c.id)):
            others = alive - {candidate.id}
            fronts = [ids for ids in front.values() if candidate.id in ids]
            if fronts and all(any(i in others for i in ids) for ids in fronts):
                alive.discard(candidate.id)
        leads: dict[int, int] = {}
        for ids in front.values():
            for i in ids:
                if i in alive:
                    leads[i] = leads.get(i, 0) + 1
        return dict(sorted(leads.items()))

    def ancestors(self, candidate_id: int, lineage: dict[int, list[int]]) -> set[int]:
        """Every ancestor of a candidate, through `lineage` (id -> parents)."""
        seen: set[int] = set()
        stack = list(lineage.get(candidate_id, []))
        while stack:
            parent = stack.pop()
            if parent not in seen:
                seen.add(parent)
                stack.extend(lineage.get(parent, []))
        return seen
