"""TextGrad's `engine.anthropic.ChatAnthropic`, as a thin subclass of textprop's engine."""

from __future__ import annotations

from typing import Any

from textprop.engine.openai import DEFAULT_SYSTEM_PROMPT
from textprop.engines.anthropic import AnthropicEngine


class ChatAnthropic(AnthropicEngine):
    """`ChatAnthropic(model_string=..., system_prompt=..., is_multimodal=...)` as in TextGrad;
    other keywords (`api_key`, `base_url`, `timeout`, `max_retries`) are textprop's."""

    def __init__(self, model_string: str = "claude-3-opus-20240229",
                 system_prompt: str = DEFAULT_SYSTEM_PROMPT, is_multimodal: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(model_string, **kwargs)
        self.model_string = model_string
        self.system_prompt = system_prompt
        self.is_multimodal = is_multimodal


__all__ = ["ChatAnthropic"]
