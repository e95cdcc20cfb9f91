"""Engine specs: parsing every accepted form, clear errors, and dispatch to the right class."""

from __future__ import annotations

import importlib.abc
import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import pytest

from textprop.engines import local
from textprop.engines.registry import (
    OLLAMA_BASE_URL,
    VLLM_BASE_URL,
    EngineSpec,
    get_engine,
    parse_spec,
)
from textprop.errors import ConfigError, EngineUnavailableError


@pytest.mark.parametrize(("spec", "expected"), [
    ("local", EngineSpec("local")),
    ("  LOCAL ", EngineSpec("local")),
    ("local:0.5b", EngineSpec("local", size="0.5b")),
    ("local:1.5B", EngineSpec("local", size="1.5b")),
    ("local:0.5b-q4_0", EngineSpec("local", size="0.5b", weights="q4_0")),
    ("local:1.5b-Q8_0+batch8", EngineSpec("local", size="1.5b", weights="q8_0", n_parallel=8)),
    ("llamacpp:/models/x.gguf", EngineSpec("llamacpp", path=Path("/models/x.gguf"))),
    ("openai:gpt-4o-mini", EngineSpec("openai", "gpt-4o-mini")),
    ("OpenAI:gpt-4o", EngineSpec("openai", "gpt-4o")),
    ("anthropic:claude-sonnet-4-5", EngineSpec("anthropic", "claude-sonnet-4-5")),
    ("openai-compatible:qwen2.5@http://gpu:8000/v1/",
     EngineSpec("openai-compatible", "qwen2.5", base_url="http://gpu:8000/v1",
                provider="openai-compatible")),
    ("qwen2.5@https://api.example.com/v1",
     EngineSpec("openai-compatible", "qwen2.5", base_url="https://api.example.com/v1",
                provider="openai-compatible")),
    ("ollama:llama3.1:8b", EngineSpec("openai-compatible", "llama3.1:8b",
                                      base_url=OLLAMA_BASE_URL, provider="ollama")),
    ("vllm:my/model", EngineSpec("openai-compatible", "my/model", base_url=VLLM_BASE_URL,
                                 provider="vllm")),
    ("vllm:my/model@http://box:9000/v1",
     EngineSpec("openai-compatible", "my/model", base_url="http://box:9000/v1", provider="vllm")),
])
def test_parse_spec_forms(spec: str, expected: EngineSpec) -> None:
    assert parse_spec(spec) == expected


def test_llamacpp_path_expands_home() -> None:
    assert parse_spec("llamacpp:~/m.gguf").path == Path.home() / "m.gguf"


@pytest.mark.parametrize(("name", "kind", "model"), [
    ("gpt-4o", "openai", "gpt-4o"),
    ("gpt-4o-mini", "openai", "gpt-4o-mini"),
    ("gpt-3.5-turbo-0125", "openai", "gpt-3.5-turbo-0125"),
    ("gpt-4-turbo-2024-04-09", "openai", "gpt-4-turbo-2024-04-09"),
    ("o3-mini", "openai", "o3-mini"),
    ("claude-3-5-sonnet-20240620", "anthropic", "claude-3-5-sonnet-20240620"),
    ("opus", "anthropic", "claude-3-opus-20240229"),
    ("haiku", "anthropic", "claude-3-haiku-20240307"),
    ("sonnet", "anthropic", "claude-3-sonnet-20240229"),
    ("sonnet-3.5", "anthropic", "claude-3-5-sonnet-20240620"),
])
def test_textgrad_model_names(name: str, kind: str, model: str) -> None:
    parsed = parse_spec(name)
    assert (parsed.kind, parsed.model, parsed.base_url) == (kind, model, None)


@pytest.mark.parametrize(("name", "model", "url"), [
    ("ollama-llama3", "llama3", OLLAMA_BASE_URL),
    ("ollama-llama3.1:8b", "llama3.1:8b", OLLAMA_BASE_URL),
    ("vllm-Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-7B", VLLM_BASE_URL),
    ("vllm-llama-3-8b", "meta-llama/Meta-Llama-3-8B-Instruct", VLLM_BASE_URL),
])
def test_textgrad_server_names(name: str, model: str, url: str) -> None:
    parsed = parse_spec(name)
    assert (parsed.kind, parsed.model, parsed.base_url) == ("openai-compatible", model, url)


def test_ollama_base_url_env_is_honored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_BASE_URL", "http://ollama-box:11434/v1")
    assert parse_spec("ollama-llama3").base_url == "http://ollama-box:11434/v1"


@pytest.mark.parametrize(("spec", "fragment"), [
    ("", "empty"),
    ("local:7b", "unknown local model size '7b'"),
    ("local:0.5b-q2_k", "unknown local weights 'q2_k' (known: q4_k_m, q8_0, q4_0)"),
    ("openai:", "needs a model name"),
    ("anthropic:  ", "needs a model name"),
    ("llamacpp:", "needs a model file path"),
    ("openai-compatible:qwen", "needs the server URL"),
    ("openai:gpt-4o@http://proxy/v1", "takes no URL"),
    ("ollama-foo@ftp://x", "must be a URL"),
    ("gemini-1.5-pro", "unknown engine"),
    ("together-llama-3-70b", "unknown engine"),
    ("bogus:thing", "unknown engine"),
])
def test_bad_specs_list_accepted_forms(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_spec(spec)
    message = str(info.value)
    assert fragment in message
    for form in ("'local'", "'openai:MODEL'", "'anthropic:MODEL'", "'llamacpp:/path/model.gguf'",
                 "openai-compatible:MODEL@http://host:port/v1", "'gpt-4o'"):
        assert form in message


def test_non_string_spec_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse_spec(None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- dispatch


class Recorder:
    """Stands in for a provider class and records how it was built."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.args, self.kwargs = args, kwargs


@pytest.fixture
def fake_providers(monkeypatch: pytest.MonkeyPatch) -> dict[str, type]:
    classes = {}
    for module_name, class_name in (("textprop.engines.openai_compat", "OpenAIEngine"),
                                    ("textprop.engines.anthropic", "AnthropicEngine")):
        module = types.ModuleType(module_name)
        cls = type(class_name, (Recorder,), {})
        setattr(module, class_name, cls)
        monkeypatch.setitem(sys.modules, module_name, module)
        classes[class_name] = cls
    local_cls = type("LocalEngine", (Recorder,), {})
    monkeypatch.setattr(local, "LocalEngine", local_cls)
    classes["LocalEngine"] = local_cls
    return classes


def test_dispatch_openai(fake_providers: dict[str, type]) -> None:
    engine = get_engine("gpt-4o-mini", timeout=5.0)
    assert type(engine) is fake_providers["OpenAIEngine"]
    assert engine.args == ("gpt-4o-mini",)
    assert engine.kwargs == {"timeout": 5.0}


def test_dispatch_openai_compatible(fake_providers: dict[str, type]) -> None:
    engine = get_engine("ollama-llama3")
    assert type(engine) is fake_providers["OpenAIEngine"]
    assert engine.args == ("llama3",)
    assert engine.kwargs == {"base_url": OLLAMA_BASE_URL, "provider": "ollama"}

    engine = get_engine("qwen@http://h:1/v1", api_key="k")
    assert engine.kwargs == {"base_url": "http://h:1/v1", "provider": "openai-compatible",
                             "api_key": "k"}


def test_dispatch_refuses_contradicting_base_url(fake_providers: dict[str, type]) -> None:
    with pytest.raises(ConfigError, match="base_url"):
        get_engine("qwen@http://h:1/v1", base_url="http://other/v1")


def test_dispatch_anthropic(fake_providers: dict[str, type]) -> None:
    engine = get_engine("sonnet-3.5", max_retries=1)
    assert type(engine) is fake_providers["AnthropicEngine"]
    assert engine.args == ("claude-3-5-sonnet-20240620",)
    assert engine.kwargs == {"max_retries": 1}


def test_dispatch_local(fake_providers: dict[str, type]) -> None:
    engine = get_engine("local", n_ctx=2048)
    assert type(engine) is fake_providers["LocalEngine"]
    assert (engine.args, engine.kwargs) == ((), {"n_ctx": 2048})

    engine = get_engine("local:1.5b")
    assert engine.kwargs == {"size": "1.5b"}

    engine = get_engine("llamacpp:/m/x.gguf", seed=3)
    assert (engine.args, engine.kwargs) == ((Path("/m/x.gguf"),), {"seed": 3})

    with pytest.raises(ConfigError, match="size"):
        get_engine("local:1.5b", size="0.5b")


def test_dispatch_batched_local(fake_providers: dict[str, type]) -> None:
    assert get_engine("local+batch").kwargs == {"n_parallel": 8}
    assert get_engine("local:1.5b+batch16").kwargs == {"size": "1.5b", "n_parallel": 16}
    assert get_engine("llamacpp:/m/x.gguf+batch4").kwargs == {"n_parallel": 4}
    assert get_engine("local:0.5b-q4_0+batch").kwargs == {"size": "0.5b", "weights": "q4_0",
                                                         "n_parallel": 8}
    with pytest.raises(ConfigError, match="N >= 2"):
        get_engine("local+batch1")


class _ProviderWithoutSDK(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves a `textprop.engines.anthropic` whose import needs the (absent) anthropic SDK."""

    def find_spec(self, name, path, target=None):  # noqa: ANN001, ANN201
        if name == "textprop.engines.anthropic":
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):  # noqa: ANN001, ANN201
        return None

    def exec_module(self, module) -> None:  # noqa: ANN001
        import anthropic  # noqa: F401


def test_missing_anthropic_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "textprop.engines.anthropic", raising=False)
    monkeypatch.setitem(sys.modules, "anthropic", None)  # `import anthropic` now fails
    monkeypatch.setattr(sys, "meta_path", [_ProviderWithoutSDK(), *sys.meta_path])
    with pytest.raises(EngineUnavailableError, match=r"pip install 'textprop\[anthropic\]'"):
        get_engine("claude-3-haiku-20240307")


def test_real_openai_classes_when_present() -> None:
    openai_compat = pytest.importorskip("textprop.engines.openai_compat")
    engine = get_engine("openai-compatible:qwen@http://127.0.0.1:9/v1", api_key="x")
    assert isinstance(engine, openai_compat.OpenAIEngine)
    assert (engine.name, engine.base_url) == ("openai-compatible:qwen", "http://127.0.0.1:9/v1")
    engine = get_engine("ollama-llama3")
    assert (engine.name, engine.base_url) == ("ollama:llama3", OLLAMA_BASE_URL)
    assert get_engine("gpt-4o-mini", api_key="x").name == "openai:gpt-4o-mini"


def test_real_anthropic_class_when_present() -> None:
    pytest.importorskip("anthropic")
    provider = pytest.importorskip("textprop.engines.anthropic")
    engine = get_engine("opus", api_key="x")
    assert isinstance(engine, provider.AnthropicEngine)
    assert engine.name == "anthropic:claude-3-opus-20240229"


def test_import_is_lazy() -> None:
    """Importing the registry must not import any provider SDK or llama_cpp."""
    code = ("import sys, textprop.engines.registry, textprop.engines.local\n"
            "heavy = {'llama_cpp', 'openai', 'anthropic', 'textprop.engines.openai_compat'}\n"
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_a_llama_cpp_server_spec_selects_its_structured_output_form():
    from textprop.engines.registry import get_engine

    spec = parse_spec("llama-server:qwen@http://127.0.0.1:8123/v1")
    assert (spec.kind, spec.model, spec.base_url, spec.provider) == (
        "openai-compatible", "qwen", "http://127.0.0.1:8123/v1", "llama.cpp")
    assert parse_spec("llama-server:qwen").base_url == "http://localhost:8080/v1"
    engine = get_engine("llama-server:qwen@http://127.0.0.1:8123/v1")
    assert engine.response_format({"type": "object"}) == {
        "type": "json_object", "schema": {"type": "object"}}
