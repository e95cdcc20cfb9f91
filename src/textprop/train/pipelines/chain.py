"""`kind = "chain"`: several LLM calls, each step's user template filling in the example
(`{input}`, its fields) and the outputs of other steps by name (`{plan}`).

    plan   = engine(plan's system prompt,   "{input}")
    draft  = engine(draft's system prompt,  "Question: {input}\\nPlan: {plan}")
    polish = engine(polish's system prompt, "{draft}")       -> the prediction

Steps run in dependency order; the last step listed gives the prediction. Every step with
`optimize = True` contributes its system prompt as a parameter named after the step
(`plan`), and with `demos = True` a demonstrations parameter (`plan.demonstrations`). The
metric's feedback on the prediction flows back through every step that led to it.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from textprop.data.dataset import Example
from textprop.demos import Demo, Demonstrations, Placement
from textprop.engines.base import Engine
from textprop.errors import ConfigError
from textprop.functions.llm_call import FormattedLLMCall
from textprop.prompts import render
from textprop.train.pipelines.trace import trace
from textprop.variable import Variable

DEMOS_SUFFIX = ".demonstrations"


@dataclass
class ChainStep:
    """One step of a chain. `engine` None: the chain's engine."""

    name: str
    system_prompt: str
    template: str = "{input}"
    role_description: str | None = None
    max_tokens: int | None = 512
    engine: Engine | None = None
    optimize: bool = True
    demos: bool | Sequence[Demo] = False  # True: an empty list to fill; or starting pairs
    placement: Placement = "system"


def template_fields(template: str) -> list[str]:
    """The names a template uses (`{plan}`, `{input}`, `{topic!r:>10}` -> topic), in order."""
    names: list[str] = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name is None:
            continue
        base = name.split(".", 1)[0].split("[", 1)[0]
        if not base or base.isdigit():
            raise ValueError(f"{{{name}}} is not a name; use {{input}}, a field or a step")
        if base not in names:
            names.append(base)
    return names


def order_steps(steps: Sequence[ChainStep]) -> list[ChainStep]:
    """The steps in an order that runs each after the steps it uses; raises `ConfigError`
    (field `steps[i].name` / `steps[i].template`) on a duplicate name, a malformed template
    or a cycle."""
    if not steps:
        raise ConfigError("a chain needs at least one step", field="steps")
    index: dict[str, int] = {}
    for i, s in enumerate(steps):
        if not s.name.isidentifier() or s.name == "input" or "." in s.name:
            raise ConfigError(f"step name {s.name!r} must be an identifier other than "
                              "'input'", field=f"steps[{i}].name")
        if s.name in index:
            raise ConfigError(f"duplicate step name {s.name!r} (also steps[{index[s.name]}])",
                              field=f"steps[{i}].name")
        index[s.name] = i
    uses: dict[str, list[str]] = {}
    for i, s in enumerate(steps):
        try:
            names = template_fields(s.template)
        except ValueError as error:
            raise ConfigError(f"bad template: {error}", field=f"steps[{i}].template") from None
        uses[s.name] = [n for n in names if n in index]
        if s.name in uses[s.name]:
            raise ConfigError(f"step {s.name!r} uses its own output {{{s.name}}}: a cycle",
                              field=f"steps[{i}].template")
    ordered: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = path[path.index(name):]
            raise ConfigError("the steps' templates form a cycle: "
                              + " -> ".join(f"{{{n}}}" for n in cycle),
                              field=f"steps[{index[path[-2]]}].template")
        state[name] = "visiting"
        for used in uses[name]:
            visit(used, [*path, used])
        state[name] = "done"
        ordered.append(name)

    for s in steps:
        visit(s.name, [s.name])
    return [steps[index[n]] for n in ordered]


def unused_step(steps: Sequence[ChainStep]) -> ConfigError | None:
    """The error for a step whose output the prediction (the last step) does not use."""
    names = {s.name for s in steps}
    needed = {steps[-1].name}
    for s in reversed(order_steps(steps)):
        if s.name in needed:
            needed.update(n for n in template_fields(s.template) if n in names)
    for i, s in enumerate(steps):
        if s.name not in needed:
            return ConfigError(f"the output of step {s.name!r} reaches no later step, so it "
                               f"cannot affect the prediction (the last step, "
                               f"{steps[-1].name!r}); use {{{s.name}}} in a template or "
                               "remove the step", field=f"steps[{i}].template")
    return None


class ChainPipeline:
    """A chain of LLM calls over one example; see the module docstring."""

    def __init__(self, engine: Engine, steps: Sequence[ChainStep]) -> None:
        self.engine, self.steps = engine, list(steps)
        self.order = order_steps(self.steps)
        self._unused = unused_step(self.steps)
        names = {s.name for s in self.steps}
        self.fields = {s.name: template_fields(s.template) for s in self.steps}
        self.example_fields = sorted({f for fs in self.fields.values() for f in fs
                                      if f not in names and f != "input"})
        self.prompts: dict[str, Variable] = {}
        self.demonstrations: dict[str, Demonstrations] = {}
        self.calls: dict[str, FormattedLLMCall] = {}
        for s in self.steps:
            prompt = Variable(s.system_prompt, requires_grad=s.optimize,
                              role_description=s.role_description
                              or render("chain_system_role", name=s.name))
            demos = None
            if s.demos is not False:
                demos = Demonstrations([] if s.demos is True else list(s.demos),
                                       requires_grad=s.optimize)
                self.demonstrations[s.name] = demos
            call = FormattedLLMCall(s.engine or engine, s.template,
                                    {f: f for f in self.fields[s.name]}, prompt,
                                    max_tokens=s.max_tokens, demonstrations=demos,
                                    placement=s.placement)
            call.step_name = s.name  # type: ignore[attr-defined]  # for the ledger
            self.prompts[s.name], self.calls[s.name] = prompt, call

    def clone(self) -> ChainPipeline:
        return ChainPipeline(self.engine, [replace(
            s, system_prompt=self.prompts[s.name].value,
            demos=self.demonstrations[s.name].pairs if s.name in self.demonstrations
            else False) for s in self.steps])

    def parameters(self) -> dict[str, Variable]:
        out: dict[str, Variable] = {}
        for s in self.steps:
            if s.optimize:
                out[s.name] = self.prompts[s.name]
                if s.name in self.demonstrations:
                    out[s.name + DEMOS_SUFFIX] = self.demonstrations[s.name]
        return out

    def check_example(self, example: Example, source: str | None = None) -> None:
        """Raise `ConfigError` naming the template if `example` lacks a field it uses."""
        for i, s in enumerate(self.steps):
            missing = [f for f in self.fields[s.name] if f not in self.calls
                       and f != "input" and f not in example.fields]
            if missing:
                known = ", ".join(["input", *sorted(example.fields),
                                   *(n for n in self.calls if n != s.name)])
                raise ConfigError(
                    f"step {s.name!r} uses {{{missing[0]}}}, which is neither a step nor a "
                    f"field of example {example.id} (known: {known})",
                    field=f"steps[{i}].template", source=source or example.source or None)
        if self._unused is not None:
            raise self._unused

    def question_text(self, example: Example) -> str:
        """The first step's user message for `example`."""
        first = self.order[0]
        return first.template.format(input=example.input, **example.fields)

    async def aforward(self, example: Example) -> Variable:
        self.check_example(example)
        outputs: dict[str, Variable] = {}
        for s in self.order:
            inputs: dict[str, Variable] = {}
            for f in self.fields[s.name]:
                if f in outputs:
                    inputs[f] = outputs[f]
                else:
                    value = example.input if f == "input" else example.fields[f]
                    inputs[f] = Variable(str(value), requires_grad=False,
                                         role_description=render("chain_field_role",
                                                                 field=f, name=s.name))
            outputs[s.name] = await self.calls[s.name].aforward(
                inputs, render("chain_output_role", name=s.name))
        return outputs[self.steps[-1].name]

    def demo_pair(self, name: str, example: Example, prediction: Variable) -> Demo | None:
        """The demonstration a right answer teaches parameter `name` (`plan.demonstrations`):
        that step's own user message and output in this example's run."""
        step = name.removesuffix(DEMOS_SUFFIX)
        for row in trace(prediction):
            if row.name == step:
                return Demo(row.input, row.output, example.id)
        return None

    def describe(self) -> dict[str, Any]:
        return {"kind": "chain", "steps": [
            {"name": s.name, "template": s.template, "optimize": s.optimize,
             "role_description": self.prompts[s.name].role_description}
            for s in self.steps]}

