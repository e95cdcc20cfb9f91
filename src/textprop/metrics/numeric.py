"""Numeric answers: a parser for numbers as models write them, and a metric comparing them.

Parsing rules (`find_numbers`):
- "-5", "−5", "3.25", ".5", "$1,234.50" (= 1234.5), "-$5", "50%" (= 50: the percent sign is
  a unit, as in GSM8K, whose targets write percentages as plain numbers).
- A comma is a thousands separator only before groups of exactly three digits: "1,000" is
  1000 and "1,234,567" is 1234567, but "1,2" is 1 and 2, and "3, 4" is 3 and 4. A list
  written "100,200" without spaces therefore reads as 100200.
- Digits glued to a preceding letter or decimal point are not numbers ("x2", "v1.2"); a
  hyphen between digits is a range, not a sign ("10-20" is 10 and 20).
- Number words ("seven"), fractions ("1/2") and exponents are not parsed.

The final answer (`parse_number`): the first number of the marked answer when the text marks
one ("Answer: 7", "the answer is 7", "#### 7", "\\boxed{7}"; see `marked_answer`), otherwise
the last number in the text.
"""

from __future__ import annotations

import math
import re

from textprop.data.dataset import Example
from textprop.errors import ConfigError
from textprop.metrics.answer import FOUND, NOT_MARKED, marked_answer
from textprop.metrics.base import Metric, MetricResult, target_of

_NUMBER = re.compile(
    r"(?<![\w.])"  # not glued to a word, a number or a decimal point
    r"(?P<sign>[-−](?=\$?\.?[0-9]))?\$?"
    r"(?P<digits>[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?(?![0-9])"  # 1,234,567.89
    r"|[0-9]+(?:\.[0-9]+)?|\.[0-9]+)"  # 1234.5, .5
)


def find_numbers(text: str) -> list[float]:
    """Every number in `text`, in order (see the module docstring for the rules)."""
    return [
        (-1.0 if m.group("sign") else 1.0) * float(m.group("digits").replace(",", ""))
        for m in _NUMBER.finditer(text)
    ]


def parse_number(text: str) -> float | None:
    """The final numeric answer in `text`, or None when it holds no number."""
    return _final_number(text)[0]


def _final_number(text: str) -> tuple[float | None, bool]:
    """The final numeric answer and whether it came from a marked answer."""
    answer = marked_answer(text)
    numbers = find_numbers(answer) if answer else []
    if numbers:
        return numbers[0], True
    numbers = find_numbers(text)
    return (numbers[-1] if numbers else None), False


def format_number(value: float) -> str:
    """A number as a person writes it: 7, not 7.0; 1234.5."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def numeric_match(prediction: str, target: str, *, tolerance: float = 1e-9,
                  source: str | None = None) -> MetricResult:
    """1 when the prediction's final number equals the target's (within `tolerance`), else 0.

    A target without a number is a data error (ConfigError naming `source`, the example).
    """
    expected = parse_number(target)
    if expected is None:
        raise ConfigError(f"the target {target!r} holds no number for the numeric metric",
                          source=source, field="target")
    got, marked = _final_number(prediction)
    if got is None:
        return MetricResult(0.0, f"expected {format_number(expected)}, "
                                 "but the prediction contains no number")
    if math.isclose(got, expected, rel_tol=0.0, abs_tol=tolerance):
        return MetricResult(1.0, f"correct: {format_number(expected)}")
    where = FOUND if marked else f"the last number in the reply, which {NOT_MARKED}"
    return MetricResult(0.0, f"expected {format_number(expected)}, got {format_number(got)} "
                             f"({where})")


class NumericMatch(Metric):
    """`numeric_match` as a metric."""

    name = "numeric"

    def __init__(self, *, tolerance: float = 1e-9) -> None:
        self.tolerance = tolerance

    def check(self, example: Example | str) -> None:
        """A target without a number fails here, before the run, not at its first score."""
        self.score("", example)

    def score(self, prediction: str, example: Example | str) -> MetricResult:
        source = None if isinstance(example, str) else example.source or None
        return numeric_match(prediction, target_of(example), tolerance=self.tolerance,
                             source=source)
