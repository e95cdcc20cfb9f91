"""TextGrad's `autograd.llm_ops` module path."""

from textprop.functions.llm_call import (
    FormattedLLMCall,
    LLMCall,
    LLMCall_with_in_context_examples,
)

__all__ = ["FormattedLLMCall", "LLMCall", "LLMCall_with_in_context_examples"]
