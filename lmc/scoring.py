"""Scoring many examples: each run and scored by a metric, concurrently, results in example order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from . import ir as I
from .datasets import Example
from .errors import ErrorKind, classify, failure_text
from .executor import run_each
from .interpreter import run_example
from .runtime import Result, Runtime
from .statements import score_and_explain


@dataclass
class Outcome:
    """One example's run and score."""

    example: Example
    result: Result
    score: float | None
    passed: bool
    feedback: str | None = None  # the metric's words about the score (metrics.explain, or the metric's own)

    @property
    def error(self) -> str | None:
        return self.result.error


def metric_needs_gold(metric: I.MetricIR) -> set[str]:
    if metric.kind == "builtin" and metric.builtin != "passage_match" and metric.gold:
        return {metric.gold}
    return set()


async def run_and_score(
    rt: Runtime, ex: Example, input_names: Sequence[str], metric: I.MetricIR | None, threshold: float, exclude_self: bool = False
) -> Outcome:
    # The example's span (when the run exports them) stays open for the metric, so it carries the score.
    with rt.client.telemetry.example(ex.id, rt.ir.entry) as span:
        outcome = await _run_and_score(rt, ex, input_names, metric, threshold, exclude_self)
        span.score(outcome.score, outcome.passed)
        return outcome


async def _run_and_score(
    rt: Runtime, ex: Example, input_names: Sequence[str], metric: I.MetricIR | None, threshold: float, exclude_self: bool
) -> Outcome:
    inputs = ex.inputs(input_names)
    exclude = frozenset({ex.id}) if exclude_self else frozenset()
    result = await run_example(rt, inputs, example_id=ex.id, exclude_demo_ids=exclude)
    score = feedback = None
    if result.outputs is not None and metric is not None:
        try:
            score, feedback = await score_and_explain(rt, metric, ex.data, result.outputs, result.trace)
        except Exception as e:  # noqa: BLE001 - classify() decides: this example's failure, or the run's
            kind = classify(e)
            if kind is None:
                raise
            text = failure_text(e, kind)
            result.error = text if text.startswith(f"metric '{metric.name}'") else f"metric '{metric.name}' failed: {text}"
            result.error_kind = ErrorKind.METRIC
    passed = score is not None and score >= threshold
    return Outcome(ex, result, score, passed, feedback)


async def evaluate(
    rt: Runtime,
    examples: Sequence[Example],
    metric: I.MetricIR | None,
    *,
    threshold: float = 1.0,
    concurrency: int = 8,
    on_result: Callable[[Outcome], None] | None = None,
    exclude_self: bool = False,
) -> list[Outcome]:
    """Run and score every example (at most `concurrency` at once); results keep the input order."""
    input_names = [f.name for f in rt.ir.program().inputs]
    batch = await run_each(
        examples,
        lambda ex: run_and_score(rt, ex, input_names, metric, threshold, exclude_self),
        workers=concurrency,
        on_result=(lambda ex, out: on_result(out)) if on_result else None,
    )
    if batch.stopped_by is not None:
        raise batch.stopped_by
    return batch.done()


def mean_score(outcomes: Sequence[Outcome]) -> float:
    if not outcomes:
        return 0.0
    return sum((o.score or 0.0) for o in outcomes) / len(outcomes)
