"""Demonstrations: an ordered list of input -> output pairs, as a parameter of a pipeline.

The value of a `Demonstrations` variable is the list as indented JSON text (one field a
line), so the ledger, the cache keys, `diff` and `export` treat it as any other text and a
diff shows which pairs were added, removed or changed. The list is rendered into a step's
prompt either inside its system prompt or as prior chat turns (`placement`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from textprop.engines.base import Message
from textprop.errors import GraphError
from textprop.prompts import render
from textprop.variable import Variable

Placement = Literal["system", "turns"]
DEMOS_ROLE = ("worked examples (input and the expected output) shown to the language model "
              "before each question")


@dataclass(frozen=True)
class Demo:
    input: str
    output: str
    source: str = ""  # the training example it came from

    def tokens(self) -> int:
        """A rough token count (4 characters a token) for the `max_demo_tokens` cap."""
        return (len(self.input) + len(self.output)) // 4 + 8


def encode(pairs: Iterable[Demo]) -> str:
    return json.dumps([asdict(d) for d in pairs], indent=2, ensure_ascii=False)


def decode(text: str) -> list[Demo]:
    try:
        rows = json.loads(text) if text.strip() else []
        return [Demo(str(r["input"]), str(r["output"]), str(r.get("source", ""))) for r in rows]
    except (ValueError, TypeError, KeyError) as error:
        raise GraphError(f"a demonstrations value must be a JSON list of "
                         f"{{input, output, source}} objects: {error}") from None


class Demonstrations(Variable):
    """A parameter holding demonstrations. Its feedback is the feedback its step's output
    received, passed on without a call (see `LLMCall`)."""

    def __init__(self, pairs: Sequence[Demo] = (), *, role_description: str = DEMOS_ROLE,
                 requires_grad: bool = True) -> None:
        super().__init__(encode(pairs), requires_grad=requires_grad,
                         role_description=role_description)

    @property
    def pairs(self) -> list[Demo]:
        return decode(self.value)

    def set_pairs(self, pairs: Iterable[Demo]) -> None:
        self.set_value(encode(pairs))

    def set_value(self, value: str) -> None:
        decode(value)  # refuse a value that is not a list of pairs
        super().set_value(value)


def in_system_prompt(system_prompt: str | None, pairs: Sequence[Demo]) -> str | None:
    """The system prompt followed by the demonstrations block (unchanged without pairs)."""
    if not pairs:
        return system_prompt
    items = "\n".join(render("demos_item", input=d.input, output=d.output) for d in pairs)
    block = render("demos_system", items=items)
    return block if not system_prompt else f"{system_prompt}\n\n{block}"


def as_turns(pairs: Sequence[Demo]) -> tuple[Message, ...]:
    """The demonstrations as earlier user/assistant turns of the chat."""
    return tuple(m for d in pairs for m in (Message("user", d.input),
                                           Message("assistant", d.output)))
