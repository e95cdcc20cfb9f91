"""TextGrad's `autograd.function` module path: `Function` and `Module`."""

from textprop.functions.base import Function, Module

__all__ = ["Function", "Module"]
