"""A scripted model for a three-step chain (plan -> draft -> polish) over arithmetic
questions. The answer comes out right only once the plan step is told to list the
question's numbers: the draft and polish steps see only the text of the step before, so the
metric's feedback on the polished answer must travel back to the first step's prompt."""

from __future__ import annotations

import json
import re

PLAN = "Think about the question."
DRAFT = "Add up the numbers in the plan."
POLISH = "Give the final answer as 'Answer: <number>'."
LISTED = "List every number in the question, separated by commas."
TO_PLAN = "The plan must list the question's numbers."
TO_OTHERS = "The numbers never arrived; the earlier step must pass them on."

STEPS = [
    {"name": "plan", "system_prompt": PLAN, "template": "{input}", "max_tokens": 64},
    {"name": "draft", "system_prompt": DRAFT, "template": "Plan: {plan}"},
    {"name": "polish", "system_prompt": POLISH, "template": "Draft: {draft}",
     "optimize": False},
]


def _numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", text)]


def reply(system: str, prompt: str, wants_json: bool) -> str:
    if "gradient (feedback) engine" in system or "condense" in system:
        role = prompt.split("<ROLE>", 1)[-1].split("</ROLE>", 1)[0]
        text = TO_PLAN if "'plan' step" in role else TO_OTHERS
        return json.dumps({"feedback": text}) if wants_json else text
    if "optimization system that improves text" in system:
        role = prompt.split("<ROLE>", 1)[-1].split("</ROLE>", 1)[0]
        new = LISTED if "'plan' step" in role else DRAFT
        return (json.dumps({"improved_variable": new}) if wants_json
                else f"<IMPROVED_VARIABLE>{new}</IMPROVED_VARIABLE>")
    if system.startswith((PLAN, LISTED)):
        return ", ".join(map(str, _numbers(prompt))) if system == LISTED else "Let me think."
    if system.startswith(DRAFT):
        numbers = _numbers(prompt)
        return f"The sum is {sum(numbers)}." if numbers else "There are no numbers to add."
    numbers = _numbers(prompt)
    return f"Answer: {numbers[-1]}" if numbers else "Answer: unknown"


def server_reply(body: dict) -> str:
    messages = body["messages"]
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    prompt = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    return reply(system, prompt, "response_format" in body)
