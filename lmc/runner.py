"""Running a target on many inputs: the shared runtime set-up, streamed JSONL output, resume and exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import urlparse

from .datasets import Dataset, Example
from .errors import EXIT_FAIL, EXIT_INFRA, EXIT_OK, BudgetExceeded, ConfigError, DatasetError, LMError, LmcError, LMUnreachableError
from .interpreter import RUN_STOPPING, Result, Runtime, run_example
from .load import Target, choose_lm, load_config

from .settings import DEFAULT_CACHE_DIR, DEFAULT_CONCURRENCY  # noqa: E402,F401 - kept importable from here
# fsync the output after this many lines or seconds: a crash loses at most that much, never a torn line.
FSYNC_EVERY_LINES = 64
FSYNC_EVERY_S = 1.0


# ---------------------------------------------------------------- runtime set-up


def make_runtime(target: Target, *, lm: str | None = None, api_base: str | None = None,
                 cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
                 concurrency: int | None = None, rpm: float | None = None, max_backtracks: int | None = None,
                 trace_prompts: bool = False, config: Any = None, backend: Any = None, max_steps: int | None = None,
                 example_timeout: float | None = None, allow_python: Iterable[str] | None = None,
                 max_calls: int | None = None, max_cost: float | None = None,
                 price_per_mtok_in: float | None = None, price_per_mtok_out: float | None = None,
                 max_lm_errors: str | None = None, truncate_inputs: bool | None = None,
                 transport: str | None = None) -> Runtime:
    """The Runtime a command or the Python API runs `target` with.

    Every setting left None here comes from the environment, then lmc.yaml, then the default
    (`settings.resolve`); the LM is chosen by `load.choose_lm`.  What the run may import
    (`allow_python` plus lmc.yaml's list, see lmc/pyrefs.py) and where an artifact's LM aliases
    may send the key are checked here, before any LM call, and so is a --max-cost over an LM
    whose price is unknown (lmc/budget.py)."""
    from .budget import parse_error_limit, settings_price
    from .lm import LMClient
    from .pyrefs import parse_allow, policy_for
    from .settings import resolve

    config = config if config is not None else load_config()
    st = resolve({"lm": lm, "api_base": api_base, "cache_dir": os.fspath(cache_dir) if cache_dir else None,
                  "concurrency": concurrency, "rpm": rpm, "max_steps": max_steps,
                  "example_timeout": example_timeout, "max_calls": max_calls, "max_cost": max_cost,
                  "price_per_mtok_in": price_per_mtok_in, "price_per_mtok_out": price_per_mtok_out,
                  "max_lm_errors": max_lm_errors, "truncate_inputs": truncate_inputs, "transport": transport}, config)
    spec = choose_lm(lm, st.api_base, config, target)
    client = LMClient(cache_dir=st.cache_dir if use_cache else None, use_cache=use_cache, concurrency=st.concurrency,
                      rpm=st.rpm, backend=backend, max_calls=st.max_calls, max_cost=st.max_cost,
                      price=settings_price(st), transport=st.transport,
                      max_lm_errors=parse_error_limit(st.max_lm_errors) if st.max_lm_errors is not None else None)
    allowed = tuple(config.allow_python) + parse_allow(allow_python or (), "--allow-python")
    rt = Runtime(target.ir, client, lm=spec, api_base=st.api_base, trace_prompts=trace_prompts,
                 extra_lms=config.alias_specs(), from_artifact=target.kind == "artifact", max_steps=st.max_steps,
                 example_timeout=st.example_timeout, python=policy_for(target, allowed),
                 truncate_inputs=st.truncate_inputs)
    client.check_transports(rt.lms())
    if st.max_cost is not None:
        client.check_prices(rt.lms())
    if max_backtracks is not None:
        if max_backtracks < 0:
            raise ConfigError(f"--max-backtracks must be 0 or more, got {max_backtracks}")
        rt.max_backtracks = max_backtracks
    return rt.vet()


def input_files(target: Target, config: Any = None, label: str = "program") -> list[tuple[str, str]]:
    """The files a run of `target` reads, as (label, path): the target, its retrievers' corpora, lmc.yaml."""
    out = [(label, target.path)]
    out += [(f"corpus of retriever '{r.name}'", r.path) for r in target.ir.retrievers]
    if config is not None and getattr(config, "path", None):
        out.append(("configuration", config.path))
    return out


def preflight(rt: Runtime, extra: Iterable[Any] = ()) -> None:
    """Fail fast (LMUnreachableError) when a configured api_base refuses connections.

    Retries with backoff are right for a flaky server but make a mistyped URL cost half
    a minute; one TCP connect answers that in milliseconds and sends no request.
    """
    seen = set()
    specs = [rt.default_lm()] + rt.lms() + list(extra)
    for spec in specs:
        if not spec.api_base or spec.api_base in seen or spec.is_local:
            continue
        seen.add(spec.api_base)
        url = urlparse(spec.api_base)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"bad --api-base '{spec.api_base}'; expected a URL such as http://localhost:8000/v1")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            with socket.create_connection((url.hostname, port), timeout=5):
                pass
        except OSError as e:
            reason = e.strerror or type(e).__name__
            raise LMUnreachableError(f"cannot reach {spec.api_base} for {spec.model}: {reason}",
                                     model=spec.model) from None


# ---------------------------------------------------------------- one example


async def run_one(rt: Runtime, inputs: dict, *, program: str | None = None, example_id: str | None = None) -> Result:
    """Run one example; only run-stopping failures (auth, unreachable, budget, config) raise."""
    try:
        return await run_example(rt, inputs, program=program, example_id=example_id)
    except (*RUN_STOPPING, ConfigError):
        raise
    except LMError as e:
        return Result(None, error=str(e), error_kind="lm")
    except LmcError as e:
        return Result(None, error=str(e), error_kind="runtime")
    except Exception as e:  # noqa: BLE001 - a bug on one example must not stop the batch
        return Result(None, error=f"internal error: {type(e).__name__}: {e}", error_kind="internal")


def trace_line(ex: Example, result: Result) -> dict:
    return {"id": ex.id, "line": ex.line, "ok": result.ok, "error": result.error,
            "duration_s": round(result.duration_s, 4), "calls": [c.to_json() for c in result.trace]}


def encode_line(obj: dict) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, default=_jsonable, allow_nan=False) + "\n").encode("utf-8")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


# ---------------------------------------------------------------- writing lines


class LineWriter:
    """Appends whole lines with one write each; fsyncs every few lines or seconds, and on close.

    Given `fd` (an O_APPEND descriptor someone else owns, e.g. a locked `outfile.ResultsFile`),
    it writes there and leaves closing it to the owner."""

    def __init__(self, path: str | os.PathLike | None = None, *, fd: int | None = None):
        self.owns = fd is None
        if fd is None:
            p = Path(path)
            if p.parent and not p.parent.exists():
                p.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.fd = fd
        self.pending = 0
        self.last_sync = time.monotonic()

    def write(self, obj: dict) -> None:
        data = encode_line(obj)
        written = os.write(self.fd, data)
        while written < len(data):  # a short write happens only on a full disk or a signal
            written += os.write(self.fd, data[written:])
        self.pending += 1
        if self.pending >= FSYNC_EVERY_LINES or time.monotonic() - self.last_sync >= FSYNC_EVERY_S:
            self.sync()

    def sync(self) -> None:
        if self.pending:
            os.fsync(self.fd)
            self.pending = 0
        self.last_sync = time.monotonic()

    def close(self) -> None:
        if self.fd >= 0:
            self.sync()
            if self.owns:
                os.close(self.fd)
            self.fd = -1


# ---------------------------------------------------------------- the batch


@dataclass
class Summary:
    total: int = 0  # examples in the data
    skipped: int = 0  # already in the output file
    changed: int = 0  # in the output file, but run again because their input changed
    ok: int = 0
    failed: int = 0
    previously_failed: int = 0
    calls: int = 0
    cached_calls: int = 0
    cost: float = 0.0
    retries: int = 0  # LM attempts repeated after a transient failure (rate limit, 5xx, timeout, bad body)
    requests: int = 0  # LM requests sent (first tries, retries, failures), as the client counted them
    failed_requests: int = 0
    duration_s: float = 0.0
    stopped_by: LmcError | None = None  # the run-stopping error, if any

    @property
    def done(self) -> int:
        return self.ok + self.failed

    def add_client(self, usage: Any) -> None:
        """Requests, retries, failures and spend as the LM client counted them, cut-short examples included."""
        self.retries = usage.retries
        self.requests = usage.requests
        self.failed_requests = usage.failed_requests
        self.cost = usage.cost

    def exit_code(self) -> int:
        if self.stopped_by is not None:
            return self.stopped_by.exit_code
        return EXIT_FAIL if (self.failed or self.previously_failed) else EXIT_OK

    def line(self) -> str:
        rate = self.done / self.duration_s if self.duration_s > 0 else 0.0
        text = (f"{self.done} run ({self.ok} ok, {self.failed} failed)"
                + (f", {self.skipped} already done" if self.skipped else "")
                + (f", {self.changed} re-run because their input changed" if self.changed else "")
                + f" of {self.total} in {self.duration_s:.1f}s ({rate:.1f}/s); "
                f"{self.calls} LM calls ({self.cached_calls} cached), {self.requests} requests sent"
                + (f" ({self.retries} retries" + (f", {self.failed_requests} failed" if self.failed_requests else "")
                   + ")" if self.retries or self.failed_requests else "") + f", ${self.cost:.4f}")
        return text


async def run_batch(rt: Runtime, examples: Sequence[Example], input_names: Sequence[str], *,
                    out: LineWriter | None, trace: LineWriter | None = None, concurrency: int = DEFAULT_CONCURRENCY,
                    program: str | None = None, summary: Summary | None = None,
                    on_result: Callable[[Example, Result], None] | None = None) -> Summary:
    """Run `examples`, writing each line as it finishes.

    The LM client allows `concurrency` requests in flight; twice as many examples run at once,
    so an example waiting out a retry backoff does not leave a request slot idle.

    A run-stopping error (auth, unreachable, budget, config) cancels the rest; what
    finished is already on disk, and examples cut short write nothing, so a rerun does them.
    """
    from .outfile import input_digest, result_line, run_stamp

    s = summary or Summary(total=len(examples))
    start = time.perf_counter()
    pending = iter(examples)
    stamp = run_stamp(rt)

    async def worker() -> None:
        for ex in pending:
            if isinstance(s.stopped_by, BudgetExceeded):
                return
            inputs = ex.inputs(input_names)
            try:
                result = await run_one(rt, inputs, program=program, example_id=ex.id)
            except BudgetExceeded as e:
                # Requests in flight in other workers are paid for: they finish and are written; nothing new starts.
                s.stopped_by = s.stopped_by or e
                return
            if result.ok:
                s.ok += 1
            else:
                s.failed += 1
            usage = result.usage()
            s.calls += usage["calls"] + usage["cached_calls"]
            s.cached_calls += usage["cached_calls"]
            s.cost += usage["cost"]
            if out is not None:
                out.write(result_line(ex, result, input_digest(inputs), stamp))
            if trace is not None:
                trace.write(trace_line(ex, result))
            if on_result is not None:
                on_result(ex, result)

    workers = [asyncio.ensure_future(worker()) for _ in range(max(1, min(2 * concurrency, len(examples))))]
    try:
        await asyncio.gather(*workers)
    except LmcError as e:
        s.stopped_by = e
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        s.duration_s = time.perf_counter() - start
    return s


def input_types(rt: Runtime, program: str | None = None) -> dict:
    return {f.name: f.type for f in rt.ir.program(program).inputs}


def is_infra(err: BaseException) -> bool:
    return isinstance(err, LmcError) and err.exit_code == EXIT_INFRA


def ids_of(examples: Iterable[Example]) -> list[str]:
    return [ex.id for ex in examples]
