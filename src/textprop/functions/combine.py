"""Steps that combine variables: `Sum` (concatenation) and `BatchReduce`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from textprop.functions.base import Feedback, Function, Step
from textprop.prompts import render
from textprop.variable import FeedbackContext, Variable

if TYPE_CHECKING:
    from textprop.backward import BackwardContext


class Sum(Function):
    """Concatenate variables; the feedback on the result reaches every input exactly once.

    No LLM call: the combined feedback is handed to each input as is. When the result has
    no feedback (it is the loss itself, e.g. the sum of a batch's losses), nothing is sent
    and each input's own backward writes feedback from its evaluation.
    """

    role_prefix = "a combination of the following"
    combines = True  # the scheduler treats inputs of a feedback-less sum as losses

    def forward(self, variables: Sequence[Variable]) -> Variable:
        variables = list(variables)
        roles = list(dict.fromkeys(v.role_description for v in variables))
        total = Variable("\n".join(v.value for v in variables), predecessors=variables,
                         role_description=f"{self.role_prefix}: {', '.join(roles)}",
                         requires_grad=any(v.requires_grad for v in variables))
        return self._record(total, total.predecessors)

    async def abackward(self, step: Step, ctx: BackwardContext) -> list[Feedback]:
        output_feedback = step.output.get_gradient_text()
        if not output_feedback.strip():
            return []
        output_role = step.output.role_description
        context = FeedbackContext(render("conversation_combine", output_role=output_role),
                                  output_role, "sum")
        return [
            (v, ctx.gradient(v, render("feedback_combined", output_role=output_role,
                                       variable_role=v.role_description,
                                       output_feedback=output_feedback), context))
            for v in step.inputs if v.requires_grad
        ]


class BatchReduce(Sum):
    """`Sum` over a batch's losses whose feedback is condensed where it meets.

    When feedback from several of these inputs arrives at one shared variable (say the
    system prompt used for every example), the backward scheduler condenses it into one
    gradient with a single LLM call, instead of handing the optimizer a long list.
    """

    role_prefix = "a batch of the following"
    condenses_feedback = True


def sum(variables: Sequence[Variable]) -> Variable:  # noqa: A001 - TextGrad's public name
    """Concatenate `variables`; feedback on the result reaches each of them once."""
    return Sum()(variables)


def reduce(variables: Sequence[Variable]) -> Variable:
    """Combine a batch's losses; their feedback on shared variables is condensed."""
    return BatchReduce()(variables)


aggregate = reduce
