"""TextGrad's `autograd.multimodal_ops` module path."""

from textprop.functions.multimodal import MultimodalLLMCall, OrderedFieldsMultimodalLLMCall

__all__ = ["MultimodalLLMCall", "OrderedFieldsMultimodalLLMCall"]
