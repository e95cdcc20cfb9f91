"""A run killed with SIGKILL mid-step resumes without losing a step or paying twice.

The run is a real `textprop optimize` subprocess talking HTTP to the OpenAI-compatible test
server, which sees every request actually sent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from textprop.ledger import Ledger
from textprop.testing.server import TestServer

from .fake_pipeline import IMPROVED, server_reply, write_run_config

REPO = Path(__file__).resolve().parents[2]


def config_for(tmp_path: Path, base_url: str) -> Path:
    return Path(write_run_config(
        tmp_path, engine=f"openai-compatible:fake@{base_url}",
        train=[(i, i + 1) for i in range(8)], val=[(2, 2), (4, 5), (6, 1), (3, 3)],
        test=[(9, 9), (1, 1)], engines={"concurrency": 1},
        trainer={"batch_size": 2, "steps_per_epoch": 3, "acceptance": "non_decrease"}))


def optimize(config: Path, run_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": "sk-test"}
    return subprocess.Popen(
        [sys.executable, "-m", "textprop.cli", "optimize", str(config), "--run-dir",
         str(run_dir), "--json", *extra], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def recorded_steps(run_dir: Path) -> int:
    if not (run_dir / "ledger.sqlite3").exists():
        return 0
    return len(Ledger.in_run(run_dir).steps())


def kill_mid_request(proc: subprocess.Popen, server: TestServer, run_dir: Path,
                     after_steps: int) -> set[str]:
    """SIGKILL once `after_steps` steps are in the ledger, while the next step's request
    is in flight (well into its latency). Returns the bodies in flight at the kill: the
    server may still finish them after it, so they are read at the kill's moment."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        current = [r for r in server.requests if r.ended is None]
        if current and time.monotonic() - current[0].arrived > server.latency / 2 and \
                recorded_steps(run_dir) == after_steps:
            killed_at = time.monotonic()
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            return {json.dumps(r.body, sort_keys=True) for r in server.requests
                    if r.arrived <= killed_at and (r.ended is None or r.ended >= killed_at)}
        time.sleep(0.005)
    proc.kill()
    raise AssertionError(f"the run never reached step {after_steps}: {proc.stderr.read()}")


def test_sigkill_mid_step_then_resume_keeps_every_step_and_pays_no_call_twice(tmp_path):
    with TestServer(latency=0.15, reply=server_reply) as server:
        config = config_for(tmp_path, server.base_url)
        run_dir = tmp_path / "run"
        first = optimize(config, run_dir)
        in_flight_at_kill = kill_mid_request(first, server, run_dir,
                                             after_steps=2)  # baseline and step 1
        ledger_after_kill = Ledger.in_run(run_dir).steps()

        second = optimize(config, run_dir, "--resume")
        out, err = second.communicate(timeout=120)

    assert second.returncode == 0, err
    assert [s["status"] for s in ledger_after_kill] == ["baseline", "accepted"]
    steps = Ledger.in_run(run_dir).steps()
    assert [s["status"] for s in steps][:2] == ["baseline", "accepted"]
    assert steps[:2] == ledger_after_kill  # nothing accepted was lost or rewritten
    assert len(steps) == 4 and json.loads(out)["values"] == {"system_prompt": IMPROVED}
    sent = Counter(json.dumps(r.body, sort_keys=True) for r in server.requests
                   if r.path.endswith("/chat/completions"))
    repeated = {body for body, n in sent.items() if n > 1}
    assert len(in_flight_at_kill) == 1
    assert repeated <= in_flight_at_kill
