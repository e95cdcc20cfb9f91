"""OpenAI and OpenAI-compatible servers (vLLM, llama.cpp, Ollama, LM Studio ...) via the SDK.

A thin layer on purpose: the official `openai` SDK already does connection pooling, auth and
retries of 429/5xx/timeouts with backoff honoring Retry-After (`max_retries`). This module
maps `Request` to `chat.completions.create`, the reply to a `Completion`, and SDK exceptions
to textprop's errors, keeping API keys out of every message (see `textprop.engines.retry` for
how the SDK's retries and `Retry` share the work). What it shares with the other SDK engines
(client per loop, key holder, error helpers) is in `textprop.engines.sdk`.

Keys and URLs follow the SDK: `api_key` or OPENAI_API_KEY, `base_url` or OPENAI_BASE_URL. A
server given by URL with no key anywhere (a local llama.cpp or vLLM) gets a placeholder key.

Structured output (`Request.json_schema`) is sent as `response_format`:
* OpenAI's form, `{"type": "json_schema", "json_schema": {"name": "reply", "schema": ...,
  "strict": False}}`, for every provider but llama.cpp (OpenAI, vLLM, Ollama, LM Studio);
* llama.cpp server's native form, `{"type": "json_object", "schema": ...}`, when
  `provider="llama.cpp"` (or "llamacpp", "llama-cpp"), with bounds the server's grammar
  can hold (`textprop.engines.llama_grammar`);
* nothing, when `supports_json_schema=False` (a server that rejects `response_format`): the
  caller then asks for JSON in the prompt, and `Completion.parsed` stays None.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from textprop.engines.base import Completion, Message, Request, Usage, with_parsed
from textprop.engines.llama_grammar import llama_cpp_schema
from textprop.engines.sdk import (
    SDKEngine,
    Secret,
    error_detail,
    parse_json_reply,
    public_url,
    transient,
)
from textprop.errors import EngineAuthError, EngineError

if TYPE_CHECKING:
    from openai import AsyncOpenAI

PLACEHOLDER_KEY = "textprop-no-key"
_JSON_OBJECT_PROVIDERS = frozenset({"llama.cpp", "llamacpp", "llama-cpp"})


def openai_content(message: Message) -> str | list[dict[str, Any]]:
    """A message's content in OpenAI's form: its text, or text and image_url parts in order
    (image bytes as a base64 data URL)."""
    if not message.parts:
        return message.content
    return [{"type": "text", "text": p} if isinstance(p, str) else
            {"type": "image_url", "image_url": {"url": p.data_url}} for p in message.parts]


class OpenAIEngine(SDKEngine["AsyncOpenAI"]):
    """Chat completions from OpenAI or any OpenAI-compatible server.

    `max_retries` is the SDK's retry budget for 429/5xx/timeouts/dropped connections; `timeout`
    is seconds per HTTP attempt. `stream=True` streams the reply (long generations never hit
    the read timeout; a stream cut mid-way raises `TransientEngineError`, retried by `Retry`).
    `extra_body` is merged into every request body (server-specific options).
    """

    no_model_message = "OpenAIEngine needs a model name, e.g. OpenAIEngine('gpt-4o-mini')"
    supports_images = True  # sent as image_url parts; the server says if its model cannot

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0, max_retries: int = 3,
                 supports_json_schema: bool | None = None, provider: str = "openai",
                 extra_body: dict | None = None, stream: bool = False) -> None:
        super().__init__(model, name=f"{provider}:{model}", base_url=base_url,
                         api_key=api_key, timeout=timeout, max_retries=max_retries)
        self.provider = provider
        self.supports_json_schema = True if supports_json_schema is None else supports_json_schema
        self.json_mode = ("json_object" if provider.lower() in _JSON_OBJECT_PROVIDERS
                          else "json_schema")
        self.extra_body = dict(extra_body or {})
        self.stream = stream

    def _new_client(self) -> AsyncOpenAI:
        from openai import AsyncOpenAI

        return AsyncOpenAI(api_key=self._resolve_key(), base_url=self.base_url,
                           timeout=self.timeout, max_retries=self.max_retries)

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
            "messages": [{"role": m.role, "content": openai_content(m)} for m in request.messages],
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
        if self.json_mode == "json_object":  # llama.cpp's server
            return {"type": "json_object", "schema": llama_cpp_schema(schema)}
        return {"type": "json_schema",
                "json_schema": {"name": "reply", "schema": dict(schema), "strict": False}}

    async def acomplete(self, request: Request) -> Completion:
        client = self._client()
        params = self.request_params(request)
        start = time.perf_counter()
        response = await self._create(client, self._chat_completions(client), params)
        if self.stream:
            text, finish, usage = await self._read_stream(response, client, params["model"])
        else:
            text, finish, usage = self._read_reply(response, client)
        completion = Completion(text=text, usage=usage, finish_reason=finish,
                                latency_s=time.perf_counter() - start,
                                model=f"{self.provider}:{params['model']}")
        if request.json_schema is not None and self.supports_json_schema:
            schema = request.json_schema
            return with_parsed(completion, lambda: parse_json_reply(
                text, schema, finish, self.name, self._secret))
        return completion

    def _chat_completions(self, client: AsyncOpenAI) -> Callable[..., Awaitable[Any]]:
        """`client.chat.completions.create`, minus the SDK's per-call transform of the params
        and its typed model of the reply.

        `request_params` builds plain JSON (strings, numbers, lists, dicts), which the
        transform hands back unchanged at ~1.7 ms of CPU a call, a third of the client's
        cost per call at 32 in flight (docs/benchmarks.md, B1 floor); a reply read as JSON
        (`cast_to=object`) skips building the pydantic `ChatCompletion` textprop reads three
        fields of (~0.3 ms more). The SDK's `post`, the same one `create` ends in, keeps the
        rest: auth, retries, errors. A stream's chunks stay typed.
        """
        from openai import AsyncStream
        from openai.types.chat import ChatCompletionChunk

        async def create(*, extra_body: dict[str, Any] | None = None, stream: bool = False,
                         **body: Any) -> Any:
            if stream:
                body["stream"] = True
            return await client.post(
                "/chat/completions", body=body, cast_to=object,
                options={"extra_json": extra_body} if extra_body else {},
                stream=stream, stream_cls=AsyncStream[ChatCompletionChunk])

        return create

    def _read_reply(self, response: Any, client: AsyncOpenAI) -> tuple[str, str | None, Usage]:
        """Text, finish reason and usage of a reply's JSON; a reply without a first choice
        is malformed."""
        reply = response if isinstance(response, dict) else {}
        choices = reply.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(choice, dict):
            raise self._malformed(client, "it has no choices")
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else None
        usage = reply.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        return (text if isinstance(text, str) else "", choice.get("finish_reason"),
                Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0))

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
        import openai

        error = self._translate_sdk_error(
            openai, exc, client, model, sdk_retries=self.max_retries if inside_sdk_retries else 0,
            connection_advice="check that the server is up and base_url is right")
        if error is not None:
            return error
        if isinstance(exc, openai.APIError):  # e.g. an error event in the middle of a stream
            detail = error_detail(exc.body, exc.message, self._secret)
            return transient(f"{self.name}: {public_url(str(client.base_url))} failed mid-reply "
                             f"({detail})", engine=self.name, sdk_retries=0)
        raise exc

    def _key_advice(self) -> str:
        if self._key_source == "api_key":
            return ("pass a valid key as api_key=... (or omit it and set OPENAI_API_KEY)")
        if self._key_source is None:
            return "the server needs a key: set OPENAI_API_KEY (or pass api_key=...)"
        return f"set {self._key_source} to a valid key"
