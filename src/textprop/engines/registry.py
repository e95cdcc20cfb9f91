"""Engine specs: one string names a provider and a model, `get_engine` builds the engine.

Accepted specs (the provider prefix is case-insensitive, model names are kept as written):

    local                         embedded Qwen2.5-Coder-0.5B via llama.cpp (the default)
    local:0.5b | local:1.5b       embedded model of that size
    local:0.5b-q4_0 | local:1.5b-q8_0   re-encoded weights (Q4_0 batches faster on AVX2 CPUs)
    local+batch[N] | local:1.5b+batch[N]   the same, batched: N calls decoded together
                                  (default 8); faster, not byte-for-byte deterministic
    llamacpp:/path/model.gguf     any GGUF file, run by llama.cpp in process
    openai:MODEL                  OpenAI                      e.g. openai:gpt-4o-mini
    anthropic:MODEL               Anthropic                   e.g. anthropic:claude-sonnet-4-5
    openai-compatible:MODEL@URL   any OpenAI-compatible server e.g. ...:qwen2.5@http://gpu:8000/v1
    MODEL@URL                     the same, shorter; URL must start with http:// or https://
    ollama:MODEL | ollama-MODEL   Ollama at $OLLAMA_BASE_URL or http://localhost:11434/v1
    vllm:MODEL | vllm-MODEL       a vLLM server at http://localhost:8000/v1
    llama-server:MODEL[@URL]      a llama.cpp server (llama-server, python -m llama_cpp.server)
                                  at http://localhost:8080/v1; structured output in its form

TextGrad's names work unchanged: `gpt-4o`, `gpt-4o-mini`, `gpt-3.5-turbo`, any `gpt-*`,
`chatgpt-*` or `o1`/`o3`/`o4...` name -> OpenAI; any `claude-*` name -> Anthropic; the shortcuts
`opus`, `haiku`, `sonnet`, `sonnet-3.5` (and `vllm-llama-3-8b`) expand as in TextGrad. Unlike
TextGrad, `vllm-MODEL` talks to a running vLLM server instead of loading vLLM in process.

Keyword arguments go to the engine class, e.g. `get_engine("local", n_ctx=8192)` or, for a
llama.cpp server, `get_engine("qwen@http://host:8080/v1", provider="llama.cpp")`.

`MODEL@URL` is accepted because a model name never contains "@http://" or "@https://", so it
cannot be mistaken for anything else; the split is at the first such marker.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from textprop.engines.base import Engine
from textprop.errors import ConfigError, EngineUnavailableError

EngineKind = Literal["local", "llamacpp", "openai", "anthropic", "openai-compatible"]

OLLAMA_BASE_URL = "http://localhost:11434/v1"
LLAMA_SERVER_URL = "http://localhost:8080/v1"  # llama-server and llama_cpp.server
VLLM_BASE_URL = "http://localhost:8000/v1"

# TextGrad's __ENGINE_NAME_SHORTCUTS__ (the together-* one has no provider here).
SHORTCUTS = {
    "opus": "claude-3-opus-20240229",
    "haiku": "claude-3-haiku-20240307",
    "sonnet": "claude-3-sonnet-20240229",
    "sonnet-3.5": "claude-3-5-sonnet-20240620",
    "vllm-llama-3-8b": "vllm-meta-llama/Meta-Llama-3-8B-Instruct",
}

ACCEPTED_FORMS = (
    "'local', 'local:0.5b', 'local:1.5b', 'local:0.5b-q4_0', 'llamacpp:/path/model.gguf', "
    "'openai:MODEL', 'anthropic:MODEL', 'openai-compatible:MODEL@http://host:port/v1', "
    "'MODEL@http://host:port/v1', 'ollama:MODEL' (or 'ollama-MODEL'), 'vllm:MODEL' "
    "(or 'vllm-MODEL'), 'llama-server:MODEL@http://host:port/v1', or a bare "
    "OpenAI/Anthropic model name such as 'gpt-4o', "
    "'gpt-4o-mini', 'claude-3-5-sonnet-20240620', 'opus', 'haiku', 'sonnet', 'sonnet-3.5'"
)

_AT_URL = re.compile(r"^(?P<model>.+?)@(?P<url>https?://\S+)$")
_OPENAI_NAME = re.compile(r"^(gpt-|chatgpt-|o\d)", re.IGNORECASE)


@dataclass(frozen=True)
class EngineSpec:
    """A parsed spec. `provider` labels OpenAI-compatible servers (ollama, vllm, ...)."""

    kind: EngineKind
    model: str | None = None
    base_url: str | None = None
    path: Path | None = None
    size: str | None = None
    provider: str | None = None
    n_parallel: int | None = None  # local engines: "+batchN"
    weights: str | None = None  # local engines: "local:0.5b-q4_0"


_BATCH = re.compile(r"^(?P<base>.+?)\+batch(?P<n>\d*)$", re.IGNORECASE)


def public_spec(spec: str) -> str:
    """`spec` as it may be stored or shown: a URL in it loses its user info, query and
    fragment (any of them may hold a credential)."""
    from textprop.engines.sdk import public_url

    return re.sub(r"https?://[^\s@/]*@?[^\s]*",
                  lambda m: public_url(m.group(0)), spec) if "://" in spec else spec


def _fail(spec: str, why: str) -> ConfigError:
    return ConfigError(f"engine spec {public_spec(spec)!r}: {why}. "
                       f"Accepted forms: {ACCEPTED_FORMS}")


def _model(spec: str, model: str, what: str) -> str:
    model = model.strip()
    if not model:
        raise _fail(spec, f"{what} needs a model name after the colon")
    return model


def _compatible(spec: str, rest: str, provider: str, default_url: str | None) -> EngineSpec:
    """`MODEL@URL`, or a bare `MODEL` when the provider has a default URL."""
    if rest.strip().startswith("@"):
        raise _fail(spec, f"{provider} needs a model name before '@': "
                          f"'{provider}:MODEL@http://host:port/v1'")
    if match := _AT_URL.match(rest.strip()):
        return EngineSpec("openai-compatible", _model(spec, match["model"], provider),
                          base_url=match["url"].rstrip("/"), provider=provider)
    if default_url is None:
        raise _fail(spec, f"{provider} needs the server URL: '{provider}:MODEL@http://host:port/v1'")
    if "@" in rest:
        raise _fail(spec, "the part after '@' must be a URL starting with http:// or https://")
    return EngineSpec("openai-compatible", _model(spec, rest, provider), base_url=default_url,
                      provider=provider)


def parse_spec(spec: str) -> EngineSpec:
    """Parse an engine spec (see the module docstring); raises `ConfigError` listing the forms."""
    if not isinstance(spec, str):
        raise TypeError(f"an engine spec is a string, got {type(spec).__name__}")
    text = SHORTCUTS.get(spec.strip(), spec.strip())
    if not text:
        raise _fail(spec, "it is empty")
    prefix, colon, rest = text.partition(":")
    kind = prefix.strip().lower() if colon else ""

    batch = _BATCH.match(text)
    if batch and batch["base"].strip().lower().startswith(("local", "llamacpp:")):
        from dataclasses import replace

        from textprop.engines.local import BATCH_N_PARALLEL

        n = int(batch["n"]) if batch["n"] else BATCH_N_PARALLEL
        if n < 2:
            raise _fail(spec, "'+batchN' needs N >= 2 (plain 'local' runs one call at a time)")
        return replace(parse_spec(batch["base"]), n_parallel=n)
    if text.lower() == "local":
        return EngineSpec("local")
    if kind == "local":
        from textprop.engines.local import MODELS
        from textprop.engines.local_weights import WEIGHTS

        size, dash, weights = rest.strip().lower().partition("-")
        if size not in MODELS:
            raise _fail(spec, f"unknown local model size {size!r} (known: "
                              f"{', '.join(MODELS)}); for a GGUF file use 'llamacpp:/path'")
        if dash and weights not in WEIGHTS:
            raise _fail(spec, f"unknown local weights {weights!r} (known: {', '.join(WEIGHTS)})")
        return EngineSpec("local", size=size, weights=weights or None)
    if kind == "llamacpp":
        if not rest.strip():
            raise _fail(spec, "llamacpp needs a model file path: 'llamacpp:/path/model.gguf'")
        return EngineSpec("llamacpp", path=Path(rest.strip()).expanduser())
    if kind in ("openai", "anthropic"):
        if _AT_URL.match(rest.strip()):
            raise _fail(spec, f"{kind}:MODEL takes no URL; for another server use "
                              "'openai-compatible:MODEL@http://host:port/v1'")
        return EngineSpec(kind, _model(spec, rest, kind))
    if kind == "openai-compatible":
        return _compatible(spec, rest, "openai-compatible", None)
    if kind == "llama-server":  # llama.cpp's server wants its own JSON-schema form
        return _compatible(spec, rest, "llama.cpp", LLAMA_SERVER_URL)
    if kind == "ollama":
        return _compatible(spec, rest, "ollama", _ollama_url())
    if kind == "vllm":
        return _compatible(spec, rest, "vllm", VLLM_BASE_URL)

    # Bare names, as TextGrad's get_engine takes them.
    if text.startswith("ollama-"):
        return _compatible(spec, text.removeprefix("ollama-"), "ollama", _ollama_url())
    if text.startswith("vllm-"):
        return _compatible(spec, text.removeprefix("vllm-"), "vllm", VLLM_BASE_URL)
    if match := _AT_URL.match(text):
        return EngineSpec("openai-compatible", match["model"].strip(),
                          base_url=match["url"].rstrip("/"), provider="openai-compatible")
    if _OPENAI_NAME.match(text):
        return EngineSpec("openai", text)
    if text.lower().startswith("claude"):
        return EngineSpec("anthropic", text)
    raise _fail(spec, "unknown engine")


def _ollama_url() -> str:
    """TextGrad reads OLLAMA_BASE_URL too; keep that working."""
    return os.environ.get("OLLAMA_BASE_URL") or OLLAMA_BASE_URL


def _merge(kwargs: dict[str, Any], key: str, value: Any, spec: str) -> None:
    """Set `key` from the spec unless a keyword already says the same; refuse a contradiction."""
    if key in kwargs and kwargs[key] is not None and kwargs[key] != value:
        raise ConfigError(f"engine spec {spec!r} gives {key}={value!r} but the keyword "
                          f"argument says {key}={kwargs[key]!r}")
    kwargs[key] = value


def get_engine(spec: str, **kwargs: Any) -> Engine:
    """Build the engine `spec` names; `kwargs` go to the engine class.

    Provider classes are imported here, not at module import, so `import textprop` stays
    fast and needs no optional SDK.
    """
    parsed = parse_spec(spec)
    if parsed.kind in ("local", "llamacpp"):
        from textprop.engines.local import LocalEngine

        if parsed.kind == "llamacpp":
            if parsed.n_parallel is not None:
                _merge(kwargs, "n_parallel", parsed.n_parallel, spec)
            return LocalEngine(parsed.path, **kwargs)
        if parsed.size is not None:
            _merge(kwargs, "size", parsed.size, spec)
        if parsed.weights is not None:
            _merge(kwargs, "weights", parsed.weights, spec)
        if parsed.n_parallel is not None:
            _merge(kwargs, "n_parallel", parsed.n_parallel, spec)
        return LocalEngine(**kwargs)
    if parsed.kind == "anthropic":
        try:
            from textprop.engines.anthropic import AnthropicEngine
        except ModuleNotFoundError as exc:
            if exc.name != "anthropic":
                raise
            raise EngineUnavailableError(
                "the Anthropic engine needs the anthropic SDK. Install it with: "
                "pip install 'textprop[anthropic]'", provider="anthropic") from exc
        return AnthropicEngine(parsed.model, **kwargs)

    from textprop.engines.openai_compat import OpenAIEngine

    if parsed.kind == "openai-compatible":
        _merge(kwargs, "base_url", parsed.base_url, spec)
        kwargs.setdefault("provider", parsed.provider or "openai-compatible")
    return OpenAIEngine(parsed.model, **kwargs)
