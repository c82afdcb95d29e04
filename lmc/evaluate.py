"""Scoring: metrics over one prediction, and many examples run concurrently with per-example results."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from . import ir as I
from .datasets import Example
from .errors import BudgetExceeded, LMAuthError, LMError, LmcError, LMUnreachableError
from .interpreter import Result, RunError, Runtime, _Ctx, _exec_block, load_python_ref, run_example
from .metrics import builtin_metric, to_score


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
        fn = load_python_ref("metric", metric.name, metric.ref, rt.python)
        try:
            value = fn(example, pred, [c.to_json(False) for c in trace or ()])
        except TypeError:
            value = fn(example, pred)
        if asyncio.iscoroutine(value):
            value = await value
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
    except (LMAuthError, LMUnreachableError, BudgetExceeded):
        raise
    except LMError as e:
        result = Result(None, error=str(e), error_kind="lm")
    score = None
    if result.ok and metric is not None:
        try:
            score = await score_metric(rt, metric, ex.data, result.outputs, result.trace)
        except (LMAuthError, LMUnreachableError, BudgetExceeded):
            raise
        except LmcError as e:
            result.error, result.error_kind = f"metric failed: {e}", "metric"
    passed = score is not None and score >= threshold
    return Outcome(ex, result, score, passed)


async def evaluate(rt: Runtime, examples: Sequence[Example], metric: I.MetricIR | None, *, threshold: float = 1.0,
                   concurrency: int = 8, on_result: Callable[[Outcome], None] | None = None,
                   exclude_self: bool = False) -> list[Outcome]:
    """Run and score every example (at most `concurrency` at once); results keep the input order."""
    input_names = [f.name for f in rt.ir.program().inputs]
    sem = asyncio.Semaphore(max(1, concurrency))
    results: list[Outcome | None] = [None] * len(examples)

    async def one(i: int, ex: Example) -> None:
        async with sem:
            out = await run_and_score(rt, ex, input_names, metric, threshold, exclude_self)
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
    return [r for r in results if r is not None]


def mean_score(outcomes: Sequence[Outcome]) -> float:
    if not outcomes:
        return 0.0
    return sum((o.score or 0.0) for o in outcomes) / len(outcomes)


def now() -> float:
    return time.perf_counter()
