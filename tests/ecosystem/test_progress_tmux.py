"""The whole-run progress display in a real terminal: tmux runs `textprop optimize`, the
test reads the pane while the run goes on and after it ends."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from textprop.testing.server import TestServer

from ..executables import require_executable
from ..train.fake_pipeline import server_reply, write_run_config


class Pane:
    def __init__(self, tmux: str, name: str, command: str, socket: Path) -> None:
        self.tmux, self.name, self.socket = tmux, name, str(socket)
        self._run("new-session", "-d", "-s", name, "-x", "160", "-y", "40")
        self._run("send-keys", "-t", name, command + "; echo EXIT=$?", "Enter")

    def _run(self, *args: str) -> str:
        return subprocess.run([self.tmux, "-S", self.socket, *args], check=True,
                              capture_output=True, text=True).stdout

    def text(self) -> str:
        return self._run("capture-pane", "-p", "-t", self.name)

    def wait_for(self, pattern: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if re.search(pattern, text):
                return text
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} never appeared in the pane:\n{self.text()}")

    def close(self) -> None:
        subprocess.run([self.tmux, "-S", self.socket, "kill-server"], capture_output=True)


def command(config: str, *extra: str) -> str:
    return " ".join(shlex.quote(a) for a in [sys.executable, "-m", "textprop.cli",
                                            "optimize", config, *extra])


@pytest.fixture
def pane_factory(tmp_path):
    tmux = require_executable("tmux")
    panes: list[Pane] = []

    def make(name: str, cmd: str) -> Pane:
        pane = Pane(tmux, name, f"cd {shlex.quote(str(Path.cwd()))} && {cmd}",
                    tmp_path / f"{name}.sock")
        panes.append(pane)
        return pane
    yield make
    for pane in panes:
        pane.close()


def config_for(tmp_path: Path, base_url: str) -> str:
    return write_run_config(
        tmp_path, engine=f"openai-compatible:fake@{base_url}",
        train=[(i, i + 1) for i in range(8)], val=[(2, 2), (4, 6), (6, 1)],
        test=[(9, 9), (1, 1)], run={"name": "live", "dir": str(tmp_path / "runs")},
        cache={"enabled": False}, engines={"concurrency": 2},
        trainer={"batch_size": 2, "steps_per_epoch": 3},
        budget={"max_tokens": 90000})


STATUS = (r"step (\d)/3 \| (\d+)/\d+ calls \| [\d.]+k?/90\.0k tokens \| \$0\.0000 \| "
          r"\d+:\d\d elapsed")


def test_one_status_line_shows_the_whole_run_in_a_terminal(tmp_path, pane_factory):
    with TestServer(latency=0.3, reply=server_reply) as server:
        pane = pane_factory("run", command(config_for(tmp_path, server.base_url)))
        during = pane.wait_for(STATUS + r" \| ~\d+:\d\d left")
        done = pane.wait_for(r"EXIT=\d")
    status = [line for line in during.splitlines() if re.match(STATUS, line)]
    assert len(status) == 1, during  # one line, redrawn in place
    assert "run folder:" in during  # messages print above it
    assert "no price known" in during  # a warning too, on its own line
    assert not any("elapsed" in line and "RuntimeWarning" in line
                   for line in during.splitlines())
    assert "EXIT=0" in done
    lines = done.splitlines()
    final = [line for line in lines if re.match(STATUS, line)]
    assert len(final) == 1, done  # the last state stays on screen, once
    assert re.match(r"step 3/3 ", final[0])
    assert "left" not in final[0]
    assert lines.index(final[0]) < next(i for i, x in enumerate(lines) if "report:" in x)
    assert any(line.startswith("spent: ") and "estimated at most" in line for line in lines)


def test_quiet_shows_no_progress_in_a_terminal(tmp_path, pane_factory):
    with TestServer(reply=server_reply) as server:
        pane = pane_factory("quiet", command(config_for(tmp_path, server.base_url),
                                             "--quiet"))
        done = pane.wait_for(r"EXIT=\d")
    assert "EXIT=0" in done
    assert "elapsed" not in done and "run folder:" not in done
    assert "validation: 0.000 -> 1.000" in done
