"""Storage faults: a damaged cache is bypassed, a damaged ledger, a full disk or a read-only
run folder is one error naming the file, and the reading commands work on a read-only run.
Issue 14, item 3.

Full disks and read-only folders are real: a small tmpfs and a read-only bind mount (root
ignores permission bits, so chmod would prove nothing). Where mounting is not permitted
those tests are skipped, saying so.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from textprop.cli import main
from textprop.ledger import Ledger
from textprop.testing.server import TestServer

from .fake_pipeline import IMPROVED, cli_process, server_reply, write_run_config


def config_for(tmp_path: Path, base_url: str, **sections: dict) -> Path:
    return Path(write_run_config(
        tmp_path, engine=f"openai-compatible:fake@{base_url}", train=[(1, 2), (3, 4)],
        val=[(2, 2), (4, 5)], test=[(9, 9)], trainer={"batch_size": 2, "steps_per_epoch": 1},
        **sections))


def chat_requests(server: TestServer) -> list:
    return [r for r in server.requests if r.path.endswith("/chat/completions")]


def lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """`folder` as a read-only bind mount of itself, for the block."""
    try:
        _mount("--bind", str(folder), str(folder))
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"cannot bind-mount here, so no read-only folder to test: {error}")
    try:
        _mount("-o", "remount,ro,bind", str(folder))
        yield folder
    finally:
        gc.collect()  # connections a test left open
        subprocess.run(["umount", "-l", str(folder)], check=False)


@contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    try:
        _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"cannot mount a tmpfs here, so no full disk to test: {error}")
    try:
        yield folder
    finally:
        gc.collect()  # connections a test left open
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(path: Path) -> None:
    """Fill the file system `path` is on, to the last byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 16, 1 << 10, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


# --- the cache ----------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_cache_is_bypassed_with_one_warning_naming_it(tmp_path, capsys, damage):
    with TestServer(reply=server_reply) as server:
        config = config_for(tmp_path, server.base_url)
        cache = tmp_path / "cache.sqlite3"
        if damage == "garbage":
            cache.write_bytes(b"this is not an sqlite file at all\n" * 200)
        else:  # a real cache cut in the middle of its pages
            assert main(["optimize", str(config), "--run-dir", str(tmp_path / "first"),
                         "--quiet"]) == 0
            data = cache.read_bytes()
            for suffix in ("-wal", "-shm"):
                Path(f"{cache}{suffix}").unlink(missing_ok=True)
            cache.write_bytes(data[:100] + b"\0" * 50 + data[4096:6000])
        capsys.readouterr()

        code = main(["optimize", str(config), "--run-dir", str(tmp_path / "run"), "--json"])
        out, err = capsys.readouterr()

    assert code == 0, err
    assert json.loads(out)["values"] == {"system_prompt": IMPROVED}
    warnings = [line for line in lines(err) if line.startswith("textprop: warning: the LLM cache")]
    assert len(warnings) == 1 and str(cache) in warnings[0] and "without it" in warnings[0]
    assert "Traceback" not in err


# --- the ledger ---------------------------------------------------------------------------
def finished_run(tmp_path: Path, server: TestServer) -> tuple[Path, Path]:
    config = config_for(tmp_path, server.base_url)
    run = tmp_path / "run"
    assert main(["optimize", str(config), "--run-dir", str(run), "--quiet"]) == 0
    return config, run


@pytest.mark.parametrize("damage", ["zero-length", "garbage"])
def test_resume_refuses_a_damaged_ledger_and_does_not_start_afresh(tmp_path, capsys, damage):
    with TestServer(reply=server_reply) as server:
        config, run = finished_run(tmp_path, server)
        ledger = run / "ledger.sqlite3"
        for suffix in ("-wal", "-shm"):
            Path(f"{ledger}{suffix}").unlink(missing_ok=True)
        ledger.write_bytes(b"" if damage == "zero-length" else b"\x13garbage" * 512)
        before, sent = ledger.read_bytes(), len(chat_requests(server))
        capsys.readouterr()

        code = main(["optimize", str(config), "--run-dir", str(run), "--resume", "--quiet"])
        _, err = capsys.readouterr()

        assert code == 1
        [line] = lines(err)
        assert line.startswith(f"textprop: error: {ledger}: ") and "damaged" in line, line
        assert ledger.read_bytes() == before and len(chat_requests(server)) == sent

        for command in (["history", str(run)], ["export", str(run)]):
            assert main(command) == 1
            [line] = lines(capsys.readouterr().err)
            assert line.startswith(f"textprop: error: {ledger}: "), line


def test_reading_commands_work_on_a_read_only_run_folder(tmp_path, capsys):
    with TestServer(reply=server_reply) as server:
        config, run = finished_run(tmp_path, server)
    for suffix in ("-wal", "-shm"):
        assert not Path(f"{run / 'ledger.sqlite3'}{suffix}").exists()  # closed cleanly
    capsys.readouterr()
    out_dir = tmp_path / "elsewhere"

    with read_only(run):
        assert main(["history", str(run)]) == 0
        assert "accepted" in capsys.readouterr().out
        assert main(["diff", str(run), "0", "1"]) == 0
        assert f"+{IMPROVED}" in capsys.readouterr().out
        assert main(["export", str(run), "--out", str(out_dir / "export")]) == 0
        assert main(["report", str(run), "--out", str(out_dir / "report.html")]) == 0
        capsys.readouterr()

        assert main(["export", str(run)]) == 1  # the default export folder is in the run
        [line] = lines(capsys.readouterr().err)
        assert line.startswith(f"textprop: error: {run / 'export'}: ") and "read-only" in line

        assert main(["optimize", str(config), "--run-dir", str(run), "--resume"]) == 1
        [line] = lines(capsys.readouterr().err)
        assert line.startswith("textprop: error: ") and "read-only" in line, line

    assert (out_dir / "export" / "system_prompt.txt").read_text() == IMPROVED + "\n"
    assert (out_dir / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_a_disk_full_mid_run_is_one_error_and_the_run_resumes_once_there_is_room(tmp_path,
                                                                                 capsys):
    with small_disk(tmp_path / "disk", "2m") as disk:
        filler, step_one, filled = disk / "filler", {"What is 1 + 2?", "What is 3 + 4?"}, []

        def reply(body: dict) -> str:  # the disk fills up during the first call of step 1
            # (a training question: the baseline's test call may arrive after it)
            if body["messages"][-1]["content"] in step_one and not filled:
                filled.append(body)
                fill(filler)
            return server_reply(body)

        with TestServer(reply=reply) as server:
            config = config_for(tmp_path, server.base_url)
            run = disk / "run"
            first = cli_process("optimize", config, "--run-dir", run, "--quiet")
            _, err = first.communicate(timeout=60)
            assert first.returncode == 1, err
            [line] = [x for x in lines(err) if not x.startswith("textprop: warning: ")]
            assert line.startswith(f"textprop: error: {run / 'ledger.sqlite3'}: ") \
                and "disk is full" in line, err
            baseline = Ledger.in_run(run, read_only=True).steps()
            assert [s["status"] for s in baseline] == ["baseline"]

            filler.unlink()
            code = main(["optimize", str(config), "--run-dir", str(run), "--resume", "--json"])
            out, err = capsys.readouterr()

        assert code == 0, err
        assert json.loads(out)["values"] == {"system_prompt": IMPROVED}
        steps = Ledger.in_run(run).steps()
        assert [s["status"] for s in steps] == ["baseline", "accepted"]
        assert steps[0] == baseline[0]
