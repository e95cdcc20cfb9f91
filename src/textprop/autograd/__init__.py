"""TextGrad's `autograd` namespace: the graph functions under their TextGrad names."""

from textprop.functions.base import Function, Module
from textprop.functions.combine import BatchReduce, Sum, aggregate, reduce, sum
from textprop.functions.llm_call import FormattedLLMCall, LLMCall
from textprop.functions.python_function import StringBasedFunction

__all__ = ["BatchReduce", "FormattedLLMCall", "Function", "LLMCall", "Module",
           "StringBasedFunction", "Sum", "aggregate", "reduce", "sum"]
