"""LLM calls as graph steps: `LLMCall`, `FormattedLLMCall`, and the `BlackboxLLM` module."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from textprop.demos import Demonstrations, Placement, as_turns, in_system_prompt
from textprop.engines.base import CallRole, Completion, Engine, Message, Request, as_engine
from textprop.errors import GraphError
from textprop.functions.base import Feedback, Function, Module, Step
from textprop.prompts import render
from textprop.variable import FeedbackContext, Variable

if TYPE_CHECKING:
    from textprop.backward import BackwardContext

SYSTEM_PROMPT_ROLE = ("system prompt to the language model that specifies the behavior and "
                      "strategies, which will be reused across queries")
OUTPUT_ROLE = "response from the language model"


def _engine_or_default(engine: Any) -> Engine:
    if engine is None:
        from textprop.config import SingletonBackwardEngine

        engine = SingletonBackwardEngine().get_engine()
    return as_engine(engine)


def cut_off_note(output: Variable) -> str:
    """A sentence saying that the LLM call which produced `output` hit its token limit, or
    "" (a small model's reasoning cut off before its answer reads, to a critic, like a
    format error: 40 % of the 0.5B model's GSM8K replies in B4 stopped at 256 tokens)."""
    step = getattr(output, "grad_fn", None)
    if step is None or step.data.get("finish_reason") != "length":
        return ""
    return cut_off_sentence(step.data.get("max_tokens"))


def cut_off_sentence(limit: int | None) -> str:
    return render("output_cut_off", limit=f"its limit of {limit} tokens" if limit
                  else "its token limit")


class LLMCall(Function):
    """One call of an LLM: output = engine(system_prompt, [demonstrations], input).

    Backward writes feedback for each input that requires grad (the system prompt, the
    input), from the exchange the call made. `demonstrations`, when given, are shown inside
    the system prompt or as prior chat turns (`placement`); they receive the feedback the
    output received, as it is, without a call.
    """

    def __init__(self, engine: Any = None, system_prompt: Variable | None = None, *,
                 call_role: CallRole = "forward", temperature: float = 0.0,
                 max_tokens: int | None = None, seed: int | None = 0,
                 demonstrations: Demonstrations | None = None,
                 placement: Placement = "system") -> None:
        self.engine = _engine_or_default(engine)
        self.system_prompt = system_prompt
        self.demonstrations = demonstrations
        self.placement: Placement = placement
        self.call_role: CallRole = call_role
        self.sampling = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}

    def forward(self, input_variable: Variable,
                response_role_description: str = OUTPUT_ROLE) -> Variable:
        request = self._request(input_variable.value)
        return self._respond(self.engine.complete(request), request, [input_variable],
                             response_role_description)

    async def aforward(self, input_variable: Variable,
                       response_role_description: str = OUTPUT_ROLE) -> Variable:
        request = self._request(input_variable.value)
        return self._respond(await self.engine.acomplete(request), request, [input_variable],
                             response_role_description)

    def _system_text(self) -> str | None:
        """The system message, with the demonstrations when they go there."""
        system = self.system_prompt.value if self.system_prompt is not None else None
        if self.demonstrations is not None and self.placement == "system":
            return in_system_prompt(system, self.demonstrations.pairs)
        return system

    def _request(self, prompt: str) -> Request:
        request = Request.chat(prompt, self._system_text(), role=self.call_role,
                               **self.sampling)
        if self.demonstrations is None or self.placement != "turns":
            return request
        *head, question = request.messages
        turns: tuple[Message, ...] = as_turns(self.demonstrations.pairs)
        return request.with_(messages=(*head, *turns, question))

    def _respond(self, completion: Completion, request: Request, inputs: list[Variable],
                 role_description: str) -> Variable:
        predecessors = ([self.system_prompt] if self.system_prompt is not None else []) + (
            [self.demonstrations] if self.demonstrations is not None else []) + inputs
        response = Variable(completion.text, predecessors=predecessors,
                            role_description=role_description)
        shown = request.system_prompt
        if self.demonstrations is not None and self.placement == "turns":
            shown = in_system_prompt(shown, self.demonstrations.pairs)  # for the critic
        return self._record(response, response.predecessors, prompt=request.prompt,
                            system_prompt=shown, finish_reason=completion.finish_reason,
                            max_tokens=request.max_tokens)

    @staticmethod
    def conversation(step: Step) -> str:
        """The exchange as the critic sees it, saying so when the reply was cut off."""
        conversation = render("conversation_llm_call",
                              system_prompt=step.data["system_prompt"] or "",
                              prompt=step.data["prompt"], output=step.output.value)
        note = cut_off_note(step.output)
        return f"{conversation}\n\n{note}" if note else conversation

    async def abackward(self, step: Step, ctx: BackwardContext) -> list[Feedback]:
        conversation = self.conversation(step)
        demos = [v for v in step.inputs if isinstance(v, Demonstrations) and v.requires_grad]
        if not demos:
            return await ctx.feedback_for_inputs(step, conversation, "llm_call")
        others = Step(step.function, step.output,
                      tuple(v for v in step.inputs if not isinstance(v, Demonstrations)),
                      step.data)
        feedback = await ctx.feedback_for_inputs(others, conversation, "llm_call")
        passed_on = step.output.get_gradient_text()
        if not passed_on.strip():
            return feedback
        context = FeedbackContext(conversation, step.output.role_description, "llm_call",
                                  passed_on)
        return feedback + [(d, ctx.gradient(d, passed_on, context)) for d in demos]


class FormattedLLMCall(LLMCall):
    """An LLM call whose prompt is `format_string` filled with named input variables."""

    def __init__(self, engine: Any = None, format_string: str = "",
                 fields: Mapping[str, Any] | None = None,
                 system_prompt: Variable | None = None, **options: Any) -> None:
        super().__init__(engine, system_prompt, **options)
        self.format_string = format_string
        self.fields = dict(fields or {})

    def forward(self, inputs: Mapping[str, Variable],  # type: ignore[override]
                response_role_description: str = OUTPUT_ROLE) -> Variable:
        request = self._request(self._format(inputs))
        return self._respond(self.engine.complete(request), request, list(inputs.values()),
                             response_role_description)

    async def aforward(self, inputs: Mapping[str, Variable],  # type: ignore[override]
                       response_role_description: str = OUTPUT_ROLE) -> Variable:
        request = self._request(self._format(inputs))
        return self._respond(await self.engine.acomplete(request), request,
                             list(inputs.values()), response_role_description)

    def _format(self, inputs: Mapping[str, Variable]) -> str:
        if set(inputs) != set(self.fields):
            missing = sorted(set(self.fields) - set(inputs))
            extra = sorted(set(inputs) - set(self.fields))
            raise GraphError(f"FormattedLLMCall inputs must match its fields "
                             f"{sorted(self.fields)}: missing {missing}, unexpected {extra}")
        return self.format_string.format(**{k: v.value for k, v in inputs.items()})


class LLMCall_with_in_context_examples(LLMCall):  # noqa: N801 - TextGrad's name
    """TextGrad's planning call: the reply's text between <FINAL> tags is the output, and
    backward bases its feedback on `in_context_examples`.

    As in TextGrad, a final text saying "The plan doesn't need to be improved" gives None
    (the caller's signal to stop). A reply without <FINAL> tags is taken whole.
    """

    stop_phrase = "The plan doesn't need to be improved"

    def forward(self, input_variable: Variable,  # type: ignore[override]
                response_role_description: str = OUTPUT_ROLE,
                in_context_examples: list[str] | None = None) -> Variable | None:
        request = self._request(input_variable.value)
        return self._final(self.engine.complete(request), request, input_variable,
                           response_role_description, in_context_examples)

    async def aforward(self, input_variable: Variable,  # type: ignore[override]
                       response_role_description: str = OUTPUT_ROLE,
                       in_context_examples: list[str] | None = None) -> Variable | None:
        request = self._request(input_variable.value)
        return self._final(await self.engine.acomplete(request), request, input_variable,
                           response_role_description, in_context_examples)

    def _final(self, completion: Completion, request: Request, input_variable: Variable,
               role_description: str, examples: list[str] | None) -> Variable | None:
        text = completion.text
        if "<FINAL>" in text:
            text = text.split("<FINAL>", 1)[1].split("</FINAL>", 1)[0].strip()
        response = self._respond(replace(completion, text=text), request, [input_variable],
                                 role_description)
        assert response.grad_fn is not None
        response.grad_fn.data["in_context_examples"] = list(examples or [])
        return None if self.stop_phrase in text else response

    async def abackward(self, step: Step, ctx: BackwardContext) -> list[Feedback]:
        conversation = self.conversation(step)
        if step.data["in_context_examples"]:
            conversation = render("conversation_in_context_examples", conversation=conversation,
                                  examples="\n".join(step.data["in_context_examples"]))
        return await ctx.feedback_for_inputs(step, conversation, "llm_call")


class BlackboxLLM(Module):
    """A model with an optional system prompt: `BlackboxLLM(engine, system_prompt)(x)`."""

    def __init__(self, engine: Any = None, system_prompt: Variable | str | None = None,
                 **options: Any) -> None:
        if isinstance(system_prompt, str):
            system_prompt = Variable(system_prompt, requires_grad=False,
                                     role_description=SYSTEM_PROMPT_ROLE)
        self.system_prompt = system_prompt
        self.llm_call = LLMCall(engine, system_prompt, **options)
        self.engine = self.llm_call.engine

    def parameters(self) -> list[Variable]:
        return [self.system_prompt] if self.system_prompt is not None else []

    def forward(self, x: Variable, response_role_description: str = OUTPUT_ROLE) -> Variable:
        return self.llm_call(x, response_role_description)

    async def aforward(self, x: Variable,
                       response_role_description: str = OUTPUT_ROLE) -> Variable:
        return await self.llm_call.aforward(x, response_role_description)
