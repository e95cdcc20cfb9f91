"""The engine layer: one interface, providers, and layers that wrap any engine.

Providers and layers import their SDKs lazily, so `import textprop` stays fast.
"""

from textprop.engines.base import (
    Completion,
    Engine,
    EngineLM,
    Message,
    Request,
    Usage,
    as_engine,
)
from textprop.engines.scripted import ScriptedEngine


def get_engine(spec: str, **kwargs) -> Engine:  # noqa: ANN003
    """Build an engine from a spec such as 'local', 'openai:gpt-4o-mini' or 'gpt-4o'."""
    from textprop.engines.registry import get_engine as _get_engine

    return _get_engine(spec, **kwargs)


__all__ = ["Completion", "Engine", "EngineLM", "Message", "Request", "ScriptedEngine", "Usage",
           "as_engine", "get_engine"]
