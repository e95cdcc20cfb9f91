"""Anthropic's Messages API through the official `anthropic` SDK (the optional [anthropic] extra).

Same shape as `OpenAIEngine`: the SDK does auth, pooling and retries of 429/5xx/timeouts
(`max_retries`, Retry-After honored); this module maps requests, replies and errors, and
keeps keys out of messages. Credentials resolve as the SDK resolves them (`api_key`, else
ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN, else an Anthropic profile); `base_url` falls back
to ANTHROPIC_BASE_URL.

Mapping: system messages go to `system=`; `max_tokens` defaults to 1024 (the API requires
one); `stop` becomes `stop_sequences`. `temperature` and `seed` are not sent: SDK 2.x removed
sampling parameters and the API version it speaks rejects them. Structured output uses the
documented `output_config={"format": {"type": "json_schema", "schema": ...}}`, so
`supports_json_schema` is True. Stop reasons are reported in OpenAI's words ("stop",
"length") so callers can test `finish_reason == "length"` whatever the provider.
"""

from __future__ import annotations

import importlib.util
import time
from typing import TYPE_CHECKING, Any

from textprop.engines.base import Completion, Message, Request, Usage, with_parsed
from textprop.engines.sdk import SDKEngine, Secret, parse_json_reply
from textprop.errors import EngineAuthError, EngineError, EngineUnavailableError

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic

DEFAULT_MAX_TOKENS = 1024
INSTALL_HINT = "pip install 'textprop[anthropic]'"
_FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                   "model_context_window_exceeded": "length", "tool_use": "tool_calls",
                   "refusal": "content_filter"}


def anthropic_content(message: Message) -> str | list[dict[str, Any]]:
    """A message's content in Anthropic's form: its text, or text and image blocks in order
    (bytes as a base64 source, a URL image as a url source)."""
    if not message.parts:
        return message.content
    blocks: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, str):
            blocks.append({"type": "text", "text": part})
        elif part.url:
            blocks.append({"type": "image", "source": {"type": "url", "url": part.url}})
        else:
            blocks.append({"type": "image", "source": {"type": "base64",
                                                       "media_type": part.media_type,
                                                       "data": part.base64}})
    return blocks


class AnthropicEngine(SDKEngine["AsyncAnthropic"]):
    """Claude models via the Messages API. `max_retries` is the SDK's retry budget."""

    supports_json_schema = True
    supports_images = True
    no_model_message = ("AnthropicEngine needs a model name, e.g. "
                        "AnthropicEngine('claude-sonnet-4-5')")
    models_path = "/v1/models"

    def __init__(self, model: str, *, api_key: str | None = None, base_url: str | None = None,
                 timeout: float = 60.0, max_retries: int = 3) -> None:
        if importlib.util.find_spec("anthropic") is None:
            raise EngineUnavailableError(
                f"AnthropicEngine needs the anthropic package: {INSTALL_HINT}",
                provider=f"anthropic:{model}")
        super().__init__(model, name=f"anthropic:{model}", base_url=base_url, api_key=api_key,
                         timeout=timeout, max_retries=max_retries)

    def _new_client(self) -> AsyncAnthropic:
        """The client, resolving credentials as the SDK does (key, auth token or profile)."""
        from anthropic import AnthropicError, AsyncAnthropic

        client: AsyncAnthropic | None = None
        try:
            client = AsyncAnthropic(api_key=self._secret.reveal() or None,
                                    base_url=self.base_url, timeout=self.timeout,
                                    max_retries=self.max_retries)
        except AnthropicError:  # e.g. an unreadable profile file
            pass
        key = (client.api_key or client.auth_token) if client is not None else None
        if client is None or (key is None and client.credentials is None):
            raise EngineAuthError(
                f"{self.name}: no usable Anthropic credentials. Set ANTHROPIC_API_KEY (or "
                "pass api_key=...).", provider=self.name)
        if self._key_source is None and key:
            self._secret = Secret(key)
            self._key_source = ("ANTHROPIC_API_KEY" if client.api_key
                                else "ANTHROPIC_AUTH_TOKEN")
        return client

    def request_params(self, request: Request) -> dict[str, Any]:
        """The keyword arguments of `messages.create` for `request`."""
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        params: dict[str, Any] = {
            "model": request.model or self.model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": [{"role": m.role, "content": anthropic_content(m)}
                         for m in request.messages if m.role != "system"],
        }
        if system:
            params["system"] = system
        if request.stop:
            params["stop_sequences"] = list(request.stop)
        if request.json_schema is not None:
            params["output_config"] = {"format": {"type": "json_schema",
                                                  "schema": dict(request.json_schema)}}
        return params

    async def acomplete(self, request: Request) -> Completion:
        client = self._client()
        params = self.request_params(request)
        start = time.perf_counter()
        message = await self._create(client, client.messages.create, params)
        blocks = getattr(message, "content", None)
        if not isinstance(blocks, list):
            raise self._malformed(client, "it has no content")
        text = "".join(getattr(b, "text", "") for b in blocks if getattr(b, "type", "") == "text")
        stop = getattr(message, "stop_reason", None)
        finish = _FINISH_REASONS.get(stop, stop) if stop else None
        usage = getattr(message, "usage", None)
        input_tokens = sum(getattr(usage, name, 0) or 0 for name in (
            "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
        completion = Completion(
            text=text, usage=Usage(input_tokens, getattr(usage, "output_tokens", 0) or 0),
            finish_reason=finish, latency_s=time.perf_counter() - start,
            model=f"anthropic:{params['model']}")
        if request.json_schema is not None:
            schema = request.json_schema
            return with_parsed(completion, lambda: parse_json_reply(
                text, schema, finish, self.name, self._secret))
        return completion

    def _translate(self, exc: Exception, client: AsyncAnthropic, model: str, *,
                   inside_sdk_retries: bool) -> EngineError:
        import anthropic

        error = self._translate_sdk_error(
            anthropic, exc, client, model,
            sdk_retries=self.max_retries if inside_sdk_retries else 0,
            connection_advice="check the network and base_url")
        if error is None:
            raise exc
        return error

    def _key_advice(self) -> str:
        if self._key_source == "api_key":
            return "pass a valid key as api_key=... (or omit it and set ANTHROPIC_API_KEY)"
        return f"set {self._key_source or 'ANTHROPIC_API_KEY'} to a valid key"
