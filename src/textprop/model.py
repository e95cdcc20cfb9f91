"""TextGrad's `model` module path (`textprop.model.BlackboxLLM`)."""

from textprop.functions.llm_call import BlackboxLLM

__all__ = ["BlackboxLLM"]
