"""Metrics comparing text: exact match and containment."""

from __future__ import annotations

import re

from textprop.data.dataset import Example
from textprop.metrics.answer import FOUND, NOT_MARKED, marked_answer
from textprop.metrics.base import Metric, MetricResult, shown, target_of


def normalized(text: str, *, ignore_case: bool, normalize_whitespace: bool) -> str:
    if normalize_whitespace:
        text = " ".join(text.split())
    return text.casefold() if ignore_case else text


def exact_match(prediction: str, target: str, *, ignore_case: bool = False,
                normalize_whitespace: bool = True, extract_answer: bool = True) -> MetricResult:
    """1 when the answer equals the target, else 0.

    With `extract_answer`, a marked final answer ("Answer: ...", see `marked_answer`) is
    compared instead of the whole prediction. `normalize_whitespace` strips the ends and
    collapses runs of whitespace; `ignore_case` compares case-insensitively.
    """
    marked = marked_answer(prediction) if extract_answer else None
    answer = marked or prediction
    options = {"ignore_case": ignore_case, "normalize_whitespace": normalize_whitespace}
    if normalized(answer, **options) == normalized(target, **options):
        return MetricResult(1.0, f"correct: {shown(target)}")
    shown_answer = " ".join(answer.split()) if normalize_whitespace else answer
    wrong = f"expected {shown(target)}, got {shown(shown_answer)}"
    if not extract_answer:
        return MetricResult(0.0, wrong)
    where = FOUND if marked else f"the reply {NOT_MARKED}, so the whole reply was compared"
    return MetricResult(0.0, f"{wrong} ({where})")


def contains(prediction: str, target: str, *, ignore_case: bool = True,
             normalize_whitespace: bool = True, whole_word: bool = False) -> MetricResult:
    """1 when the target occurs in the prediction, else 0.

    `whole_word` requires no letter or digit right before or after it ("7" is not in "17").
    """
    options = {"ignore_case": ignore_case, "normalize_whitespace": normalize_whitespace}
    needle = normalized(target, **options)
    haystack = normalized(prediction, **options)
    if whole_word:
        found = re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", haystack) is not None
    else:
        found = needle in haystack
    if found:
        return MetricResult(1.0, f"correct: contains {shown(target)}")
    return MetricResult(0.0, f"expected {shown(target)} in the answer, got {shown(prediction)}")


class ExactMatch(Metric):
    """`exact_match` as a metric; the options are those of the function."""

    name = "exact_match"

    def __init__(self, *, ignore_case: bool = False, normalize_whitespace: bool = True,
                 extract_answer: bool = True) -> None:
        self.options = {"ignore_case": ignore_case, "normalize_whitespace": normalize_whitespace,
                        "extract_answer": extract_answer}

    def score(self, prediction: str, example: Example | str) -> MetricResult:
        return exact_match(prediction, target_of(example), **self.options)


class Contains(Metric):
    """`contains` as a metric; the options are those of the function."""

    name = "contains"

    def __init__(self, *, ignore_case: bool = True, normalize_whitespace: bool = True,
                 whole_word: bool = False) -> None:
        self.options = {"ignore_case": ignore_case, "normalize_whitespace": normalize_whitespace,
                        "whole_word": whole_word}

    def score(self, prediction: str, example: Example | str) -> MetricResult:
        return contains(prediction, target_of(example), **self.options)
