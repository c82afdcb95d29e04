"""Runs the IR for one example: the program with assert/suggest backtracking, ensembles, timeouts, its Result.

`run_example` is the one place that decides what a failure means (`errors.classify`):
an example-level failure becomes the example's Result (with its trace), a failure
that stops the whole run (auth, unreachable, budget, configuration) is raised.
One example failing never affects another.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from . import ir as I
from .builtins import BUILTINS
from .errors import ErrorKind, classify, failure_text
from .lm import Usage, current_meter
from .runtime import Frame, Result, Runtime
from .statements import Backtrack, bind_program_inputs, exec_block, program_outputs


async def run_example(
    rt: Runtime, inputs: dict, *, program: str | None = None, example_id: str | None = None, exclude_demo_ids: frozenset = frozenset()
) -> Result:
    """Run the program on one example; never raises for example-level failures (a timeout is one)."""
    with rt.client.telemetry.example(example_id, program or rt.ir.entry) as span:
        result = await _run_example(rt, inputs, program, example_id, exclude_demo_ids)
        span.example_result(result)
        return result


async def _run_example(rt: Runtime, inputs: dict, program: str | None, example_id: str | None, exclude_demo_ids: frozenset) -> Result:
    start = time.perf_counter()
    started: list[Frame] = []  # the contexts the example ran in, to say where a timeout stopped it
    try:
        async with asyncio.timeout(rt.example_timeout):
            ens = rt.ir.extra("ensemble")
            if ens and program is None:
                return await _run_ensemble(rt, ens, inputs, example_id, exclude_demo_ids, started)
            return await _run_single(rt, inputs, program=program, example_id=example_id, exclude_demo_ids=exclude_demo_ids, started=started)
    except TimeoutError:
        line = started[-1].line if started else 0
        return _failed(
            f"the example ran longer than the {rt.example_timeout:g}s limit (--example-timeout); stopped" + (f" at line {line}" if line else ""),
            ErrorKind.TIMEOUT,
            started,
            start,
        )
    except Exception as e:  # noqa: BLE001 - raised outside one program run (an ensemble's vote): classified alike
        kind = classify(e)
        if kind is None:
            raise
        return _failed(failure_text(e, kind), kind, started, start)


def _failed(error: str, kind: ErrorKind, frames: list[Frame], start: float) -> Result:
    """The Result of an example stopped from outside its program run, with what its runs had done."""
    return Result(
        None,
        error=error,
        error_kind=kind,
        trace=[c for ctx in frames for c in ctx.trace],
        duration_s=time.perf_counter() - start,
        lm_usage=_sum_usage(ctx.meter for ctx in frames),
    )


async def _run_ensemble(rt: Runtime, ens: dict, inputs: dict, example_id, exclude, started: list) -> Result:
    """Every member (a predictor table) runs the program; each output is the members' majority."""
    start = time.perf_counter()
    results = []
    for preds in _ensemble_members(rt, ens):
        member = replace(rt.ir, predictors=preds, extras=())
        results.append(await _run_single(replace(rt, ir=member), inputs, example_id=example_id, exclude_demo_ids=exclude, started=started))
    trace = [c for r in results for c in r.trace]
    usage = _sum_usage(r.lm_usage for r in results)
    ok = [r.outputs for r in results if r.outputs is not None]
    if not ok:
        first = results[0]
        return Result(None, error=first.error, error_kind=first.error_kind, trace=trace, duration_s=time.perf_counter() - start, lm_usage=usage)
    majority = BUILTINS["majority"].fn
    outputs = {name: majority([out[name] for out in ok]) for name in ok[0]}
    return Result(outputs, trace=trace, duration_s=time.perf_counter() - start, lm_usage=usage)


def _sum_usage(parts) -> Usage:
    total = Usage()
    for u in parts:
        if u is None:
            continue
        for name in ("calls", "cached_calls", "prompt_tokens", "completion_tokens", "cost", "retries", "errors", "requests", "failed_requests"):
            setattr(total, name, getattr(total, name) + getattr(u, name))
    return total


def _ensemble_members(rt: Runtime, ens: dict) -> list[tuple[I.Predictor, ...]]:
    """Members are stored as IR JSON (the extra must survive artifacts); decoded once per runtime."""
    return rt.decoded(ens, lambda e: [tuple(I.from_json_node(p) for p in preds) for preds in e["members"]])


async def _run_single(
    rt: Runtime,
    inputs: dict,
    *,
    program: str | None = None,
    example_id: str | None = None,
    exclude_demo_ids: frozenset = frozenset(),
    started: list | None = None,
) -> Result:
    start = time.perf_counter()
    ctx = Frame(example_id, [], {}, exclude_demos=exclude_demo_ids, max_steps=rt.max_steps)
    if started is not None:
        started.append(ctx)

    token = current_meter.set(ctx.meter)  # embedding requests of retrievers count for this example too
    try:
        outputs = await run_program(rt, ctx, program or rt.ir.entry, inputs)
        return Result(outputs, trace=ctx.trace, duration_s=time.perf_counter() - start, lm_usage=ctx.meter, failed_checks=list(ctx.failed_checks))
    except Exception as e:  # noqa: BLE001 - classify() decides: this example's failure, or the run's
        kind = classify(e)
        if kind is None:
            raise
        return Result(None, error=failure_text(e, kind), error_kind=kind, trace=ctx.trace, duration_s=time.perf_counter() - start, lm_usage=ctx.meter)
    finally:
        current_meter.reset(token)


async def run_program(rt: Runtime, ctx: Frame, name: str, inputs: dict) -> dict:
    prog = rt.ir.program(name)
    env = bind_program_inputs(prog, inputs)
    # Backtracking restarts the program with feedback for the target call; the
    # per-example memo makes every unchanged call free on the rerun.
    while True:
        ctx.counts = {}
        ctx.last_call = None
        ctx.failed_checks = []
        attempt_start = len(ctx.trace)
        try:
            value = await exec_block(rt, ctx, prog.body, dict(env))
            return program_outputs(prog, value)
        except Backtrack as b:
            # The rerun replays every call (free, from the memo): the trace keeps only the final attempt.
            del ctx.trace[attempt_start:]
            ctx.attempts[b.key] = ctx.attempts.get(b.key, 0) + 1
            ctx.feedback[(b.module, b.occurrence)] = b.feedback
