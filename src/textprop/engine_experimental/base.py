"""The engine behind TextGrad's experimental classes: a textprop stack for
`experimental:MODEL`, with TextGrad's default system prompt and `cache=False` default."""

from __future__ import annotations

from typing import Any

from textprop.engine.openai import DEFAULT_SYSTEM_PROMPT
from textprop.engines.base import Completion, Engine, Request


class ExperimentalEngine(Engine):
    """`Engine(model_string, system_prompt=..., is_multimodal=True, cache=False)`.

    As in TextGrad, a call without a system prompt gets `system_prompt`. `cache` is
    `textprop.engine.get_engine`'s (True, False, a path or a diskcache.Cache)."""

    def __init__(self, model_string: str, system_prompt: str = DEFAULT_SYSTEM_PROMPT,
                 is_multimodal: bool = True, cache: Any = False, **kwargs: Any) -> None:
        from textprop.engine import EXPERIMENTAL, get_engine

        self.inner = get_engine(EXPERIMENTAL + model_string, cache=cache, **kwargs)
        self.name = self.inner.name
        self.supports_json_schema = self.inner.supports_json_schema
        self.model_string = model_string
        self.system_prompt = system_prompt
        self.is_multimodal = is_multimodal

    def _with_system(self, request: Request) -> Request:
        if request.system_prompt is not None or not self.system_prompt:
            return request
        from textprop.engines.base import Message

        return request.with_(messages=(Message("system", self.system_prompt),
                                       *request.messages))

    async def acomplete(self, request: Request) -> Completion:
        return await self.inner.acomplete(self._with_system(request))

    def complete(self, request: Request) -> Completion:
        return self.inner.complete(self._with_system(request))

    async def aclose(self) -> None:
        await self.inner.aclose()
