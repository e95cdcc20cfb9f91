"""TextGrad's `engine.base` module path."""

from textprop.engines.base import EngineLM

__all__ = ["EngineLM"]
