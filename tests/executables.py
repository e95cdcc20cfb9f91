"""Tests that drive a real program (a browser, a terminal multiplexer) find it here: missing,
they skip, unless CI asks for it with TEXTPROP_REQUIRE_<NAME>=1, and then they fail."""

from __future__ import annotations

import os
import shutil

import pytest


def require_executable(name: str) -> str:
    """The path of `name` on PATH (its Debian package has the same name)."""
    path = shutil.which(name)
    if path is None:
        flag = f"TEXTPROP_REQUIRE_{name.upper()}"
        if os.environ.get(flag) == "1":
            pytest.fail(f"{flag}=1 but `{name}` is not on PATH")
        pytest.skip(f"`{name}` is not on PATH (Debian: apt-get install {name}); set "
                    f"{flag}=1 to make this a failure")
    return path
