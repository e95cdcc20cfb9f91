"""A two-step pipeline (plan, then answer) for search tests: feedback on the answer must
reach the planning step's system prompt too."""

from __future__ import annotations

from textprop.data.dataset import Example
from textprop.functions.llm_call import LLMCall
from textprop.variable import Variable

PLAN_ROLE = "system prompt of the planning step"
ANSWER_ROLE = "system prompt of the answering step"


class TwoStepPipeline:
    def __init__(self, engine, plan: str, answer: str) -> None:
        self.engine = engine
        self.plan = Variable(plan, role_description=PLAN_ROLE)
        self.answer = Variable(answer, role_description=ANSWER_ROLE)
        self.plan_call = LLMCall(engine, self.plan)
        self.answer_call = LLMCall(engine, self.answer)

    def parameters(self) -> dict[str, Variable]:
        return {"plan": self.plan, "answer": self.answer}

    def clone(self) -> TwoStepPipeline:
        return TwoStepPipeline(self.engine, self.plan.value, self.answer.value)

    async def aforward(self, example: Example) -> Variable:
        question = Variable(example.input, role_description="question", requires_grad=False)
        plan = await self.plan_call.aforward(question, "plan for answering the question")
        return await self.answer_call.aforward(plan, "answer to the question")


def build(engine, plan: str = "Make a plan.", answer: str = "Answer.") -> TwoStepPipeline:
    """The factory a config names as `[pipeline] kind = "python"`,
    `factory = "tests.train.two_step:build"`."""
    return TwoStepPipeline(engine, plan, answer)
