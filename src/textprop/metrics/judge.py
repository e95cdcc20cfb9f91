"""An LLM as the metric, for outputs no string comparison can grade (style, faithfulness).

The judge writes its explanation before its score (the schema's order), so the score follows
from the reasoning; the explanation becomes the feedback the trainer propagates.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from textprop.data.dataset import Example
from textprop.engines.base import Completion, Request, as_engine
from textprop.errors import EngineReplyError
from textprop.metrics.base import Metric, MetricResult, shown
from textprop.prompts import render

JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"explanation": {"type": "string"}, "score": {"type": "number"}},
    "required": ["explanation", "score"],
    "additionalProperties": False,
}
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


class LLMJudge(Metric):
    """Scores predictions by asking `engine` to grade them against `instruction`.

    The prompt shows the example's input and target when it has them (a bare string example
    is a target). Calls are tagged role "loss" for metering. A reply that is not a JSON object
    with an explanation and a score in [0, 1] raises `EngineReplyError`.
    """

    def __init__(self, engine: Any, instruction: str, *, name: str = "judge",
                 max_tokens: int = 400, max_sentences: int = 3) -> None:
        if not instruction.strip():
            raise ValueError("LLMJudge needs an instruction: the criteria to grade against")
        self.engine = as_engine(engine)
        self.instruction = instruction.strip()
        self.name = name
        self.max_tokens = max_tokens
        self.max_sentences = max_sentences

    def request(self, prediction: str, example: Example | str) -> Request:
        """The grading request for one prediction."""
        if isinstance(example, str):
            question, target = "", example
        else:
            question, target = example.input, example.target
        context = "".join(
            section + "\n\n" for section in (
                render("judge_question", question=question) if question.strip() else "",
                render("judge_reference", target=target) if target.strip() else "",
            ) if section
        )
        prompt = render("judge", instruction=self.instruction, context=context,
                        prediction=prediction, max_sentences=self.max_sentences)
        schema = JUDGE_SCHEMA if self.engine.supports_json_schema else None
        return Request.chat(prompt, render("judge_system"), role="loss", temperature=0.0,
                            max_tokens=self.max_tokens, json_schema=schema)

    def score(self, prediction: str, example: Example | str) -> MetricResult:
        return self._result(self.engine.complete(self.request(prediction, example)))

    async def ascore(self, prediction: str, example: Example | str) -> MetricResult:
        return self._result(await self.engine.acomplete(self.request(prediction, example)))

    def _result(self, completion: Completion) -> MetricResult:
        reply = completion.parsed if isinstance(completion.parsed, dict) else _parse(
            completion.text)
        score = reply.get("score") if isinstance(reply, dict) else None
        explanation = reply.get("explanation") if isinstance(reply, dict) else None
        if isinstance(score, str):
            try:
                score = float(score)
            except ValueError:
                score = None
        valid_score = (isinstance(score, int | float) and not isinstance(score, bool)
                       and math.isfinite(score) and 0 <= score <= 1)
        if not valid_score or not isinstance(explanation, str):
            raise EngineReplyError(
                "the judge did not reply with a JSON object holding an explanation and a "
                f"score from 0 to 1: {shown(completion.text)}", provider=self.engine.name)
        return MetricResult(float(score), explanation.strip())


def _parse(text: str) -> Any:
    """The JSON object in a reply, tolerating code fences and words around it."""
    match = _JSON_OBJECT.search(text)
    if match is None:
        return None
    try:
        return json.loads(match.group(0))
    except ValueError:
        return None
