"""The Python API, mirroring the command line: `lmc.check`, `lmc.compile`, `lmc.evaluate`, `lmc.load`.

Each does what its command does, on the same code (`session.open_runtime` assembles every
run), and returns a typed result instead of printing: `CheckResult` (diagnostics),
`Compiled` (the artifact and its scores), `Evaluation` (reports and the gates' verdict),
`Program` (a callable program).  Failures raise the `LmcError` family the CLI prints.
`acompile` and `aevaluate` are the same as coroutines, for code that runs an event loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .artifact import Artifact
from .check import check_path
from .compiler import CompileOptions, CompileResult, compile_async
from .errors import CompileErrors, Diagnostic, ExampleError, LmcError
from .evalreport import EvalOptions, Evaluation, aevaluate_files
from .executor import run_each
from .gate import GateOptions
from .inputs import bind_inputs
from .interpreter import run_example
from .runtime import Result
from .session import RunOptions, Session, open_runtime
from .targets import load_target

# `cache_dir` left out: the setting's own resolution ($LMC_CACHE_DIR, lmc.yaml, .lmc/cache); None: no cache.
_RESOLVED: Any = type("Resolved", (), {"__repr__": lambda self: "<from the environment, lmc.yaml or default>"})()


def _run_options(cache_dir: Any = _RESOLVED, **flags: Any) -> RunOptions:
    """The RunOptions of an API call; its keywords are the command-line flags' names, but `cache_dir=None` is --no-cache."""
    return RunOptions.from_flags(cache_dir=None if cache_dir is None or cache_dir is _RESOLVED else cache_dir, no_cache=cache_dir is None, **flags)


# ---------------------------------------------------------------- check


@dataclass(frozen=True)
class CheckResult:
    """Every diagnostic of the files checked (empty when they are fine)."""

    paths: tuple[str, ...]
    diagnostics: tuple[Diagnostic, ...] = ()
    rendered: str = ""  # the diagnostics as `lmc check` prints them, with the source lines and carets

    @property
    def ok(self) -> bool:
        return not self.diagnostics


def check(*paths: str | os.PathLike) -> CheckResult:
    """Parse and type-check .lmp files, as `lmc check` does; a missing or unreadable file raises LmcError."""
    diagnostics: list[Diagnostic] = []
    rendered = []
    for path in paths:
        if not Path(path).exists():
            raise LmcError(f"{path}: no such file")
        try:
            check_path(path)
        except CompileErrors as e:
            diagnostics += e.diagnostics
            rendered.append(e.render())
    return CheckResult(tuple(str(p) for p in paths), tuple(diagnostics), "\n".join(rendered))


# ---------------------------------------------------------------- compile


@dataclass
class Compiled:
    """A compiled program: the artifact written to `path`, its dev scores, the candidates tried and the notes."""

    path: str
    artifact: Artifact
    baseline: float | None  # dev score of the program as written
    final: float | None  # dev score of the compiled program
    candidates: list[dict]
    notes: list[str]
    stats: dict  # wall-clock figures and LM accounting (the *.stats.json sidecar)
    passes: list[dict] = field(default_factory=list)

    def load(self, **options: Any) -> "Program":
        """The compiled program, ready to call (the keywords of `lmc.load`)."""
        return load(self.path, **options)


async def acompile(
    program: str | os.PathLike,
    *,
    train: str | os.PathLike,
    out: str | os.PathLike,
    dev: str | os.PathLike | None = None,
    passes: Sequence[str] = ("bootstrap",),
    options: dict | None = None,
    metric: str | None = None,
    seed: int = 0,
    program_name: str | None = None,
    teacher_lm: str | None = None,
    prompt_lm: str | None = None,
    threshold: float | None = None,
    keep_worse: bool = False,
    score_dev: bool = True,
    allow_partial: bool = False,
    log: Callable[[str], None] = lambda msg: None,
    **run: Any,
) -> Compiled:
    """`lmc compile PROGRAM --train TRAIN -o OUT`: optimize the program and write the artifact.

    `passes` is the chain (`--optimizer` then `--then`); `options` the pass options by name
    (`{"max_demos": 2}`, as the flags); the other keywords are those of `lmc.load`
    (`lm`, `api_base`, `cache_dir`, `jobs`, `max_calls`, `max_cost`, ...).
    """
    opts = CompileOptions(
        program=str(program),
        train=str(train),
        out=str(out),
        dev=str(dev) if dev else None,
        program_name=program_name,
        metric=metric,
        passes=list(passes),
        seed=seed,
        teacher_lm=teacher_lm,
        prompt_lm=prompt_lm,
        threshold=threshold,
        allow_partial=allow_partial,
        keep_worse=keep_worse,
        score_dev=score_dev,
        params={k: v for k, v in (options or {}).items() if v is not None},
        run=_run_options(**run),
    )
    r: CompileResult = await compile_async(opts, log=log)
    return Compiled(str(out), r.artifact, r.baseline, r.final, r.candidates, r.notes, r.stats, r.passes)


def compile(program: str | os.PathLike, **kwargs: Any) -> Compiled:  # noqa: A001 - the API mirrors `lmc compile`
    """`lmc compile`; see `acompile` for the keywords."""
    return _run_sync(acompile(program, **kwargs))


# ---------------------------------------------------------------- evaluate


async def aevaluate(
    target: str | os.PathLike,
    *,
    data: str | os.PathLike,
    metric: str | None = None,
    threshold: float | None = None,
    baseline: str | os.PathLike | None = None,
    min_score: float | None = None,
    max_drop: float | None = None,
    max_errors: int | None = None,
    confidence: float = 0.95,
    allow_program_change: bool = False,
    shard: str | None = None,
    program: str | None = None,
    report: str | os.PathLike | None = None,
    **run: Any,
) -> Evaluation:
    """`lmc eval TARGET --data DATA`: the candidate's report, the baseline's, and the verdict of the gates.

    An artifact is scored with the metric and threshold it was compiled with unless `metric` or
    `threshold` says otherwise.  `result.passed` and `result.exit_code` say what `lmc eval` would exit with.
    """
    gates = GateOptions(
        min_score=min_score,
        baseline=str(baseline) if baseline is not None else None,
        max_drop=max_drop,
        max_errors=max_errors,
        confidence=confidence,
        allow_program_change=allow_program_change,
    )
    opts = EvalOptions(
        str(target),
        str(data),
        metric=metric,
        program=program,
        threshold=threshold,
        shard=shard,
        gates=gates,
        run=_run_options(**run),
        report=str(report) if report is not None else None,
    )
    return await aevaluate_files(opts)


def evaluate(target: str | os.PathLike, **kwargs: Any) -> Evaluation:
    """`lmc eval`; see `aevaluate` for the keywords."""
    return _run_sync(aevaluate(target, **kwargs))


# ---------------------------------------------------------------- load


class ProgramError(ExampleError):
    """One call of a loaded program failed (assert, unparseable answer, tool error...); `.result` has the trace."""

    def __init__(self, message: str, result: Result):
        super().__init__(message)
        self.result = result
        self.kind = result.error_kind


class Program:
    """A loaded .lmp program or artifact.  `prog(question=...)` returns the outputs as a dict."""

    def __init__(self, session: Session):
        self.session = session
        self.target = session.target
        self.runtime = session.runtime

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def input_names(self) -> list[str]:
        return [f.name for f in self.runtime.ir.program().inputs]

    @property
    def output_names(self) -> list[str]:
        return [f.name for f in self.runtime.ir.program().outputs]

    def __repr__(self) -> str:
        return f"<lmc.Program {self.name}({', '.join(self.input_names)}) from {self.target.path}>"

    # -- calls -----------------------------------------------------------------------
    async def arun(self, **inputs: Any) -> Result:
        """The full Result (outputs or error, plus the trace); raises only for run-stopping errors."""
        self._check(inputs)
        return await run_example(self.runtime, inputs)

    async def acall(self, **inputs: Any) -> dict:
        return _outputs(await self.arun(**inputs))

    def __call__(self, **inputs: Any) -> dict:
        return _outputs(_run_sync(self._closing(self.arun(**inputs))))

    def batch(self, inputs: Sequence[dict], jobs: int | None = None, return_errors: bool = True, concurrency: int | None = None) -> list:
        """Run many inputs at once (`jobs` at a time, default the run's -j setting); results keep the input order.

        A failed example's entry is its ProgramError (or, with `return_errors=False`, the first
        failure is raised after all have run).  Run-stopping errors (auth, unreachable) raise.
        """
        for values in inputs:
            if not isinstance(values, dict):
                raise LmcError(f"batch() takes a list of dicts of inputs, got {type(values).__name__}")
            self._check(values)
        workers = jobs or concurrency or self.session.settings.concurrency
        batch = _run_sync(self._closing(run_each(list(inputs), lambda v: run_example(self.runtime, v), workers=workers)))
        if batch.stopped_by is not None:
            raise batch.stopped_by
        out: list = [r.outputs if r.ok else _error(r) for r in batch.done()]
        if not return_errors:
            for item in out:
                if isinstance(item, ProgramError):
                    raise item
        return out

    async def aclose(self) -> None:
        """Close the HTTP connections of the current event loop (after `acall` in your own loop)."""
        await self.session.aclose()

    def close(self) -> None:
        self.session.client.close()

    async def _closing(self, work):
        try:
            return await work
        finally:
            await self.session.aclose()

    def _check(self, inputs: dict) -> None:
        bind_inputs(self.runtime.ir.program().inputs, inputs)


def _error(r: Result) -> ProgramError:
    return ProgramError(r.error or "failed", r)


def _outputs(r: Result) -> dict:
    if not r.ok:
        raise _error(r)
    return dict(r.outputs or {})


def _run_sync(coro):
    """asyncio.run, or a helper thread when the caller already runs an event loop (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=target, name="lmc-call")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def load(
    path: str | os.PathLike,
    *,
    program: str | None = None,
    lm: str | None = None,
    api_base: str | None = None,
    cache_dir: str | os.PathLike | None = _RESOLVED,
    jobs: int | None = None,
    concurrency: int | None = None,
    max_backtracks: int | None = None,
    trace_prompts: bool = False,
    allow_python: Sequence[str] | str = (),
    max_calls: int | None = None,
    max_cost: float | None = None,
    price_per_mtok_in: float | None = None,
    price_per_mtok_out: float | None = None,
    truncate_inputs: bool | None = None,
    max_steps: int | None = None,
    example_timeout: float | None = None,
    rpm: float | None = None,
    transport: str | None = None,
    otel: Any = None,
    otel_content: bool = False,
) -> Program:
    """Load a `.lmp` program (zero-shot) or a compiled `*.lmc.json` artifact, ready to call.

    Every setting is chosen as `lmc run` chooses it: the keyword, then the environment
    (LMC_LM, LMC_CONCURRENCY, ...), then lmc.yaml, then the default; the LM falls back to the
    artifact's, then the embedded local model.  `cache_dir=None` turns the cache off.
    `allow_python` lists the modules its tools and metrics may import, as `--allow-python`
    does (a .lmp's own directory is allowed; an artifact imports nothing unlisted).
    `max_calls`/`max_cost` cap every call made through the returned program, as the CLI's flags do
    (a spent budget raises `BudgetExceeded`); `prog.runtime.client.usage` holds the accounting.
    `transport` ("direct" or "litellm") overrides the transport each LM gets by its protocol.
    `otel=True` exports OpenTelemetry spans over OTLP/HTTP as `--otel` does (an OpenTelemetry
    SpanExporter object receives them instead), `otel_content=True` adds prompts and completions.
    """
    flags = dict(locals())
    del flags["path"], flags["program"]
    return Program(open_runtime(load_target(path, program), _run_options(**flags)))


__all__ = ["CheckResult", "Compiled", "Evaluation", "Program", "ProgramError", "acompile", "aevaluate", "check", "compile", "evaluate", "load"]
