"""`lmc run --data`: many inputs through one runtime, each result streamed as a JSONL line, a summary and exit code."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import DEFAULT_CONCURRENCY
from .datasets import Example
from .errors import EXIT_FAIL, EXIT_OK, LmcError
from .executor import run_each
from .interpreter import run_example
from .outfile import input_digest, result_line, run_stamp
from .runtime import Result, Runtime
from .traces import TRACE_SCHEMA

# fsync the output after this many lines or seconds: a crash loses at most that much, never a torn line.
FSYNC_EVERY_LINES = 64
FSYNC_EVERY_S = 1.0


# ---------------------------------------------------------------- one line per example


def trace_line(ex: Example, result: Result, inputs: dict, *, program: str | None = None, score: float | None = None) -> dict:
    """One example's trace: what went in and came out, its error, its score when it was scored, its calls."""
    return {
        "schema": TRACE_SCHEMA,
        "id": ex.id,
        "line": ex.line,
        "program": program,
        "inputs": inputs,
        "outputs": result.outputs,
        "ok": result.ok,
        "error": result.error,
        "score": score,
        "duration_s": round(result.duration_s, 4),
        "calls": [c.to_json() for c in result.trace],
    }


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

    def __init__(self, path: str | os.PathLike[str] | None = None, *, fd: int | None = None):
        self.owns = fd is None
        if fd is None:
            p = Path(path or "")
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


class StdoutLines:
    """`lmc run --data` without --out: each line to stdout as it finishes (nothing to resume from)."""

    def write(self, obj: dict) -> None:
        try:
            sys.stdout.write(encode_line(obj).decode("utf-8"))
            sys.stdout.flush()
        except BrokenPipeError:  # `lmc run ... | head`: the reader has gone
            _silence_stdout()
            raise LmcError("stdout was closed before every result was written", exit_code=EXIT_FAIL) from None

    def close(self) -> None:
        pass


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (an embedding program's stdout)
        pass


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
        text = (
            f"{self.done} run ({self.ok} ok, {self.failed} failed)"
            + (f", {self.skipped} already done" if self.skipped else "")
            + (f", {self.changed} re-run because their input changed" if self.changed else "")
            + f" of {self.total} in {self.duration_s:.1f}s ({rate:.1f}/s); "
            f"{self.calls} LM calls ({self.cached_calls} cached), {self.requests} requests sent"
            + (
                f" ({self.retries} retries" + (f", {self.failed_requests} failed" if self.failed_requests else "") + ")"
                if self.retries or self.failed_requests
                else ""
            )
            + f", ${self.cost:.4f}"
        )
        return text


async def run_batch(
    rt: Runtime,
    examples: Sequence[Example],
    input_names: Sequence[str],
    *,
    out: LineWriter | None,
    trace: LineWriter | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    program: str | None = None,
    summary: Summary | None = None,
    on_result: Callable[[Example, Result], None] | None = None,
) -> Summary:
    """Run `examples`, writing each line as it finishes.

    A run-stopping error (auth, unreachable, budget, config) cancels the rest; what
    finished is already on disk, and examples cut short write nothing, so a rerun does them.
    """
    s = summary or Summary(total=len(examples))
    start = time.perf_counter()
    stamp = run_stamp(rt)

    async def one(ex: Example) -> tuple[dict, Result]:
        inputs = ex.inputs(input_names)
        return inputs, await run_example(rt, inputs, program=program, example_id=ex.id)

    def finished(ex: Example, done: tuple[dict, Result]) -> None:
        inputs, result = done
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
            trace.write(trace_line(ex, result, inputs, program=program or rt.ir.entry))
        if on_result is not None:
            on_result(ex, result)

    try:
        # Twice as many examples as request slots: an example waiting out a retry backoff leaves no slot idle.
        batch = await run_each(examples, one, workers=2 * concurrency, on_result=finished)
    finally:
        s.duration_s = time.perf_counter() - start
    if batch.stopped_by is not None:
        if not isinstance(batch.stopped_by, LmcError):
            raise batch.stopped_by
        s.stopped_by = batch.stopped_by
    return s
