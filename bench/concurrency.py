"""Benchmark: 64 forward calls through the graph against the test server at 200 ms latency,
sequential (one at a time) vs concurrent (asyncio, engine concurrency limit 16).

    python bench/concurrency.py            # writes bench/results/concurrency.json
"""

from __future__ import annotations

import asyncio
import json
import platform
import sys
import time
from pathlib import Path

import textprop as tp
from textprop.engines.openai_compat import OpenAIEngine
from textprop.engines.stack import build_stack
from textprop.testing.server import TestServer

CALLS, LATENCY, LIMIT = 64, 0.2, 16


def pipeline(engine):
    system_prompt = tp.Variable("Answer briefly.", role_description="system prompt")
    model = tp.BlackboxLLM(engine, system_prompt)
    questions = [tp.Variable(f"question {i}", role_description="question", requires_grad=False)
                 for i in range(CALLS)]
    return model, questions


def server_engine(base_url: str) -> OpenAIEngine:
    return OpenAIEngine("bench", base_url=base_url, api_key="x", provider="test-server")


def sequential(base_url: str) -> float:
    engine, _ = build_stack(server_engine(base_url), cache=False, concurrency=1)
    model, questions = pipeline(engine)
    start = time.perf_counter()
    for q in questions:
        model(q)
    return time.perf_counter() - start


def concurrent(base_url: str) -> float:
    engine, _ = build_stack(server_engine(base_url), cache=False, concurrency=LIMIT)
    model, questions = pipeline(engine)

    async def run() -> None:
        await asyncio.gather(*(model.aforward(q) for q in questions))

    start = time.perf_counter()
    tp._sync.run_sync(run())
    return time.perf_counter() - start


def main() -> None:
    with TestServer(latency=LATENCY, reply="ok") as server:
        seq = sequential(server.base_url)
        server.reset()
        conc = concurrent(server.base_url)
        in_flight = server.max_in_flight
    result = {
        "benchmark": "64 forward calls, test server at 200 ms",
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, "
        f"{platform.python_implementation()} {platform.python_version()}",
        "sequential_s": round(seq, 3), "concurrent_s": round(conc, 3),
        "speedup": round(seq / conc, 2), "concurrency_limit": LIMIT,
        "max_in_flight_at_server": in_flight,
        "lower_bound_sequential_s": CALLS * LATENCY,
        "lower_bound_concurrent_s": -(-CALLS // LIMIT) * LATENCY,
    }
    out = Path(__file__).parent / "results" / "concurrency.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
