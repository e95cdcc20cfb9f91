"""Benchmark: client CPU time per LLM call, layer by layer, at high concurrency.

B1 found textprop spending more time above its critical path than TextGrad at 32 workers.
Wall time on a shared machine is too noisy to split that up, but the CPU time the client
process spends per call is not: this runs N calls (limit W in flight) against the test
server in a separate process answering after 200 ms, and reports the client's CPU
milliseconds per call (`time.process_time`, all threads) for each path, innermost first:

    sdk        AsyncOpenAI().chat.completions.create, the SDK alone (what textprop wraps)
    sdk-post   AsyncOpenAI().post("/chat/completions", body=...), the SDK without its
               request-building step (documented for undocumented endpoints)
    engine     textprop's OpenAIEngine.acomplete (SDK + request/reply mapping)
    stack      the engine in build_stack (Retry, ConcurrencyLimit, Meter), cache off
    graph      BlackboxLLM.aforward through that stack (Variables, graph bookkeeping)
    threads    TextGrad's way: the sync OpenAI client in a W-thread pool

    python bench/call_cpu.py            # writes bench/results/call_cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import textprop as tp
from textprop.engines.base import Message, Request
from textprop.engines.openai_compat import OpenAIEngine
from textprop.engines.stack import build_stack

SYSTEM = "You will answer a reasoning question. Think step by step. " * 4
QUESTION = "I have a flute, a piano, two violins and a trombone. How many instruments? " * 3
MODEL = "bench"


def body() -> dict:
    return {"model": MODEL, "temperature": 0.0,
            "messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": QUESTION}]}


async def gather_limited(call, n: int, width: int) -> float:
    """CPU seconds for n calls, at most `width` in flight, after one unmeasured wave."""
    gate = asyncio.Semaphore(width)

    async def one() -> None:
        async with gate:
            await call()

    await asyncio.gather(*(one() for _ in range(width)))  # connections opened, code warm
    start = time.process_time()
    await asyncio.gather(*(one() for _ in range(n)))
    return time.process_time() - start


async def path_sdk(url: str, n: int, width: int, *, post: bool) -> float:
    from openai import AsyncOpenAI
    from openai.types.chat import ChatCompletion

    client = AsyncOpenAI(base_url=url, api_key="x")
    if post:
        async def call():
            return await client.post("/chat/completions", body=body(), cast_to=ChatCompletion)
    else:
        async def call():
            return await client.chat.completions.create(**body())
    try:
        return await gather_limited(call, n, width)
    finally:
        await client.close()


async def path_textprop(url: str, n: int, width: int, *, layer: str) -> float:
    """`layer`: "engine" (the provider), "stack" (+ build_stack), "graph" (+ BlackboxLLM)."""
    provider = OpenAIEngine(MODEL, base_url=url, api_key="x", provider="test-server")
    engine = provider if layer == "engine" else build_stack(provider, cache=False,
                                                             concurrency=width)[0]
    request = Request(messages=(Message("system", SYSTEM), Message("user", QUESTION)))
    model = tp.BlackboxLLM(engine, tp.Variable(SYSTEM, role_description="system prompt"))
    question = tp.Variable(QUESTION, role_description="question", requires_grad=False)

    async def call():
        if layer == "graph":
            return await model.aforward(question)
        return await engine.acomplete(request)
    try:
        return await gather_limited(call, n, width)
    finally:
        await provider.aclose()


def path_threads(url: str, n: int, width: int) -> float:
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key="x")
    with ThreadPoolExecutor(width) as pool:
        list(pool.map(lambda _: client.chat.completions.create(**body()), range(width)))
        start = time.process_time()
        list(pool.map(lambda _: client.chat.completions.create(**body()), range(n)))
        return time.process_time() - start


PATHS = {
    "sdk": lambda url, n, w: asyncio.run(path_sdk(url, n, w, post=False)),
    "sdk-post": lambda url, n, w: asyncio.run(path_sdk(url, n, w, post=True)),
    "engine": lambda url, n, w: asyncio.run(path_textprop(url, n, w, layer="engine")),
    "stack": lambda url, n, w: asyncio.run(path_textprop(url, n, w, layer="stack")),
    "graph": lambda url, n, w: asyncio.run(path_textprop(url, n, w, layer="graph")),
    "threads": path_threads,
}


def start_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "textprop.testing.server", "--port",
                             str(port), "--latency", "0.2", "--reply", "Answer: 5"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1).read()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the test server did not start")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=128)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--port", type=int, default=8191)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results/call_cpu.json")
    args = p.parse_args()
    server = start_server(args.port)
    url = f"http://127.0.0.1:{args.port}/v1"
    samples: dict[str, list[float]] = {name: [] for name in PATHS}
    try:
        for _ in range(args.rounds):  # paths alternate, so machine noise spreads over all
            for name, run in PATHS.items():
                samples[name].append(1000 * run(url, args.calls, args.width) / args.calls)
    finally:
        server.terminate()
        server.wait()
    rows = {name: {"median_ms": round(statistics.median(v), 3), "min_ms": round(min(v), 3),
                   "max_ms": round(max(v), 3)} for name, v in samples.items()}
    for name, row in rows.items():
        print(f"{name:9s} {row['median_ms']:6.2f} ms CPU per call "
              f"(min {row['min_ms']:.2f}, max {row['max_ms']:.2f})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "call_cpu", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, "
                   f"CPython {platform.python_version()}",
        "command": " ".join(["python"] + sys.argv), "calls": args.calls, "width": args.width,
        "rounds": args.rounds, "paths": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
