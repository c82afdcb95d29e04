"""Scoring: metrics over one prediction, and many examples run concurrently with per-example results."""

from __future__ import annotations

import asyncio
import inspect
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from . import ir as I
from .datasets import Example
from .errors import BudgetExceeded, ConfigError, LMError, LmcError
from .interpreter import RUN_STOPPING, Result, RunError, Runtime, _Ctx, _exec_block, load_python_ref, run_example
from .metrics import builtin_metric, to_score

_ARITY: dict[Any, int] = {}  # python metric -> how many arguments it takes (2 or 3), decided once


def metric_arity(fn: Callable, what: str) -> int:
    """3 when `fn` takes (example, pred, trace), 2 for (example, pred); decided from its signature, once.

    Never by calling it and catching TypeError: that would hide a TypeError raised inside it."""
    known = _ARITY.get(fn)
    if known is not None:
        return known
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: the documented two-argument form
        _ARITY[fn] = 2
        return 2
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    star = any(p.kind is p.VAR_POSITIONAL for p in params)
    required_kw = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    arity = 3 if (star or len(positional) >= 3) else len(positional)
    if arity < 2 or len(required) > 3 or required_kw:
        shown = ", ".join(p.name for p in params) or "nothing"
        raise ConfigError(f"{what} takes ({shown}); expected (example, pred) or (example, pred, trace)")
    _ARITY[fn] = arity
    return arity


def check_metric(metric: I.MetricIR, policy: Any) -> None:
    """Import a python metric (as `policy` allows) and check its signature now, before any LM call is spent."""
    if metric.kind == "python":
        fn = load_python_ref("metric", metric.name, metric.ref, policy)
        metric_arity(fn, f"metric '{metric.name}' ({metric.ref})")


async def score_metric(rt: Runtime, metric: I.MetricIR, example: dict, pred: dict, trace: list | None = None) -> float:
    """A metric's score in [0, 1] for one prediction; raises LmcError when the metric itself fails."""
    if metric.kind == "builtin":
        fn = builtin_metric(metric.builtin)
        gold = example.get(metric.gold)
        predicted = pred.get(metric.field)
        if metric.builtin == "passage_match":
            return to_score(fn(gold, predicted))
        if gold is None:
            raise LmcError(f"metric '{metric.name}' needs the gold field '{metric.gold}' in every example")
        return to_score(fn(gold, predicted))
    if metric.kind == "python":
        what = f"metric '{metric.name}' ({metric.ref})"
        fn = load_python_ref("metric", metric.name, metric.ref, rt.python)
        args = (example, pred, [c.to_json(False) for c in trace or ()])[: metric_arity(fn, what)]
        try:
            value = fn(*args)
            if asyncio.iscoroutine(value):
                value = await value
        except Exception as e:  # noqa: BLE001 - a bug in the user's metric fails this example, named
            raise RunError(f"{what} raised {type(e).__name__}: {e}", "metric") from None
        return to_score(value)
    # block metric: a small program over (example, pred) that may call modules
    ctx = _Ctx(None, trace if trace is not None else [], {})
    names = [f.name for f in metric.program.inputs]
    env = dict(zip(names, (example, pred)))
    value = await _exec_block(rt, ctx, metric.program.body, env)
    return to_score(value)


@dataclass
class Outcome:
    """One example's run and score."""

    example: Example
    result: Result
    score: float | None
    passed: bool

    @property
    def error(self) -> str | None:
        return self.result.error


def metric_needs_gold(metric: I.MetricIR) -> set[str]:
    if metric.kind == "builtin" and metric.builtin != "passage_match":
        return {metric.gold}
    return set()


async def run_and_score(rt: Runtime, ex: Example, input_names: Sequence[str], metric: I.MetricIR | None,
                        threshold: float, exclude_self: bool = False) -> Outcome:
    inputs = ex.inputs(input_names)
    exclude = frozenset({ex.id}) if exclude_self else frozenset()
    try:
        result = await run_example(rt, inputs, example_id=ex.id, exclude_demo_ids=exclude)
    except RUN_STOPPING:
        raise
    except LMError as e:
        result = Result(None, error=str(e), error_kind="lm")
    score = None
    if result.ok and metric is not None:
        try:
            score = await score_metric(rt, metric, ex.data, result.outputs, result.trace)
        except (*RUN_STOPPING, ConfigError):
            raise
        except LmcError as e:
            text = str(e)
            result.error = text if text.startswith(f"metric '{metric.name}'") else f"metric '{metric.name}' failed: {text}"
            result.error_kind = "metric"
    passed = score is not None and score >= threshold
    return Outcome(ex, result, score, passed)


async def evaluate(rt: Runtime, examples: Sequence[Example], metric: I.MetricIR | None, *, threshold: float = 1.0,
                   concurrency: int = 8, on_result: Callable[[Outcome], None] | None = None,
                   exclude_self: bool = False) -> list[Outcome]:
    """Run and score every example (at most `concurrency` at once); results keep the input order."""
    input_names = [f.name for f in rt.ir.program().inputs]
    sem = asyncio.Semaphore(max(1, concurrency))
    results: list[Outcome | None] = [None] * len(examples)
    spent: list[BudgetExceeded] = []

    async def one(i: int, ex: Example) -> None:
        if spent:  # the budget ran out: examples not yet started stay unrun
            return
        async with sem:
            try:
                out = await run_and_score(rt, ex, input_names, metric, threshold, exclude_self)
            except BudgetExceeded as e:
                # Requests already in flight are paid for: let them finish (and reach the cache), start nothing new.
                spent.append(e)
                return
        results[i] = out
        if on_result:
            on_result(out)

    tasks = [asyncio.ensure_future(one(i, ex)) for i, ex in enumerate(examples)]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    if spent:
        raise spent[0]
    return [r for r in results if r is not None]


def mean_score(outcomes: Sequence[Outcome]) -> float:
    if not outcomes:
        return 0.0
    return sum((o.score or 0.0) for o in outcomes) / len(outcomes)


def now() -> float:
    return time.perf_counter()
