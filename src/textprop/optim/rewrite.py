"""Reading the optimizer's rewrite out of a reply, without ever crashing on a bad one."""

from __future__ import annotations

import json
import re
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
    note: str = ""  # how a usable value was read from an imperfect reply


def parse_rewrite(completion: Completion, tags: tuple[str, str],
                  key: str = REWRITE_KEY) -> Parsed:
    """The text under `key` from a JSON reply, or between `tags`, whichever is present."""
    if completion.finish_reason == "length":
        return _read_cut_off(completion.text, tags, key)
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


CUT_OFF = "the reply was cut off at the token limit; keep it shorter"
LOOP_NOTE = "the reply ran into a loop and was cut off; kept its text up to the first repeat"
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")


def _read_cut_off(text: str, tags: tuple[str, str], key: str) -> Parsed:
    """The text of a reply cut off at the token limit: whole when the cut came after it,
    or up to its first repeated sentence when the cut came from a loop.

    The 1.5B writer, rewriting a 40-token prompt, often writes the prompt and one or two
    new sentences, then repeats those sentences until the token limit (6 of tgd's 15 steps
    in B4's object_counting seed 1). What it wrote before the first repeat is a whole
    rewrite; a reply cut off without repeating itself stays unusable: its end is missing."""
    partial, whole = _cut_json_string(text, key)
    if partial is None and (partial := _from_tags(text, tags)) is not None:
        whole = tags[1] in text.split(tags[0], 1)[1]
    if partial is None or not partial.strip():
        return Parsed(None, CUT_OFF)
    if whole:
        return Parsed(partial.strip())
    seen: set[str] = set()
    for sentence in _SENTENCE.finditer(partial):
        words = " ".join(sentence.group().lower().split())
        if words in seen:
            value = partial[:sentence.start()].strip()
            return Parsed(value, note=LOOP_NOTE) if value else Parsed(None, CUT_OFF)
        if words:
            seen.add(words)
    return Parsed(None, CUT_OFF)


def _cut_json_string(text: str, key: str) -> tuple[str | None, bool]:
    """The decoded string under `key` in JSON cut off somewhere, and whether it is whole
    (the cut came after it) rather than its start."""
    opening = re.search(r'"' + re.escape(key) + r'"\s*:\s*"', text)
    if opening is None:
        return None, False
    try:
        return json.decoder.scanstring(text, opening.end())[0], True
    except ValueError:
        pass
    rest = text[opening.end():]
    for trim in range(min(6, len(rest)) + 1):  # an escape such as \u00e9 may be cut short
        try:
            return json.loads(f'"{rest[:len(rest) - trim]}"'), False
        except ValueError:
            continue
    return None, False
