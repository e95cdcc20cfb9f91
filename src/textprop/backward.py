"""The backward pass: a scheduler that runs every step's backward in reverse topological order.

A variable's step runs once all the steps that consumed it have delivered their feedback, so
steps that don't depend on each other run concurrently (each is an asyncio task). Gradients
are filed in a fixed order (by the consumer's place in the graph, then by input), never in
completion order, so prompts are the same whatever the timing.

Feedback that descends from different inputs of one `BatchReduce` and meets at a shared
variable is condensed there into a single gradient by one LLM call.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textprop.engines.base import Engine, Request, as_engine, require_images_support
from textprop.errors import EngineReplyError, MissingEngineError
from textprop.feedback import (
    backward_request,
    feedback_text,
    reduce_request,
    salvage_feedback,
)
from textprop.images import Image
from textprop.variable import FeedbackContext, Gradient, Variable

if TYPE_CHECKING:
    from textprop.functions.base import Step


@dataclass
class BackwardContext:
    """What every function's backward may use: the engine and the feedback settings."""

    engine: Engine
    structured: bool
    max_sentences: int = 4
    max_tokens: int | None = 300

    async def feedback(self, *, target: Variable, output: Variable, conversation: str,
                       source: str, images: Sequence[Image] = ()) -> Gradient:
        """Ask the engine for feedback on `target`, an input of the step that made `output`;
        `images` (the step's) go with the request."""
        request = backward_request(
            target=target, conversation=conversation, output=output,
            output_feedback=output.get_gradient_text(), structured=self.structured,
            max_sentences=self.max_sentences, max_tokens=self.max_tokens, images=images)
        require_images_support(self.engine, request)
        return self.gradient(target, await self._ask(request),
                             FeedbackContext(conversation, output.role_description, source,
                                             output.get_gradient_text()))

    async def _ask(self, request: Request) -> str:
        try:
            return feedback_text(await self.engine.acomplete(request))
        except EngineReplyError as error:  # JSON cut off or malformed: keep what was said
            if not error.reply_text:
                raise
            return salvage_feedback(error.reply_text)

    async def feedback_for_inputs(self, step: Step, conversation: str, source: str,
                                  images: Sequence[Image] = ()
                                  ) -> list[tuple[Variable, Gradient]]:
        """Feedback for every text input of `step` that requires grad, asked concurrently
        (an image input gets none: it cannot be rewritten)."""
        targets = [v for v in step.inputs if v.requires_grad and not v.is_image]
        gradients = await asyncio.gather(*(
            self.feedback(target=t, output=step.output, conversation=conversation,
                          source=source, images=images) for t in targets))
        return list(zip(targets, gradients, strict=True))

    @staticmethod
    def gradient(target: Variable, text: str, context: FeedbackContext | None) -> Gradient:
        return Gradient(text, role_description=f"feedback to {target.role_description}",
                        context=context)

    async def condense(self, target: Variable, gradients: list[Gradient]) -> Gradient:
        request = reduce_request(
            target=target, feedbacks=[g.value for g in gradients], structured=self.structured,
            max_sentences=self.max_sentences, max_tokens=self.max_tokens)
        contexts = [g.context for g in gradients if g.context is not None]
        merged = FeedbackContext(
            "\n\n".join(c.conversation for c in contexts), contexts[0].output_role, "batch",
            "\n".join(c.output_feedback for c in contexts if c.output_feedback),
        ) if contexts else None  # the optimizer still sees every example behind the summary
        condensed = self.gradient(target, await self._ask(request), merged)
        condensed.reduce_tags = frozenset().union(*(g.reduce_tags for g in gradients))
        return condensed


def resolve_backward_engine(engine: Any) -> Engine:
    if engine is None:
        from textprop.config import SingletonBackwardEngine

        engine = SingletonBackwardEngine().get_engine()
        if engine is None:
            raise MissingEngineError(
                "backward needs an engine to write feedback: call loss.backward(engine) "
                "(or, TextGrad style, textprop.set_backward_engine(engine) once)")
    return as_engine(engine)


def topological_order(root: Variable) -> list[Variable]:
    """Every variable `root` depends on, each after its predecessors (iterative DFS)."""
    order: list[Variable] = []
    seen: set[int] = set()
    stack: list[tuple[Variable, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for p in reversed(node.predecessors):
            if id(p) not in seen:
                stack.append((p, False))
    return order


async def run_backward(root: Variable, engine: Any = None, *, max_sentences: int = 4,
                       max_tokens: int | None = 300) -> None:
    """Write feedback for everything `root` depends on."""
    backward_engine = resolve_backward_engine(engine)
    ctx = BackwardContext(backward_engine, structured=backward_engine.supports_json_schema,
                          max_sentences=max_sentences, max_tokens=max_tokens)
    order = topological_order(root)
    rank = {id(v): i for i, v in enumerate(order)}
    waiting: dict[int, int] = defaultdict(int)  # consumers still to deliver feedback
    for v in order:
        for p in v.predecessors:
            waiting[id(p)] += 1
    inbox: dict[int, list[tuple[int, int, Gradient]]] = defaultdict(list)
    seeds: dict[int, set[tuple[int, int]]] = defaultdict(set)  # reduce branches per variable
    # Where feedback starts: the root, and the inputs of a combination of losses (a sum or
    # batch of them) that itself got no feedback. Any other step whose output received no
    # feedback has nothing to pass on, and costs no call.
    evaluations = {id(root)}
    root.reset_gradients()

    async def process(v: Variable, tasks: asyncio.TaskGroup) -> None:
        arrived = [g for _, _, g in sorted(inbox.pop(id(v), []), key=lambda t: t[:2])]
        for g in await _condense_batches(v, arrived, ctx):
            v.gradients.add(g)
        step = v.grad_fn
        if step is not None and getattr(step.function, "combines", False) \
                and id(v) in evaluations and not v.gradients:
            evaluations.update(id(p) for p in step.inputs)
        if step is not None and v.requires_grad and (v.gradients or id(v) in evaluations):
            if getattr(step.function, "condenses_feedback", False):
                for i, p in enumerate(step.inputs):
                    seeds[id(p)].add((rank[id(v)], i))
            tags = frozenset(seeds[id(v)]).union(
                *(getattr(g, "reduce_tags", frozenset()) for g in v.gradients))
            for i, (target, gradient) in enumerate(await step.function.abackward(step, ctx)):
                gradient.reduce_tags = gradient.reduce_tags | tags
                inbox[id(target)].append((rank[id(v)], i, gradient))
        for p in v.predecessors:
            waiting[id(p)] -= 1
            if waiting[id(p)] == 0:
                tasks.create_task(process(p, tasks))

    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(process(root, tasks))
    except BaseExceptionGroup as group:
        raise _first_error(group) from None


async def _condense_batches(v: Variable, gradients: list[Gradient],
                            ctx: BackwardContext) -> list[Gradient]:
    """Replace the gradients that came from different branches of one reduce by one."""
    reduce_ids = sorted({tag[0] for g in gradients for tag in g.reduce_tags})
    for reduce_id in reduce_ids:
        group = [g for g in gradients if any(t[0] == reduce_id for t in g.reduce_tags)]
        branches = {t for g in group for t in g.reduce_tags if t[0] == reduce_id}
        if len(group) < 2 or len(branches) < 2:
            continue
        condensed = await ctx.condense(v, group)
        first = gradients.index(group[0])
        gradients = [g for g in gradients if g not in group]
        gradients.insert(first, condensed)
    return gradients


def _first_error(group: BaseExceptionGroup) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
