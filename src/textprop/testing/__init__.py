"""Test helpers: a real OpenAI-compatible HTTP server with fault injection.

Imported lazily, so `python -m textprop.testing.server` does not load the module twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from textprop.testing.server import Fault, RecordedRequest, TestServer, last_user_text

__all__ = ["Fault", "RecordedRequest", "TestServer", "last_user_text"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from textprop.testing import server

        return getattr(server, name)
    raise AttributeError(f"module 'textprop.testing' has no attribute {name!r}")
