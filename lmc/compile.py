"""`lmc compile`: datasets + metric + optimizer passes → a frozen artifact.

The artifact holds only what is reproducible (scores, candidates, LM requests);
wall-clock figures and cache statistics go to the returned `CompileResult` and a
`*.stats.json` sidecar, so two compiles with the same seed, data and cache are
byte-identical.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from . import ir as I
from .artifact import Artifact, atomic_write_text, portable_path, sha256_file, write
from .datasets import Dataset, load_dataset, split, validate
from .errors import BudgetExceeded, ConfigError, DatasetError, LmcError, Warnings
from .evaluate import metric_needs_gold
from .load import Config, Target, choose_lm, load_config, load_target
from .optimize import PASS_NAMES, Context, run_pass

DEFAULT_DEV_FRACTION = 0.3


@dataclass
class CompileOptions:
    program: str
    train: str
    out: str
    dev: str | None = None
    program_name: str | None = None
    metric: str | None = None
    passes: list[str] = field(default_factory=lambda: ["bootstrap"])
    seed: int = 0
    concurrency: int = 8
    lm: str | None = None
    api_base: str | None = None
    teacher_lm: str | None = None
    prompt_lm: str | None = None
    threshold: float | None = None
    max_calls: int | None = None
    max_cost: float | None = None
    allow_partial: bool = False
    cache_dir: str = ".lmc/cache"
    use_cache: bool = True
    rpm: float | None = None
    keep_worse: bool = False  # keep the optimized program even when it scores below the one as written
    score_dev: bool = True  # score the program as written and the result on dev (costs 2 x dev calls)
    allow_python: tuple = ()  # --allow-python: modules tools/metrics may import (lmc/pyrefs.py)
    params: dict = field(default_factory=dict)  # per-pass knobs: max_demos, candidates, trials, ...


@dataclass
class CompileResult:
    artifact: Artifact
    baseline: float | None
    final: float | None
    candidates: list[dict]
    notes: list[str]
    stats: dict
    split_note: str | None = None


def pick_metric(ir: I.IR, name: str | None, where: str) -> I.MetricIR:
    from .errors import did_you_mean

    if name:
        m = ir.metric(name)
        if m is not None:
            return m
        names = [x.name for x in ir.metrics]
        # Built-in metric names may be used directly on the program's only output.
        from .metrics import BUILTIN_METRICS

        outs = ir.program().outputs
        if name in BUILTIN_METRICS and len(outs) == 1:
            return I.MetricIR(name, "builtin", builtin=name, field=outs[0].name, gold=outs[0].name,
                              spec=f"{name}({outs[0].name})")
        hint = did_you_mean(name, names + list(BUILTIN_METRICS))
        known = ", ".join(names) if names else "none"
        raise ConfigError(f"unknown metric '{name}' for {where}", hint=(hint + " " if hint else "") +
                          f"metrics defined in the program: {known}; built-ins: {', '.join(BUILTIN_METRICS)}")
    if len(ir.metrics) == 1:
        return ir.metrics[0]
    if not ir.metrics:
        raise ConfigError(f"{where} defines no metric; add `metric NAME = exact_match(FIELD)` or pass --metric")
    raise ConfigError(f"{where} defines several metrics ({', '.join(m.name for m in ir.metrics)}); pick one with --metric")


def load_passes_file(path: str) -> tuple[list[str], dict]:
    """A YAML list of passes: `- bootstrap` or `- {name: random-search, candidates: 8}`."""
    import yaml

    from .limits import read_bounded

    raw = read_bounded(path, "config", lambda m: ConfigError(f"{path}: {m}"))
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ConfigError(f"{path}:{mark.line + 1 if mark else 1}: not valid YAML") from None
    items = data.get("passes") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{path}: expected a list of passes (e.g. '- bootstrap')")
    names, params = [], {}
    for i, item in enumerate(items, 1):
        if isinstance(item, str):
            names.append(item)
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            names.append(item["name"])
            params.update({k.replace("-", "_"): v for k, v in item.items() if k != "name"})
        else:
            raise ConfigError(f"{path}: pass {i}: expected a name or a mapping with 'name'")
    return names, params


def check_pass_options(passes: list[str], params: dict, n_dev: int) -> None:
    """Refuse option values a pass would reject, before any LM call is spent."""
    minibatch = params.get("minibatch")
    if "mipro" in passes and minibatch is not None:
        from .optimize.mipro import minibatch_problem

        if int(minibatch) < 1:
            raise ConfigError(f"--minibatch must be >= 1, got {minibatch}")
        if int(minibatch) > n_dev:
            raise ConfigError(minibatch_problem(int(minibatch), n_dev), hint="lower --minibatch or give a larger --dev set")


def _dataset_json(ds: Dataset) -> dict:
    return {"path": portable_path(ds.path), "sha256": ds.sha256, "n": len(ds)}


def prepare_data(opts: CompileOptions, ir: I.IR, metric: I.MetricIR) -> tuple[Dataset, Dataset, str | None]:
    train = load_dataset(opts.train)
    if len(train) == 0:
        raise DatasetError("the trainset is empty; expected at least one example", opts.train)
    inputs = {f.name: f.type for f in ir.program().inputs}
    outputs = {f.name: f.type for f in ir.program().outputs}
    needs = metric_needs_gold(metric)
    validate(train, inputs, outputs, need_labels=needs)
    note = None
    if opts.dev:
        dev = load_dataset(opts.dev)
        if len(dev) == 0:
            raise DatasetError("the dev set is empty; expected at least one example", opts.dev)
        validate(dev, inputs, outputs, need_labels=needs)
    else:
        if len(train) < 4:
            raise DatasetError(f"the trainset has {len(train)} examples; without --dev it needs at least 4 to split",
                               opts.train)
        train, dev = split(train, DEFAULT_DEV_FRACTION, seed=opts.seed)
        note = (f"no --dev given: split {opts.train} with seed {opts.seed} into {len(train)} train and "
                f"{len(dev)} dev examples")
    return train, dev, note


async def compile_async(opts: CompileOptions, log: Callable[[str], None] = lambda m: None,
                        on_score: Callable[[str, float], None] = lambda n, s: None,
                        observe: Callable[[Any], None] = lambda client: None) -> CompileResult:
    from .interpreter import Runtime
    from .lm import LMClient, parse_lm

    started = time.perf_counter()
    for name in opts.passes:
        if name not in PASS_NAMES:
            await run_pass(name, None, None)  # raises the did-you-mean error
    from .pyrefs import parse_allow, policy_for

    config = load_config()
    target = load_target(opts.program, opts.program_name)
    python = policy_for(target, tuple(config.allow_python) + parse_allow(opts.allow_python, "--allow-python"))
    ir = target.ir
    metric = pick_metric(ir, opts.metric, opts.program)
    train, dev, split_note = prepare_data(opts, ir, metric)
    check_pass_options(opts.passes, opts.params, len(dev))
    if split_note:
        log(split_note)
    threshold = opts.threshold if opts.threshold is not None else 1.0
    spec = choose_lm(opts.lm, opts.api_base, config, target)
    client = LMClient(cache_dir=opts.cache_dir if opts.use_cache else None, use_cache=opts.use_cache,
                      concurrency=opts.concurrency, rpm=opts.rpm, max_calls=opts.max_calls, max_cost=opts.max_cost)
    observe(client)  # lets a live view read the running usage
    extra_lms = config.alias_specs()
    warnings = Warnings()  # shared by every runtime of the compile, reported at the end

    def runtime_with(lm_spec):
        def make(x: I.IR):
            return Runtime(x, client, lm=lm_spec, api_base=opts.api_base or config.api_base, extra_lms=extra_lms,
                           warnings=warnings, from_artifact=target.kind == "artifact", python=python)
        return make

    teacher = runtime_with(parse_lm(opts.teacher_lm, opts.api_base)) if opts.teacher_lm else None
    proposer = runtime_with(parse_lm(opts.prompt_lm, opts.api_base)) if opts.prompt_lm else None
    params = dict(opts.params)
    # Internal knobs the passes read; they are not compile parameters, so the report leaves them out.
    params.setdefault("source", target.source)
    params.setdefault("finetune_dir", finetune_dir_for(opts.out))
    runtime_with(spec)(ir).vet()  # refused imports and re-routing LM aliases stop here, before any LM call
    ctx = Context(make_runtime=runtime_with(spec), trainset=list(train), devset=list(dev), metric=metric,
                  threshold=threshold, seed=opts.seed, concurrency=opts.concurrency, options=params, log=log,
                  on_score=on_score, teacher_runtime=teacher, prompt_runtime=proposer)
    try:
        baseline = None
        if opts.score_dev:
            try:
                log("scoring the program as written (zero-shot) on dev")
                baseline = await ctx.score(ir, label="zero-shot")
                ctx.record("as-written", ir, baseline)
            except BudgetExceeded as e:
                ctx.budget_exhausted = True
                ctx.notes.append(f"budget exhausted before the first candidate was scored: {e}")
        else:
            ctx.notes.append("--no-score-dev: the program as written and the result were not scored on dev")
        current = ir
        if not ctx.budget_exhausted:
            for name in opts.passes:
                log(f"pass {name}")
                try:
                    current = await run_pass(name, current, ctx)
                except BudgetExceeded as e:
                    ctx.budget_exhausted = True
                    ctx.notes.append(f"budget exhausted during {name}: {e}")
                    best = ctx.best()
                    current = best.ir if best else current
                    break
                if ctx.budget_exhausted:
                    break
        final = None
        if ctx.budget_exhausted and baseline is None:
            if not opts.allow_partial:
                raise LmcError("the budget (--max-calls/--max-cost) ran out before the first candidate was scored; "
                               "nothing was written", hint="raise the budget, or pass --allow-partial to write the zero-shot program")
            current = ir
        elif opts.score_dev or ctx.best() is not None:
            try:
                # Free when a search already scored this program (scores are memoised).
                final = await ctx.score(current, label="final")
            except BudgetExceeded:
                ctx.budget_exhausted = True
                best = ctx.best()
                if best is not None:
                    current, final = best.ir, best.score
        if final is not None and baseline is not None and final < baseline:
            if opts.keep_worse:
                ctx.notes.append(f"the compiled program scores {final:.3f} on dev, below the program as written "
                                 f"({baseline:.3f}); kept it because of --keep-worse")
            else:
                # A compiler must not make a program worse: the one the user wrote wins a tie or a loss.
                ctx.notes.append(f"the optimized program scored {final:.3f} on dev, below the program as written "
                                 f"({baseline:.3f}); kept the program as written (--keep-worse keeps the other)")
                current, final = ir, baseline
    finally:
        await client.aclose()

    for w in warnings.items + client.warnings.items:
        if w not in ctx.notes:
            ctx.notes.append(w)
    usage = client.usage
    report = {
        "optimizer": list(opts.passes),
        "options": _report_options(params, opts.passes),
        "metric": {"name": metric.name, "spec": metric.spec, "threshold": threshold},
        "seed": opts.seed,
        "lm": spec.model,
        "teacher_lm": opts.teacher_lm,
        "prompt_lm": opts.prompt_lm,
        "data": {"train": _dataset_json(train), "dev": _dataset_json(dev),
                 "split": None if opts.dev else {"from": portable_path(opts.train), "dev_fraction": DEFAULT_DEV_FRACTION,
                                                 "seed": opts.seed}},
        "scores": {"baseline": {"dev": _r(baseline)}, "final": {"dev": _r(final)}, "train": dict(ctx.train_scores)},
        "candidates": [{"name": c.name, "dev": _r(c.score), **_plain_detail(c.detail)} for c in ctx.candidates],
        "lm_requests": usage.calls,
        "lm_requests_by_predictor": {k: v.calls for k, v in sorted(usage.by_tag.items())},
        "budget": {"max_calls": opts.max_calls, "max_cost": opts.max_cost, "exhausted": ctx.budget_exhausted},
        "notes": list(ctx.notes),
    }
    artifact = Artifact(ir=replace(current, entry=ir.entry), program=target.program_json(), compile=report,
                        lm=spec.to_json())
    write(artifact, opts.out)
    duration = time.perf_counter() - started
    stats = {"duration_s": round(duration, 3), **usage.to_json()}
    atomic_write_text(_stats_path(opts.out), _json(stats))
    return CompileResult(artifact, baseline, final, report["candidates"], list(ctx.notes), stats, split_note)


def finetune_dir_for(out: str) -> str:
    """Where finetune-data writes by default: next to the artifact, `OUT.finetune/`."""
    name = str(out)
    return (name[: -len(".lmc.json")] if name.endswith(".lmc.json") else name) + ".finetune"


def _report_options(params: dict, passes: list[str]) -> dict:
    """Pass parameters as the artifact records them: no program text, paths relative, never absolute.

    The finetune folder derives from -o, so it is recorded only when finetune-data ran; otherwise
    two compiles that differ only in their output name would differ in bytes."""
    out = {}
    for k, v in sorted(params.items()):
        if k == "source" or (k == "finetune_dir" and "finetune-data" not in passes):
            continue
        if k == "finetune_dir":
            v = portable_path(v)
        out[k] = v
    return out


def _stats_path(out: str) -> str:
    name = str(out)
    return (name[: -len(".lmc.json")] if name.endswith(".lmc.json") else name) + ".stats.json"


def _json(data: Any) -> str:
    import json

    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


def _plain_detail(detail: dict) -> dict:
    return {k: v for k, v in detail.items() if isinstance(v, (int, float, str, list, dict, bool)) or v is None}


def compile_program(opts: CompileOptions, **kw: Any) -> CompileResult:
    return asyncio.run(compile_async(opts, **kw))
