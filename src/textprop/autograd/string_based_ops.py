"""TextGrad's `autograd.string_based_ops` module path."""

from textprop.functions.python_function import StringBasedFunction

__all__ = ["StringBasedFunction"]
