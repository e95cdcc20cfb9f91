"""What every metric returns and the interface the trainer calls.

A metric's explanation is not a log line: the trainer hands it to the feedback engine as the
evaluation of a prediction ("expected 7, got 10"), so it says what was wrong in plain words.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

from textprop.data.dataset import Example

SHOWN_CHARS = 160  # longer predictions are shortened in explanations


@dataclass(frozen=True)
class MetricResult:
    """A score in [0, 1] (1 = fully correct) and an explanation usable as feedback."""

    score: float
    explanation: str

    def __post_init__(self) -> None:
        if isinstance(self.score, bool) or not isinstance(self.score, int | float):
            raise TypeError(f"score must be a number, got {type(self.score).__name__}")
        if not (math.isfinite(self.score) and 0.0 <= self.score <= 1.0):
            raise ValueError(f"score must lie in [0, 1], got {self.score!r}")
        object.__setattr__(self, "score", float(self.score))

    def with_cause(self, sentence: str) -> MetricResult:
        """A wrong verdict's explanation after a cause the metric cannot see (a reply cut
        off at its token limit), which comes first: told it last, B4's 1.5B critic still
        blamed the format the metric named; a right verdict, or no sentence, as it is."""
        if self.score >= 1.0 or not sentence:
            return self
        return MetricResult(self.score, f"{sentence} {self.explanation}".strip())


class Metric(ABC):
    """Scores a prediction against an example (or a bare target string).

    Subclasses implement `score`; `ascore` runs it inline, so only metrics that wait on
    something (an LLM judge) need to override it.
    """

    name: str = "metric"

    @abstractmethod
    def score(self, prediction: str, example: Example | str) -> MetricResult:
        """Score `prediction`; a `str` example is taken as the target."""

    async def ascore(self, prediction: str, example: Example | str) -> MetricResult:
        return self.score(prediction, example)

    def check(self, example: Example | str) -> None:  # noqa: B027 - optional, no-op
        """Raise the `ConfigError` scoring `example` would meet (e.g. a target the metric
        cannot read), so a run fails before it starts; most metrics accept any target."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def target_of(example: Example | str) -> str:
    return example if isinstance(example, str) else example.target


def shown(text: str) -> str:
    """`text` quoted for an explanation, its middle elided when long."""
    if len(text) > SHOWN_CHARS:
        text = f"{text[:60]} ... {text[-(SHOWN_CHARS - 60):]}"
    return repr(text)
