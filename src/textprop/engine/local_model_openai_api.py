"""TextGrad's `engine.local_model_openai_api.ChatExternalClient`: an OpenAI client you made.

    client = OpenAI(base_url="http://localhost:1234/v1", api_key="lm-studio")
    engine = ChatExternalClient(client=client, model_string="my-model")

textprop's engines are async, so the engine takes the client's base URL, key, timeout and
retry budget and opens its own async client with them; the environment is left alone
(TextGrad copies the key into OPENAI_API_KEY).
"""

from __future__ import annotations

from typing import Any

from textprop.engine.openai import DEFAULT_SYSTEM_PROMPT
from textprop.engines.openai_compat import OpenAIEngine


class ChatExternalClient(OpenAIEngine):
    def __init__(self, client: Any, model_string: str,
                 system_prompt: str = DEFAULT_SYSTEM_PROMPT, **kwargs: Any) -> None:
        timeout = getattr(client, "timeout", None)
        kwargs.setdefault("timeout", timeout if isinstance(timeout, int | float) else 60.0)
        max_retries = getattr(client, "max_retries", None)
        if isinstance(max_retries, int):
            kwargs.setdefault("max_retries", max_retries)
        kwargs.setdefault("provider", "openai-compatible")
        super().__init__(model_string, base_url=str(client.base_url).rstrip("/"),
                         api_key=client.api_key, **kwargs)
        self.client = client
        self.model_string = model_string
        self.system_prompt = system_prompt


__all__ = ["ChatExternalClient"]
