"""Batched decoding for the embedded engine: many sequences in one llama.cpp pass.

llama.cpp decodes a batch of tokens from different sequences for little more than the cost of
one: on 2 cores a 0.5B model generates ~38 tokens/s for one sequence but ~100 in aggregate for
eight. `BatchDecoder` owns one llama.cpp context with `n_parallel` sequence slots and runs a
decode loop in one worker thread (a context is not thread-safe). Callers `submit` a `Job` and
get a `concurrent.futures.Future`; jobs join free slots between decode steps and leave when
they finish, each with its own sampler chain (and grammar, for a JSON schema). A job whose
caller gave up (`Job.abandoned`: a cancelled call, a server's client gone) leaves at the next
step instead of decoding to its max_tokens for nobody.

Shared prefixes: the template head of a prompt (everything before the last message's content:
the system prompt of an evaluation) is prefilled once into a prefix sequence; later jobs with
the same head copy its KV cells (`llama_memory_seq_cp`) and prefill only their own tail.

Determinism: an answer can depend on its batch-mates. llama.cpp's CPU kernels take different
paths for different batch shapes (the repacked Q4_K matmul runs rows in groups of four
through a GEMM and the rest through a GEMV; flash attention switches to a split-KV reduction
for a lone sequence over 512+ cells), so a row's rounding depends on how many rows share its
step. Measured on 16 greedy requests: 4 answers changed between "one at a time" and "all
together". So this decoder is not byte-for-byte deterministic; `LocalEngine(n_parallel=1)`
is, and stays the default.

`stable_shapes=True` (opt-in) removes the dependences found so far and still 3 of 12 answers
changed (tests/integration/test_local_batch.py), at twice the cost: measured on this 2-core
machine, 8 sequences in flight made 15-21 generated tokens/s with it against 30-36 without,
and one sequence alone 6 against 12 (padding a lone row to four is not free). What it does:

* every sequence has its own KV stream (`kv_unified=False`), so its cells sit at the same
  indices whatever else runs;
* prompts are prefilled on their own (the shared head, then the tail), never mixed with other
  sequences' tokens, so their batch shapes depend on the prompt only (also without it);
* running sequences always hold the lowest sequence ids (a finished one's place is taken by
  the last, its KV stream copied over): llama.cpp splits a multi-stream batch into one
  micro-batch per run of consecutive ids, so gaps would split a step into smaller ones;
* every decode step is padded with one-token rows of free slots to a multiple of four rows
  (at least four), all with logits, so every row of every step takes the GEMM path and
  attention never takes the lone-sequence path.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import ctypes
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MIN_PREFIX_TOKENS = 16  # shorter heads are cheaper to prefill again than to track
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
    # Set by a caller that no longer wants the answer (cancelled, its client gone): the loop
    # drops the sequence at the next step instead of decoding it to the end.
    abandoned: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Slot:
    job: Job
    seq: int
    sampler: Any  # the sampler chain; for greedy + schema, `grammar` is kept apart
    n_past: int
    grammar: Any = None
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
                 stable_shapes: bool = False, turns: Any = None) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self.llama = llama
        self.n_parallel = max(1, n_parallel)
        self.n_ctx = n_ctx
        self.n_batch = max(n_batch, self.n_parallel + 1)
        self.share_prefix = share_prefix
        self.n_prefixes = n_prefixes if share_prefix else 0
        self.stable_shapes = stable_shapes
        self._turns = turns if turns is not None else contextlib.nullcontext()  # CoreTurns
        # Sequence ids: slots first, then prefix holders. With stable shapes, the slots are a
        # multiple of ROW_GROUP, so a step can be padded with free slots.
        self.n_slots = (max(ROW_GROUP, -(-self.n_parallel // ROW_GROUP) * ROW_GROUP)
                        if stable_shapes else self.n_parallel)
        self._prefix_ids = list(range(self.n_slots, self.n_slots + self.n_prefixes))
        n_seq = self.n_slots + self.n_prefixes
        params = llama_cpp.llama_context_default_params()
        params.n_seq_max = n_seq
        params.n_ctx = n_ctx * n_seq
        params.n_batch = self.n_batch
        params.n_ubatch = self.n_batch
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        # Shared cells (unified) let a prefix be copied without moving data, but a sequence's
        # cells then land wherever there is room, which changes its rounding.
        params.kv_unified = not stable_shapes
        params.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(llama.model, params)
        if not self._ctx:
            raise DecodeError(f"llama.cpp could not create a context for {n_seq} sequences "
                              f"of {n_ctx} tokens")
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._cand: Any = None  # the full-vocabulary candidate array, made on first use
        self._token_dtype: Any = None
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._prefixes: collections.OrderedDict[tuple[int, ...], int] = collections.OrderedDict()
        self.n_seq = n_seq
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self.steps = 0  # decode steps run (for tests and benchmarks)
        self.moves = 0  # sequences moved down by _compact
        self.max_in_flight = 0
        self.abandoned = 0  # sequences dropped because their caller gave up

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
        slots: dict[int, _Slot] = {}  # by sequence id (0..len-1 with stable shapes)
        stopping = False
        while True:
            # Admit waiting jobs into free slots; block only when nothing is running.
            while len(slots) < self.n_parallel and not stopping:
                try:
                    job = self._queue.get(block=not slots)
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                if job.abandoned.is_set() and job.future.set_running_or_notify_cancel():
                    job.future.set_exception(DecodeError("abandoned by its caller"))
                elif job.future.set_running_or_notify_cancel():
                    # The lowest free id: with stable shapes the running ones are 0..n-1
                    # (see _compact), else a finished sequence leaves a gap anywhere.
                    seq = next(i for i in range(self.n_slots) if i not in slots)
                    slot = self._start(job, seq)
                    if slot is None or self._settle(slot):
                        self._release(seq)
                    else:
                        slots[seq] = slot
            if stopping:
                for slot in slots.values():
                    slot.job.future.set_exception(DecodeError("the decoder was closed"))
                    self._free(slot.sampler, slot.grammar)
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
                self._step([slots[seq] for seq in sorted(slots)])
            except Exception as exc:  # noqa: BLE001 - every waiting caller must hear of it
                for seq, slot in list(slots.items()):
                    slot.job.future.set_exception(exc)
                    self._free(slot.sampler, slot.grammar)
                    self._release(seq)
                slots.clear()
                continue
            for seq, slot in list(slots.items()):
                if self._settle(slot) or self._drop_if_abandoned(slot):
                    del slots[seq]
                    self._release(seq)
            slots = self._compact(slots)

    def _drop_if_abandoned(self, slot: _Slot) -> bool:
        if not slot.job.abandoned.is_set():
            return False
        self._free(slot.sampler, slot.grammar)
        self.abandoned += 1
        slot.job.future.set_exception(DecodeError("abandoned by its caller"))
        return True

    def _compact(self, slots: dict[int, _Slot]) -> dict[int, _Slot]:
        """Move running sequences down to ids 0..n-1 (their KV streams are copied), so a
        step's rows form one run of consecutive ids. Unified, ids do not matter."""
        if not self.stable_shapes:
            return slots
        lib = self._lib
        out: dict[int, _Slot] = {}
        for target, seq in enumerate(sorted(slots)):
            slot = slots[seq]
            if seq != target:
                lib.llama_memory_seq_rm(self._mem, target, -1, -1)
                lib.llama_memory_seq_cp(self._mem, seq, target, -1, -1)
                lib.llama_memory_seq_rm(self._mem, seq, -1, -1)
                slot.seq = target
                self.moves += 1
            out[target] = slot
        return out

    def _start(self, job: Job, seq: int) -> _Slot | None:
        """Prefill `job` into sequence `seq` and sample its first token; None if it failed."""
        lib = self._lib
        try:
            sampler = self._samplers(job)
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
            slot = _Slot(job=job, seq=seq, sampler=sampler[0], grammar=sampler[1],
                         n_past=len(tokens))
            token = self._sample(slot, index)
        except Exception as exc:  # noqa: BLE001
            self._free(sampler[0], sampler[1])
            job.future.set_exception(exc)
            return None
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
        if self.stable_shapes:  # pad with free slots, each one token at position 0
            for seq in range(n, max(ROW_GROUP, -(-n // ROW_GROUP) * ROW_GROUP)):
                self._lib.llama_memory_seq_rm(self._mem, seq, -1, -1)
                self._put(n, slots[0].last, 0, seq, True)
                n += 1
        self._decode(n)
        self.steps += 1
        for i, slot in enumerate(slots):
            slot.n_past += 1
            self._accept(slot, self._sample(slot, i))

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
        self._free(slot.sampler, slot.grammar)
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
        with self._turns:
            status = self._lib.llama_decode(self._ctx, self._batch)
        if status != 0:
            why = "no KV cache space" if status == 1 else f"status {status}"
            raise DecodeError(f"llama_decode failed ({why}) for a batch of {n} tokens")

    def _samplers(self, job: Job) -> tuple[Any, Any]:
        """(chain, separate grammar or None), as llama-cpp-python samples: grammar, then
        greedy at temperature 0, else top-k 40, top-p 0.95, min-p 0.05, temperature and a
        seeded draw. Greedy with a schema keeps the grammar out of the chain, for `_sample`."""
        lib = self._lib
        grammar = None
        if job.grammar is not None:
            grammar = lib.llama_sampler_init_grammar(self._vocab, job.grammar.encode("utf-8"),
                                                     b"root")
            if not grammar:
                raise ValueError("llama.cpp could not parse the grammar of the JSON schema")
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if job.temperature <= 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
            return chain, grammar
        if grammar is not None:
            lib.llama_sampler_chain_add(chain, grammar)
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(40))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_typical(1.0, 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(0.95, 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_min_p(0.05, 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(job.temperature))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(
            ctypes.c_uint32(job.seed & 0xFFFFFFFF).value))
        return chain, None

    def _sample(self, slot: _Slot, index: int) -> int:
        """The next token of `slot` from the logits at batch `index`.

        Greedy with a grammar tries the best token first and masks the whole vocabulary only
        when the grammar refuses it (llama.cpp's own "grammar first" shortcut): the same
        token as masking first, since masking only removes candidates, for one grammar check
        instead of ~150k on most steps."""
        lib = self._lib
        if slot.grammar is None:
            return lib.llama_sampler_sample(slot.sampler, self._ctx, index)
        import numpy as np

        logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(self._ctx, index),
                                       shape=(self._n_vocab,))
        token = int(logits.argmax())
        one = (lib.llama_token_data * 1)(lib.llama_token_data(token, float(logits[token]), 0.0))
        array = lib.llama_token_data_array(one, 1, -1, False)
        lib.llama_sampler_apply(slot.grammar, ctypes.byref(array))
        if not np.isfinite(one[0].logit):
            data = self._candidates()
            view = np.ctypeslib.as_array(data).view(self._token_dtype)
            view["id"] = np.arange(self._n_vocab, dtype=np.int32)
            view["logit"] = logits
            view["p"] = 0.0
            array = lib.llama_token_data_array(data, self._n_vocab, -1, False)
            lib.llama_sampler_apply(slot.grammar, ctypes.byref(array))
            token = int(view["logit"].argmax())
        lib.llama_sampler_accept(slot.grammar, token)
        lib.llama_sampler_accept(slot.sampler, token)
        return token

    def _candidates(self) -> Any:
        if self._cand is None:
            import numpy as np

            self._cand = (self._lib.llama_token_data * self._n_vocab)()
            self._token_dtype = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
        return self._cand

    def _free(self, chain: Any, grammar: Any) -> None:
        self._lib.llama_sampler_free(chain)
        if grammar is not None:
            self._lib.llama_sampler_free(grammar)
