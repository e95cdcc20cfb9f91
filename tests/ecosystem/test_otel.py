"""OpenTelemetry: a span per LLM call inside a span per step, with GenAI semantic-convention
attributes; exported to an in-memory exporter and, over real OTLP/HTTP, to a local endpoint."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from textprop.cli import main
from textprop.ledger import Ledger
from textprop.testing.server import TestServer
from textprop.train.build import build_trainer
from textprop.train.config import load_config

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
        assert a["gen_ai.system"] == "openai-compatible"
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


def test_tracking_otlp_exports_the_spans_to_an_otlp_http_endpoint(tmp_path, capsys):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    collector = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_port}/v1/traces"
    try:
        with TestServer(reply=server_reply) as server:
            config = config_for(tmp_path, server.base_url, tracking={"otlp": endpoint})
            assert main(["optimize", config, "--quiet"]) == 0
    finally:
        collector.shutdown()
    assert Collector.received and all(path == "/v1/traces" and kind == "application/x-protobuf"
                                      for path, kind, _ in Collector.received)
    names, models = [], set()
    for _, _, body in Collector.received:
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    names.append(span.name)
                    for attribute in span.attributes:
                        if attribute.key == "gen_ai.request.model":
                            models.add(attribute.value.string_value)
    assert "textprop.run traced" in names and "textprop.step 1" in names
    assert models == {"fake-model"} and names.count("chat fake-model") > 10
