"""A layer that sends every request with one sampling seed (TextGrad's `seed=` engines)."""

from __future__ import annotations

from textprop.engines.base import Completion, Engine, Request


class Seeded(Engine):
    """`Seeded(engine, 7)`: every request goes to `engine` with `seed=7`."""

    def __init__(self, inner: Engine, seed: int) -> None:
        self.inner = inner
        self.seed = seed
        self.name = inner.name
        self.supports_json_schema = inner.supports_json_schema

    async def acomplete(self, request: Request) -> Completion:
        return await self.inner.acomplete(request.with_(seed=self.seed))

    def complete(self, request: Request) -> Completion:
        return self.inner.complete(request.with_(seed=self.seed))

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __repr__(self) -> str:
        return f"Seeded({self.inner!r}, seed={self.seed})"
