"""Graph steps, each with its forward and backward."""

from textprop.functions.base import Function, Module, Step
from textprop.functions.combine import BatchReduce, Sum, reduce, sum
from textprop.functions.llm_call import BlackboxLLM, FormattedLLMCall, LLMCall
from textprop.functions.python_function import StringBasedFunction

__all__ = ["BatchReduce", "BlackboxLLM", "FormattedLLMCall", "Function", "LLMCall", "Module",
           "Step", "StringBasedFunction", "Sum", "reduce", "sum"]
