"""A scripted engine for tests: rules map requests to replies, and every request is recorded.

    engine = ScriptedEngine(default="ok")
    engine.on("<OBJECTIVE_FUNCTION>", "be shorter")          # substring of any message
    engine.on(lambda r: r.role == "optimizer", {"improved_variable": "new"})
    engine.queue("first", "second")                           # consumed in order, before rules

A reply is a string, a dict (sent as JSON text, and as `parsed` when a schema was asked for),
a `Completion` (returned as it is: a finish reason such as "length"), a callable
`request -> str | dict | Completion`, or an exception instance to raise.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from textprop.engines.base import Completion, Engine, Request, Usage
from textprop.errors import EngineError

Reply = str | dict | Completion | Callable[[Request], Any] | BaseException
Matcher = str | re.Pattern | Callable[[Request], bool]


@dataclass
class _Rule:
    matcher: Matcher
    reply: Reply
    times: int | None  # None: unlimited

    def matches(self, request: Request) -> bool:
        if self.times == 0:
            return False
        if callable(self.matcher) and not isinstance(self.matcher, re.Pattern):
            return bool(self.matcher(request))
        for message in request.messages:
            if isinstance(self.matcher, re.Pattern):
                if self.matcher.search(message.content):
                    return True
            elif self.matcher in message.content:
                return True
        return False


class ScriptedEngine(Engine):
    supports_images = True  # records images; rules match the messages' text

    def __init__(self, *, default: Reply | None = None, supports_json_schema: bool = False,
                 latency_s: float = 0.0, name: str = "scripted") -> None:
        self.name = name
        self.default = default
        self.supports_json_schema = supports_json_schema
        self.latency_s = latency_s
        self.requests: list[Request] = []
        self._queue: deque[Reply] = deque()
        self._rules: list[_Rule] = []

    def on(self, matcher: Matcher, reply: Reply, *, times: int | None = None) -> ScriptedEngine:
        """Answer requests that match with `reply` (first matching rule wins)."""
        self._rules.append(_Rule(matcher, reply, times))
        return self

    def queue(self, *replies: Reply) -> ScriptedEngine:
        """Answer the next requests with these replies, in order, before any rule."""
        self._queue.extend(replies)
        return self

    def prompts(self, role: str | None = None) -> list[str]:
        """The last user message of every recorded request (optionally of one call role)."""
        return [r.prompt for r in self.requests if role is None or r.role == role]

    async def acomplete(self, request: Request) -> Completion:
        self.requests.append(request)
        start = time.perf_counter()
        reply = self._pick(request)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return self._completion(request, reply, time.perf_counter() - start)

    def complete(self, request: Request) -> Completion:
        self.requests.append(request)
        start = time.perf_counter()
        reply = self._pick(request)
        if self.latency_s:
            time.sleep(self.latency_s)
        return self._completion(request, reply, time.perf_counter() - start)

    def _pick(self, request: Request) -> Reply:
        if self._queue:
            return self._queue.popleft()
        for rule in self._rules:
            if rule.matches(request):
                if rule.times is not None:
                    rule.times -= 1
                return rule.reply
        if self.default is not None:
            return self.default
        raise EngineError(f"ScriptedEngine has no reply for this {request.role} request:\n"
                          f"{request.prompt[:500]}", provider=self.name)

    def _completion(self, request: Request, reply: Reply, latency: float) -> Completion:
        if callable(reply) and not isinstance(reply, BaseException):
            reply = reply(request)
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, Completion):
            return reply
        parsed = None
        if isinstance(reply, dict):
            parsed = reply if request.json_schema is not None else None
            text = json.dumps(reply)
        else:
            text = str(reply)
            if request.json_schema is not None and self.supports_json_schema:
                try:
                    parsed = json.loads(text)
                except ValueError:
                    parsed = None
        words_in = sum(len(m.content.split()) for m in request.messages)
        return Completion(text=text, parsed=parsed,
                          usage=Usage(words_in, len(text.split())),
                          finish_reason="stop", latency_s=latency, model=self.name)
