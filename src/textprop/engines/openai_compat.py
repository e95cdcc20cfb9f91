"""OpenAI and OpenAI-compatible servers (vLLM, llama.cpp, Ollama, LM Studio ...) via the SDK.

A thin layer on purpose: the official `openai` SDK already does connection pooling, auth and
retries of 429/5xx/timeouts with backoff honoring Retry-After (`max_retries`). This module
maps `Request` to `chat.completions.create`, the reply to a `Completion`, and SDK exceptions
to textprop's errors, keeping API keys out of every message (see `textprop.engines.retry` for
how the SDK's retries and `Retry` share the work).

Keys and URLs follow the SDK: `api_key` or OPENAI_API_KEY, `base_url` or OPENAI_BASE_URL. A
server given by URL with no key anywhere (a local llama.cpp or vLLM) gets a placeholder key.

Structured output (`Request.json_schema`) is sent as `response_format`:
* OpenAI's form, `{"type": "json_schema", "json_schema": {"name": "reply", "schema": ...,
  "strict": False}}`, for every provider but llama.cpp (OpenAI, vLLM, Ollama, LM Studio);
* llama.cpp server's native form, `{"type": "json_object", "schema": ...}`, when
  `provider="llama.cpp"` (or "llamacpp", "llama-cpp");
* nothing, when `supports_json_schema=False` (a server that rejects `response_format`): the
  caller then asks for JSON in the prompt, and `Completion.parsed` stays None.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from textprop.engines.base import Completion, Engine, Request, Usage
from textprop.engines.retry import RetriesExhaustedError
from textprop.errors import (
    ConfigError,
    EngineAuthError,
    EngineError,
    EngineReplyError,
    EngineRequestError,
    TransientEngineError,
)

if TYPE_CHECKING:
    from openai import AsyncOpenAI

PLACEHOLDER_KEY = "textprop-no-key"
_JSON_OBJECT_PROVIDERS = frozenset({"llama.cpp", "llamacpp", "llama-cpp"})
_SDK_RETRIED_STATUSES = frozenset({408, 409, 429})  # and every 5xx
SDK_MAX_RETRY_AFTER = 120.0  # the SDKs give up at once on a longer Retry-After


class Secret:
    """An API key that never shows in repr, str or logs; `scrub` removes it from text."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        return text.replace(self._value, "***") if self._value else text

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


class OpenAIEngine(Engine):
    """Chat completions from OpenAI or any OpenAI-compatible server.

    `max_retries` is the SDK's retry budget for 429/5xx/timeouts/dropped connections; `timeout`
    is seconds per HTTP attempt. `stream=True` streams the reply (long generations never hit
    the read timeout; a stream cut mid-way raises `TransientEngineError`, retried by `Retry`).
    `extra_body` is merged into every request body (server-specific options).
    """

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0, max_retries: int = 3,
                 supports_json_schema: bool | None = None, provider: str = "openai",
                 extra_body: dict | None = None, stream: bool = False) -> None:
        if not model:
            raise ConfigError("OpenAIEngine needs a model name, e.g. OpenAIEngine('gpt-4o-mini')")
        if timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout}")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        self.model = model
        self.provider = provider
        self.name = f"{provider}:{model}"
        self.base_url = base_url
        self.timeout = timeout
        self.max_retries = max_retries
        self.supports_json_schema = True if supports_json_schema is None else supports_json_schema
        self.json_mode = ("json_object" if provider.lower() in _JSON_OBJECT_PROVIDERS
                          else "json_schema")
        self.extra_body = dict(extra_body or {})
        self.stream = stream
        self._secret = Secret(api_key or "")
        self._key_source: str | None = "api_key" if api_key else None
        self._clients: dict[asyncio.AbstractEventLoop, AsyncOpenAI] = {}
        self._lock = threading.Lock()

    # -- the SDK client, one per event loop, made on first use ----------------------------

    def _client(self) -> AsyncOpenAI:
        """The client for the running loop: httpx connections must stay on one loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            for old in [old for old in self._clients if old.is_closed()]:
                del self._clients[old]
            client = self._clients.get(loop)
            if client is None:
                from openai import AsyncOpenAI

                client = AsyncOpenAI(api_key=self._resolve_key(), base_url=self.base_url,
                                     timeout=self.timeout, max_retries=self.max_retries)
                self._clients[loop] = client
        return client

    def _resolve_key(self) -> str:
        """The key the SDK would use, or a placeholder for a keyless server given by URL."""
        if self._key_source == "api_key":
            return self._secret.reveal()
        env_key = os.environ.get("OPENAI_API_KEY")
        if env_key:
            self._secret, self._key_source = Secret(env_key), "OPENAI_API_KEY"
            return env_key
        if self.base_url is not None or os.environ.get("OPENAI_BASE_URL") is not None:
            self._key_source = None
            return PLACEHOLDER_KEY
        raise EngineAuthError(
            f"{self.name}: no API key for the OpenAI API. Set OPENAI_API_KEY (or pass "
            "api_key=...); for a local OpenAI-compatible server pass base_url=... or set "
            "OPENAI_BASE_URL.", provider=self.name)

    # -- the call -----------------------------------------------------------------------------

    def request_params(self, request: Request) -> dict[str, Any]:
        """The keyword arguments of `chat.completions.create` for `request`."""
        params: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": request.temperature,
        }
        if request.max_tokens is not None:
            params["max_tokens"] = request.max_tokens
        if request.seed is not None:
            params["seed"] = request.seed
        if request.stop:
            params["stop"] = list(request.stop)
        if request.json_schema is not None and self.supports_json_schema:
            params["response_format"] = self.response_format(request.json_schema)
        if self.stream:
            params["stream"] = True
            params["stream_options"] = {"include_usage": True}
        if self.extra_body:
            params["extra_body"] = dict(self.extra_body)
        return params

    def response_format(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        if self.json_mode == "json_object":
            return {"type": "json_object", "schema": dict(schema)}
        return {"type": "json_schema",
                "json_schema": {"name": "reply", "schema": dict(schema), "strict": False}}

    async def acomplete(self, request: Request) -> Completion:
        client = self._client()
        params = self.request_params(request)
        start = time.perf_counter()
        error: EngineError | None = None
        try:
            response = await client.chat.completions.create(**params)
        except Exception as exc:  # translated below, or re-raised
            error = self._translate(exc, client, params["model"], inside_sdk_retries=True)
        if error is not None:
            raise error  # outside the except block: no SDK exception (and no key) in context
        if self.stream:
            text, finish, usage = await self._read_stream(response, client, params["model"])
        else:
            text, finish, usage = self._read_reply(response, client)
        parsed = None
        if request.json_schema is not None and self.supports_json_schema:
            parsed = parse_json_reply(text, request.json_schema, finish, self.name,
                                      self._secret)
        return Completion(text=text, parsed=parsed, usage=usage, finish_reason=finish,
                          latency_s=time.perf_counter() - start,
                          model=f"{self.provider}:{params['model']}")

    def _read_reply(self, response: Any, client: AsyncOpenAI) -> tuple[str, str | None, Usage]:
        choices = getattr(response, "choices", None)
        if not choices:
            raise self._malformed(client, "it has no choices")
        message = getattr(choices[0], "message", None)
        text = getattr(message, "content", None) or ""
        usage = getattr(response, "usage", None)
        return (text, getattr(choices[0], "finish_reason", None),
                Usage(getattr(usage, "prompt_tokens", 0) or 0,
                      getattr(usage, "completion_tokens", 0) or 0))

    async def _read_stream(self, stream: Any, client: AsyncOpenAI,
                           model: str) -> tuple[str, str | None, Usage]:
        parts: list[str] = []
        finish: str | None = None
        usage = Usage()
        error: EngineError | None = None
        try:
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = Usage(chunk.usage.prompt_tokens or 0,
                                  chunk.usage.completion_tokens or 0)
                for choice in chunk.choices:
                    if choice.delta is not None and choice.delta.content:
                        parts.append(choice.delta.content)
                    finish = choice.finish_reason or finish
        except Exception as exc:  # translated below, or re-raised
            error = self._translate(exc, client, model, inside_sdk_retries=False)
        if error is not None:
            raise error
        if finish is None:
            raise self._malformed(client, "the stream ended before the model finished")
        return "".join(parts), finish, usage

    # -- errors -------------------------------------------------------------------------------

    def _translate(self, exc: Exception, client: AsyncOpenAI, model: str, *,
                   inside_sdk_retries: bool) -> EngineError:
        """The textprop error for an SDK exception; anything unexpected is re-raised."""
        import openai

        where = public_url(str(client.base_url))
        sdk_retries = self.max_retries if inside_sdk_retries else 0
        if isinstance(exc, openai.APIStatusError):
            return status_error(
                exc.status_code, error_detail(exc.body, exc.message, self._secret),
                engine=self.name, where=where, model=model, key_advice=self._key_advice(),
                retry_after=retry_after_seconds(exc.response.headers), sdk_retries=sdk_retries)
        if isinstance(exc, openai.APITimeoutError):
            return transient(f"{self.name}: no reply from {where} within {self.timeout:g} s; "
                             "raise timeout=... or check the server", engine=self.name,
                             sdk_retries=sdk_retries)
        if isinstance(exc, openai.APIConnectionError):
            return transient(f"{self.name}: the connection to {where} failed or was dropped; "
                             "check that the server is up and base_url is right",
                             engine=self.name, sdk_retries=sdk_retries)
        if isinstance(exc, ValueError | openai.APIResponseValidationError):
            return self._malformed(client, "its body is not valid JSON")
        if isinstance(exc, openai.APIError):  # e.g. an error event in the middle of a stream
            detail = error_detail(exc.body, exc.message, self._secret)
            return transient(f"{self.name}: {where} failed mid-reply ({detail})",
                             engine=self.name, sdk_retries=0)
        raise exc

    def _malformed(self, client: AsyncOpenAI, detail: str) -> TransientEngineError:
        return TransientEngineError(
            f"{self.name}: {public_url(str(client.base_url))} sent a malformed reply ({detail});"
            " it may pass on retry", provider=self.name, status=200)

    def _key_advice(self) -> str:
        if self._key_source == "api_key":
            return ("pass a valid key as api_key=... (or omit it and set OPENAI_API_KEY)")
        if self._key_source is None:
            return "the server needs a key: set OPENAI_API_KEY (or pass api_key=...)"
        return f"set {self._key_source} to a valid key"

    async def aclose(self) -> None:
        """Close the client of the running loop; clients of other loops are dropped."""
        loop = asyncio.get_running_loop()
        with self._lock:
            clients, self._clients = self._clients, {}
        client = clients.get(loop)
        if client is not None:
            await client.close()


# -- helpers shared with the other HTTP engines ------------------------------------------------

def public_url(url: str) -> str:
    """`url` without user info or query (either may hold credentials), for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def error_detail(body: object, fallback: str, secret: Secret) -> str:
    """The server's own error message (OpenAI and Anthropic shapes), scrubbed, then shortened."""
    error = body.get("error", body) if isinstance(body, Mapping) else body
    message = error.get("message") if isinstance(error, Mapping) else error
    text = secret.scrub(message if isinstance(message, str) and message else fallback)
    return text if len(text) <= 300 else text[:300] + "..."


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds from retry-after-ms / Retry-After (number or HTTP date), as the SDKs read them."""
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / divisor)
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            if parsed is not None:
                return max(0.0, email.utils.mktime_tz(parsed) - time.time())
    return None


def transient(message: str, *, engine: str, sdk_retries: int, status: int | None = None,
              retry_after: float | None = None) -> TransientEngineError:
    """A transient error; `RetriesExhaustedError` when the SDK already retried it."""
    if sdk_retries > 0:
        return RetriesExhaustedError(
            f"{message} (still failing after {sdk_retries} SDK "
            f"{'retry' if sdk_retries == 1 else 'retries'}; raise max_retries to retry more)",
            attempts=sdk_retries + 1, provider=engine, status=status,
            retry_after=retry_after)
    return TransientEngineError(message, provider=engine, status=status, retry_after=retry_after)


def status_error(status: int, detail: str, *, engine: str, where: str, model: str,
                 key_advice: str, retry_after: float | None, sdk_retries: int,
                 models_url: str | None = None) -> EngineError:
    """The textprop error for an HTTP error status, with what to do about it."""
    said = f"(HTTP {status}: {detail})"
    if retry_after is not None and retry_after > SDK_MAX_RETRY_AFTER:
        sdk_retries = 0  # the SDK does not wait that long: it raised at once
    if status in (401, 403):
        return EngineAuthError(f"{engine}: {where} refused the API key {said}; {key_advice}",
                               provider=engine, status=status)
    if status == 404:
        return EngineRequestError(
            f"{engine}: {where} has no model {model!r} or no such endpoint {said}; check the "
            f"model name (GET {models_url or where + '/models'} lists them) and base_url",
            provider=engine, status=status)
    if status == 429:
        wait = f"; the server asks to wait {retry_after:g} s" if retry_after is not None else ""
        return transient(f"{engine}: {where} is rate limiting {said}{wait}", engine=engine,
                         sdk_retries=sdk_retries, status=status, retry_after=retry_after)
    if status >= 500 or status in _SDK_RETRIED_STATUSES:
        return transient(f"{engine}: {where} failed {said}", engine=engine,
                         sdk_retries=sdk_retries, status=status, retry_after=retry_after)
    return EngineRequestError(
        f"{engine}: {where} rejected the request {said}; fix the request: check the model "
        "name, max_tokens, stop and structured output (pass supports_json_schema=False if "
        "the server has none)", provider=engine, status=status)


def parse_json_reply(text: str, schema: Mapping[str, Any], finish_reason: str | None,
                     engine: str, secret: Secret) -> Any:
    """The JSON value of a structured-output reply; `EngineReplyError` if it is not one."""
    clean = secret.scrub(text)  # before shortening: a cut key would no longer match
    excerpt = clean[:200] + ("..." if len(clean) > 200 else "")

    def error(message: str) -> EngineReplyError:
        return EngineReplyError(f"{engine} {message}: {excerpt!r}", provider=engine,
                                reply_text=clean, finish_reason=finish_reason)

    try:
        value = json.loads(text)
    except ValueError:
        cut = (" (cut at max_tokens: raise max_tokens)" if finish_reason == "length" else "")
        raise error("was asked for JSON matching a schema but replied with text that is not "
                    f"JSON{cut}") from None
    if schema.get("type") == "object" or "properties" in schema:
        if not isinstance(value, dict):
            raise error(f"was asked for a JSON object but replied with {type(value).__name__}")
        missing = [key for key in schema.get("required", ()) if key not in value]
        if missing:
            raise error(f"replied with JSON missing the required {', '.join(map(repr, missing))}")
    return value
