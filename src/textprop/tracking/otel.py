"""OpenTelemetry: one span per LLM call (role, engine, model, tokens, latency, cache hit;
GenAI semantic-convention names) inside a span per step, inside one span for the run,
exported over OTLP/HTTP (`pip install 'textprop[otel]'`).

Prompts and replies are not exported unless asked: by default the spans carry only the
calls' metadata. With `[tracking] otlp_content = true` (`OTelTracker(export_content=True)`)
each call's span also holds the text the way the GenAI semantic conventions (1.37 and
later) record content on span attributes, not as the older per-message span events
(`gen_ai.user.message`, `gen_ai.choice`, now deprecated): `gen_ai.input.messages`, the
request's messages in order (the system prompt too: it is part of the chat history), and
`gen_ai.output.messages`, the reply, each a JSON string (`[{"role": ..., "parts":
[{"type": "text", "content": ...}]}]`, the output message with its `finish_reason`)
because span attributes cannot hold nested structures. An image in a message is recorded
by its text description, never its bytes. Without the option the engines do not even copy
the text for the tracker.

Spans are made when a step is recorded, with the calls' own start times and latencies, so
proposals that ran side by side (the pareto search) still nest under their own steps.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from textprop.errors import ConfigError
from textprop.train.events import RunCallback


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _system(engine: str) -> str:
    """The provider from an engine name: "openai:gpt-4o" -> "openai"."""
    prefix = engine.split(":", 1)[0] if ":" in engine else engine
    return prefix or "unknown"


def input_messages(messages: list[dict[str, str]]) -> str:
    """`gen_ai.input.messages`: the request's messages as JSON, one text part each."""
    return json.dumps([{"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]}
                       for m in messages], ensure_ascii=False)


def output_messages(reply: str, finish_reason: str | None) -> str:
    """`gen_ai.output.messages`: the one reply as JSON (the schema requires a finish reason;
    "stop" when the engine reported none)."""
    return json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": reply}],
                        "finish_reason": finish_reason or "stop"}], ensure_ascii=False)


class OTelTracker(RunCallback):
    """`export_content=True` adds each call's prompt and reply to its span (see above)."""

    def __init__(self, *, endpoint: str | None = None, exporter: Any = None,
                 run_name: str = "run", attributes: dict[str, Any] | None = None,
                 export_content: bool = False) -> None:
        try:
            from opentelemetry import trace
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        except ImportError:
            raise ConfigError("OpenTelemetry tracing needs the otel extra: pip install "
                              "'textprop[otel]'", field="tracking.otlp") from None
        self._trace = trace
        self.export_content = self.wants_call_content = bool(export_content)
        self.provider = TracerProvider(resource=Resource.create({"service.name": "textprop"}))
        if exporter is None:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            except ImportError:
                raise ConfigError("OTLP export needs opentelemetry-exporter-otlp-proto-http: "
                                  "pip install 'textprop[otel]'", field="tracking.otlp") from None
            self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
                endpoint=endpoint)))
        else:
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("textprop")
        self.root = self.tracer.start_span(f"textprop.run {run_name}", attributes={
            "textprop.run": run_name, **(attributes or {})})
        self._lock = threading.Lock()
        self._calls: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self._finished = False

    @classmethod
    def from_config(cls, config: Any, run_dir: Path) -> OTelTracker:
        return cls(endpoint=config.tracking.otlp, run_name=config.run.name,
                   export_content=config.tracking.otlp_content,
                   attributes={"textprop.run_dir": str(run_dir),
                               "textprop.strategy": config.strategy.kind})

    def on_call(self, call: dict[str, Any], step: int) -> None:
        with self._lock:
            self._calls[step].append(call)

    def on_step(self, record: Any, planned: int | None) -> None:
        with self._lock:
            calls = self._calls.pop(record.step, [])
        attributes = {"textprop.step": record.step, "textprop.status": record.status}
        for key in ("batch_score", "val_score", "test_score"):
            value = getattr(record, key, None)
            if value is not None:
                attributes[f"textprop.{key}"] = float(value)
        self._step_span(f"textprop.step {record.step}", record.started_at, calls, attributes)

    def _step_span(self, name: str, started: float, calls: list[dict[str, Any]],
                   attributes: dict[str, Any]) -> None:
        start = min([started, *(c.get("started_at") or started for c in calls)])
        end = max([time.time(), *((c.get("started_at") or start) + (c.get("latency_s") or 0)
                                  for c in calls)])
        parent = self._trace.set_span_in_context(self.root)
        span = self.tracer.start_span(name, context=parent, start_time=_ns(start),
                                      attributes={**attributes, "textprop.calls": len(calls)})
        inside = self._trace.set_span_in_context(span)
        for call in calls:
            self._call_span(call, inside)
        span.end(end_time=_ns(end))

    def _call_span(self, call: dict[str, Any], context: Any) -> None:
        system = _system(call.get("engine") or "")
        model = (call.get("model") or "").removeprefix(f"{system}:")
        started = call.get("started_at") or time.time()
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": system,  # the GenAI conventions' name since v1.37
            "gen_ai.system": system,  # its name before, which existing dashboards query
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
            "gen_ai.usage.input_tokens": int(call.get("input_tokens") or 0),
            "gen_ai.usage.output_tokens": int(call.get("output_tokens") or 0),
            "textprop.role": call.get("role") or "other",
            "textprop.engine": call.get("engine") or "",
            "textprop.cache_hit": bool(call.get("cached")),
            "textprop.cost_usd": float(call.get("cost_usd") or 0.0),
            "textprop.latency_s": float(call.get("latency_s") or 0.0),
        }
        if self.export_content and call.get("messages") is not None:
            attributes["gen_ai.input.messages"] = input_messages(call["messages"])
            if call.get("reply") is not None:
                attributes["gen_ai.output.messages"] = output_messages(
                    call["reply"], call.get("finish_reason"))
        span = self.tracer.start_span(f"chat {model}".strip(), context=context,
                                      kind=self._trace.SpanKind.CLIENT,
                                      start_time=_ns(started), attributes=attributes)
        if not call.get("ok", True):
            from opentelemetry.trace import Status, StatusCode

            error = call.get("error") or "error"
            span.set_attribute("error.type", error.split(":", 1)[0])
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=_ns(started + (call.get("latency_s") or 0.0)))

    def on_run_finished(self, result: Any) -> None:
        if self._finished:
            return
        self._finished = True
        with self._lock:
            left = sorted(self._calls.items())
            self._calls.clear()
        for step, calls in left:  # the final test's calls, filed with the last step
            self._step_span(f"textprop.final_test {step}", calls[0].get("started_at")
                            or time.time(), calls, {"textprop.step": step})
        self.root.set_attribute("textprop.status", result.status)
        if result.final_test is not None:
            self.root.set_attribute("textprop.final_test", float(result.final_test))
        self.root.end()
        self.provider.shutdown()  # flushes the exporter
