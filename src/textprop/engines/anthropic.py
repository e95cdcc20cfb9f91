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

import asyncio
import importlib.util
import threading
import time
from typing import TYPE_CHECKING, Any

from textprop.engines.base import Completion, Engine, Request, Usage
from textprop.engines.openai_compat import (
    Secret,
    error_detail,
    parse_json_reply,
    public_url,
    retry_after_seconds,
    status_error,
    transient,
)
from textprop.errors import (
    ConfigError,
    EngineAuthError,
    EngineError,
    EngineUnavailableError,
    TransientEngineError,
)

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic

DEFAULT_MAX_TOKENS = 1024
INSTALL_HINT = "pip install 'textprop[anthropic]'"
_FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                   "model_context_window_exceeded": "length", "tool_use": "tool_calls",
                   "refusal": "content_filter"}


class AnthropicEngine(Engine):
    """Claude models via the Messages API. `max_retries` is the SDK's retry budget."""

    supports_json_schema = True

    def __init__(self, model: str, *, api_key: str | None = None, base_url: str | None = None,
                 timeout: float = 60.0, max_retries: int = 3) -> None:
        self.name = f"anthropic:{model}"
        if importlib.util.find_spec("anthropic") is None:
            raise EngineUnavailableError(
                f"AnthropicEngine needs the anthropic package: {INSTALL_HINT}",
                provider=self.name)
        if not model:
            raise ConfigError("AnthropicEngine needs a model name, e.g. "
                              "AnthropicEngine('claude-sonnet-4-5')")
        if timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout}")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        self.model = model
        self.base_url = base_url
        self.timeout = timeout
        self.max_retries = max_retries
        self._secret = Secret(api_key or "")
        self._key_source: str | None = "api_key" if api_key else None
        self._clients: dict[asyncio.AbstractEventLoop, AsyncAnthropic] = {}
        self._lock = threading.Lock()

    def _client(self) -> AsyncAnthropic:
        """The client for the running loop, made on first use."""
        loop = asyncio.get_running_loop()
        with self._lock:
            for old in [old for old in self._clients if old.is_closed()]:
                del self._clients[old]
            client = self._clients.get(loop)
            if client is None:
                client = self._new_client()
                self._clients[loop] = client
        return client

    def _new_client(self) -> AsyncAnthropic:
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
            "messages": [{"role": m.role, "content": m.content}
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
        error: EngineError | None = None
        try:
            message = await client.messages.create(**params)
        except Exception as exc:  # translated below, or re-raised
            error = self._translate(exc, client, params["model"])
        if error is not None:
            raise error  # outside the except block: no SDK exception (and no key) in context
        blocks = getattr(message, "content", None)
        if not isinstance(blocks, list):
            raise self._malformed(client, "it has no content")
        text = "".join(getattr(b, "text", "") for b in blocks if getattr(b, "type", "") == "text")
        stop = getattr(message, "stop_reason", None)
        finish = _FINISH_REASONS.get(stop, stop) if stop else None
        usage = getattr(message, "usage", None)
        input_tokens = sum(getattr(usage, name, 0) or 0 for name in (
            "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
        parsed = None
        if request.json_schema is not None:
            parsed = parse_json_reply(text, request.json_schema, finish, self.name,
                                      self._secret)
        return Completion(text=text, parsed=parsed,
                          usage=Usage(input_tokens, getattr(usage, "output_tokens", 0) or 0),
                          finish_reason=finish, latency_s=time.perf_counter() - start,
                          model=f"anthropic:{params['model']}")

    def _translate(self, exc: Exception, client: AsyncAnthropic, model: str) -> EngineError:
        import anthropic

        where = public_url(str(client.base_url))
        if isinstance(exc, anthropic.APIStatusError):
            return status_error(
                exc.status_code, error_detail(exc.body, exc.message, self._secret),
                engine=self.name, where=where, model=model, key_advice=self._key_advice(),
                retry_after=retry_after_seconds(exc.response.headers),
                sdk_retries=self.max_retries, models_url=f"{where}/v1/models")
        if isinstance(exc, anthropic.APITimeoutError):
            return transient(f"{self.name}: no reply from {where} within {self.timeout:g} s; "
                             "raise timeout=... or check the server", engine=self.name,
                             sdk_retries=self.max_retries)
        if isinstance(exc, anthropic.APIConnectionError):
            return transient(f"{self.name}: the connection to {where} failed or was dropped; "
                             "check the network and base_url", engine=self.name,
                             sdk_retries=self.max_retries)
        if isinstance(exc, ValueError | anthropic.APIResponseValidationError):
            return self._malformed(client, "its body is not valid JSON")
        raise exc

    def _malformed(self, client: AsyncAnthropic, detail: str) -> TransientEngineError:
        return TransientEngineError(
            f"{self.name}: {public_url(str(client.base_url))} sent a malformed reply ({detail});"
            " it may pass on retry", provider=self.name, status=200)

    def _key_advice(self) -> str:
        if self._key_source == "api_key":
            return "pass a valid key as api_key=... (or omit it and set ANTHROPIC_API_KEY)"
        return f"set {self._key_source or 'ANTHROPIC_API_KEY'} to a valid key"

    async def aclose(self) -> None:
        """Close the client of the running loop; clients of other loops are dropped."""
        loop = asyncio.get_running_loop()
        with self._lock:
            clients, self._clients = self._clients, {}
        client = clients.get(loop)
        if client is not None:
            await client.close()
