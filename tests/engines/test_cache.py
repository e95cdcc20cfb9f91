"""The SQLite cache: record once, rerun for free (even in a new process), replay offline."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import textwrap
import threading

import pytest

from textprop.engines.base import Message, Request
from textprop.engines.cache import Cache, cache_key, canonical_request, default_cache_path
from textprop.engines.scripted import ScriptedEngine
from textprop.engines.stack import build_stack, find_layer
from textprop.errors import CacheMissError, ConfigError, EngineError


def echo_engine(**kwargs) -> ScriptedEngine:
    return ScriptedEngine(default=lambda r: f"echo: {r.prompt}", **kwargs)


def rows(path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT key, role, completion, latency_s FROM completions").fetchall()


# -- hits and misses ------------------------------------------------------------------------


def test_a_repeated_request_is_answered_from_the_cache_without_calling_the_engine(tmp_path):
    inner = echo_engine(latency_s=0.02)
    cache = Cache(inner, tmp_path / "c.sqlite3")
    request = Request.chat("hello", "be brief")

    first = cache.complete(request)
    second = cache.complete(request)

    assert len(inner.requests) == 1
    assert (first.cached, second.cached) == (False, True)
    assert second.latency_s == 0.0 and first.latency_s >= 0.02
    assert (second.text, second.usage, second.finish_reason, second.model) == \
        (first.text, first.usage, first.finish_reason, first.model)
    [(_, role, _, recorded_latency)] = rows(cache.path)
    assert role == "other" and recorded_latency == pytest.approx(first.latency_s)


def test_sync_and_async_calls_share_one_cache(tmp_path):
    inner = echo_engine()
    cache = Cache(inner, tmp_path / "c.sqlite3")
    request = Request.chat("shared")

    cache.complete(request)
    again = asyncio.run(cache.acomplete(request))

    assert again.cached and again.text == "echo: shared"
    assert len(inner.requests) == 1


def test_parsed_structured_output_survives_the_round_trip(tmp_path):
    inner = ScriptedEngine(default={"answer": 4, "why": ["two", "plus", "two"]})
    cache = Cache(inner, tmp_path / "c.sqlite3")
    request = Request.chat("2+2?", json_schema={"type": "object"})

    fresh = cache.complete(request)
    hit = cache.complete(request)

    assert hit.cached and hit.parsed == fresh.parsed == {"answer": 4, "why": ["two", "plus", "two"]}


def test_the_role_tag_does_not_change_the_key(tmp_path):
    inner = echo_engine()
    cache = Cache(inner, tmp_path / "c.sqlite3")

    cache.complete(Request.chat("same prompt", role="forward"))
    hit = cache.complete(Request.chat("same prompt", role="loss"))

    assert hit.cached and len(inner.requests) == 1


BASE = Request.chat("What is 2+2?", "You are terse.", model="m", temperature=0.0,
                    max_tokens=64, seed=1, stop=["\n"], json_schema={"type": "object"})


@pytest.mark.parametrize("changed", [
    BASE.with_(model="other-model"),
    BASE.with_(model=None),
    BASE.with_(messages=(Message("system", "You are terse."), Message("user", "What is 2+3?"))),
    BASE.with_(messages=(Message("user", "You are terse."), Message("user", "What is 2+2?"))),
    BASE.with_(messages=BASE.messages[1:]),
    BASE.with_(temperature=0.7),
    BASE.with_(max_tokens=65),
    BASE.with_(max_tokens=None),
    BASE.with_(seed=2),
    BASE.with_(seed=None),
    BASE.with_(stop=("\n", "END")),
    BASE.with_(stop=()),
    BASE.with_(json_schema={"type": "array"}),
    BASE.with_(json_schema=None),
], ids=["model", "no-model", "content", "message-role", "no-system", "temperature",
        "max_tokens", "no-max_tokens", "seed", "no-seed", "stop", "no-stop", "schema",
        "no-schema"])
def test_every_answer_determining_field_changes_the_key(changed):
    assert cache_key("p:m", changed) != cache_key("p:m", BASE)


def test_the_engine_name_changes_the_key():
    assert cache_key("openai:gpt-4o", BASE) != cache_key("openai:gpt-4o-mini", BASE)


def test_equivalent_requests_share_a_key():
    reordered = BASE.with_(json_schema={"properties": {"a": {"type": "string"}},
                                        "type": "object"})
    same = BASE.with_(json_schema={"type": "object",
                                   "properties": {"a": {"type": "string"}}})
    assert cache_key("p:m", reordered) == cache_key("p:m", same)
    assert cache_key("p:m", BASE.with_(temperature=0)) == cache_key("p:m", BASE)
    assert cache_key("p:m", BASE.with_(stop=["\n"])) == cache_key("p:m", BASE)
    assert cache_key("p:m", BASE.with_(role="backward")) == cache_key("p:m", BASE)


def test_the_key_is_a_pinned_sha256_of_canonical_json_so_it_is_stable_across_machines():
    request = Request.chat("What is 2+2?", "You are terse.", model="gpt-4o-mini",
                           temperature=0.7, max_tokens=64, seed=7, stop=["\n\n"],
                           json_schema={"type": "object",
                                        "properties": {"answer": {"type": "integer"}}})
    assert canonical_request("openai:gpt-4o-mini", request) == (
        '{"engine":"openai:gpt-4o-mini","json_schema":{"properties":{"answer":'
        '{"type":"integer"}},"type":"object"},"max_tokens":64,"messages":[{"content":'
        '"You are terse.","role":"system"},{"content":"What is 2+2?","role":"user"}],'
        '"model":"gpt-4o-mini","seed":7,"stop":["\\n\\n"],"temperature":0.7,"v":1}')
    assert cache_key("openai:gpt-4o-mini", request) == \
        "3bf541a5fc0769f95ba90fdf9261476c2f374f5e7445dbd5795ce69d21fc2d53"


def test_a_schema_that_is_not_json_is_refused_rather_than_keyed_by_repr(tmp_path):
    cache = Cache(echo_engine(), tmp_path / "c.sqlite3")
    with pytest.raises(ConfigError, match="json_schema"):
        cache.complete(Request.chat("x", json_schema={"type": object()}))


# -- in-flight coalescing -------------------------------------------------------------------


def test_identical_concurrent_requests_are_paid_for_once(tmp_path):
    inner = echo_engine(latency_s=0.05)
    cache = Cache(inner, tmp_path / "c.sqlite3")

    async def main():
        return await asyncio.gather(*[cache.acomplete(Request.chat("same")) for _ in range(6)])

    results = asyncio.run(main())

    assert len(inner.requests) == 1
    assert sorted(r.cached for r in results) == [False] + [True] * 5
    assert {r.text for r in results} == {"echo: same"}


def test_identical_concurrent_sync_requests_from_threads_are_paid_for_once(tmp_path):
    inner = echo_engine(latency_s=0.05)
    cache = Cache(inner, tmp_path / "c.sqlite3")
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.complete(Request.chat("t"))))
               for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(inner.requests) == 1
    assert sorted(r.cached for r in results) == [False] + [True] * 4


def test_a_failure_reaches_every_waiter_and_is_not_cached(tmp_path):
    inner = ScriptedEngine(latency_s=0.05).queue(EngineError("boom"), "second try")
    cache = Cache(inner, tmp_path / "c.sqlite3")

    async def main():
        return await asyncio.gather(*[cache.acomplete(Request.chat("q")) for _ in range(3)],
                                    return_exceptions=True)

    results = asyncio.run(main())

    assert [type(r) for r in results] == [EngineError] * 3
    assert cache.count() == 0
    assert cache.complete(Request.chat("q")).text == "second try"
    assert len(inner.requests) == 2


def test_a_cancelled_caller_does_not_strand_the_identical_requests_waiting_on_it(tmp_path):
    inner = echo_engine(latency_s=0.1)
    cache = Cache(inner, tmp_path / "c.sqlite3")

    async def main():
        leader = asyncio.create_task(cache.acomplete(Request.chat("q")))
        while not inner.requests:  # the leader's request has reached the engine
            await asyncio.sleep(0.002)
        waiter = asyncio.create_task(cache.acomplete(Request.chat("q")))
        await asyncio.sleep(0.01)  # the waiter now waits on the leader's answer
        leader.cancel()
        return await asyncio.wait_for(waiter, timeout=2)

    result = asyncio.run(main())

    assert result.text == "echo: q" and not result.cached  # the waiter took over and paid
    assert len(inner.requests) == 2


# -- modes ----------------------------------------------------------------------------------


def test_replay_serves_recorded_answers_and_never_calls_the_engine(tmp_path):
    path = tmp_path / "c.sqlite3"
    Cache(echo_engine(), path).complete(Request.chat("recorded", role="forward"))
    offline = ScriptedEngine()  # would raise if called: it has no reply

    hit = Cache(offline, path, mode="replay").complete(Request.chat("recorded", role="loss"))

    assert hit.cached and hit.text == "echo: recorded"
    assert offline.requests == []


def test_a_replay_miss_raises_naming_the_role_and_the_prompt(tmp_path):
    path = tmp_path / "c.sqlite3"
    Cache(echo_engine(), path).complete(Request.chat("recorded"))
    inner = echo_engine()
    replay = Cache(inner, path, mode="replay")

    with pytest.raises(CacheMissError) as caught:
        asyncio.run(replay.acomplete(
            Request.chat("Evaluate this answer for correctness", role="loss")))

    assert "loss request" in str(caught.value)
    assert "Evaluate this answer for correctness" in str(caught.value)
    assert str(path) in str(caught.value)
    assert inner.requests == []


def test_replay_without_a_cache_file_raises_and_creates_nothing(tmp_path):
    path = tmp_path / "missing" / "c.sqlite3"
    with pytest.raises(CacheMissError, match="does not exist"):
        Cache(echo_engine(), path, mode="replay").complete(Request.chat("x", role="backward"))
    assert not path.parent.exists()


def test_refresh_calls_the_engine_again_and_overwrites_the_answer(tmp_path):
    path = tmp_path / "c.sqlite3"
    Cache(ScriptedEngine(default="old"), path).complete(Request.chat("x"))

    fresh = Cache(ScriptedEngine(default="new"), path, mode="refresh").complete(Request.chat("x"))
    later = Cache(ScriptedEngine(), path, mode="replay").complete(Request.chat("x"))

    assert (fresh.text, fresh.cached) == ("new", False)
    assert later.text == "new"
    assert len(rows(path)) == 1


def test_off_passes_through_and_never_touches_the_file(tmp_path):
    inner = echo_engine()
    cache = Cache(inner, tmp_path / "c.sqlite3", mode="off")
    cache.complete(Request.chat("x"))
    cache.complete(Request.chat("x"))
    assert len(inner.requests) == 2 and not cache.path.exists()


def test_an_unknown_mode_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="replay"):
        Cache(echo_engine(), tmp_path / "c.sqlite3", mode="write-only")


# -- files and paths ------------------------------------------------------------------------


def test_the_default_path_follows_textprop_cache_then_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TEXTPROP_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_cache_path() == tmp_path / "home/.cache/textprop/llm-cache.sqlite3"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    assert default_cache_path() == tmp_path / "home/.cache/textprop/llm-cache.sqlite3"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_path() == tmp_path / "xdg/textprop/llm-cache.sqlite3"
    monkeypatch.setenv("TEXTPROP_CACHE", str(tmp_path / "mine.db"))
    assert default_cache_path() == tmp_path / "mine.db"
    assert Cache(echo_engine()).path == tmp_path / "mine.db"
    assert not any(tmp_path.iterdir())


def test_the_file_and_its_folders_appear_only_on_first_use(tmp_path):
    cache = Cache(echo_engine(), tmp_path / "a" / "b" / "c.sqlite3")
    assert not (tmp_path / "a").exists()
    cache.complete(Request.chat("x"))
    assert cache.path.is_file()
    with sqlite3.connect(cache.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_file_holds_no_engine_secrets(tmp_path):
    inner = echo_engine()
    inner.api_key = "sk-secret-1234567890"
    cache = Cache(inner, tmp_path / "c.sqlite3")
    cache.complete(Request.chat("x"))
    cache.close()
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"echo: x" in data and b"sk-secret" not in data


def test_the_cli_can_find_the_cache_path_in_a_built_stack(tmp_path):
    engine, _ = build_stack(echo_engine(), cache=tmp_path / "c.sqlite3")
    assert find_layer(engine, Cache).path == tmp_path / "c.sqlite3"
    engine, _ = build_stack(echo_engine(), cache=False)
    assert find_layer(engine, Cache) is None


# -- across processes -----------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import asyncio, json, os, sys, time
    from textprop.engines.base import Request
    from textprop.engines.cache import Cache
    from textprop.engines.scripted import ScriptedEngine

    path, tag, n_own, n_shared = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    go = sys.argv[5] if len(sys.argv) > 5 else None
    inner = ScriptedEngine(default=lambda r: "answer to " + r.prompt)
    cache = Cache(inner, path)
    prompts = [f"{tag} own {i}" for i in range(n_own)] + [f"shared {i}" for i in range(n_shared)]
    if go:
        print("ready", flush=True)
        while not os.path.exists(go):
            time.sleep(0.005)

    async def main():
        return await asyncio.gather(*[cache.acomplete(Request.chat(p)) for p in prompts])

    results = asyncio.run(main())
    print(json.dumps({"inner_calls": len(inner.requests),
                      "texts": [r.text for r in results],
                      "cached": [r.cached for r in results]}))
""")


def run_child(*args: object) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, *map(str, args)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_rerun_in_a_new_process_is_served_from_the_cache(tmp_path):
    path = tmp_path / "c.sqlite3"

    first = run_child(path, "run", 5, 0)
    second = run_child(path, "run", 5, 0)

    assert first["inner_calls"] == 5 and not any(first["cached"])
    assert second["inner_calls"] == 0 and all(second["cached"])
    assert second["texts"] == first["texts"]


def test_concurrent_writers_in_several_processes_neither_corrupt_nor_lose_rows(tmp_path):
    path, go = tmp_path / "c.sqlite3", tmp_path / "go"
    n_procs, n_own, n_shared = 3, 60, 20
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(path), f"p{i}", str(n_own),
                                  str(n_shared), str(go)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for i in range(n_procs)]
    for child in children:  # all started and waiting: the database is created concurrently
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
    go.touch()
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        outputs.append(json.loads(out))

    for output in outputs:
        assert all(text.startswith("answer to ") for text in output["texts"])
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert len(rows(path)) == n_procs * n_own + n_shared
    replay = Cache(ScriptedEngine(), path, mode="replay")
    for i in range(n_procs):
        for j in range(n_own):
            assert replay.complete(Request.chat(f"p{i} own {j}")).text == f"answer to p{i} own {j}"


def test_many_threads_share_one_file_safely(tmp_path):
    inner = echo_engine()
    cache = Cache(inner, tmp_path / "c.sqlite3")
    errors = []

    def work(t: int) -> None:
        try:
            for i in range(25):
                assert cache.complete(Request.chat(f"{t}-{i}")).text == f"echo: {t}-{i}"
        except Exception as exc:  # surfaced below: a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == [] and cache.count() == 150
    assert len(inner.requests) == 150
    cache.close()
    assert cache.complete(Request.chat("0-0")).cached  # reopens after close


def test_an_answer_that_cannot_be_stored_is_still_returned_with_a_warning(tmp_path):
    inner = echo_engine()
    cache = Cache(inner, tmp_path / "c.sqlite3", busy_timeout_s=0.05)
    cache.complete(Request.chat("warm up"))
    other = sqlite3.connect(tmp_path / "c.sqlite3", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock (readers still read)
    try:
        with pytest.warns(RuntimeWarning, match="could not cache.*locked"):
            assert cache.complete(Request.chat("x")).text == "echo: x"
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert len(inner.requests) == 2 and cache.count() == 1


def test_opening_a_new_file_waits_for_another_opener_instead_of_failing(tmp_path):
    # SQLite runs no busy handler for the switch to WAL, so a naive open fails at once here.
    path = tmp_path / "c.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE other (x)")
    holder.execute("BEGIN IMMEDIATE")  # another opener about to write (as in a concurrent start)
    threading.Timer(0.1, lambda: holder.execute("COMMIT")).start()

    assert Cache(echo_engine(), path).complete(Request.chat("x")).text == "echo: x"
    holder.close()
