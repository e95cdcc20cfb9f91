"""Run a benchmark's child process with a deadline, shared by the harnesses (B2, B4)."""

from __future__ import annotations

import signal
import subprocess
import time


def run_bounded(cmd: list[str], deadline_s: float, *, grace_s: float = 60.0,
                **kw) -> tuple[subprocess.CompletedProcess, float, bool]:
    """`cmd`'s result, its wall seconds and whether the deadline stopped it.

    SIGTERM at the deadline, so the child writes its partial results; SIGKILL `grace_s`
    later. If the harness itself is stopped, the child is killed with it.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kw)
    killed = False
    try:
        out, err = proc.communicate(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        killed = True
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    except BaseException:
        proc.kill()
        raise
    return (subprocess.CompletedProcess(cmd, proc.returncode, out, err),
            time.perf_counter() - started, killed)
