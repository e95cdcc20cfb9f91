"""TextGrad's `engine.openai.ChatOpenAI`, as a thin subclass of textprop's OpenAI engine."""

from __future__ import annotations

import os
from typing import Any

from textprop.engines.openai_compat import OpenAIEngine
from textprop.errors import ConfigError

DEFAULT_SYSTEM_PROMPT = "You are a helpful, creative, and smart assistant."


class ChatOpenAI(OpenAIEngine):
    """`ChatOpenAI(model_string=..., system_prompt=..., base_url=...)` as in TextGrad.

    Like TextGrad, it refuses to start without a key (unless a base_url points at a local
    server); unlike TextGrad, the error says which variable to set.
    """

    def __init__(self, model_string: str = "gpt-3.5-turbo-0613",
                 system_prompt: str = DEFAULT_SYSTEM_PROMPT, is_multimodal: bool = False,
                 base_url: str | None = None, **kwargs: Any) -> None:
        if base_url is None and not (kwargs.get("api_key") or os.getenv("OPENAI_API_KEY")):
            raise ConfigError("ChatOpenAI needs an API key: set OPENAI_API_KEY (or pass "
                              "base_url for a local OpenAI-compatible server)")
        super().__init__(model_string, base_url=base_url, **kwargs)
        self.model_string = model_string
        self.system_prompt = system_prompt
        self.is_multimodal = is_multimodal
