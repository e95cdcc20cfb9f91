"""Finding the final answer in a model's reply, shared by the text and numeric metrics.

Models that reason step by step end with a marked answer ("Answer: 7", "The answer is 7",
"#### 7", LaTeX "\\boxed{7}"); comparing the whole reasoning with the target would fail
every time.
"""

from __future__ import annotations

import re

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_MARKER = re.compile(r"\banswer\b(?:\s*is\b)?\s*:|\banswer\s+is\b|####", re.IGNORECASE)
_WRAPPING = " \t\r\n*_`\"'"


def marked_answer(text: str) -> str | None:
    """The answer the text marks as final, or None when it marks none.

    The last marker in the text wins. `\\boxed{X}` gives X. "Answer: X", "answer is X" (any
    case, colon optional after "is") and "#### X" give the rest of the marker's line, or the
    next non-blank line when the marker ends its line. Surrounding markdown emphasis, quotes
    and whitespace, and one final period, are dropped.
    """
    found = [(m.start(), m.group(1)) for m in _BOXED.finditer(text)]
    found += [(m.start(), _line_after(text, m.end())) for m in _MARKER.finditer(text)]
    if not found:
        return None
    answer = max(found)[1].strip(_WRAPPING)
    return answer[:-1].strip(_WRAPPING) if answer.endswith(".") else answer


# What an explanation says about where the compared answer came from: a small critic that is
# told only "expected 6, got 12" blames the answer format even when the answer was found.
FOUND = "read from the reply's marked final answer: the answer was found, and it is wrong"
NOT_MARKED = "marks no final answer such as 'Answer: ...'"


def _line_after(text: str, position: int) -> str:
    rest = text[position:]
    line = rest.split("\n", 1)[0]
    if line.strip(_WRAPPING):
        return line
    return next((ln for ln in rest.split("\n")[1:] if ln.strip(_WRAPPING)), "")
