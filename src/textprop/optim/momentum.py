"""TGD with momentum: the rewrite prompt also shows the parameter's last values and the
feedback each received, so feedback that keeps recurring asks for a bigger change.

TextGrad's `TextualGradientDescentwithMomentum` builds this prompt but never returns it (its
`_update_prompt` returns None); this one sends it. The past steps live in
`state[name]["momentum"]`, one `{"value", "feedback"}` per step that had feedback, at most
`momentum_window` of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from textprop.optim.tgd import TextualGradientDescent, UpdateRecord
from textprop.prompts import render
from textprop.variable import Variable


class TextualGradientDescentwithMomentum(TextualGradientDescent):
    """TextGrad's signature: `(engine, parameters, momentum_window=0, constraints=None,
    new_variable_tags=None, in_context_examples=None, optimizer_system_prompt=None)`; other
    keywords are TGD's. `momentum_window=0` is plain TGD."""

    def __init__(self, engine: Any = None,
                 parameters: Mapping[str, Variable] | Iterable[Variable] = (),
                 momentum_window: int = 0, constraints: Sequence[str] | None = None,
                 new_variable_tags: Sequence[str] | None = None,
                 in_context_examples: Sequence[str] | None = None,
                 optimizer_system_prompt: str | None = None, **options: Any) -> None:
        if momentum_window < 0:
            raise ValueError(f"momentum_window must be 0 or more, got {momentum_window}")
        super().__init__(parameters, engine=engine, constraints=constraints,
                         new_variable_tags=new_variable_tags,
                         in_context_examples=in_context_examples,
                         optimizer_system_prompt=optimizer_system_prompt, **options)
        self.momentum_window = momentum_window
        self._settings["momentum_window"] = momentum_window
        for state in self.state.values():
            state["momentum"] = []

    def with_parameters(self, parameters: Mapping[str, Variable]
                        ) -> TextualGradientDescentwithMomentum:
        settings = dict(self._settings)
        engine = settings.pop("engine")
        return TextualGradientDescentwithMomentum(engine, parameters, **settings)

    def _extra_sections(self, name: str) -> list[str]:
        past = self.state[name]["momentum"]
        if not self.momentum_window or not past:
            return []
        role = self.named_parameters[name].role_description
        items = "\n".join(render("optimizer_momentum_item", variable_role=role, n=n,
                                 value=step["value"], feedback=step["feedback"])
                          for n, step in enumerate(past, 1))
        return [render("optimizer_momentum", items=items)]

    async def astep(self, names: Sequence[str] | None = None) -> list[UpdateRecord]:
        records = await super().astep(names)
        if self.momentum_window:
            for record in records:
                if record.feedback.strip():
                    past = self.state[record.name]["momentum"]
                    past.append({"value": record.before, "feedback": record.feedback})
                    del past[:-self.momentum_window]
        return records

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        for name, s in state["state"].items():
            s["momentum"] = [dict(step) for step in self.state[name]["momentum"]]
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        for s in self.state.values():
            s["momentum"] = [dict(step) for step in s.get("momentum", [])]
