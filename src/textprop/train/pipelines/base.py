"""What the `Trainer` needs of a pipeline.

Any object with this shape works: `parameters()` (the optimized texts, by name) and
`async aforward(example) -> Variable` (the prediction, with the graph that produced it). A
`clone()` returning an independent copy (its own parameter Variables, the same engines) lets
a search run candidates side by side; `question_text(example)` is how demonstrations show
an example's input.
"""

from __future__ import annotations

from typing import Protocol

from textprop.data.dataset import Example
from textprop.variable import Variable


class Pipeline(Protocol):
    def parameters(self) -> dict[str, Variable]: ...

    def question_text(self, example: Example) -> str:
        """The user message for `example` (demonstrations show their inputs this way)."""
        ...

    async def aforward(self, example: Example) -> Variable: ...
