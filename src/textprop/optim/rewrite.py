"""Reading the optimizer's rewrite out of a reply, without ever crashing on a bad one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from textprop.engines.base import Completion

REWRITE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"improved_variable": {"type": "string"}},
    "required": ["improved_variable"],
}


@dataclass(frozen=True)
class Parsed:
    value: str | None  # the new text, or None when the reply can't be used
    problem: str = ""  # why not, in words the model can act on in a retry


def parse_rewrite(completion: Completion, tags: tuple[str, str]) -> Parsed:
    """The improved variable from a JSON reply or a tagged reply, whichever is present."""
    if completion.finish_reason == "length":
        return Parsed(None, "the reply was cut off at the token limit; keep it shorter")
    value = _from_json(completion)
    if value is None:
        value = _from_tags(completion.text, tags)
    if value is None:
        return Parsed(None, f'it had neither a JSON object with "improved_variable" nor '
                            f"the text between {tags[0]} and {tags[1]}")
    if not value.strip():
        return Parsed(None, "the improved variable was empty")
    return Parsed(value.strip())


def _from_json(completion: Completion) -> str | None:
    data = completion.parsed
    if data is None:
        text = completion.text.strip()
        start, end = text.find("{"), text.rfind("}")
        if start == -1 or end <= start:
            return None
        try:
            data = json.loads(text[start:end + 1])
        except ValueError:
            return None
    value = data.get("improved_variable") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _from_tags(text: str, tags: tuple[str, str]) -> str | None:
    start_tag, end_tag = tags
    if start_tag not in text:
        return None
    after = text.split(start_tag, 1)[1]
    # A missing end tag on a reply that was not cut off: the model just forgot to close.
    return after.split(end_tag, 1)[0]
