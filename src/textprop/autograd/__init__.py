"""TextGrad's `autograd` namespace: the graph functions under their TextGrad names."""

from textprop.functions.base import Function, Module
from textprop.functions.combine import BatchReduce, Sum, aggregate, reduce, sum
from textprop.functions.llm_call import (
    FormattedLLMCall,
    LLMCall,
    LLMCall_with_in_context_examples,
)
from textprop.functions.multimodal import MultimodalLLMCall, OrderedFieldsMultimodalLLMCall
from textprop.functions.python_function import StringBasedFunction

__all__ = ["BatchReduce", "FormattedLLMCall", "Function", "LLMCall",
           "LLMCall_with_in_context_examples", "Module", "MultimodalLLMCall",
           "OrderedFieldsMultimodalLLMCall", "StringBasedFunction", "Sum", "aggregate",
           "reduce", "sum"]
