"""The embedded models in another weight format, re-encoded from the pinned files on first use.

The shipped GGUF files are Q4_K_M. This machine's llama.cpp builds (AVX2, no AVX-512) have
batched matrix kernels for Q4_0 and Q8_0 but none for the K-quants, so with many sequences
in flight the same model decodes up to 1.4x faster as Q4_0 (docs/benchmarks.md, batched
embedded engine). Nothing can be downloaded at run time, so the other formats are made here
from the verified pinned file by llama.cpp's own quantizer (`llama_model_quantize`, a few
seconds for 0.5B; measured byte-for-byte repeatable) and kept next to it in the model cache
with a sidecar naming the source's digest and their own, so a later run trusts them only if
both still match.

Q8_0 keeps the Q4_K_M values to within rounding; Q4_0 rounds them a second time, so its
answers differ: measured in docs/benchmarks.md before it is used for a benchmark.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from textprop.errors import ConfigError, EngineUnavailableError

PINNED = "q4_k_m"  # the format of the shipped files: nothing to make
FTYPES: dict[str, int] = {"q8_0": 7, "q4_0": 2}  # llama.cpp's LLAMA_FTYPE_MOSTLY_*
WEIGHTS = (PINNED, *FTYPES)

_make_lock = threading.Lock()


def check_weights(weights: str) -> str:
    """`weights` normalized, or a `ConfigError` naming the known formats."""
    name = weights.strip().lower()
    if name not in WEIGHTS:
        raise ConfigError(f"unknown local weights {weights!r}; known: {', '.join(WEIGHTS)}")
    return name


def weights_path(source: Path, weights: str) -> Path:
    """Where the `weights` copy of the pinned file `source` lives (in the same folder)."""
    if weights == PINNED:
        return source
    return source.with_name(source.name.replace(f"-{PINNED}", f"-{weights}"))


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".from.json")


def _is_made_from(target: Path, source_sha256: str) -> bool:
    """Whether `target` is the copy its sidecar records, made from a file with that digest.

    Its size and modification time must match the sidecar's, so a file replaced or touched
    by hand is made again rather than trusted."""
    try:
        record = json.loads(_sidecar(target).read_text())
        stat = target.stat()
    except (OSError, ValueError):
        return False
    return (record.get("source_sha256") == source_sha256 and record.get("size") == stat.st_size
            and record.get("mtime_ns") == stat.st_mtime_ns)


def ensure_weights(source: Path, source_sha256: str, weights: str) -> Path:
    """The GGUF of the pinned file `source` (digest `source_sha256`) in format `weights`.

    Made once with llama.cpp's quantizer into a temporary file, renamed into place, then
    recorded in its sidecar; a copy whose sidecar does not match is made again.
    """
    weights = check_weights(weights)
    target = weights_path(source, weights)
    if weights == PINNED:
        return source
    with _make_lock:
        if _is_made_from(target, source_sha256):
            return target
        try:
            import llama_cpp
        except ImportError as exc:
            raise EngineUnavailableError(
                f"re-encoding the local model as {weights} needs llama-cpp-python ({exc})",
                provider="local") from exc
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype, params.allow_requantize = FTYPES[weights], True
        params.nthread = max(1, min(os.cpu_count() or 1, 4))
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            if llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(),
                                              params) != 0:
                raise EngineUnavailableError(
                    f"llama.cpp could not re-encode {source} as {weights}", provider="local")
            from textprop.engines.local import file_sha256  # local imports this module

            digest = file_sha256(tmp)
            os.replace(tmp, target)
        except OSError as exc:
            raise EngineUnavailableError(
                f"could not write the {weights} copy of the local model to {target}: {exc}. "
                "Free disk space or set TEXTPROP_HOME to a writable folder",
                provider="local") from exc
        finally:
            tmp.unlink(missing_ok=True)
        stat = target.stat()
        _sidecar(target).write_text(json.dumps({
            "source": source.name, "source_sha256": source_sha256, "weights": weights,
            "sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "llama_cpp_python": getattr(llama_cpp, "__version__", "?")}, indent=2) + "\n")
        return target
