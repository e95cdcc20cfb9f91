"""The one check every real-model test starts with."""

from __future__ import annotations

import os

import pytest

from textprop.engines.local import MODELS, check_available
from textprop.errors import EngineUnavailableError


def require_local_model(size: str = "0.5b") -> None:
    """Skip when the embedded model is not installed; fail instead under CI's
    TEXTPROP_REQUIRE_LOCAL=1, where the real model must run."""
    try:
        check_available(MODELS[size])
    except EngineUnavailableError as exc:
        if os.environ.get("TEXTPROP_REQUIRE_LOCAL") == "1":
            pytest.fail(f"TEXTPROP_REQUIRE_LOCAL=1 but the local model is unavailable: {exc}")
        pytest.skip(f"needs the embedded model: {MODELS[size].install_command}")
