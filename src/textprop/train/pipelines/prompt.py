"""`kind = "prompt"`: one system prompt (the parameter) + a user template (the default)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textprop.data.dataset import Example
from textprop.demos import Demo, Demonstrations, Placement
from textprop.engines.base import Engine
from textprop.errors import ConfigError
from textprop.functions.llm_call import LLMCall
from textprop.variable import Variable

DEFAULT_ROLE = ("system prompt to the language model that answers the question; it is reused "
                "for every question of the task")


class PromptPipeline:
    """prediction = engine(system_prompt, [demonstrations], template.format(input=..., ...)).

    With `demonstrations` (a list of pairs, possibly empty) the pipeline has a second
    parameter, `demonstrations`, shown in the system prompt or as prior chat turns
    (`placement`)."""

    def __init__(self, engine: Engine, system_prompt: str, *,
                 role_description: str = DEFAULT_ROLE, template: str = "{input}",
                 max_tokens: int | None = 512, demonstrations: Sequence[Demo] | None = None,
                 placement: Placement = "system") -> None:
        self.system_prompt = Variable(system_prompt, role_description=role_description)
        self.demonstrations = (None if demonstrations is None
                               else Demonstrations(demonstrations))
        self.template, self.placement = template, placement
        self.engine, self.max_tokens = engine, max_tokens
        self.call = LLMCall(engine, self.system_prompt, max_tokens=max_tokens,
                            demonstrations=self.demonstrations, placement=placement)

    def clone(self) -> PromptPipeline:
        demos = None if self.demonstrations is None else self.demonstrations.pairs
        return PromptPipeline(self.engine, self.system_prompt.value,
                              role_description=self.system_prompt.role_description,
                              template=self.template, max_tokens=self.max_tokens,
                              demonstrations=demos, placement=self.placement)

    def parameters(self) -> dict[str, Variable]:
        if self.demonstrations is None:
            return {"system_prompt": self.system_prompt}
        return {"system_prompt": self.system_prompt, "demonstrations": self.demonstrations}

    def check(self, example: Example, source: str | None = None) -> None:
        """Raise the `ConfigError` that running `example` would meet in the template."""
        try:
            self.template.format(input=example.input, **example.fields)
        except ValueError as error:  # a stray "{" or "}"
            raise ConfigError(f"the template is not a valid format string ({error}); "
                              "write a literal brace as {{ or }}", field="pipeline.template",
                              source=source) from None
        except (KeyError, IndexError):
            self._question(example)

    def _question(self, example: Example) -> Variable:
        try:
            text = self.template.format(input=example.input, **example.fields)
        except (KeyError, IndexError) as missing:
            raise ConfigError(f"the template needs field {missing} that example "
                              f"{example.id} does not have", field="pipeline.template",
                              source=example.source or None) from None
        except ValueError as error:
            raise ConfigError(f"the template is not a valid format string ({error}); "
                              "write a literal brace as {{ or }}",
                              field="pipeline.template") from None
        return Variable(text, role_description="question to the language model",
                        requires_grad=False)

    def question_text(self, example: Example) -> str:
        """The user message for `example` (demonstrations show their inputs this way)."""
        return self._question(example).value

    async def aforward(self, example: Example) -> Variable:
        return await self.call.aforward(self._question(example),
                                        "answer of the language model to the question")

    def describe(self) -> dict[str, Any]:
        return {"template": self.template, "role_description": self.system_prompt.role_description}
