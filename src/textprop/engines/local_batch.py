"""Batched decoding for the embedded engine: many sequences in one llama.cpp pass.

llama.cpp decodes a batch of tokens from different sequences for little more than the cost of
one: on 2 cores a 0.5B model generates ~38 tokens/s for one sequence but ~100 in aggregate for
eight. `BatchDecoder` owns one llama.cpp context with `n_parallel` sequence slots and runs a
decode loop in one worker thread (a context is not thread-safe). Callers `submit` a `Job` and
get a `concurrent.futures.Future`; jobs join free slots between decode steps and leave when
they finish, each with its own sampler chain (and grammar, for a JSON schema).

Shared prefixes: the template head of a prompt (everything before the last message's content:
the system prompt of an evaluation) is prefilled once into a prefix sequence; later jobs with
the same head copy its KV cells (`llama_memory_seq_cp`) and prefill only their own tail.

Determinism (`deterministic=True`, the default). Left alone, an answer depends on its
batch-mates: llama.cpp's CPU kernels take different paths for different batch shapes (the
repacked Q4_K matmul runs rows in groups of four through a GEMM and the rest through a GEMV,
which round differently; flash attention switches to a split-KV reduction for a lone sequence
over 512+ cells), so a row's rounding depends on how many rows share its step and where it
sits. Measured on 16 greedy requests: 4 answers changed between "one at a time" and "all
together". The deterministic mode removes every such dependence:

* every sequence has its own KV stream (`kv_unified=False`), so its cells sit at the same
  indices whatever else runs;
* prompts are prefilled on their own (the shared head, then the tail), never mixed with other
  sequences' tokens, so their batch shapes depend on the prompt only;
* every decode step is padded with one-token "anchor" sequences to a multiple of four rows
  (at least four), all with logits, so every row of every step takes the GEMM path and
  attention never takes the lone-sequence path.

Padding costs little: a decode step is bound by reading the weights, not by its rows.
`tests/integration/test_local_batch.py` checks that N answers given together equal the same N
given one by one, byte for byte.
"""

from __future__ import annotations

import collections
import concurrent.futures
import ctypes
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MIN_PREFIX_TOKENS = 16  # shorter heads are cheaper to prefill again than to track
ANCHOR_SPAN = 256  # an anchor restarts after this many tokens (its attention stays cheap)
ROW_GROUP = 4  # the repacked matmul's GEMM takes rows four at a time (ggml-cpu repack.cpp)


@dataclass
class Job:
    """One generation: the prompt as tokens, where its shared head ends, and how to sample."""

    tokens: Sequence[int]
    head_len: int
    max_tokens: int
    temperature: float = 0.0
    seed: int = 0
    grammar: str | None = None
    stop: Sequence[str] = ()
    future: concurrent.futures.Future[dict[str, Any]] = field(
        default_factory=concurrent.futures.Future)


@dataclass
class _Slot:
    job: Job
    seq: int
    sampler: Any
    n_past: int
    last: int = -1
    out: list[int] = field(default_factory=list)
    text: str = ""
    finish: str | None = None


class DecodeError(RuntimeError):
    """llama.cpp refused a batch (no KV space, or a failed decode)."""


class BatchDecoder:
    """The decode loop over one llama.cpp context; see the module docstring.

    `llama` is a loaded `llama_cpp.Llama` whose model, tokenizer and vocabulary are shared
    (its own small context is not used here). `n_ctx` is per sequence.
    """

    def __init__(self, llama: Any, *, n_parallel: int, n_ctx: int, n_threads: int,
                 n_batch: int = 512, share_prefix: bool = True, n_prefixes: int = 4,
                 deterministic: bool = True) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self.llama = llama
        self.n_parallel = max(1, n_parallel)
        self.n_ctx = n_ctx
        self.n_batch = max(n_batch, self.n_parallel + 1)
        self.share_prefix = share_prefix
        self.n_prefixes = n_prefixes if share_prefix else 0
        self.deterministic = deterministic
        # Sequence ids: slots first, then prefix holders, then the anchors (padding rows).
        self._prefix_ids = list(range(self.n_parallel, self.n_parallel + self.n_prefixes))
        first_anchor = self.n_parallel + self.n_prefixes
        self._anchors = (list(range(first_anchor, first_anchor + ROW_GROUP - 1))
                         if deterministic else [])
        n_seq = first_anchor + len(self._anchors)
        params = llama_cpp.llama_context_default_params()
        params.n_seq_max = n_seq
        params.n_ctx = n_ctx * n_seq
        params.n_batch = self.n_batch
        params.n_ubatch = self.n_batch
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        # Shared cells (unified) let a prefix be copied without moving data, but a sequence's
        # cells then land wherever there is room, which changes its rounding.
        params.kv_unified = not deterministic
        params.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(llama.model, params)
        if not self._ctx:
            raise DecodeError(f"llama.cpp could not create a context for {n_seq} sequences "
                              f"of {n_ctx} tokens")
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._prefixes: collections.OrderedDict[tuple[int, ...], int] = collections.OrderedDict()
        self._anchor_pos = [0] * len(self._anchors)  # positions must stay consecutive
        self.n_seq = n_seq
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self.steps = 0  # decode steps run (for tests and benchmarks)
        self.max_in_flight = 0

    # -- public

    def submit(self, job: Job) -> concurrent.futures.Future[dict[str, Any]]:
        if self._closed:
            raise DecodeError("the decoder is closed")
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="textprop-llama-decode",
                                                daemon=True)
                self._thread.start()
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        """Stop the loop (jobs in flight fail) and free the context."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
        self._lib.llama_batch_free(self._batch)
        self._lib.llama_free(self._ctx)

    # -- the loop

    def _run(self) -> None:
        slots: dict[int, _Slot] = {}
        free = list(range(self.n_parallel - 1, -1, -1))
        stopping = False
        while True:
            # Admit waiting jobs into free slots; block only when nothing is running.
            while free and not stopping:
                try:
                    job = self._queue.get(block=not slots)
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                if job.future.set_running_or_notify_cancel():
                    seq = free.pop()
                    slot = self._start(job, seq)
                    if slot is None or self._settle(slot):
                        self._release(seq)
                        free.append(seq)
                    else:
                        slots[seq] = slot
            if stopping:
                for slot in slots.values():
                    slot.job.future.set_exception(DecodeError("the decoder was closed"))
                    self._lib.llama_sampler_free(slot.sampler)
                while True:
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        return
                    if job is not None and job.future.set_running_or_notify_cancel():
                        job.future.set_exception(DecodeError("the decoder was closed"))
            if not slots:
                continue
            self.max_in_flight = max(self.max_in_flight, len(slots))
            try:
                self._step(list(slots.values()))
            except Exception as exc:  # noqa: BLE001 - every waiting caller must hear of it
                for seq, slot in list(slots.items()):
                    slot.job.future.set_exception(exc)
                    self._lib.llama_sampler_free(slot.sampler)
                    self._release(seq)
                    free.append(seq)
                slots.clear()
                continue
            for seq, slot in list(slots.items()):
                if self._settle(slot):
                    del slots[seq]
                    self._release(seq)
                    free.append(seq)

    def _start(self, job: Job, seq: int) -> _Slot | None:
        """Prefill `job` into sequence `seq` and sample its first token; None if it failed."""
        lib = self._lib
        try:
            sampler = self._sampler(job)
        except Exception as exc:  # noqa: BLE001
            job.future.set_exception(exc)
            return None
        try:
            tokens = list(job.tokens)
            lib.llama_memory_seq_rm(self._mem, seq, -1, -1)
            start = 0
            head = tuple(tokens[:job.head_len])
            if self.share_prefix and len(head) >= MIN_PREFIX_TOKENS and len(head) < len(tokens):
                holder = self._prefix(head)
                lib.llama_memory_seq_cp(self._mem, holder, seq, -1, -1)
                start = len(head)
            index = self._prefill(seq, tokens, start)
            token = lib.llama_sampler_sample(sampler, self._ctx, index)
        except Exception as exc:  # noqa: BLE001
            lib.llama_sampler_free(sampler)
            job.future.set_exception(exc)
            return None
        slot = _Slot(job=job, seq=seq, sampler=sampler, n_past=len(tokens))
        self._accept(slot, token)
        return slot

    def _prefix(self, head: tuple[int, ...]) -> int:
        """The sequence holding `head`'s KV cells, prefilling it (and evicting the least
        recently used head) when it is new."""
        if head in self._prefixes:
            self._prefixes.move_to_end(head)
            return self._prefixes[head]
        if len(self._prefixes) < self.n_prefixes:
            holder = self._prefix_ids[len(self._prefixes)]
        else:
            _, holder = self._prefixes.popitem(last=False)
        self._lib.llama_memory_seq_rm(self._mem, holder, -1, -1)
        try:
            self._prefill(holder, list(head), 0, logits=False)
        except Exception:
            self._lib.llama_memory_seq_rm(self._mem, holder, -1, -1)
            raise
        self._prefixes[head] = holder
        return holder

    def _prefill(self, seq: int, tokens: list[int], start: int, *, logits: bool = True) -> int:
        """Decode tokens[start:] into `seq` alone, in chunks of n_batch; returns the batch index
        of the last token's logits."""
        end = len(tokens)
        pos = start
        last = -1
        while pos < end:
            chunk = tokens[pos:pos + self.n_batch]
            for i, token in enumerate(chunk):
                self._put(i, token, pos + i, seq, logits and pos + i == end - 1)
            self._decode(len(chunk))
            last = len(chunk) - 1
            pos += len(chunk)
        return last

    def _step(self, slots: list[_Slot]) -> None:
        """One decode step: the last sampled token of every running sequence."""
        n = 0
        for slot in slots:
            self._put(n, slot.last, slot.n_past, slot.seq, True)
            n += 1
        if self._anchors:
            pad = max(ROW_GROUP, -(-n // ROW_GROUP) * ROW_GROUP) - n
            for i, anchor in enumerate(self._anchors[:pad]):
                if self._anchor_pos[i] >= ANCHOR_SPAN:  # keep the anchors' streams short
                    self._lib.llama_memory_seq_rm(self._mem, anchor, -1, -1)
                    self._anchor_pos[i] = 0
                self._put(n, slots[0].last, self._anchor_pos[i], anchor, True)
                self._anchor_pos[i] += 1
                n += 1
        self._decode(n)
        self.steps += 1
        for i, slot in enumerate(slots):
            slot.n_past += 1
            token = self._lib.llama_sampler_sample(slot.sampler, self._ctx, i)
            self._accept(slot, token)

    def _accept(self, slot: _Slot, token: int) -> None:
        """Record one sampled token and decide whether the sequence is done, the way
        llama-cpp-python's `create_completion` does (end-of-generation token, stop string,
        max_tokens)."""
        if self._lib.llama_vocab_is_eog(self._vocab, token):
            slot.finish = "stop"
            return
        slot.out.append(token)
        slot.last = token
        text = self.llama.detokenize(slot.out, prev_tokens=list(slot.job.tokens)).decode(
            "utf-8", errors="ignore")
        hits = [text.index(s) for s in slot.job.stop if s and s in text]
        if hits:
            slot.text = text[:min(hits)]
            slot.finish = "stop"
            return
        slot.text = text
        if len(slot.out) >= slot.job.max_tokens or slot.n_past + 1 >= self.n_ctx:
            slot.finish = "length"

    def _settle(self, slot: _Slot) -> bool:
        """Deliver a finished slot's result; True when it is done."""
        if slot.finish is None:
            return False
        self._lib.llama_sampler_free(slot.sampler)
        slot.job.future.set_result({
            "choices": [{"message": {"role": "assistant", "content": slot.text},
                         "finish_reason": slot.finish}],
            "usage": {"prompt_tokens": len(slot.job.tokens),
                      "completion_tokens": len(slot.out)},
        })
        return True

    def _release(self, seq: int) -> None:
        self._lib.llama_memory_seq_rm(self._mem, seq, -1, -1)

    # -- llama.cpp plumbing

    def _put(self, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        batch = self._batch
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = 1 if logits else 0

    def _decode(self, n: int) -> None:
        self._batch.n_tokens = n
        status = self._lib.llama_decode(self._ctx, self._batch)
        if status != 0:
            why = "no KV cache space" if status == 1 else f"status {status}"
            raise DecodeError(f"llama_decode failed ({why}) for a batch of {n} tokens")

    def _sampler(self, job: Job) -> Any:
        """A sampler chain as llama-cpp-python builds it: grammar, then greedy at temperature
        0, else top-k 40, top-p 0.95, min-p 0.05, temperature and a seeded draw."""
        lib = self._lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if job.grammar is not None:
            grammar = lib.llama_sampler_init_grammar(self._vocab, job.grammar.encode("utf-8"),
                                                     b"root")
            if not grammar:
                lib.llama_sampler_free(chain)
                raise ValueError("llama.cpp could not parse the grammar of the JSON schema")
            lib.llama_sampler_chain_add(chain, grammar)
        if job.temperature <= 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        else:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(40))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_typical(1.0, 1))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(0.95, 1))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_min_p(0.05, 1))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(job.temperature))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(
                ctypes.c_uint32(job.seed & 0xFFFFFFFF).value))
        return chain
