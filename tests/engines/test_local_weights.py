"""Re-encoded weights of the embedded models: made once from the verified pinned file by
llama.cpp's quantizer, trusted later only while their sidecar matches (a fake quantizer
here; tests/integration/test_local_weights.py runs the real one)."""

from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path

import pytest

from textprop.engines.local_weights import ensure_weights, weights_path
from textprop.errors import ConfigError, EngineUnavailableError

SOURCE_SHA = "ab" * 32


class FakeLlamaCpp(types.ModuleType):
    """The three names of llama_cpp that ensure_weights uses; records every quantize call."""

    def __init__(self, *, status: int = 0) -> None:
        super().__init__("llama_cpp")
        self.status = status
        self.calls: list[tuple[str, str, int, bool]] = []
        self.__version__ = "0.0-fake"

    def llama_model_quantize_default_params(self) -> types.SimpleNamespace:
        return types.SimpleNamespace(ftype=0, allow_requantize=False, nthread=0)

    def llama_model_quantize(self, source: bytes, dest: bytes, params) -> int:  # noqa: ANN001
        self.calls.append((source.decode(), dest.decode(), params.ftype, params.allow_requantize))
        if self.status == 0:
            Path(dest.decode()).write_bytes(b"re-encoded:" + Path(source.decode()).read_bytes())
        else:
            Path(dest.decode()).write_bytes(b"half a file")
        return self.status


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    path.write_bytes(b"pinned weights")
    return path


@pytest.fixture
def llama(monkeypatch: pytest.MonkeyPatch) -> FakeLlamaCpp:
    fake = FakeLlamaCpp()
    monkeypatch.setitem(sys.modules, "llama_cpp", fake)
    return fake


def test_a_copy_is_made_once_with_llama_cpps_quantizer_and_recorded(source: Path,
                                                                     llama: FakeLlamaCpp) -> None:
    path = ensure_weights(source, SOURCE_SHA, "Q4_0")

    assert path == source.with_name("qwen2.5-coder-0.5b-instruct-q4_0.gguf")
    assert path.read_bytes() == b"re-encoded:pinned weights"
    assert [(c[0], c[2], c[3]) for c in llama.calls] == [(str(source), 2, True)]
    record = json.loads(path.with_name(path.name + ".from.json").read_text())
    assert record["source_sha256"] == SOURCE_SHA
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["weights"] == "q4_0"
    assert sorted(p.name for p in source.parent.iterdir()) == sorted([  # no temporary file
        source.name, path.name, path.name + ".from.json"])

    assert ensure_weights(source, SOURCE_SHA, "q4_0") == path
    assert len(llama.calls) == 1  # the second use trusts the recorded copy


def test_a_copy_changed_by_hand_or_made_from_another_source_is_made_again(
        source: Path, llama: FakeLlamaCpp) -> None:
    path = ensure_weights(source, SOURCE_SHA, "q8_0")
    path.write_bytes(b"edited")
    ensure_weights(source, SOURCE_SHA, "q8_0")
    assert len(llama.calls) == 2 and path.read_bytes() == b"re-encoded:pinned weights"

    ensure_weights(source, "cd" * 32, "q8_0")  # the pinned file's digest is another one now
    assert len(llama.calls) == 3
    assert [c[2] for c in llama.calls] == [7, 7, 7]  # LLAMA_FTYPE_MOSTLY_Q8_0


def test_the_pinned_format_is_the_source_itself(source: Path, llama: FakeLlamaCpp) -> None:
    assert ensure_weights(source, SOURCE_SHA, "q4_k_m") == source
    assert weights_path(source, "q4_k_m") == source
    assert llama.calls == []


def test_a_failed_quantization_leaves_no_file_and_says_so(source: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", FakeLlamaCpp(status=1))
    with pytest.raises(EngineUnavailableError, match="could not re-encode .* as q4_0"):
        ensure_weights(source, SOURCE_SHA, "q4_0")
    assert [p.name for p in source.parent.iterdir()] == [source.name]


def test_unknown_weights_are_a_config_error_naming_the_known_ones(source: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown local weights 'q2_k'; known: q4_k_m, q8_0, "
                                          r"q4_0"):
        ensure_weights(source, SOURCE_SHA, "q2_k")


def test_weights_apply_to_shipped_models_not_to_a_gguf_given_by_path(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from textprop.engines.local import LocalEngine

    model = tmp_path / "mine.gguf"
    model.write_bytes(b"x")
    with pytest.raises(ConfigError, match="loaded as it is"):
        LocalEngine(model, weights="q4_0")
