"""TextGrad's string metrics for its tasks (taken by TextGrad from DSPy), on variables."""

from __future__ import annotations

import re
from typing import Any

_MULTICHOICE_ANSWER = re.compile(r"(?i)Answer\s*:\s*([A-D])")


def parse_integer_answer(answer: str, only_first_line: bool = False) -> int:
    """The digits of the last token that has a digit (before any '.'), or 0 if none."""
    try:
        if only_first_line:
            answer = answer.strip().split("\n")[0]
        token = [t for t in answer.strip().split() if any(c.isdigit() for c in t)][-1]
        return int("".join(c for c in token.split(".")[0] if c.isdigit()))
    except (ValueError, IndexError):
        return 0


def string_based_equality_fn(prediction: Any, ground_truth_answer: Any) -> int:
    """1 when the integer answers of the two variables agree, else 0 (TextGrad's BBH metric)."""
    return int(parse_integer_answer(str(prediction.value))
               == parse_integer_answer(str(ground_truth_answer.value)))


def eval_string_based(response_text: str, correct_answer: str) -> float:
    """1.0 when the response's 'Answer: X' letter is the correct one (TextGrad's MMLU metric)."""
    match = _MULTICHOICE_ANSWER.search(response_text)
    return 1.0 if match is not None and match.group(1) == correct_answer else 0.0
