"""Losses: an LLM judge (`TextLoss`), a multi-field judge, and a metric loss.

A loss is a graph step whose output is an evaluation; backward starts there. For the LLM
judges, feedback next to the loss is written from the evaluation text. For `MetricLoss`,
the metric's own explanation ("expected 7, got 10") *is* the feedback: no LLM call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from textprop.errors import EngineReplyError
from textprop.functions.base import Feedback, Function, Module, Step
from textprop.functions.llm_call import FormattedLLMCall, LLMCall, _engine_or_default
from textprop.prompts import render
from textprop.variable import FeedbackContext, Variable

if TYPE_CHECKING:
    from textprop.backward import BackwardContext

EVAL_SYSTEM_ROLE = "system prompt for the evaluation"
MULTI_FIELD_SYSTEM_PROMPT = "You are an evaluation system that compares two variables."


class TextLoss(Module):
    """Evaluate a variable with an LLM following `eval_system_prompt`."""

    def __init__(self, eval_system_prompt: Variable | str, engine: Any = None,
                 **options: Any) -> None:
        if isinstance(eval_system_prompt, str):
            eval_system_prompt = Variable(eval_system_prompt, requires_grad=False,
                                          role_description=EVAL_SYSTEM_ROLE)
        self.eval_system_prompt = eval_system_prompt
        self.engine = _engine_or_default(engine)
        self.llm_call = LLMCall(self.engine, eval_system_prompt, call_role="loss", **options)

    def forward(self, instance: Variable) -> Variable:
        return self.llm_call(instance, f"evaluation of the {instance.role_description}")

    async def aforward(self, instance: Variable) -> Variable:
        return await self.llm_call.aforward(instance,
                                            f"evaluation of the {instance.role_description}")


class MultiFieldEvaluation(Module):
    """Evaluate several named variables together (e.g. a prediction and the correct answer).

    Unlike TextGrad, the inputs' role descriptions are not overwritten: each field is
    labelled in the prompt with the role description given here.
    """

    def __init__(self, evaluation_instruction: Variable | str,
                 role_descriptions: Sequence[str], engine: Any = None,
                 system_prompt: Variable | None = None, **options: Any) -> None:
        if isinstance(evaluation_instruction, str):
            evaluation_instruction = Variable(evaluation_instruction, requires_grad=False,
                                              role_description="evaluation instruction")
        self.evaluation_instruction = evaluation_instruction
        self.role_descriptions = list(role_descriptions)
        self.engine = _engine_or_default(engine)
        self.system_prompt = system_prompt or Variable(
            MULTI_FIELD_SYSTEM_PROMPT, requires_grad=False, role_description=EVAL_SYSTEM_ROLE)
        names = ["instruction"] + [f"field_{i}" for i in range(len(self.role_descriptions))]
        format_string = "\n".join(
            ["{instruction}"] + [f"**{role}**: {{{name}}}"
                                 for role, name in zip(self.role_descriptions, names[1:],
                                                       strict=True)])
        self._names = names
        self.formatted_llm_call = FormattedLLMCall(
            self.engine, format_string, dict.fromkeys(names), self.system_prompt,
            call_role="loss", **options)

    def _inputs(self, inputs: Sequence[Variable]) -> dict[str, Variable]:
        if len(inputs) != len(self.role_descriptions):
            raise ValueError(f"MultiFieldEvaluation expects {len(self.role_descriptions)} "
                             f"inputs ({self.role_descriptions}), got {len(inputs)}")
        return dict(zip(self._names, [self.evaluation_instruction, *inputs], strict=True))

    def forward(self, inputs: Sequence[Variable]) -> Variable:
        return self.formatted_llm_call(self._inputs(inputs), "evaluation of a prediction")

    async def aforward(self, inputs: Sequence[Variable]) -> Variable:
        return await self.formatted_llm_call.aforward(self._inputs(inputs),
                                                      "evaluation of a prediction")


class MultiFieldTokenParsedEvaluation(MultiFieldEvaluation):
    """`MultiFieldEvaluation` whose verdict is read from between `parse_tags`."""

    def __init__(self, evaluation_instruction: Variable | str,
                 role_descriptions: Sequence[str], engine: Any = None,
                 system_prompt: Variable | None = None,
                 parse_tags: Sequence[str] | None = None, **options: Any) -> None:
        super().__init__(evaluation_instruction, role_descriptions, engine, system_prompt,
                         **options)
        self.parse_tags = list(parse_tags or ["<ACCURACY>", "</ACCURACY>"])

    def parse_output(self, response: Variable) -> str:
        """The text between the parse tags of `response` (e.g. "1")."""
        start, end = self.parse_tags
        if start not in response.value:
            raise EngineReplyError(f"the evaluation has no {start} ... {end} verdict",
                                   provider=self.engine.name, reply_text=response.value)
        return response.value.split(start, 1)[1].split(end, 1)[0].strip()


class MultiChoiceTestTime(Module):
    """The test-time loss of an answer to a multiple-choice question: an LLM critique."""

    def __init__(self, evaluation_instruction: str, engine: Any = None,
                 system_prompt: Variable | None = None, **options: Any) -> None:
        self.tt_system_prompt = system_prompt or Variable(
            render("multichoice_test_time_system"), requires_grad=False,
            role_description="system prompt for the test-time evaluation")
        self.engine = _engine_or_default(engine)
        escaped = evaluation_instruction.replace("{", "{{").replace("}", "}}")
        self.format_string = render("multichoice_test_time", instruction=escaped,
                                    question="{question}", prediction="{prediction}")
        self.fields = {"prediction": None, "question": None}
        self.formatted_llm_call = FormattedLLMCall(self.engine, self.format_string,
                                                   self.fields, self.tt_system_prompt,
                                                   call_role="loss", **options)

    def _inputs(self, question: str, prediction: Variable) -> dict[str, Variable]:
        return {"prediction": prediction,
                "question": Variable(question, requires_grad=False,
                                     role_description="the multiple choice question")}

    def forward(self, question: str, prediction: Variable) -> Variable:
        return self.formatted_llm_call(self._inputs(question, prediction),
                                       f"evaluation of the {prediction.role_description}")

    async def aforward(self, question: str, prediction: Variable) -> Variable:
        return await self.formatted_llm_call.aforward(
            self._inputs(question, prediction), f"evaluation of the {prediction.role_description}")


class ImageQALoss(Module):
    """Judge an answer to a question about an image, with the image in the request."""

    fields = ["Evaluation Instruction", "Question", "Image", "Answer"]

    def __init__(self, evaluation_instruction: str, engine: Any = None,
                 system_prompt: Variable | None = None, **options: Any) -> None:
        from textprop.functions.multimodal import OrderedFieldsMultimodalLLMCall

        self.evaluation_instruction = Variable(evaluation_instruction, requires_grad=False,
                                               role_description="evaluation instruction")
        self.engine = _engine_or_default(engine)
        self.system_prompt = system_prompt or Variable(
            render("image_qa_system"), requires_grad=False, role_description=EVAL_SYSTEM_ROLE)
        self.multimodal_llm_call = OrderedFieldsMultimodalLLMCall(
            self.engine, self.fields, self.system_prompt, call_role="loss", **options)

    def _inputs(self, image: Variable, question: Variable,
                response: Variable) -> dict[str, Variable]:
        return dict(zip(self.fields, [self.evaluation_instruction, question, image, response],
                        strict=True))

    def forward(self, image: Variable, question: Variable, response: Variable) -> Variable:
        return self.multimodal_llm_call(self._inputs(image, question, response),
                                        f"evaluation of the {response.role_description}")

    async def aforward(self, image: Variable, question: Variable,
                       response: Variable) -> Variable:
        return await self.multimodal_llm_call.aforward(
            self._inputs(image, question, response),
            f"evaluation of the {response.role_description}")


class Evaluation(Variable):
    """A loss output that also carries a numeric score (from a metric)."""

    score: float | None = None


MetricFn = Callable[[str, str], Any]


class MetricLoss(Function):
    """A Python scorer `(prediction, target) -> (score, explanation)` as a loss.

    The explanation becomes the prediction's feedback directly. A prediction that scores
    `pass_score` or more gets no feedback unless `feedback_on_pass` is set: there is
    nothing to fix, and the calls further up the graph are saved.
    """

    def __init__(self, metric: MetricFn, *, name: str | None = None, pass_score: float = 1.0,
                 feedback_on_pass: bool = False) -> None:
        self.metric = metric
        self.name = name or getattr(metric, "__name__", type(metric).__name__)
        self.pass_score = pass_score
        self.feedback_on_pass = feedback_on_pass

    def forward(self, prediction: Variable, target: str | Variable) -> Evaluation:
        target_text = target.value if isinstance(target, Variable) else str(target)
        score, explanation = _score_and_explanation(self.metric(prediction.value, target_text))
        evaluation = Evaluation(explanation, predecessors=[prediction],
                                role_description=f"evaluation of the "
                                                 f"{prediction.role_description}")
        evaluation.score = score
        self._record(evaluation, [prediction], score=score)
        return evaluation

    async def abackward(self, step: Step, ctx: BackwardContext) -> list[Feedback]:
        prediction = step.inputs[0]
        score = step.data["score"]
        if not prediction.requires_grad or (score >= self.pass_score
                                            and not self.feedback_on_pass):
            return []
        conversation = render("conversation_metric", metric=self.name,
                              prediction=prediction.value, score=f"{score:g}",
                              explanation=step.output.value)
        context = FeedbackContext(conversation, step.output.role_description, "metric")
        return [(prediction, ctx.gradient(prediction, step.output.value, context))]


def _score_and_explanation(result: Any) -> tuple[float, str]:
    """Accept (score, explanation), an object with .score/.explanation, a bool or a number."""
    if isinstance(result, tuple) and len(result) == 2:
        score, explanation = result
    elif hasattr(result, "score") and hasattr(result, "explanation"):
        score, explanation = result.score, result.explanation
    elif isinstance(result, bool | int | float):
        score, explanation = float(result), "correct" if float(result) >= 1 else "incorrect"
    else:
        raise TypeError(f"a metric must return (score, explanation), got {result!r}")
    return float(score), str(explanation)
