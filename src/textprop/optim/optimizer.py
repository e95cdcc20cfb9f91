"""The optimizer base class, as in PyTorch: named parameters, per-parameter state, state_dict.

Parameters are addressed by name: a revision is filed under the name of the parameter it
changed, and `state` is keyed by name. TextGrad code passes a plain list; its variables get
the names `parameter_0`, `parameter_1`, ... and `optimizer.parameters` stays that list.
`state_dict()` holds the optimizer's own state only (e.g. feedback memory), never the
values: those belong to the run's ledger, like a model's weights belong to its checkpoint.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from textprop._sync import run_sync
from textprop.variable import Variable


def named(parameters: Mapping[str, Variable] | Iterable[Variable]) -> dict[str, Variable]:
    """The parameters by name: a mapping as given, a list as `parameter_<i>`."""
    if isinstance(parameters, Mapping):
        return dict(parameters)
    return {f"parameter_{i}": p for i, p in enumerate(parameters)}


class Optimizer(ABC):
    def __init__(self, parameters: Mapping[str, Variable] | Iterable[Variable]) -> None:
        self.named_parameters: dict[str, Variable] = named(parameters)
        for name, p in self.named_parameters.items():
            if not isinstance(p, Variable):
                raise TypeError(f"optimizer parameters must be Variables, got "
                                f"{type(p).__name__} for {name!r}")
            if not p.requires_grad:
                raise ValueError(f"parameter {name!r} ({p.role_description!r}) has "
                                 "requires_grad=False; it would never receive feedback")
        self.state: dict[str, dict[str, Any]] = {name: {} for name in self.named_parameters}

    @property
    def parameters(self) -> list[Variable]:
        """TextGrad's view: the parameters as a list."""
        return list(self.named_parameters.values())

    def zero_grad(self) -> None:
        for p in self.named_parameters.values():
            p.reset_gradients()

    def step(self, names: Sequence[str] | None = None) -> Any:
        """Rewrite each parameter (or only those in `names`) from its feedback."""
        return run_sync(self.astep(names))

    @abstractmethod
    async def astep(self, names: Sequence[str] | None = None) -> Any:
        """The async twin of `step`."""

    @abstractmethod
    def with_parameters(self, parameters: Mapping[str, Variable]) -> Optimizer:
        """A fresh optimizer with the same settings over other variables (a search's
        candidate runs on its own copy of the pipeline)."""

    def state_dict(self) -> dict[str, Any]:
        return {"state": {name: dict(s) for name, s in self.state.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = state.get("state", {})
        unknown = sorted(set(saved) - set(self.named_parameters))
        if unknown:
            raise ValueError(f"state_dict names parameters this optimizer does not have: "
                             f"{', '.join(unknown)}")
        self.state = {name: dict(saved.get(name, {})) for name in self.named_parameters}
