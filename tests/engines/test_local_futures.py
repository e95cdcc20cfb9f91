"""How the embedded engine hands a decoder's result to its caller (`local._translate`)."""

from __future__ import annotations

import concurrent.futures
import logging

import pytest

from textprop.engines.local import _translate
from textprop.errors import EngineError, EngineRequestError


def test_a_result_and_llama_cpp_failures_reach_the_caller_in_the_engine_error_tree() -> None:
    ok, bad, odd = (concurrent.futures.Future() for _ in range(3))
    outs = [_translate(f, "local:test") for f in (ok, bad, odd)]
    ok.set_result("answer")
    bad.set_exception(ValueError("prompt too long"))
    odd.set_exception(RuntimeError("llama_decode failed"))
    assert outs[0].result() == "answer"
    assert isinstance(outs[1].exception(), EngineRequestError)
    assert isinstance(outs[2].exception(), EngineError)
    assert "llama_decode failed" in str(outs[2].exception())


def test_a_caller_that_gave_up_leaves_no_error_behind(caplog: pytest.LogCaptureFixture) -> None:
    """serve cancels the call of a client that left; the decoder then drops the sequence
    and fails its future, which must not raise in the callback (it did, once per dropped
    sequence, in the writer server's log)."""
    inner: concurrent.futures.Future[str] = concurrent.futures.Future()
    out = _translate(inner, "local:test")
    assert out.cancel()
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        inner.set_exception(RuntimeError("abandoned by its caller"))
    assert out.cancelled()
    assert not [r for r in caplog.records if "exception calling callback" in r.getMessage()]
