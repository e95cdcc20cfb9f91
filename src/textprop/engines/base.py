"""The one engine interface every LLM call goes through.

An `Engine` is async first: `await engine.acomplete(request)`; `engine.complete(request)` is
its sync twin. Providers (OpenAI-compatible, Anthropic, embedded llama.cpp, scripted) and the
layers that wrap them (cache, retry, limits, metering, budget) all implement this one interface,
so they compose freely.

TextGrad's engine contract, a subclass of `EngineLM` defining
`generate(prompt, system_prompt=None, **kwargs)`, is adapted by `as_engine`.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from textprop._sync import run_sync
from textprop.errors import (
    EngineError,
    EngineReplyError,
    EngineUnavailableError,
    MissingEngineError,
)
from textprop.images import Image

CallRole = Literal["forward", "loss", "backward", "optimizer", "other"]
CALL_ROLES: tuple[str, ...] = ("forward", "loss", "backward", "optimizer", "other")


Part = str | Image


@dataclass(frozen=True)
class Message:
    """One message. `content` is its text; a message with images also has `parts`, its text
    and images in order (then `content` shows each image by its short description)."""

    role: Literal["system", "user", "assistant"]
    content: str
    parts: tuple[Part, ...] = ()

    @classmethod
    def from_parts(cls, role: Literal["system", "user", "assistant"],
                   parts: Sequence[str | bytes | Image]) -> Message:
        """A message of text and images (bytes are read as an image)."""
        items = tuple(Image.from_bytes(p) if isinstance(p, bytes | bytearray) else p
                      for p in parts)
        for item in items:
            if not isinstance(item, str | Image):
                raise TypeError(f"a message part is text, image bytes or an Image, got "
                                f"{type(item).__name__}")
        if not any(isinstance(p, Image) for p in items):
            return cls(role, "\n".join(items))  # type: ignore[arg-type]
        text = "\n".join(p if isinstance(p, str) else p.describe() for p in items)
        return cls(role, text, items)

    @property
    def images(self) -> tuple[Image, ...]:
        return tuple(p for p in self.parts if isinstance(p, Image))


@dataclass(frozen=True)
class Request:
    """Everything that determines a completion, plus `role`, a metering tag only.

    `role` says which part of the optimization made the call (forward, loss, backward,
    optimizer); it never changes the answer, so it is not part of the cache key.
    """

    messages: tuple[Message, ...]
    model: str | None = None
    temperature: float = 0.0
    max_tokens: int | None = None
    seed: int | None = 0
    stop: tuple[str, ...] = ()
    json_schema: Mapping[str, Any] | None = None
    role: CallRole = "other"

    @classmethod
    def chat(cls, prompt: str | Sequence[str | bytes | Image], system_prompt: str | None = None,
             **kwargs: Any) -> Request:
        """The common case: an optional system prompt and one user message (text, or a list
        of text and images)."""
        messages = []
        if system_prompt is not None:
            messages.append(Message("system", system_prompt))
        messages.append(Message("user", prompt) if isinstance(prompt, str)
                        else Message.from_parts("user", prompt))
        if "stop" in kwargs and kwargs["stop"] is not None:
            kwargs["stop"] = tuple(kwargs["stop"])
        return cls(messages=tuple(messages), **kwargs)

    @property
    def system_prompt(self) -> str | None:
        return next((m.content for m in self.messages if m.role == "system"), None)

    @property
    def prompt(self) -> str:
        """The last user message."""
        return next((m.content for m in reversed(self.messages) if m.role == "user"), "")

    @property
    def images(self) -> tuple[Image, ...]:
        return tuple(image for m in self.messages for image in m.images)

    def with_(self, **changes: Any) -> Request:
        return replace(self, **changes)


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class Completion:
    text: str
    parsed: Any = None
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    latency_s: float = 0.0
    cached: bool = False
    model: str | None = None


def with_parsed(completion: Completion, parse: Callable[[], Any]) -> Completion:
    """`completion` with its JSON value from `parse()`. A reply that does not parse raises
    `EngineReplyError` carrying the completion: it was paid for, so the meter counts it and
    the cache keeps it. Its text is the error's `reply_text`, which the provider scrubbed of
    secrets."""
    try:
        value = parse()
    except EngineReplyError as error:
        text = completion.text if error.reply_text is None else error.reply_text
        error.completion = replace(completion, text=text)
        raise
    return replace(completion, parsed=value)


class Engine(ABC):
    """An LLM behind one async method. Subclasses implement `acomplete`.

    `name` identifies provider and model (it goes into cache keys and usage records);
    `supports_json_schema` says whether `Request.json_schema` is honored (structured output).
    """

    name: str = "engine"
    supports_json_schema: bool = False

    @property
    def supports_images(self) -> bool:
        """Whether requests may carry images. Providers that take them set it True; a layer
        answers for what it wraps (`inner`, or Retry's `engine`)."""
        inner = getattr(self, "inner", None) or getattr(self, "engine", None)
        return isinstance(inner, Engine) and inner.supports_images

    @abstractmethod
    async def acomplete(self, request: Request) -> Completion:
        """Send one request and return its completion."""

    def complete(self, request: Request) -> Completion:
        """Sync twin of `acomplete`."""
        return run_sync(self.acomplete(request))

    # TextGrad's engine call style: engine(prompt, system_prompt=...) -> str; the prompt may
    # be a list of text and image bytes (TextGrad's multimodal content).
    def __call__(self, prompt: str | Sequence[str | bytes | Image],
                 system_prompt: str | None = None, **kwargs: Any) -> str:
        request = Request.chat(prompt, system_prompt, **kwargs)
        require_images_support(self, request)
        return self.complete(request).text

    def generate(self, content: str | Sequence[str | bytes | Image] | None = None,
                 system_prompt: str | None = None, *, prompt: Any = None,
                 **kwargs: Any) -> str:
        """TextGrad's `generate(content=..., system_prompt=...)` (or `prompt=`, its older
        engines' name)."""
        if content is None:
            content = prompt
        if content is None:
            raise TypeError("generate() needs the content (text, or text and images)")
        return self(content, system_prompt=system_prompt, **kwargs)

    async def aclose(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release connections or model memory; engines that hold none keep this no-op."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class EngineLM(ABC):
    """TextGrad's custom-engine contract: define `generate(prompt, system_prompt=None, **kw)`.

    Any subclass is a valid engine everywhere textprop takes one (see `as_engine`).
    """

    system_prompt: str = "You are a helpful, creative, and smart assistant."
    model_string: str = "custom"
    is_multimodal: bool = False  # True: generate also takes a list of text and image bytes

    @abstractmethod
    def generate(self, prompt: Any, system_prompt: str | None = None, **kwargs: Any) -> str:
        """Return the model's reply to `prompt`."""

    def __call__(self, prompt: Any, system_prompt: str | None = None, **kwargs: Any) -> str:
        return self.generate(prompt, system_prompt=system_prompt, **kwargs)


def require_images_support(engine: Engine, request: Request) -> None:
    """Refuse, in one message, a request with images to an engine that cannot take them."""
    if request.images and not engine.supports_images:
        raise EngineUnavailableError(
            f"{engine.name} cannot take images: this request has {len(request.images)}. Use "
            "an engine that reads images (e.g. 'gpt-4o', 'claude-3-5-sonnet-20240620', or an "
            "OpenAI-compatible vision model)", provider=engine.name)


class GenerateAdapter(Engine):
    """Runs an `EngineLM`-style object (anything with `generate`) as an `Engine`.

    Calls go one at a time through a worker thread: user engines are rarely thread-safe. A
    request with images reaches `generate` as TextGrad's content list (text and bytes), if
    the object says `is_multimodal = True`.
    """

    supports_json_schema = False
    supports_images = False  # set per object from its is_multimodal

    def __init__(self, target: Any) -> None:
        self.target = target
        self.supports_images = bool(getattr(target, "is_multimodal", False))
        self.name = f"custom:{getattr(target, 'model_string', type(target).__name__)}"
        self._lock: asyncio.Lock | None = None

    async def acomplete(self, request: Request) -> Completion:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            start = time.perf_counter()
            text = await asyncio.to_thread(self._generate, request)
        if not isinstance(text, str):
            raise EngineError(
                f"{type(self.target).__name__}.generate returned {type(text).__name__}, "
                "expected str", provider=self.name)
        return Completion(text=text, latency_s=time.perf_counter() - start, model=self.name)

    def complete(self, request: Request) -> Completion:
        start = time.perf_counter()
        text = self._generate(request)
        return Completion(text=text, latency_s=time.perf_counter() - start, model=self.name)

    def _generate(self, request: Request) -> str:
        turns = [m for m in request.messages if m.role != "system"]
        if request.images:
            content: list[Any] = [p.data if isinstance(p, Image) and p.data else str(p)
                                  for m in turns for p in (m.parts or (m.content,))]
            return self.target.generate(content, system_prompt=request.system_prompt)
        prompt = "\n\n".join(m.content for m in turns)
        return self.target.generate(prompt, system_prompt=request.system_prompt)


def as_engine(engine: Any) -> Engine:
    """Accept an `Engine`, a TextGrad-style engine, or an engine spec string."""
    if isinstance(engine, Engine):
        return engine
    if isinstance(engine, str):
        from textprop.engines.registry import get_engine

        return get_engine(engine)
    if engine is None:
        raise MissingEngineError("no engine given: pass engine=... (an Engine or a spec "
                                 "such as 'local' or 'openai:gpt-4o-mini')")
    if callable(getattr(engine, "generate", None)):
        adapted = getattr(engine, "_textprop_engine", None)
        if adapted is None:
            adapted = GenerateAdapter(engine)
            try:
                engine._textprop_engine = adapted
            except AttributeError:
                pass
        return adapted
    raise TypeError(f"not an engine: {engine!r} (expected a textprop Engine, an object with "
                    "generate(prompt, system_prompt=None), or an engine spec string)")


def messages_text(messages: Sequence[Message]) -> str:
    """A readable rendering of a conversation, for logs and reports."""
    return "\n\n".join(f"[{m.role}]\n{m.content}" for m in messages)
