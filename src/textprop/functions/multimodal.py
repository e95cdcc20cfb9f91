"""LLM calls on text and images: `MultimodalLLMCall`, `OrderedFieldsMultimodalLLMCall`.

The request carries the images as image parts (each provider's format, see the engines);
backward sends the same images with the feedback request, and the feedback goes to the
text inputs that require grad (an image cannot be rewritten).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from textprop.engines.base import Request, require_images_support
from textprop.errors import GraphError
from textprop.functions.base import Feedback, Function, Step
from textprop.functions.llm_call import OUTPUT_ROLE, _engine_or_default
from textprop.images import Image
from textprop.prompts import render
from textprop.variable import Variable

if TYPE_CHECKING:
    from textprop.backward import BackwardContext

Part = str | Image


class MultimodalLLMCall(Function):
    """`MultimodalLLMCall(engine)([image_variable, question_variable])`: one call whose user
    message is the inputs' values in order, images as images."""

    def __init__(self, engine: Any = None, system_prompt: Variable | None = None, *,
                 call_role: str = "forward", temperature: float = 0.0,
                 max_tokens: int | None = None, seed: int | None = 0) -> None:
        self.engine = _engine_or_default(engine)
        self.system_prompt = system_prompt
        self.call_role = call_role
        self.sampling = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}

    def forward(self, inputs: Sequence[Variable],
                response_role_description: str = OUTPUT_ROLE) -> Variable:
        parts, variables = self._parts(inputs)
        request = self._request(parts)
        return self._respond(self.engine.complete(request).text, request, variables,
                             response_role_description)

    async def aforward(self, inputs: Sequence[Variable],
                       response_role_description: str = OUTPUT_ROLE) -> Variable:
        parts, variables = self._parts(inputs)
        request = self._request(parts)
        return self._respond((await self.engine.acomplete(request)).text, request, variables,
                             response_role_description)

    def _parts(self, inputs: Sequence[Variable]) -> tuple[list[Part], list[Variable]]:
        variables = list(inputs)
        for v in variables:
            if not isinstance(v, Variable):
                raise TypeError(f"MultimodalLLMCall takes Variables, got {type(v).__name__}")
        if not any(v.is_image for v in variables):
            raise GraphError("MultimodalLLMCall needs at least one image variable among its "
                             "inputs; for text only use LLMCall")
        return [v.image if v.image is not None else v.value for v in variables], variables

    def _request(self, parts: list[Part]) -> Request:
        system = self.system_prompt.value if self.system_prompt is not None else None
        request = Request.chat(parts, system, role=self.call_role, **self.sampling)
        require_images_support(self.engine, request)
        return request

    def _respond(self, text: str, request: Request, inputs: list[Variable],
                 role_description: str) -> Variable:
        predecessors = ([self.system_prompt] if self.system_prompt is not None else []) + inputs
        response = Variable(text, predecessors=predecessors, role_description=role_description)
        return self._record(response, response.predecessors, prompt=request.prompt,
                            system_prompt=request.system_prompt, images=request.images)

    async def abackward(self, step: Step, ctx: BackwardContext) -> list[Feedback]:
        conversation = render("conversation_multimodal_call",
                              system_prompt=step.data["system_prompt"] or "",
                              prompt=step.data["prompt"], output=step.output.value)
        return await ctx.feedback_for_inputs(step, conversation, "multimodal_llm_call",
                                             images=step.data["images"])


class OrderedFieldsMultimodalLLMCall(MultimodalLLMCall):
    """A multimodal call over named fields, in the order of `fields`: text fields as
    "Field: value", image fields as the image."""

    def __init__(self, engine: Any = None, fields: Sequence[str] = (),
                 system_prompt: Variable | None = None, **options: Any) -> None:
        super().__init__(engine, system_prompt, **options)
        self.fields = list(fields)

    def _fields(self, inputs: Mapping[str, Variable]) -> tuple[list[Part], list[Variable]]:
        if set(inputs) != set(self.fields):
            raise GraphError(f"expected the fields {self.fields}, got {sorted(inputs)}")
        parts: list[Part] = []
        for name in self.fields:
            v = inputs[name]
            parts.append(v.image if v.image is not None
                         else render("multimodal_field", field=name, value=v.value))
        return parts, [inputs[name] for name in self.fields]

    def forward(self, inputs: Mapping[str, Variable],  # type: ignore[override]
                response_role_description: str = OUTPUT_ROLE) -> Variable:
        parts, variables = self._fields(inputs)
        request = self._request(parts)
        return self._respond(self.engine.complete(request).text, request, variables,
                             response_role_description)

    async def aforward(self, inputs: Mapping[str, Variable],  # type: ignore[override]
                       response_role_description: str = OUTPUT_ROLE) -> Variable:
        parts, variables = self._fields(inputs)
        request = self._request(parts)
        return self._respond((await self.engine.acomplete(request)).text, request, variables,
                             response_role_description)
