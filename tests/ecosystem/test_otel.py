"""OpenTelemetry: a span per LLM call inside a span per step, with GenAI semantic-convention
attributes; exported to an in-memory exporter and, over real OTLP/HTTP, to a local endpoint.
Prompts and replies reach a span only with `[tracking] otlp_content = true`."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from textprop.cli import main
from textprop.errors import ConfigError
from textprop.ledger import Ledger
from textprop.testing.server import TestServer
from textprop.train.build import build_trainer
from textprop.train.config import load_config
from textprop.train.events import RunCallback

from ..train.fake_pipeline import server_reply, write_run_config

pytest.importorskip("opentelemetry.sdk", reason="needs the otel extra")
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

from textprop.tracking.otel import OTelTracker  # noqa: E402


def config_for(tmp_path: Path, base_url: str, **sections: dict) -> str:
    return write_run_config(
        tmp_path, engine=f"openai-compatible:fake-model@{base_url}",
        train=[(i, i + 1) for i in range(6)], val=[(2, 2), (4, 6), (6, 1)],
        test=[(9, 9), (1, 1)], run={"name": "traced", "dir": str(tmp_path / "runs")},
        cache={"enabled": False}, trainer={"batch_size": 2, "steps_per_epoch": 2},
        **sections)


def test_each_call_is_a_span_inside_its_step_with_genai_attributes(tmp_path):
    exporter = InMemorySpanExporter()
    with TestServer(reply=server_reply) as server:
        config = load_config(config_for(tmp_path, server.base_url))
        run_dir = tmp_path / "run"
        trainer, _ = build_trainer(config, run_dir, callbacks=[
            OTelTracker(exporter=exporter, run_name="traced")])
        result = trainer.run()
    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    (root,) = [s for s in spans if s.parent is None]
    assert root.name == "textprop.run traced"
    assert root.attributes["textprop.status"] == result.status
    steps = [s for s in spans if s.name.startswith("textprop.step")]
    assert sorted(s.attributes["textprop.step"] for s in steps) == [0, 1, 2]
    assert all(s.parent.span_id == root.context.span_id for s in steps)
    calls = [s for s in spans if s.name.startswith("chat")]
    assert len(calls) == len(Ledger.in_run(run_dir).calls())  # the final test's too
    for span in calls:
        parent = by_id[span.parent.span_id]
        assert parent.name.startswith(("textprop.step", "textprop.final_test"))
        assert parent.start_time <= span.start_time <= span.end_time <= parent.end_time
        a = span.attributes
        assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "openai-compatible"
        assert a["gen_ai.request.model"] == "fake-model"
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert a["textprop.role"] in {"forward", "backward", "optimizer"}
        assert a["textprop.cache_hit"] is False and a["textprop.latency_s"] >= 0
        assert not any("prompt" in k or "completion" in k or "content" in k for k in a)
    roles = {s.attributes["textprop.role"] for s in calls}
    assert roles == {"forward", "backward", "optimizer"}
    step_one = next(s for s in steps if s.attributes["textprop.step"] == 1)
    inside = [s for s in calls if s.parent.span_id == step_one.context.span_id]
    assert {s.attributes["textprop.role"] for s in inside} == roles


SYSTEM_PROMPT = "You are a helpful assistant."  # write_run_config's


def texts_in(span) -> list[str]:
    """Every string a span carries: attribute values, and its events' names and values."""
    out = [v for v in span.attributes.values() if isinstance(v, str)]
    for event in span.events:
        out += [event.name, *(v for v in event.attributes.values() if isinstance(v, str))]
    return out


def run_traced(tmp_path: Path, *trackers: RunCallback, **sections: dict):
    """Run the fake pipeline against the test server; the server's requests and the run."""
    with TestServer(reply=server_reply) as server:
        config = load_config(config_for(tmp_path, server.base_url, **sections))
        trainer, _ = build_trainer(config, tmp_path / "run", callbacks=list(trackers))
        result = trainer.run()
        requests = server.requests
    return [r for r in requests if r.path.endswith("/chat/completions")], result


class StepCalls(RunCallback):
    """What other callbacks see: the calls of on_call and of each step's record."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def on_call(self, call, step):
        self.calls.append(call)

    def on_step(self, record, planned):
        self.calls.extend(record.calls)


def test_no_prompt_or_reply_text_reaches_a_span_by_default(tmp_path, monkeypatch):
    from textprop.engines import metering

    copied = []
    monkeypatch.setattr(metering, "_with_content", lambda *a: copied.append(a))
    exporter = InMemorySpanExporter()
    requests, _ = run_traced(tmp_path, OTelTracker(exporter=exporter, run_name="traced"))
    assert not copied  # nobody asked: the meters did not even copy the text
    spans = exporter.get_finished_spans()
    calls = [s for s in spans if s.name.startswith("chat")]
    assert calls and len(calls) == len(requests)
    for span in calls:
        assert "gen_ai.input.messages" not in span.attributes
        assert "gen_ai.output.messages" not in span.attributes
        assert not span.events
    sent = {m["content"] for r in requests for m in r.body["messages"]}
    replies = {server_reply(r.body) for r in requests}
    assert SYSTEM_PROMPT in sent
    for span in spans:
        for text in texts_in(span):
            assert not any(t and t in text for t in sent | replies), (span.name, text)


def test_with_otlp_content_each_call_span_holds_its_exact_messages_and_reply(tmp_path):
    exporter = InMemorySpanExporter()
    with TestServer(reply=server_reply) as server:
        config = load_config(config_for(tmp_path, server.base_url, tracking={
            "otlp": "http://127.0.0.1:9/v1/traces", "otlp_content": True}))
        assert config.tracking.otlp_content is True
        tracker = OTelTracker(exporter=exporter, run_name="traced",
                              export_content=config.tracking.otlp_content)
        others = StepCalls()
        trainer, _ = build_trainer(config, tmp_path / "run", callbacks=[tracker, others])
        trainer.run()
        requests = [r for r in server.requests if r.path.endswith("/chat/completions")]
    calls = [s for s in exporter.get_finished_spans() if s.name.startswith("chat")]
    assert len(calls) == len(requests) > 10
    exported = sorted(json.dumps([json.loads(s.attributes["gen_ai.input.messages"]),
                                  json.loads(s.attributes["gen_ai.output.messages"])])
                      for s in calls)
    expected = sorted(json.dumps([
        [{"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]}
         for m in r.body["messages"]],
        [{"role": "assistant", "parts": [{"type": "text", "content": server_reply(r.body)}],
          "finish_reason": "stop"}]]) for r in requests)
    assert exported == expected  # every call: exactly what was sent and what came back
    forward = next(s for s in calls if s.attributes["textprop.role"] == "forward")
    sent = json.loads(forward.attributes["gen_ai.input.messages"])
    assert sent[0] == {"role": "system", "parts": [{"type": "text", "content": SYSTEM_PROMPT}]}
    assert sent[1]["role"] == "user" and "What is" in sent[1]["parts"][0]["content"]
    # the other callbacks, and the step records the ledger files, still get no text
    assert others.calls and not any({"messages", "reply", "finish_reason"} & set(c)
                                    for c in others.calls)
    assert not any("messages" in c for c in Ledger.in_run(tmp_path / "run").calls())


def test_a_tracker_that_did_not_ask_gets_no_text_when_another_did(tmp_path):
    quiet, loud = InMemorySpanExporter(), InMemorySpanExporter()
    run_traced(tmp_path, OTelTracker(exporter=quiet, run_name="q"),
               OTelTracker(exporter=loud, run_name="l", export_content=True))
    assert all("gen_ai.input.messages" in s.attributes
               for s in loud.get_finished_spans() if s.name.startswith("chat"))
    assert not any(k.startswith(("gen_ai.input", "gen_ai.output"))
                   for s in quiet.get_finished_spans() for k in s.attributes)


@pytest.mark.parametrize("value", ['"maybe"', "2", "[]"])
def test_a_bad_otlp_content_value_is_one_config_error_naming_the_field(tmp_path, capsys,
                                                                        value):
    config = Path(config_for(tmp_path, "http://127.0.0.1:9/v1",
                             tracking={"otlp": "http://127.0.0.1:9/v1/traces"}))
    config.write_text(config.read_text().replace(
        "[tracking]\n", f"[tracking]\notlp_content = {value}\n"))
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert caught.value.field == "tracking.otlp_content"
    assert main(["optimize", str(config)]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        f"textprop: error: {config}, field 'tracking.otlp_content': "), lines


def test_otlp_content_without_an_endpoint_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="otlp_content = true needs otlp"):
        load_config(config_for(tmp_path, "http://127.0.0.1:9/v1",
                               tracking={"otlp_content": True}))


class Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Collector.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def exported_spans(config: str) -> list:
    """Run `textprop optimize config` against a local OTLP/HTTP collector; its spans."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    Collector.received = []
    collector = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_port}/v1/traces"
    Path(config).write_text(Path(config).read_text().replace("ENDPOINT", endpoint))
    try:
        assert main(["optimize", config, "--quiet"]) == 0
    finally:
        collector.shutdown()
    assert Collector.received and all(path == "/v1/traces" and kind == "application/x-protobuf"
                                      for path, kind, _ in Collector.received)
    return [span for _, _, body in Collector.received
            for resource in ExportTraceServiceRequest.FromString(body).resource_spans
            for scope in resource.scope_spans for span in scope.spans]


def test_tracking_otlp_exports_the_spans_to_an_otlp_http_endpoint(tmp_path, capsys):
    with TestServer(reply=server_reply) as server:
        spans = exported_spans(config_for(tmp_path, server.base_url,
                                          tracking={"otlp": "ENDPOINT"}))
    names = [span.name for span in spans]
    models = {a.value.string_value for span in spans for a in span.attributes
              if a.key == "gen_ai.request.model"}
    assert "textprop.run traced" in names and "textprop.step 1" in names
    assert models == {"fake-model"} and names.count("chat fake-model") > 10
    assert not any(a.key.startswith(("gen_ai.input", "gen_ai.output"))
                   for span in spans for a in span.attributes)


def test_tracking_otlp_content_exports_the_prompts_and_replies_too(tmp_path, capsys):
    with TestServer(reply=server_reply) as server:
        spans = exported_spans(config_for(tmp_path, server.base_url, tracking={
            "otlp": "ENDPOINT", "otlp_content": True}))
        requests = [r for r in server.requests if r.path.endswith("/chat/completions")]
    calls = [{a.key: a.value.string_value for a in span.attributes}
             for span in spans if span.name.startswith("chat")]
    assert len(calls) == len(requests)
    inputs = sorted(json.loads(c["gen_ai.input.messages"])[-1]["parts"][0]["content"]
                    for c in calls)
    outputs = sorted(json.loads(c["gen_ai.output.messages"])[0]["parts"][0]["content"]
                     for c in calls)
    assert inputs == sorted(r.body["messages"][-1]["content"] for r in requests)
    assert outputs == sorted(server_reply(r.body) for r in requests)
