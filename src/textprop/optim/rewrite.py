"""Reading the optimizer's rewrite out of a reply, without ever crashing on a bad one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from textprop.engines.base import Completion

REWRITE_KEY, APPEND_KEY = "improved_variable", "new_instruction"


def reply_schema(key: str) -> dict[str, Any]:
    """The JSON schema of a reply holding one string under `key`."""
    return {"type": "object", "properties": {key: {"type": "string"}}, "required": [key]}


REWRITE_SCHEMA = reply_schema(REWRITE_KEY)  # the whole new text


@dataclass(frozen=True)
class Parsed:
    value: str | None  # the new text, or None when the reply can't be used
    problem: str = ""  # why not, in words the model can act on in a retry


def parse_rewrite(completion: Completion, tags: tuple[str, str],
                  key: str = REWRITE_KEY) -> Parsed:
    """The text under `key` from a JSON reply, or between `tags`, whichever is present."""
    if completion.finish_reason == "length":
        return Parsed(None, "the reply was cut off at the token limit; keep it shorter")
    value = _from_json(completion, key)
    if value is None:
        value = _from_tags(completion.text, tags)
    if value is None:
        return Parsed(None, f'it had neither a JSON object with "{key}" nor '
                            f"the text between {tags[0]} and {tags[1]}")
    if not value.strip():
        return Parsed(None, f"the {key.replace('_', ' ')} was empty")
    return Parsed(value.strip())


def _from_json(completion: Completion, key: str) -> str | None:
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
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _from_tags(text: str, tags: tuple[str, str]) -> str | None:
    start_tag, end_tag = tags
    if start_tag not in text:
        return None
    after = text.split(start_tag, 1)[1]
    # A missing end tag on a reply that was not cut off: the model just forgot to close.
    return after.split(end_tag, 1)[0]
