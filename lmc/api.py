"""The Python API: `lmc.load(path)` gives a callable program backed by the same runtime as `lmc run`."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any, Sequence

from .errors import ExampleError, LmcError
from .interpreter import Result


class ProgramError(ExampleError):
    """One call of a loaded program failed (assert, unparseable answer, tool error...); `.result` has the trace."""

    def __init__(self, message: str, result: Result):
        super().__init__(message)
        self.result = result
        self.kind = result.error_kind


class Program:
    """A loaded .lmp program or artifact.  `prog(question=...)` returns the outputs as a dict."""

    def __init__(self, target: Any, runtime: Any):
        self.target = target
        self.runtime = runtime

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
        from .runner import run_one

        self._check(inputs)
        return await run_one(self.runtime, inputs)

    async def acall(self, **inputs: Any) -> dict:
        return _outputs(await self.arun(**inputs))

    def __call__(self, **inputs: Any) -> dict:
        return _outputs(_run_sync(self._one(inputs)))

    def batch(self, inputs: Sequence[dict], concurrency: int = 8, return_errors: bool = True) -> list:
        """Run many inputs at once; results keep the input order.

        A failed example's entry is its ProgramError (or, with `return_errors=False`, the first
        failure is raised after all have run).  Run-stopping errors (auth, unreachable) raise.
        """
        for values in inputs:
            if not isinstance(values, dict):
                raise LmcError(f"batch() takes a list of dicts of inputs, got {type(values).__name__}")
            self._check(values)
        results = _run_sync(self._many(list(inputs), concurrency))
        out: list = []
        for r in results:
            out.append(r.outputs if r.ok else _error(r))
        if not return_errors:
            for item in out:
                if isinstance(item, ProgramError):
                    raise item
        return out

    async def aclose(self) -> None:
        """Close the HTTP connections of the current event loop (after `acall` in your own loop)."""
        await self.runtime.client.aclose()

    def close(self) -> None:
        self.runtime.client.close()

    async def _one(self, inputs: dict) -> Result:
        try:
            return await self.arun(**inputs)
        finally:
            await self.runtime.client.aclose()

    async def _many(self, items: list[dict], concurrency: int) -> list[Result]:
        from .runner import run_one

        sem = asyncio.Semaphore(max(1, int(concurrency)))

        async def one(values: dict) -> Result:
            async with sem:
                return await run_one(self.runtime, values)

        try:
            return list(await asyncio.gather(*(one(v) for v in items)))
        finally:
            await self.runtime.client.aclose()

    def _check(self, inputs: dict) -> None:
        _validate(inputs, {f.name: f.type for f in self.runtime.ir.program().inputs})


def _validate(inputs: dict, types: dict) -> None:
    from .errors import did_you_mean

    for name, tp in types.items():
        if name not in inputs:
            if tp.kind == "optional":
                continue
            raise LmcError(f"missing input '{name}'; expected: {', '.join(types)}")
        why = tp.check(inputs[name])
        if why:
            raise LmcError(f"input '{name}' does not fit {tp.name}: {why}")
    for name in inputs:
        if name not in types:
            hint = did_you_mean(name, types)
            raise LmcError(f"unknown input '{name}'" + (f"; {hint}" if hint else f"; expected: {', '.join(types)}"))


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


def load(path: str | os.PathLike, *, program: str | None = None, lm: str | None = None, api_base: str | None = None,
         cache_dir: str | os.PathLike | None = ".lmc/cache", concurrency: int | None = None, max_backtracks: int | None = None,
         trace_prompts: bool = False, allow_python: Sequence[str] = (), max_calls: int | None = None,
         max_cost: float | None = None, price_per_mtok_in: float | None = None,
         price_per_mtok_out: float | None = None, truncate_inputs: bool | None = None) -> Program:
    """Load a `.lmp` program (zero-shot) or a compiled `*.lmc.json` artifact, ready to call.

    The LM is chosen as `lmc run` chooses it: `lm=`, then LMC_LM, then lmc.yaml, then the
    artifact's LM, then the embedded local model; `concurrency` likewise comes from
    LMC_CONCURRENCY or lmc.yaml when not given.  `cache_dir=None` turns the cache off.
    `allow_python` lists the modules its tools and metrics may import, as `--allow-python`
    does (a .lmp's own directory is allowed; an artifact imports nothing unlisted).
    `max_calls`/`max_cost` cap every call made through the returned program, as the CLI's flags do
    (a spent budget raises `BudgetExceeded`); `prog.runtime.client.usage` holds the accounting.
    """
    from .load import load_target
    from .runner import make_runtime

    target = load_target(path, program)
    rt = make_runtime(target, lm=lm, api_base=api_base, cache_dir=cache_dir, use_cache=cache_dir is not None,
                      concurrency=concurrency, max_backtracks=max_backtracks, trace_prompts=trace_prompts,
                      allow_python=[allow_python] if isinstance(allow_python, str) else allow_python,
                      max_calls=max_calls, max_cost=max_cost, price_per_mtok_in=price_per_mtok_in,
                      price_per_mtok_out=price_per_mtok_out, truncate_inputs=truncate_inputs)
    return Program(target, rt)


__all__ = ["load", "Program", "ProgramError"]
