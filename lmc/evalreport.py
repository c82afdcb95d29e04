"""`lmc eval`, the logic: a target (and a baseline) scored on a dataset, the reports, the gates' verdict.

`evaluate_files` reads top to bottom: load the targets, choose the metric (by default
the one an artifact was compiled with), check the data, select the shard and check
the baseline (all before any LM call), open one session for candidate and baseline
(so both share the LM cache), `evaluate_targets`, then `build_report` and the gates.
The command line (cli_eval.py) and `lmc.evaluate` only present what it returns.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__, gate
from .artifact import is_artifact_path, portable_path, sha256_file
from .budget import DEFAULT_LM_ERRORS
from .datasets import Dataset, Example, load_dataset, validate
from .errors import CompileError, CompileErrors, ConfigError, ErrorKind, LMFailure, LmcError, BudgetExceeded, ReportError
from .files import Output, check_outputs
from .ir import IR, MetricIR
from .metrics import choose_metric
from .python_metrics import check_metric
from .runtime import Runtime
from .scoring import evaluate, metric_needs_gold
from .session import RunOptions, Session, prepare
from .targets import Target, load_target


# ---------------------------------------------------------------- before evaluating


class TargetDoesNotCompile(LmcError):
    """A .lmp target or baseline with compile errors: bad input here (exit 2); `errors` holds the diagnostics."""

    def __init__(self, message: str, errors: CompileErrors | None = None):
        super().__init__(message)
        self.errors = errors


def load_for_eval(path: str, program: str | None, role: str) -> Target:
    """A target or baseline; one that does not compile is bad input (exit 2), never "quality regressed" (exit 1)."""
    if Path(path).is_file() and gate.is_report(path):
        raise ConfigError(f"{path}: is an evaluation report; the {role} must be a program (.lmp) or an artifact")
    try:
        return load_target(path, program)
    except CompileErrors as e:
        n = len(e.diagnostics)
        raise TargetDoesNotCompile(f"{path}: the {role} does not compile ({n} error{'s' if n != 1 else ''} above)", e) from None
    except CompileError as e:
        raise TargetDoesNotCompile(f"{path}: the {role} does not compile: {e.span}: {e}") from None


def compiled_with(target: Target) -> tuple[str | None, float | None]:
    """The metric name and threshold an artifact was compiled with (None, None for a .lmp or an older artifact)."""
    rec = (target.artifact.compile or {}).get("metric") if target.artifact is not None else None
    if not isinstance(rec, dict):
        return None, None
    name, threshold = rec.get("name"), rec.get("threshold")
    ok = isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and 0.0 <= threshold <= 1.0
    return (name if isinstance(name, str) else None), (float(threshold) if ok and threshold is not None else None)


def metric_ref(metric: MetricIR, threshold: float) -> gate.MetricRef:
    return gate.MetricRef(metric.name, metric.spec or f"{metric.kind} metric {metric.name}", float(threshold))


def data_ref(dataset: Dataset) -> gate.DataRef:
    return gate.DataRef(portable_path(dataset.path), dataset.sha256, len(dataset))


def check_data(ir: IR, dataset: Dataset, metric: MetricIR) -> None:
    """Every example has the program's inputs (well typed) and the field the metric reads as gold."""
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


def _stub_report(
    program: gate.ProgramRef, target: gate.TargetRef, metric: gate.MetricRef, data: gate.DataRef, examples: Sequence[Example], path: str | None
) -> gate.Report:
    """A report with the refs of a run that has not happened yet, so `gate.align` can judge it before any LM call."""
    results = tuple(gate.ExampleResult(ex.id, ex.line, 0.0, False) for ex in examples)
    return gate.Report(program, target, metric, data, None, results, gate.summarize(results), path=path)


def check_baseline_report(
    base: gate.Report,
    program: gate.ProgramRef,
    target: gate.TargetRef,
    metric: gate.MetricRef,
    data: gate.DataRef,
    examples: Sequence[Example],
    *,
    allow_program_change: bool,
) -> None:
    """Refuse, before evaluating, a baseline report on other data, another metric, another program or lacking ids."""
    gate.align(base, _stub_report(program, target, metric, data, examples, None), allow_program_change=allow_program_change)


def baseline_metric(base_ir: IR, metric: MetricIR, where: str) -> MetricIR:
    """The baseline's metric of the same name; refused when absent (its spec is compared by `gate.align`)."""
    found = base_ir.metric(metric.name)
    if found is None:
        names = ", ".join(m.name for m in base_ir.metrics) or "none"
        raise ReportError(f"{where}: baseline has no metric '{metric.name}' (it defines: {names}); scores under different metrics cannot be compared")
    return found


def check_baseline_target(
    base_program: gate.ProgramRef,
    base_path: str,
    base_metric: gate.MetricRef,
    cand_program: gate.ProgramRef,
    cand_metric: gate.MetricRef,
    data: gate.DataRef,
    examples: Sequence[Example],
    *,
    allow_program_change: bool,
) -> None:
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
    if gate.is_report(path):
        return True
    if path.endswith(".lmp") or is_artifact_path(path):
        return False
    return path.endswith(".json")


# ---------------------------------------------------------------- evaluating


@dataclass(frozen=True)
class Run:
    """The outcomes of one target, with the LM accounting and wall time of that target alone."""

    outcomes: list
    usage: dict
    duration_s: float


def _usage(client: Any) -> dict:
    u = client.usage
    return {
        "calls": u.program_calls,  # as the artifact counts them: without an endpoint's probes
        "cached_calls": u.cached_calls,
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "cost": u.cost,
        "requests": u.requests,
        "retries": u.retries,
        "failed_requests": u.failed_requests,
    }


async def evaluate_targets(
    session: Session,
    jobs: Sequence[tuple[Runtime, MetricIR]],
    examples: Sequence[Example],
    *,
    threshold: float,
    on_result: Callable[[int, Any], None] | None = None,
) -> list[Run]:
    """Evaluate each (runtime, metric) in turn on `examples` with the session's one client (hence one cache).

    Before the first LM call every python metric is imported and its signature checked and every
    configured server must be listening (the session has vetted the runtimes and priced their LMs).
    Run-stopping LM errors propagate (auth refused, unreachable, --max-lm-errors passed); a budget
    that runs out, or a run in which every LM call failed, is an LMFailure (exit 3): an evaluation
    with holes is not a verdict."""
    client = session.client
    for rt, metric in jobs:
        check_metric(metric, rt.python)
    session.preflight(runtimes=[rt for rt, _ in jobs])
    runs = []
    try:
        for i, (rt, metric) in enumerate(jobs):
            before = _usage(client)
            start = time.perf_counter()
            callback = (lambda out, i=i: on_result(i, out)) if on_result else None
            outcomes = await evaluate(rt, list(examples), metric, threshold=threshold, concurrency=session.settings.concurrency, on_result=callback)
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


@dataclass(frozen=True)
class EvalOptions:
    """What `lmc eval` is asked (see `lmc eval --help`); `outputs` are files the caller will write, checked first."""

    target: str
    data: str
    metric: str | None = None  # None: the one the artifact was compiled with, else the program's only metric
    program: str | None = None
    threshold: float | None = None  # None: the artifact's compile threshold, else 1.0
    shard: str | None = None  # "i/N"
    gates: gate.GateOptions = field(default_factory=gate.GateOptions)
    run: RunOptions = field(default_factory=RunOptions)  # failed LM calls stop the eval at 20% unless told
    report: str | None = None  # write the candidate's report here
    outputs: tuple[tuple[str, Any], ...] = ()  # (flag, path) of files the caller writes afterwards


@dataclass
class Evaluation:
    """The candidate's report, the baseline's (evaluated now or read from a file), and the gates' verdict."""

    candidate: gate.Report
    baseline: gate.Report | None
    verdict: gate.Verdict | None  # None: the shard held no examples, so there was nothing to gate
    target: Target
    examples: list[Example]
    dataset: Dataset
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verdict is None or self.verdict.passed

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict is None else self.verdict.exit_code


def evaluate_files(
    opts: EvalOptions,
    on_result: Callable[[int, Any], None] | None = None,
    on_start: Callable[[int, int], None] = lambda examples, targets: None,
    observe: Callable[[Any], None] = lambda session: None,
) -> Evaluation:
    """`aevaluate_files` in its own event loop."""
    return asyncio.run(aevaluate_files(opts, on_result, on_start, observe))


async def aevaluate_files(
    opts: EvalOptions,
    on_result: Callable[[int, Any], None] | None = None,
    on_start: Callable[[int, int], None] = lambda examples, targets: None,
    observe: Callable[[Any], None] = lambda session: None,
) -> Evaluation:
    """Everything `lmc eval` does but print: refuse what is wrong before any LM call, evaluate, report, gate.

    `on_start(examples, targets)` is called just before the first LM call, `on_result(i, outcome)` after
    each example of target i (0: the candidate, 1: the baseline); `observe(session)` lets a progress
    display read the running LM usage of the session's client (and a trace writer its program)."""
    gates, target = opts.gates, opts.target
    gates.validate()
    shard = gate.parse_shard(opts.shard) if opts.shard is not None else None
    setup = prepare(replace(opts.run, default_max_lm_errors=DEFAULT_LM_ERRORS))
    cand_t = load_for_eval(target, opts.program, "target")
    recorded_metric, recorded_threshold = compiled_with(cand_t)
    notes: list[str] = []
    name = opts.metric
    if name is None and recorded_metric is not None and len(cand_t.ir.metrics) != 1:
        name = recorded_metric
        notes.append(f"metric '{name}': the one {target} was compiled with (--metric chooses another)")
    threshold = opts.threshold
    if threshold is None:
        threshold = recorded_threshold if recorded_threshold is not None else 1.0
        if threshold != 1.0:
            notes.append(f"threshold {threshold:g}: the one {target} was compiled with (--threshold sets another)")
    cand_metric = choose_metric(cand_t.ir, name, target)
    dataset = load_dataset(opts.data)
    check_data(cand_t.ir, dataset, cand_metric)
    examples = select_shard(dataset, shard)
    if not examples and (gates.min_score is not None or gates.baseline is not None or gates.max_errors is not None):
        raise ConfigError(
            f"shard {opts.shard} holds no examples of {opts.data}, so there is nothing to gate; gate once after `lmc report merge` instead"
        )
    cand_mref = metric_ref(cand_metric, threshold)
    base_report, base_target = _baseline(opts, cand_t, cand_mref, cand_metric, threshold, dataset, examples)

    inputs = cand_t.input_files("target", setup.config.path) + [("--data file", opts.data)]
    if gates.baseline is not None:
        inputs += base_target[0].input_files("--baseline") if base_target else [("--baseline", gates.baseline)]
    outputs = [Output(label, str(p)) for label, p in (("--report", opts.report), *opts.outputs) if p is not None]
    if setup.cache_dir:
        outputs.append(Output("--cache-dir", setup.cache_dir, directory=True))
    check_outputs(outputs, inputs)

    session = setup.open(cand_t)
    jobs = [(session.runtime, cand_metric)]
    if base_target is not None:
        jobs.append((session.open(base_target[0]), base_target[1]))
    observe(session)
    on_start(len(examples), len(jobs))
    runs = await evaluate_targets(session, jobs, examples, threshold=threshold, on_result=on_result)

    cand = build_report(cand_t, cand_metric, threshold, dataset, shard, runs[0])
    base = base_report
    if base_target is not None:
        base = build_report(*base_target, threshold, dataset, shard, runs[1])
    if opts.report is not None:
        cand.save(opts.report)
        notes.append(f"wrote {opts.report}")
    if shard is not None:
        notes.insert(0, f"shard {shard[0]}/{shard[1]}: {len(examples)} of {len(dataset)} examples")
    verdict = gate.apply_gates(cand, base, gates) if examples else None
    return Evaluation(cand, base, verdict, cand_t, examples, dataset, notes)


def _baseline(
    opts: EvalOptions, cand_t: Target, cand_mref: gate.MetricRef, cand_metric: MetricIR, threshold: float, dataset: Dataset, examples: list[Example]
) -> tuple[gate.Report | None, tuple[Target, MetricIR] | None]:
    """`--baseline`: a report read now, or a target to evaluate; refused before any LM call when it cannot be
    compared (other data, another metric, another program)."""
    path, allow = opts.gates.baseline, opts.gates.allow_program_change
    if path is None:
        return None, None
    if not Path(path).exists():
        raise ConfigError(f"{path}: no such file (--baseline)")
    if not path.endswith((".lmp", ".json")):
        raise ConfigError(f"{path}: --baseline expects a program (.lmp), an artifact (.lmc.json) or a report (.json written by --report)")
    dref = data_ref(dataset)
    if baseline_is_report(path):
        base_report = load_baseline_report(path)
        check_baseline_report(
            base_report, program_ref(cand_t), target_ref(cand_t.kind, opts.target), cand_mref, dref, examples, allow_program_change=allow
        )
        return base_report, None
    base_t = load_for_eval(path, opts.program, "baseline")
    base_metric = baseline_metric(base_t.ir, cand_metric, path)
    check_baseline_target(
        program_ref(base_t), path, metric_ref(base_metric, threshold), program_ref(cand_t), cand_mref, dref, examples, allow_program_change=allow
    )
    check_data(base_t.ir, dataset, base_metric)
    return None, (base_t, base_metric)


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
        kind = ErrorKind(res.error_kind).report_kind if res.error_kind else "runtime"
        return gate.ExampleResult(ex.id, ex.line, None, False, str(res.error), kind, prediction, _plain(gold) or None)
    score = outcome.score
    if score is None or not math.isfinite(score):
        return gate.ExampleResult(ex.id, ex.line, None, False, "the metric gave no score", "runtime", prediction, _plain(gold) or None)
    score = min(1.0, max(0.0, float(score)))
    return gate.ExampleResult(
        ex.id, ex.line, score, score >= threshold, None, None, prediction, _plain(gold) or None, getattr(outcome, "feedback", None)
    )


def build_report(target: Target, metric: MetricIR, threshold: float, dataset: Dataset, shard: tuple[int, int] | None, run: Run) -> gate.Report:
    """The `lmc-report/1` of one evaluated target; the file sha256 is taken now."""
    examples = tuple(example_result(o, target.ir, metric, threshold) for o in run.outcomes)
    summary = gate.summarize(examples, duration_s=round(run.duration_s, 3), **run.usage)
    return gate.Report(
        program=program_ref(target),
        target=target_ref(target.kind, target.path),
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
