"""`import textprop` has no side effects: no files, no folders, no network clients."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_import_creates_nothing_and_loads_no_network_or_database_module(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    code = ("import json, sys, threading; import textprop; "
            "print(json.dumps({'modules': sorted(sys.modules), "
            "'threads': threading.active_count()}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                            capture_output=True, text=True, check=True)
    loaded = json.loads(result.stdout)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]
    assert list(home.iterdir()) == []
    assert not {"openai", "anthropic", "httpx", "sqlite3", "llama_cpp", "socket"} & set(
        loaded["modules"]) - {"socket"}  # socket may come from the stdlib's asyncio
    assert {"openai", "anthropic", "httpx", "sqlite3", "llama_cpp"}.isdisjoint(
        loaded["modules"])
    assert loaded["threads"] == 1
