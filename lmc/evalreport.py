"""Glue between the evaluator and the gate: metric choice, data checks, shards, and outcomes -> `gate.Report`.

`lmc eval` reads top to bottom through this module: `choose_metric`, `check_data`,
`select_shard`, `check_baseline_*` (all before any LM call), then
`evaluate_targets` (one LM client and one event loop for candidate and baseline,
so both share the cache), then `build_report`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from . import gate
from .artifact import portable_path, sha256_file
from .datasets import Dataset, Example, validate
from .errors import ConfigError, LmcError, ReportError, did_you_mean
from .ir import IR, MetricIR

# Evaluator error kinds the report format does not name: a metric that crashed is
# a run-time problem of the program, not of the LM.
_ERROR_KIND = {"lm": "lm", "parse": "parse", "assert": "assert", "runtime": "runtime", "budget": "lm",
               "timeout": "runtime"}


class MetricChoiceError(ConfigError):
    """`--metric` missing, ambiguous or unknown (exit 2)."""


# ---------------------------------------------------------------- before evaluating


def choose_metric(ir: IR, name: str | None, where: str) -> MetricIR:
    """The metric named by --metric, or the program's only one; otherwise a one-line error listing them."""
    names = [m.name for m in ir.metrics]
    if name:
        metric = ir.metric(name)
        if metric is not None:
            return metric
        if not names:
            raise MetricChoiceError(f"{where}: unknown metric '{name}'; the program defines no metric")
        hint = did_you_mean(name, names)
        listed = "defined: " + ", ".join(names)
        raise MetricChoiceError(f"{where}: unknown metric '{name}'; " + (f"{hint} " if hint else "") + listed)
    if len(names) == 1:
        return ir.metrics[0]
    if not names:
        raise MetricChoiceError(f"{where}: the program defines no metric; add one such as `metric acc = accuracy(answer)`")
    raise MetricChoiceError(f"{where}: the program defines several metrics ({', '.join(names)}); choose one with --metric NAME")


def metric_ref(metric: MetricIR, threshold: float) -> gate.MetricRef:
    return gate.MetricRef(metric.name, metric.spec or f"{metric.kind} metric {metric.name}", float(threshold))


def data_ref(dataset: Dataset) -> gate.DataRef:
    return gate.DataRef(portable_path(dataset.path), dataset.sha256, len(dataset))


def check_data(ir: IR, dataset: Dataset, metric: MetricIR) -> None:
    """Every example has the program's inputs (well typed) and the field the metric reads as gold."""
    from .evaluate import metric_needs_gold

    prog = ir.program()
    validate(dataset, {f.name: f.type for f in prog.inputs}, need_labels=metric_needs_gold(metric))


def select_shard(dataset: Dataset, shard: tuple[int, int] | None) -> list[Example]:
    """The examples of shard i/N (by a hash of the id, see `gate.in_shard`), in file order; all without a shard."""
    if shard is None:
        return list(dataset.examples)
    index, count = shard
    return [ex for ex in dataset.examples if gate.in_shard(ex.id, index, count)]


def program_ref(target: Any) -> gate.ProgramRef:
    """The program a loaded target (`load.Target`) runs: name, source sha256 and source path."""
    return gate.ProgramRef(target.name, target.sha256, target.program_json().get("path"))


def _stub_report(program: gate.ProgramRef, target: gate.TargetRef, metric: gate.MetricRef, data: gate.DataRef,
                 examples: Sequence[Example], path: str | None) -> gate.Report:
    """A report with the refs of a run that has not happened yet, so `gate.align` can judge it before any LM call."""
    results = tuple(gate.ExampleResult(ex.id, ex.line, 0.0, False) for ex in examples)
    return gate.Report(program, target, metric, data, None, results, gate.summarize(results), path=path)


def check_baseline_report(base: gate.Report, program: gate.ProgramRef, target: gate.TargetRef, metric: gate.MetricRef,
                          data: gate.DataRef, examples: Sequence[Example], *, allow_program_change: bool) -> None:
    """Refuse, before evaluating, a baseline report on other data, another metric, another program or lacking ids."""
    gate.align(base, _stub_report(program, target, metric, data, examples, None), allow_program_change=allow_program_change)


def baseline_metric(base_ir: IR, metric: MetricIR, where: str) -> MetricIR:
    """The baseline's metric of the same name; refused when absent (its spec is compared by `gate.align`)."""
    found = base_ir.metric(metric.name)
    if found is None:
        names = ", ".join(m.name for m in base_ir.metrics) or "none"
        raise ReportError(f"{where}: baseline has no metric '{metric.name}' (it defines: {names}); "
                          "scores under different metrics cannot be compared")
    return found


def check_baseline_target(base_program: gate.ProgramRef, base_path: str, base_metric: gate.MetricRef,
                          cand_program: gate.ProgramRef, cand_metric: gate.MetricRef, data: gate.DataRef,
                          examples: Sequence[Example], *, allow_program_change: bool) -> None:
    """Same metric spec and the same program for a baseline about to be evaluated; refused before any LM call."""
    target = gate.TargetRef("program", "-", "0" * 64)
    base = _stub_report(base_program, target, base_metric, data, examples, base_path)
    cand = _stub_report(cand_program, target, cand_metric, data, examples, None)
    gate.align(base, cand, allow_program_change=allow_program_change)


def load_baseline_report(path: str) -> gate.Report:
    """Load `--baseline` as a report; a shard report is fine (it is checked against the candidate's ids)."""
    return gate.Report.load(path)


def baseline_is_report(path: str) -> bool:
    """A report when it says so; a `.json` that is neither a report nor an artifact is read as a (corrupt) report.

    That way `--baseline broken.json` says what is wrong with the JSON instead of
    failing to parse it as `.lmp` source.
    """
    from .artifact import is_artifact_path

    if gate.is_report(path):
        return True
    if path.endswith(".lmp") or is_artifact_path(path):
        return False
    return path.endswith(".json")


# ---------------------------------------------------------------- evaluating


@dataclass(frozen=True)
class Job:
    """One target to evaluate on the selected examples."""

    ir: IR
    lm: Any  # LMSpec
    metric: MetricIR
    from_artifact: bool = False
    python: Any = None  # pyrefs.PythonPolicy: what its tools and metrics may import


@dataclass(frozen=True)
class Run:
    """The outcomes of one job, with the LM accounting and wall time of that job alone."""

    outcomes: list
    usage: dict
    duration_s: float


def _usage(client: Any) -> dict:
    u = client.usage
    return {"calls": u.calls, "cached_calls": u.cached_calls, "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens, "cost": u.cost, "requests": u.requests, "retries": u.retries,
            "failed_requests": u.failed_requests}


def evaluate_targets(jobs: Sequence[Job], examples: Sequence[Example], *, threshold: float, client: Any,
                     concurrency: int, api_base: str | None = None, extra_lms: dict | None = None,
                     on_result: Callable[[int, Any], None] | None = None, max_steps: int | None = None,
                     example_timeout: float | None = None, truncate_inputs: bool = False) -> list[Run]:
    """Evaluate each job in turn on `examples` with one shared client (hence one cache).

    Before the first LM call every target is vetted (imports allowed, LM aliases not re-routing keys),
    its python metric imported and its signature checked, every LM priced when --max-cost is set, and
    every configured server must be listening.  Run-stopping LM errors propagate (auth refused,
    unreachable, --max-lm-errors passed); a budget that runs out, or a run in which every LM call
    failed, is an LMFailure (exit 3): an evaluation with holes is not a verdict."""
    import asyncio

    from .errors import BudgetExceeded, LMFailure
    from .evaluate import evaluate
    from .interpreter import Runtime

    # Every target is vetted (imports allowed, LM aliases not re-routing keys) before the first LM call.
    runtimes = [Runtime(job.ir, client, lm=job.lm, api_base=api_base, extra_lms=dict(extra_lms or {}),
                        from_artifact=job.from_artifact, python=job.python, example_timeout=example_timeout,
                        truncate_inputs=truncate_inputs,
                        **({"max_steps": max_steps} if max_steps is not None else {})).vet() for job in jobs]
    from .evaluate import check_metric
    from .runner import preflight

    for job, rt in zip(jobs, runtimes):
        check_metric(job.metric, job.python)
        client.check_prices(rt.lms())
        preflight(rt)

    async def main() -> list[Run]:
        runs = []
        try:
            for i, (job, rt) in enumerate(zip(jobs, runtimes)):
                before = _usage(client)
                start = time.perf_counter()
                callback = (lambda out, i=i: on_result(i, out)) if on_result else None
                outcomes = await evaluate(rt, list(examples), job.metric, threshold=threshold,
                                          concurrency=concurrency, on_result=callback)
                after = _usage(client)
                usage = {k: after[k] - before[k] for k in after}
                usage["cost"] = round(max(usage["cost"], 0.0), 8)
                runs.append(Run(outcomes, usage, time.perf_counter() - start))
        except BudgetExceeded as e:
            client.check_health()  # every call failed: say that, not "budget"
            raise LMFailure(f"{e}; the evaluation stopped before every example was scored") from None
        finally:
            await client.aclose()
        client.check_health()
        return runs

    return asyncio.run(main())


# ---------------------------------------------------------------- outcomes -> report


def _plain(value: Any) -> Any:
    """A JSON-safe copy (predictions may hold values json cannot write; NaN is not allowed in reports)."""
    # Values reaching a report are finite (the interpreter refuses NaN/infinity where they arise);
    # allow_nan=False makes sure no bare NaN token could ever be written.
    return json.loads(json.dumps(value, ensure_ascii=False, default=str, allow_nan=False))


def example_result(outcome: Any, ir: IR, metric: MetricIR, threshold: float) -> gate.ExampleResult:
    ex = outcome.example
    res = outcome.result
    gold_fields = [f.name for f in ir.program().outputs]
    if metric.gold and metric.gold not in gold_fields:
        gold_fields.append(metric.gold)
    gold = {k: ex.data[k] for k in gold_fields if k in ex.data}
    prediction = _plain(res.outputs) if isinstance(res.outputs, dict) else None
    if res.error is not None:
        kind = _ERROR_KIND.get(res.error_kind or "", "runtime")
        return gate.ExampleResult(ex.id, ex.line, None, False, str(res.error), kind, prediction, _plain(gold) or None)
    score = outcome.score
    if score is None or not math.isfinite(score):
        return gate.ExampleResult(ex.id, ex.line, None, False, "the metric gave no score", "runtime", prediction,
                                  _plain(gold) or None)
    score = min(1.0, max(0.0, float(score)))
    return gate.ExampleResult(ex.id, ex.line, score, score >= threshold, None, None, prediction, _plain(gold) or None)


def build_report(*, program: str, program_sha256: str, kind: str, path: str, ir: IR, metric: MetricIR,
                 threshold: float, dataset: Dataset, shard: tuple[int, int] | None, run: Run,
                 program_path: str | None = None) -> gate.Report:
    """The `lmc-report/1` of one evaluated target; the file sha256 is taken now."""
    from . import __version__

    examples = tuple(example_result(o, ir, metric, threshold) for o in run.outcomes)
    summary = gate.summarize(examples, duration_s=round(run.duration_s, 3), **run.usage)
    return gate.Report(
        program=gate.ProgramRef(program, program_sha256, program_path),
        target=target_ref(kind, path),
        metric=metric_ref(metric, threshold),
        data=data_ref(dataset),
        shard=None if shard is None else gate.Shard(*shard),
        examples=examples,
        summary=summary,
        lmc_version=__version__,
    )


def target_ref(kind: str, path: str) -> gate.TargetRef:
    try:
        digest = sha256_file(path)
    except OSError as e:
        raise LmcError(f"{path}: cannot read: {e.strerror}") from None
    return gate.TargetRef(kind, portable_path(path), digest)
