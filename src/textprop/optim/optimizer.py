"""The optimizer base class: parameters, zero_grad, state_dict, as in PyTorch."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

from textprop.variable import Variable


class Optimizer(ABC):
    def __init__(self, parameters: Iterable[Variable]) -> None:
        self.parameters: list[Variable] = list(parameters)
        for p in self.parameters:
            if not isinstance(p, Variable):
                raise TypeError(f"optimizer parameters must be Variables, got {type(p).__name__}")
            if not p.requires_grad:
                raise ValueError(f"parameter {p.role_description!r} has requires_grad=False; "
                                 "it would never receive feedback")

    def zero_grad(self) -> None:
        for p in self.parameters:
            p.reset_gradients()

    @abstractmethod
    def step(self) -> Any:
        """Rewrite each parameter from its feedback."""

    def state_dict(self) -> dict[str, Any]:
        return {"values": [p.value for p in self.parameters]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        values = state["values"]
        if len(values) != len(self.parameters):
            raise ValueError(f"state_dict has {len(values)} values for "
                             f"{len(self.parameters)} parameters")
        for p, value in zip(self.parameters, values, strict=True):
            p.set_value(value)
