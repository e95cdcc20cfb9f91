"""TextGrad's `engine` module path: `EngineLM` and TextGrad's `get_engine`.

`get_engine(engine_name, cache=..., seed=..., check_cache=...)` takes TextGrad's names and
keywords and returns a textprop engine with the standard layers (retry, the persistent SQLite
cache, metering). TextGrad's `experimental:MODEL` (its LiteLLM engines) maps to textprop's own
providers: `experimental:gpt-4o` -> OpenAI, `experimental:claude-...` or
`experimental:anthropic/MODEL` -> Anthropic, `experimental:ollama/MODEL` -> Ollama; no litellm.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from textprop.engines.base import Engine, EngineLM
from textprop.errors import ConfigError

EXPERIMENTAL = "experimental:"
# LiteLLM's provider prefixes -> textprop spec prefixes
_LITELLM_PREFIXES = {"openai/": "openai:", "anthropic/": "anthropic:", "ollama/": "ollama:",
                     "ollama_chat/": "ollama:", "hosted_vllm/": "vllm:"}
CACHE_FILE = "textprop-llm-cache.sqlite3"


def _spec(engine_name: str) -> tuple[str, bool]:
    """textprop's spec for a TextGrad engine name, and whether it was `experimental:`."""
    if not engine_name.startswith(EXPERIMENTAL):
        return engine_name, False
    name = engine_name[len(EXPERIMENTAL):]
    for prefix, spec in _LITELLM_PREFIXES.items():
        if name.startswith(prefix):
            return spec + name[len(prefix):], True
    return name, True


def _cache_path(cache: Any) -> Path | None | bool:
    """None: the default file; False: no cache; else the SQLite file to use."""
    if cache is True or cache is None:
        return None
    if cache is False:
        return False
    if isinstance(cache, str | os.PathLike):
        return Path(cache)
    directory = getattr(cache, "directory", None)  # a diskcache.Cache: keep ours beside it
    if isinstance(directory, str | os.PathLike):
        return Path(directory) / CACHE_FILE
    raise ConfigError(f"cache must be True, False, a file path or a diskcache.Cache, got "
                      f"{type(cache).__name__}", field="cache")


def get_engine(engine_name: str, *, cache: Any = None, seed: int | None = None,
               check_cache: bool = True, **kwargs: Any) -> Engine:
    """A textprop engine for a TextGrad engine name (or any textprop spec).

    `cache`: True (the default file, `textprop.engines.cache.default_cache_path()`), False
    (no cache), a file path, or a diskcache.Cache (a file in its directory). As in TextGrad
    the cache is on by default, except for `experimental:` engines. `check_cache=False`
    asks the model afresh and records the answer. `seed` is sent with every request.
    Other keywords go to the provider, e.g. `base_url=`, `api_key=`.
    """
    from textprop.engines.cache import Cache
    from textprop.engines.registry import get_engine as provider_for
    from textprop.engines.seeded import Seeded
    from textprop.engines.stack import build_stack, find_layer

    spec, experimental = _spec(engine_name)
    if cache is None and experimental:
        cache = False
    path = _cache_path(cache)
    engine, _ = build_stack(provider_for(spec, **kwargs), cache=path, concurrency=None)
    if not check_cache and (layer := find_layer(engine, Cache)) is not None:
        layer.mode = "refresh"
    return engine if seed is None else Seeded(engine, seed)


__all__ = ["EngineLM", "get_engine"]
