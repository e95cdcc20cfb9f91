"""`textprop serve` with the real 0.5B model: the openai SDK, called the way TextGrad's
ChatExternalClient calls it, gets answers (plain and JSON-schema), and concurrent HTTP
requests are decoded in one batch.

TextGrad itself is not a textprop dependency. When bench/.venv-textgrad exists
(`bench/setup-textgrad`), its real `ChatExternalClient` is driven against the server too.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from textprop.engines.local import LocalEngine
from textprop.serve import Server

from .local_model import require_local_model

pytestmark = pytest.mark.local_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    require_local_model()
    engine = LocalEngine(n_parallel=4)
    with Server(engine, port=0) as running:
        yield running
    engine.close()


def _client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="textprop", max_retries=0)


def _textgrad_call(client: openai.OpenAI, model: str, prompt: str, **extra: object) -> str:
    """ChatExternalClient._generate_from_single_prompt's call, verbatim in its arguments."""
    response = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "You are a concise assistant."},
                  {"role": "user", "content": prompt}],
        frequency_penalty=0, presence_penalty=0, stop=None, temperature=0, max_tokens=12,
        top_p=0.99, **extra)
    return response.choices[0].message.content


def test_the_openai_sdk_gets_answers(server: Server) -> None:
    client = _client(server)
    model = client.models.list().data[0].id
    assert model == "local:qwen2.5-coder-0.5b+batch4"
    assert "4" in _textgrad_call(client, model, "What is 2 + 2? Reply with the number only.")


def test_replies_carry_the_engines_build_and_cpu_as_system_fingerprint(server: Server) -> None:
    import llama_cpp

    client = _client(server)
    reply = client.chat.completions.create(
        model="local", messages=[{"role": "user", "content": "Say hi."}], max_tokens=4)
    assert reply.system_fingerprint == server.engine.system_fingerprint
    assert reply.system_fingerprint.startswith("fp_")
    assert client.models.list().data[0].model_dump()["system_fingerprint"] == \
        reply.system_fingerprint
    # another llama.cpp build or CPU, another fingerprint
    info = llama_cpp.llama_print_system_info
    try:
        llama_cpp.llama_print_system_info = lambda: b"CPU : AVX2 = 1 |"
        assert server.engine.system_fingerprint != reply.system_fingerprint
    finally:
        llama_cpp.llama_print_system_info = info


def test_json_schema_replies_parse(server: Server) -> None:
    client = _client(server)
    schema = {"type": "object", "properties": {"sum": {"type": "integer"}},
              "required": ["sum"]}
    reply = client.chat.completions.create(
        model="local", messages=[{"role": "user", "content": "What is 3 + 4? Reply in JSON."}],
        temperature=0, max_tokens=20,
        response_format={"type": "json_schema", "json_schema": {"name": "sum",
                                                                "schema": schema}})
    assert set(json.loads(reply.choices[0].message.content)) == {"sum"}


def test_concurrent_http_requests_share_a_batch(server: Server) -> None:
    client = _client(server)
    prompts = [f"Name a fruit that starts with the letter {c}." for c in "ABCD"]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda p: _textgrad_call(client, "local", p), prompts))
    assert server.engine._decoder.max_in_flight == 4
    assert all(together)


def _textgrad_python() -> Path | None:
    for root in (ROOT, ROOT.parent / "main"):
        python = root / "bench" / ".venv-textgrad" / "bin" / "python"
        if python.is_file():
            return python
    return None


@pytest.mark.skipif(_textgrad_python() is None, reason="needs bench/setup-textgrad")
def test_textgrads_chat_external_client(server: Server, tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        from openai import OpenAI
        from textgrad.engine.local_model_openai_api import ChatExternalClient
        client = OpenAI(base_url={server.base_url!r}, api_key="textprop")
        engine = ChatExternalClient(client=client, model_string="local")
        print(engine.generate("What is 2 + 2? Reply with the number only.",
                              system_prompt="You are a concise assistant.", max_tokens=8))
    """)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run([str(_textgrad_python()), "-c", script], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "4" in done.stdout
