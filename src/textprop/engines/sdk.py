"""What every engine over an official provider SDK (`openai`, `anthropic`) shares.

Both SDKs are generated from the same template (Stainless): the same client options
(`api_key`, `base_url`, `timeout`, `max_retries`), the same exception classes, the same retry
rules. So the parts that do not depend on the provider live here, once: the key holder that
keeps keys out of messages, one client per event loop, the translation of the SDK exceptions
both SDKs raise, and the helpers that turn HTTP failures into textprop errors.

Nothing here imports an SDK: the subclass passes its SDK module in at call time, so importing
or constructing an engine stays cheap.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import threading
import time
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from types import ModuleType
from typing import Any, ClassVar, Generic, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

from textprop.engines.base import Engine
from textprop.engines.retry import RetriesExhaustedError
from textprop.errors import (
    ConfigError,
    ContextWindowError,
    EngineAuthError,
    EngineError,
    EngineReplyError,
    EngineRequestError,
    TransientEngineError,
)

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


class SDKClient(Protocol):
    """The little of an SDK's async client (`AsyncOpenAI`, `AsyncAnthropic`) used here."""

    @property
    def base_url(self) -> Any: ...

    async def close(self) -> None: ...


ClientT = TypeVar("ClientT", bound=SDKClient)
ReplyT = TypeVar("ReplyT")


class SDKEngine(Engine, Generic[ClientT]):
    """An engine over an official async SDK client; subclasses map requests, replies, errors.

    The SDK does auth, pooling and retries (`max_retries`; `timeout` is seconds per HTTP
    attempt). Subclasses make the client in `_new_client` (resolving the key there, so a
    missing key fails on first use, not at construction) and keep `_secret` and `_key_source`
    up to date for scrubbing and advice.
    """

    no_model_message: ClassVar[str] = "a model name is required"
    models_path: ClassVar[str] = "/models"  # appended to the public URL in 404 advice

    def __init__(self, model: str, *, name: str, base_url: str | None, api_key: str | None,
                 timeout: float, max_retries: int) -> None:
        self.name = name
        if not model:
            raise ConfigError(self.no_model_message)
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
        self._clients: dict[asyncio.AbstractEventLoop, ClientT] = {}
        self._lock = threading.Lock()

    # -- the SDK client, one per event loop, made on first use ----------------------------

    def _client(self) -> ClientT:
        """The client for the running loop: httpx connections must stay on one loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            for old in [old for old in self._clients if old.is_closed()]:
                del self._clients[old]
            client = self._clients.get(loop)
            if client is None:
                client = self._new_client()
                self._clients[loop] = client
        return client

    @abstractmethod
    def _new_client(self) -> ClientT:
        """A new SDK client (the SDK imported here, lazily); raises `EngineAuthError` if no key."""

    async def aclose(self) -> None:
        """Close the client of the running loop; clients of other loops are dropped."""
        loop = asyncio.get_running_loop()
        with self._lock:
            clients, self._clients = self._clients, {}
        client = clients.get(loop)
        if client is not None:
            await client.close()

    # -- the call and its errors ----------------------------------------------------------

    async def _create(self, client: ClientT, create: Callable[..., Awaitable[ReplyT]],
                      params: dict[str, Any]) -> ReplyT:
        """`await create(**params)`, with SDK exceptions translated by `_translate`.

        The textprop error is raised outside the except block, so no SDK exception (and no
        key) is left in its context.
        """
        try:
            return await create(**params)
        except Exception as exc:  # translated below, or re-raised
            error = self._translate(exc, client, params["model"], inside_sdk_retries=True)
        raise error

    @abstractmethod
    def _translate(self, exc: Exception, client: ClientT, model: str, *,
                   inside_sdk_retries: bool) -> EngineError:
        """The textprop error for an SDK exception; anything unexpected is re-raised.

        `inside_sdk_retries`: whether the SDK already retried the failure (not so for one
        raised while reading a stream).
        """

    @abstractmethod
    def _key_advice(self) -> str:
        """What to do about a refused key, naming the provider's variables."""

    def _translate_sdk_error(self, sdk: ModuleType, exc: Exception, client: ClientT,
                             model: str, *, sdk_retries: int,
                             connection_advice: str) -> EngineError | None:
        """The textprop error for the exception classes both SDKs define; None for others.

        `sdk` is the SDK module (imported by the caller, only once an error happened).
        """
        where = public_url(str(client.base_url))
        if isinstance(exc, sdk.APIStatusError):
            return status_error(
                exc.status_code, error_detail(exc.body, exc.message, self._secret),
                engine=self.name, where=where, model=model, key_advice=self._key_advice(),
                retry_after=retry_after_seconds(exc.response.headers), sdk_retries=sdk_retries,
                models_url=f"{where}{self.models_path}")
        if isinstance(exc, sdk.APITimeoutError):  # before APIConnectionError, its base class
            return transient(f"{self.name}: no reply from {where} within {self.timeout:g} s; "
                             "raise timeout=... or check the server", engine=self.name,
                             sdk_retries=sdk_retries)
        if isinstance(exc, sdk.APIConnectionError):
            return transient(f"{self.name}: the connection to {where} failed or was dropped; "
                             f"{connection_advice}", engine=self.name, sdk_retries=sdk_retries)
        if isinstance(exc, ValueError | sdk.APIResponseValidationError):
            return self._malformed(client, "its body is not valid JSON")
        return None

    def _malformed(self, client: ClientT, detail: str) -> TransientEngineError:
        return TransientEngineError(
            f"{self.name}: {public_url(str(client.base_url))} sent a malformed reply ({detail});"
            " it may pass on retry", provider=self.name, status=200)


# -- helpers for any HTTP engine ---------------------------------------------------------------

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
    if ContextWindowError.describes(detail):
        return ContextWindowError(
            f"{engine}: {where} rejected the request {said}: it does not fit the model's "
            "context window; shorten the prompt or lower max_tokens", provider=engine,
            status=status)
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
