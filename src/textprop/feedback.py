"""The one backward-prompt builder: how every step asks an LLM for feedback on an input.

A function describes what its step did as a *conversation* (inputs and output, rendered from
a `conversation_*` template); this module turns it into the feedback request, in one of two
forms: next to the loss the feedback is written from the evaluation itself; deeper in the
graph it is written to address the feedback the step's output received.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from textprop.engines.base import Completion, Request
from textprop.images import Image
from textprop.prompts import render
from textprop.variable import Variable


def feedback_schema(max_chars: int | None) -> dict[str, Any]:
    """`{"feedback": str}`; `maxLength` lets grammar-constrained engines (llama.cpp) close
    the string in time instead of being cut off mid-JSON by the token limit."""
    text: dict[str, Any] = {"type": "string"}
    if max_chars:
        text["maxLength"] = max_chars
    return {"type": "object", "properties": {"feedback": text}, "required": ["feedback"]}


def max_chars_for(max_tokens: int | None) -> int | None:
    """Room for the feedback inside `max_tokens`, at a conservative 3 characters a token."""
    return None if max_tokens is None else max(40, (max_tokens - 16) * 3)


def backward_request(*, target: Variable, conversation: str, output: Variable,
                     output_feedback: str, structured: bool, max_sentences: int,
                     max_tokens: int | None, images: Sequence[Image] = ()) -> Request:
    """The request asking for feedback on `target`, an input of the step that made `output`;
    the step's `images`, if any, come first in the user message, as in the step's call."""
    focus = render("backward_focus", variable_role=target.role_description,
                   variable_value=target.value, max_sentences=max_sentences)
    if output_feedback.strip():
        body = render("backward_from_feedback", variable_role=target.role_description,
                      conversation=conversation, output_role=output.role_description,
                      output_feedback=output_feedback, focus=focus)
    else:
        body = render("backward_from_evaluation", variable_role=target.role_description,
                      conversation=conversation, focus=focus)
    return _request(body, "backward_system", structured, max_tokens, images)


def reduce_request(*, target: Variable, feedbacks: list[str], structured: bool,
                   max_sentences: int, max_tokens: int | None) -> Request:
    """The request condensing a batch's feedback on one shared variable into one."""
    items = "\n".join(render("reduce_item", feedback=f) for f in feedbacks)
    body = render("reduce", variable_role=target.role_description, count=len(feedbacks),
                  feedback=items, max_sentences=max_sentences)
    return _request(body, "reduce_system", structured, max_tokens)


def _request(body: str, system: str, structured: bool, max_tokens: int | None,
             images: Sequence[Image] = ()) -> Request:
    reply = render("reply_feedback_json" if structured else "reply_feedback_text")
    text = f"{body}\n\n{reply}"
    return Request.chat([*images, text] if images else text, render(system), role="backward",
                        max_tokens=max_tokens,
                        json_schema=feedback_schema(max_chars_for(max_tokens)) if structured
                        else None)


def feedback_text(completion: Completion) -> str:
    """The feedback in a reply: the JSON field when there is one, else the whole text."""
    parsed = completion.parsed
    if parsed is None and completion.text.lstrip().startswith("{"):
        try:
            parsed = json.loads(completion.text)
        except ValueError:
            return salvage_feedback(completion.text)
    if isinstance(parsed, dict) and isinstance(parsed.get("feedback"), str):
        return parsed["feedback"].strip()
    return completion.text.strip()


_CUT_FEEDBACK = re.compile(r'^\s*\{\s*"feedback"\s*:\s*"(?P<text>(?:[^"\\]|\\.)*)')


def salvage_feedback(text: str) -> str:
    """The feedback of a JSON reply cut off mid-string: a partial critique is still useful."""
    match = _CUT_FEEDBACK.match(text)
    if not match:
        return text.strip()
    body = match.group("text").rstrip("\\")
    try:
        return json.loads(f'"{body}"').strip()
    except ValueError:
        return body.strip()
