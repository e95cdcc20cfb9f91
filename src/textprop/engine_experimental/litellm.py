"""TextGrad's `engine_experimental.litellm.LiteLLMEngine`, on textprop's providers."""

from textprop.engine_experimental.base import ExperimentalEngine


class LiteLLMEngine(ExperimentalEngine):
    """`LiteLLMEngine("gpt-4o", cache=True)`; LiteLLM-style names such as
    `anthropic/claude-3-5-sonnet-20240620` or `ollama/llama3` work too."""


__all__ = ["LiteLLMEngine"]
