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
from .errors import (EXIT_FAIL, EXIT_INFRA, EXIT_OK, BudgetExceeded, ConfigError, DatasetError, LMAuthError,
                     LMError, LmcError, LMUnreachableError)
from .interpreter import Result, Runtime, run_example
from .load import Target, choose_lm, load_config

DEFAULT_CACHE_DIR = ".lmc/cache"
DEFAULT_CONCURRENCY = 8
# fsync the output after this many lines or seconds: a crash loses at most that much, never a torn line.
FSYNC_EVERY_LINES = 64
FSYNC_EVERY_S = 1.0


# ---------------------------------------------------------------- runtime set-up


def make_runtime(target: Target, *, lm: str | None = None, api_base: str | None = None,
                 cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR, use_cache: bool = True,
                 concurrency: int | None = None, rpm: float | None = None, max_backtracks: int | None = None,
                 trace_prompts: bool = False, config: Any = None, backend: Any = None,
                 allow_python: Iterable[str] | None = None) -> Runtime:
    """The Runtime a command or the Python API runs `target` with (LM chosen by `load.choose_lm`).

    What the run may import (`allow_python` plus lmc.yaml's list, see lmc/pyrefs.py) and where an
    artifact's LM aliases may send the key are checked here, before any LM call.
    """
    from .lm import LMClient
    from .pyrefs import parse_allow, policy_for

    config = config if config is not None else load_config()
    spec = choose_lm(lm, api_base, config, target)
    base = api_base or config.api_base
    if cache_dir is None and use_cache:
        cache_dir = config.cache_dir or DEFAULT_CACHE_DIR
    j = concurrency or config.concurrency or DEFAULT_CONCURRENCY
    if j < 1:
        raise ConfigError(f"concurrency must be at least 1, got {j}")
    if rpm is not None and rpm <= 0:
        raise ConfigError(f"--rpm must be positive, got {rpm:g}")
    client = LMClient(cache_dir=cache_dir, use_cache=use_cache, concurrency=j, rpm=rpm, backend=backend)
    allowed = tuple(config.allow_python) + parse_allow(allow_python or (), "--allow-python")
    rt = Runtime(target.ir, client, lm=spec, api_base=base, trace_prompts=trace_prompts,
                 extra_lms=config.alias_specs(), from_artifact=target.kind == "artifact",
                 python=policy_for(target, allowed))
    if max_backtracks is not None:
        if max_backtracks < 0:
            raise ConfigError(f"--max-backtracks must be 0 or more, got {max_backtracks}")
        rt.max_backtracks = max_backtracks
    return rt.vet()


def preflight(rt: Runtime) -> None:
    """Fail fast (LMUnreachableError) when a configured api_base refuses connections.

    Retries with backoff are right for a flaky server but make a mistyped URL cost half
    a minute; one TCP connect answers that in milliseconds and sends no request.
    """
    seen = set()
    specs = [rt.default_lm()] + [rt.lm_for(p) for p in rt.ir.predictors]
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
    except (LMAuthError, LMUnreachableError, BudgetExceeded, ConfigError):
        raise
    except LMError as e:
        return Result(None, error=str(e), error_kind="lm")
    except LmcError as e:
        return Result(None, error=str(e), error_kind="runtime")
    except Exception as e:  # noqa: BLE001 - a bug on one example must not stop the batch
        return Result(None, error=f"internal error: {type(e).__name__}: {e}", error_kind="internal")


def result_line(ex: Example, result: Result) -> dict:
    return {"id": ex.id, "line": ex.line, "outputs": result.outputs, "error": result.error,
            "error_kind": result.error_kind, "usage": result.usage()}


def trace_line(ex: Example, result: Result) -> dict:
    return {"id": ex.id, "line": ex.line, "ok": result.ok, "error": result.error,
            "duration_s": round(result.duration_s, 4), "calls": [c.to_json() for c in result.trace]}


def encode_line(obj: dict) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, default=_jsonable) + "\n").encode("utf-8")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


# ---------------------------------------------------------------- resume


@dataclass
class Previous:
    """What an earlier run left in the output file."""

    done: dict[str, bool] = field(default_factory=dict)  # id -> ok
    dropped: int = 0  # torn or unreadable lines removed


def read_previous(path: str | os.PathLike) -> Previous:
    """Ids already written to `path`; a torn last line (a crash mid-write) is cut off so appends stay clean."""
    p = Path(path)
    prev = Previous()
    if not p.exists():
        return prev
    from .limits import read_bounded

    def fail(message: str) -> DatasetError:
        if message == "is a directory":
            message = "is a directory, expected a .jsonl output file"
        return DatasetError(message, str(path))

    data = read_bounded(p, "data", fail)  # a FIFO or device as --out is refused, not read forever
    keep: list[bytes] = []
    changed = False
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        changed = True  # no final newline: the last line is torn whatever it holds
        lines.pop()
        prev.dropped += 1
    for raw in lines:
        try:
            obj = json.loads(raw)
            ok = isinstance(obj, dict) and isinstance(obj.get("id"), str)
        except ValueError:
            ok = False
        if not ok:
            prev.dropped += 1
            changed = True
            continue
        keep.append(raw)
        prev.done[obj["id"]] = obj.get("error") is None
    if changed:
        tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(b"".join(line + b"\n" for line in keep))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    return prev


class LineWriter:
    """Appends whole lines with one write each; fsyncs every few lines or seconds, and on close."""

    def __init__(self, path: str | os.PathLike):
        p = Path(path)
        if p.parent and not p.parent.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
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
            os.close(self.fd)
            self.fd = -1


# ---------------------------------------------------------------- the batch


@dataclass
class Summary:
    total: int = 0  # examples in the data
    skipped: int = 0  # already in the output file
    ok: int = 0
    failed: int = 0
    previously_failed: int = 0
    calls: int = 0
    cached_calls: int = 0
    cost: float = 0.0
    retries: int = 0  # LM attempts repeated after a transient failure (rate limit, 5xx, timeout, bad body)
    duration_s: float = 0.0
    stopped_by: LmcError | None = None  # the run-stopping error, if any

    @property
    def done(self) -> int:
        return self.ok + self.failed

    def exit_code(self) -> int:
        if self.stopped_by is not None:
            return self.stopped_by.exit_code
        return EXIT_FAIL if (self.failed or self.previously_failed) else EXIT_OK

    def line(self) -> str:
        rate = self.done / self.duration_s if self.duration_s > 0 else 0.0
        text = (f"{self.done} run ({self.ok} ok, {self.failed} failed)"
                + (f", {self.skipped} already done" if self.skipped else "")
                + f" of {self.total} in {self.duration_s:.1f}s ({rate:.1f}/s); "
                f"{self.calls} LM calls ({self.cached_calls} cached"
                + (f", {self.retries} retries" if self.retries else "") + f"), ${self.cost:.4f}")
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
    s = summary or Summary(total=len(examples))
    start = time.perf_counter()
    pending = iter(examples)

    async def worker() -> None:
        for ex in pending:
            result = await run_one(rt, ex.inputs(input_names), program=program, example_id=ex.id)
            if result.ok:
                s.ok += 1
            else:
                s.failed += 1
            usage = result.usage()
            s.calls += usage["calls"] + usage["cached_calls"]
            s.cached_calls += usage["cached_calls"]
            s.cost += usage["cost"]
            if out is not None:
                out.write(result_line(ex, result))
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


def select_todo(dataset: Dataset, prev: Previous, summary: Summary) -> list[Example]:
    todo = []
    for ex in dataset.examples:
        if ex.id in prev.done:
            summary.skipped += 1
            if not prev.done[ex.id]:
                summary.previously_failed += 1
        else:
            todo.append(ex)
    return todo


def input_types(rt: Runtime, program: str | None = None) -> dict:
    return {f.name: f.type for f in rt.ir.program(program).inputs}


def is_infra(err: BaseException) -> bool:
    return isinstance(err, LmcError) and err.exit_code == EXIT_INFRA


def ids_of(examples: Iterable[Example]) -> list[str]:
    return [ex.id for ex in examples]
