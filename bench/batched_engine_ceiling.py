"""What llama.cpp itself decodes on this machine: the ceiling for the batched engine.

No textprop code in the loop: one llama.cpp context (llama-cpp-python's low-level API) with
`n` sequences, each prefilled with 50 tokens, then 64 decode steps of one token per
sequence in one `llama_decode`; generated tokens/s = n x 64 / the steps' wall time. The
batched engine's aggregate throughput (bench/batched_engine.py) can approach these figures,
not exceed them; the "before" engine's one-at-a-time rate is below the n = 1 figure
(llama-cpp-python's high-level completion adds its own per-token work).

    python bench/batched_engine_ceiling.py              # n = 1, 4, 8, 16
    python bench/batched_engine_ceiling.py --weights q4_k_m q8_0 q4_0 --levels 1 8 16

`--weights` also measures the pinned Q4_K_M file re-encoded by llama.cpp's own quantizer
(`llama_model_quantize`, written once to --scratch): this llama.cpp build has batched
matrix kernels for Q8_0 and Q4_0 (llamafile's tinyBLAS, the AVX2 repacked Q4_0) but not for
the K-quants, so the same model decodes many sequences faster in those formats. Q8_0 keeps
the Q4_K_M values to within rounding; Q4_0 re-quantizes them (a second, lossy rounding).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(model, n_seq: int, n_ctx: int, steps: int = 64, prompt: int = 50) -> dict:
    import llama_cpp

    params = llama_cpp.llama_context_default_params()
    params.n_seq_max = n_seq
    params.n_ctx = n_ctx
    params.n_batch = params.n_ubatch = 512
    params.n_threads = params.n_threads_batch = 2
    params.kv_unified = True
    params.no_perf = True
    ctx = llama_cpp.llama_init_from_model(model, params)
    batch = llama_cpp.llama_batch_init(512, 0, 1)

    def put(i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
        batch.seq_id[i][0], batch.logits[i] = seq, int(logits)

    try:
        for seq in range(n_seq):
            for i in range(prompt):
                put(i, 100 + i, i, seq, i == prompt - 1)
            batch.n_tokens = prompt
            assert llama_cpp.llama_decode(ctx, batch) == 0
        start = time.perf_counter()
        for step in range(steps):
            for seq in range(n_seq):
                put(seq, 200 + step, prompt + step, seq, True)
            batch.n_tokens = n_seq
            assert llama_cpp.llama_decode(ctx, batch) == 0
        wall = time.perf_counter() - start
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
    return {"sequences": n_seq, "ms_per_step": round(wall / steps * 1000, 1),
            "tokens_per_s": round(n_seq * steps / wall, 1),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


FTYPES = {"q8_0": 7, "q4_0": 2}  # llama.cpp's LLAMA_FTYPE_MOSTLY_*


def weights_file(name: str, source: Path, scratch: Path) -> Path:
    """The model file in format `name`: the pinned one, or it re-encoded (once)."""
    if name == "q4_k_m":
        return source
    import llama_cpp

    target = scratch / source.name.replace("q4_k_m", name)
    if not target.exists():
        scratch.mkdir(parents=True, exist_ok=True)
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype, params.allow_requantize, params.nthread = FTYPES[name], True, 2
        tmp = target.with_suffix(".tmp")
        if llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(),
                                          params) != 0:
            raise SystemExit(f"llama.cpp could not re-encode {source} as {name}")
        tmp.rename(target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--size", default="0.5b", help="0.5b or 1.5b")
    parser.add_argument("--weights", nargs="+", default=["q4_k_m"],
                        choices=["q4_k_m", *FTYPES])
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/textprop-bench-weights"))
    parser.add_argument("--out", type=Path,
                        default=ROOT / "bench/results/batched_engine_ceiling.json")
    args = parser.parse_args()
    import llama_cpp

    from textprop.engines.local import ensure_model

    quiet = llama_cpp.llama_log_callback(lambda level, text, data: None)
    llama_cpp.llama_log_set(quiet, None)  # llama.cpp's load log would bury the figures
    llama_cpp.llama_backend_init()
    source = ensure_model(args.size)
    files = {name: weights_file(name, source, args.scratch) for name in args.weights}
    cells = []
    for n in args.levels:  # every format at one level back to back: noise hits them alike
        for name, path in files.items():
            model = llama_cpp.llama_model_load_from_file(
                str(path).encode(), llama_cpp.llama_model_default_params())
            cells.append({"size": args.size, "weights": name,
                          **measure(model, n, args.n_ctx)})
            llama_cpp.llama_model_free(model)
            print(cells[-1], flush=True)
    args.out.write_text(json.dumps({"llama_cpp_python": llama_cpp.__version__,
                                    "cells": cells}, indent=2) + "\n")


if __name__ == "__main__":
    main()
