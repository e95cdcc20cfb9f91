"""A Python function as a graph step (TextGrad's `StringBasedFunction`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from textprop.functions.base import Feedback, Function, Step
from textprop.prompts import render
from textprop.variable import Variable

if TYPE_CHECKING:
    from textprop.backward import BackwardContext


class StringBasedFunction(Function):
    """output = fn(**inputs); backward passes the output's feedback on to each input.

    `fn` receives the input *variables* by name (as in TextGrad) and returns text (or a
    Variable, whose value is taken). `function_purpose` tells the feedback engine what the
    function does, so it can translate feedback on the output into feedback on an input.
    """

    def __init__(self, fn: Callable[..., Any], function_purpose: str) -> None:
        self.fn = fn
        self.function_purpose = function_purpose

    def forward(self, inputs: Mapping[str, Variable],
                response_role_description: str | None = None) -> Variable:
        if response_role_description is None:
            response_role_description = (
                f"output of the string-based function with purpose: {self.function_purpose}")
        result = self.fn(**inputs)
        value = result.value if isinstance(result, Variable) else result
        response = Variable(value, predecessors=list(inputs.values()),
                            role_description=response_role_description)
        return self._record(response, response.predecessors, named=tuple(inputs.items()))

    async def abackward(self, step: Step, ctx: BackwardContext) -> list[Feedback]:
        described = "\n".join(
            render("conversation_function_input", name=name, role=v.role_description,
                   value=v.value)
            for name, v in step.data["named"])
        conversation = render("conversation_python_function", purpose=self.function_purpose,
                              inputs=described, output=step.output.value)
        return await ctx.feedback_for_inputs(step, conversation, "python_function")
