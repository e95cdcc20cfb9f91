"""The real 0.5B model re-encoded as Q4_0 by llama.cpp's quantizer: made once into the model
cache, recorded, and answering batched JSON-schema calls under its own engine name."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest

from textprop.engines.base import Request
from textprop.engines.local import MODELS, LocalEngine, ensure_model

from .local_model import require_local_model

pytestmark = pytest.mark.local_model

ANSWER = {"type": "object", "properties": {"answer": {"type": "integer"}},
          "required": ["answer"]}


def test_q4_0_weights_are_made_from_the_pinned_file_once_and_answer_batched(
        tmp_path: Path) -> None:
    require_local_model()
    pinned = ensure_model("0.5b")
    cache = tmp_path / "models"
    cache.mkdir()
    for name in (pinned.name, pinned.name + ".sha256"):  # the verified file, not a new join
        if (pinned.parent / name).exists():
            (cache / name).symlink_to(pinned.parent / name)

    engine = LocalEngine(weights="q4_0", n_parallel=4, cache_dir=cache, n_ctx=1024)
    try:
        assert engine.name == "local:qwen2.5-coder-0.5b-q4_0+batch4"
        requests = [Request.chat(f"What is {a} + {a}? Reply in JSON.", json_schema=ANSWER,
                                 max_tokens=16) for a in (1, 2, 3, 4)]

        async def all_at_once() -> list:
            return await asyncio.gather(*(engine.acomplete(r) for r in requests))

        replies = asyncio.run(all_at_once())
    finally:
        engine.close()
    assert all(isinstance(r.parsed["answer"], int) for r in replies)

    made = cache / "qwen2.5-coder-0.5b-instruct-q4_0.gguf"
    record = json.loads((cache / (made.name + ".from.json")).read_text())
    assert record["source_sha256"] == MODELS["0.5b"].sha256
    assert record["sha256"] == hashlib.sha256(made.read_bytes()).hexdigest()
    assert made.stat().st_size < pinned.stat().st_size  # Q4_0 drops the K-quants' extra bits

    made_at = made.stat().st_mtime_ns
    again = LocalEngine(weights="q4_0", cache_dir=cache, n_ctx=512)
    try:
        assert again.complete(Request.chat("Say yes.", max_tokens=4)).text
    finally:
        again.close()
    assert made.stat().st_mtime_ns == made_at  # trusted, not made again
