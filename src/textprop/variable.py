"""`Variable`: a text node of the computation graph, and the feedback (gradients) it receives.

Like micrograd's `Value`, a variable knows the step that produced it (`grad_fn`) and its
inputs (`predecessors`, in call order). Gradients are `Gradient` variables that keep the
context they came from; `gradients` behaves like TextGrad's set but iterates in the order the
gradients were added, so the same graph always yields the same prompts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textprop.errors import GraphError
from textprop.images import Image, is_url

if TYPE_CHECKING:
    from textprop.engines.base import Engine
    from textprop.functions.base import Step
    from textprop.graph_view import Graph


@dataclass(frozen=True)
class FeedbackContext:
    """Where a gradient came from: the step's exchange, and what its output was used as."""

    conversation: str  # the step's inputs and output, as shown to the feedback engine
    output_role: str  # role description of the step's output
    source: str  # which kind of step: "llm_call", "python_function", "sum", "metric", ...
    output_feedback: str = ""  # the feedback the step's output had received, if any


class Variable:
    def __init__(
        self,
        value: str | bytes | int | float = "",
        image_path: str = "",
        predecessors: Iterable[Variable] | None = None,
        requires_grad: bool = True,
        *,
        role_description: str,
    ) -> None:
        image, value = _image_and_value(value, image_path)
        if not isinstance(role_description, str) or not role_description.strip():
            raise TypeError("Variable needs a role_description: a short phrase saying what "
                            "this text is for, e.g. 'system prompt to the solver'")
        ordered: list[Variable] = []
        for p in predecessors or ():
            if not isinstance(p, Variable):
                raise TypeError(f"predecessors must be Variables, got {type(p).__name__}")
            if not any(p is q for q in ordered):
                ordered.append(p)
        if not requires_grad and any(p.requires_grad for p in ordered):
            raise GraphError("a variable that does not require grad cannot have predecessors "
                             "that do")
        self.value: str | bytes = value
        self.image: Image | None = image  # set when the variable holds an image
        self.role_description: str = role_description
        self.requires_grad: bool = requires_grad
        self.predecessors: list[Variable] = ordered
        self.grad_fn: Step | None = None
        self._gradients = GradientSet()

    # --- gradients -----------------------------------------------------------------------
    @property
    def gradients(self) -> GradientSet:
        return self._gradients

    @gradients.setter
    def gradients(self, value: Iterable[Variable]) -> None:  # TextGrad code assigns set()
        self._gradients = value if isinstance(value, GradientSet) else GradientSet(value)

    @property
    def gradients_context(self) -> dict[Variable, dict[str, str] | None]:
        """TextGrad's view of each gradient's context (read-only)."""
        return {
            g: None if getattr(g, "context", None) is None else {
                "context": g.context.conversation,
                "response_desc": g.context.output_role,
                "variable_desc": self.role_description,
            }
            for g in self._gradients
        }

    def reset_gradients(self) -> None:
        self._gradients = GradientSet()

    zero_grad = reset_gradients

    def get_gradient_text(self) -> str:
        return "\n".join(g.value for g in self._gradients)

    # --- value and role ------------------------------------------------------------------
    def get_value(self) -> str:
        return self.value

    def set_value(self, value: str) -> None:
        self.value = value

    def get_role_description(self) -> str:
        return self.role_description

    def set_role_description(self, role_description: str) -> None:
        self.role_description = role_description

    @property
    def is_image(self) -> bool:
        return self.image is not None

    @property
    def text(self) -> str:
        """The value as text: an image shows as its short description."""
        return self.image.describe() if self.image is not None else str(self.value)

    def get_short_value(self, n_words_offset: int = 10) -> str:
        if self.image is not None:
            return self.text
        words = self.value.split(" ")
        if len(words) <= 2 * n_words_offset:
            return self.value
        return " ".join(words[:n_words_offset]) + " (...) " + " ".join(words[-n_words_offset:])

    def get_grad_fn(self) -> Step | None:
        return self.grad_fn

    def set_grad_fn(self, grad_fn: Step | None) -> None:
        self.grad_fn = grad_fn

    # --- backward ------------------------------------------------------------------------
    def backward(self, engine: Engine | Any = None, **options: Any) -> None:
        """Write feedback for every variable this one depends on (see `textprop.backward`;
        options: `max_sentences`, `max_tokens` of each feedback)."""
        from textprop._sync import run_sync
        from textprop.backward import run_backward

        run_sync(run_backward(self, engine, **options))

    async def abackward(self, engine: Engine | Any = None, **options: Any) -> None:
        from textprop.backward import run_backward

        await run_backward(self, engine, **options)

    def generate_graph(self, print_gradients: bool = False) -> Graph:
        """The graph this variable came from, as Graphviz DOT (`.source`; `.svg()` with
        Graphviz installed)."""
        from textprop.graph_view import generate_graph

        return generate_graph(self, print_gradients)

    # --- composition ---------------------------------------------------------------------
    def __add__(self, other: Variable) -> Variable:
        from textprop.functions.combine import Sum

        if not isinstance(other, Variable):
            return NotImplemented
        return Sum()([self, other])

    def __str__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        from textprop.notebook import variable_html

        return variable_html(self)

    def __repr__(self) -> str:
        text = self.text
        value = text if len(text) <= 60 else text[:57] + "..."
        return (f"Variable(value={value!r}, role={self.role_description!r}, "
                f"grads={len(self._gradients)})")


def _image_and_value(value: Any, image_path: str) -> tuple[Image | None, str | bytes]:
    """A variable's image (from bytes, a file or a URL) and its value."""
    if image_path:
        if value not in ("", b""):
            raise GraphError("give a Variable either a value or an image_path, not both")
        if is_url(image_path):
            return Image.from_url(image_path), image_path  # sent as a URL, not downloaded
        try:
            with open(image_path, "rb") as handle:
                value = handle.read()
        except OSError as exc:
            raise GraphError(f"cannot read the image file {image_path}: {exc.strerror}") from None
    if isinstance(value, bytes | bytearray):
        return Image.from_bytes(bytes(value)), bytes(value)
    if not isinstance(value, str):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"Variable value must be text or image bytes, got "
                            f"{type(value).__name__}")
        value = str(value)
    return None, value


class Gradient(Variable):
    """Feedback text for one variable, with the context that produced it."""

    def __init__(self, value: str, *, role_description: str,
                 context: FeedbackContext | None = None,
                 reduce_tags: frozenset[tuple[int, int]] = frozenset()) -> None:
        super().__init__(value, requires_grad=False, role_description=role_description)
        self.context = context
        self.reduce_tags = reduce_tags  # (reduce step id, branch) pairs it descends from


class GradientSet:
    """TextGrad's `set` of gradients (`add`, `in`, iteration), in insertion order."""

    def __init__(self, items: Iterable[Variable] = ()) -> None:
        self._items: dict[int, Variable] = {}
        for item in items:
            self.add(item)

    def add(self, gradient: Variable) -> None:
        if not isinstance(gradient, Variable):
            raise TypeError(f"a gradient must be a Variable, got {type(gradient).__name__}")
        self._items.setdefault(id(gradient), gradient)

    def update(self, gradients: Iterable[Variable]) -> None:
        for g in gradients:
            self.add(g)

    def discard(self, gradient: Variable) -> None:
        self._items.pop(id(gradient), None)

    def remove(self, gradient: Variable) -> None:
        if id(gradient) not in self._items:
            raise KeyError(gradient)
        del self._items[id(gradient)]

    def clear(self) -> None:
        self._items.clear()

    def __iter__(self) -> Iterator[Variable]:
        return iter(list(self._items.values()))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, gradient: object) -> bool:
        return id(gradient) in self._items and self._items[id(gradient)] is gradient

    def __bool__(self) -> bool:
        return bool(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GradientSet):
            return list(self) == list(other)
        if isinstance(other, set | frozenset):
            return set(self._items.values()) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"GradientSet({list(self._items.values())!r})"
