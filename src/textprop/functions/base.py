"""`Function`: a graph step with a forward and a backward, in the spirit of micrograd.

`forward` computes the output `Variable` and records a `Step` on it (`output.grad_fn`).
`abackward(step, ctx)` returns the feedback for the step's inputs as `(input, Gradient)`
pairs; the scheduler in `textprop.backward` decides when it runs and files the gradients,
so functions never mutate other variables and independent steps can run concurrently.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from textprop.variable import Gradient, Variable

if TYPE_CHECKING:
    from textprop.backward import BackwardContext


@dataclass(eq=False)
class Step:
    """What one call of a function did: enough to write feedback for its inputs later."""

    function: Function
    output: Variable
    inputs: tuple[Variable, ...]
    data: dict[str, Any] = field(default_factory=dict)  # function-specific record

    def __repr__(self) -> str:
        return f"Step({type(self.function).__name__}, output={self.output.role_description!r})"


Feedback = tuple[Variable, Gradient]


class Function(ABC):
    """Base class of graph steps. Subclasses implement `forward` and `abackward`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Variable:
        return self.forward(*args, **kwargs)

    @abstractmethod
    def forward(self, *args: Any, **kwargs: Any) -> Variable:
        """Compute the output variable and record the step on it."""

    @abstractmethod
    async def abackward(self, step: Step, ctx: BackwardContext) -> list[Feedback]:
        """Feedback for `step.inputs` that require grad, given the output's gradients."""

    def _record(self, output: Variable, inputs: Sequence[Variable], **data: Any) -> Variable:
        output.grad_fn = Step(self, output, tuple(inputs), data)
        return output


class Module(ABC):
    """PyTorch-style container of parameters (TextGrad's `Module`)."""

    def parameters(self) -> list[Variable]:
        return []

    def named_parameters(self):
        for p in self.parameters():
            yield p.get_role_description(), p

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.reset_gradients()

    @abstractmethod
    def forward(self, *args: Any, **kwargs: Any) -> Any: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)
