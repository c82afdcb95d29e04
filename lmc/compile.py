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
from .budget import DEFAULT_LM_ERRORS, parse_error_limit, settings_price
from .errors import BudgetExceeded, ConfigError, DatasetError, LmcError, Warnings
from .evaluate import check_metric, metric_needs_gold
from .load import Config, Target, choose_lm, load_config, load_target
from .optimize import PASS_NAMES, Context, run_pass
from .timeline import Timeline

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
    concurrency: int | None = None  # None: $LMC_CONCURRENCY, lmc.yaml, then 8 (settings.resolve)
    lm: str | None = None
    api_base: str | None = None
    teacher_lm: str | None = None
    prompt_lm: str | None = None
    threshold: float | None = None
    max_calls: int | None = None
    max_cost: float | None = None
    price_per_mtok_in: float | None = None  # the price of LMs litellm's table does not list (USD per 1M tokens)
    price_per_mtok_out: float | None = None
    max_lm_errors: str | None = None  # failed LM calls (a share or a count) before the compile stops, exit 3 (20%)
    truncate_inputs: bool | None = None
    transport: str | None = None  # direct or litellm; None: each LM by its protocol
    allow_partial: bool = False
    cache_dir: str | None = None  # None: $LMC_CACHE_DIR, lmc.yaml, then .lmc/cache
    use_cache: bool = True
    rpm: float | None = None
    max_steps: int | None = None
    example_timeout: float | None = None
    keep_worse: bool = False  # keep the optimized program even when it scores below the one as written
    score_dev: bool = True  # score the program as written and the result on dev (costs 2 x dev calls)
    allow_python: tuple = ()  # --allow-python: modules tools/metrics may import (lmc/pyrefs.py)
    passes_file: str | None = None  # the --passes YAML the pass list came from (an input: never overwritten)
    params: dict = field(default_factory=dict)  # pass options given on the command line, for every pass that takes them
    pass_params: list[dict] = field(default_factory=list)  # each pass's own options (from --passes), by position


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


def load_passes_file(path: str) -> tuple[list[str], list[dict]]:
    """A YAML list of passes, `- bootstrap` or `- {name: random-search, candidates: 8}`: names and each one's options."""
    import yaml

    from .limits import read_bounded
    from .optimize import PASS_NAMES
    from .optimize.options import check_pass_entry

    raw = read_bounded(path, "config", lambda m: ConfigError(f"{path}: {m}"))
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ConfigError(f"{path}:{mark.line + 1 if mark else 1}: not valid YAML") from None
    if isinstance(data, dict):
        extra = sorted(set(data) - {"passes"})
        if extra:
            raise ConfigError(f"{path}: unknown key '{extra[0]}'; expected 'passes:' and a list of passes")
    items = data.get("passes") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{path}: expected a list of passes (e.g. '- bootstrap')")
    names, options = [], []
    for i, item in enumerate(items, 1):
        if isinstance(item, str):
            name, own = item, {}
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            name, own = item["name"], {k: v for k, v in item.items() if k != "name"}
        else:
            raise ConfigError(f"{path}: pass {i}: expected a name or a mapping with 'name'")
        if name not in PASS_NAMES:
            from .errors import did_you_mean

            hint = did_you_mean(name, PASS_NAMES)
            raise ConfigError(f"{path}: pass {i}: unknown optimizer '{name}'", hint=(hint + " " if hint else "")
                              + "expected one of: " + ", ".join(PASS_NAMES))
        names.append(name)
        options.append(check_pass_entry(name, own, f"{path}: pass {i} ({name})"))
    return names, options


def pass_plan(opts: CompileOptions) -> list[tuple[str, dict]]:
    """Each pass with the options it runs with; refuses options no pass uses, unknown keys, bad values."""
    from .optimize.options import check_chain, options_for

    own = list(opts.pass_params) + [{}] * (len(opts.passes) - len(opts.pass_params))
    check_chain(opts.passes, opts.params, {"--teacher-lm": opts.teacher_lm, "--prompt-lm": opts.prompt_lm})
    plan = [(name, options_for(name, opts.params, mine)) for name, mine in zip(opts.passes, own)]
    for name, o in plan:
        if name == "finetune-data" and not o.get("finetune_dir"):
            o["finetune_dir"] = finetune_dir_for(opts.out)
    return plan


def check_pass_options(plan: list[tuple[str, dict]], n_dev: int) -> None:
    """Refuse option values a pass would reject, before any LM call is spent."""
    for name, o in plan:
        minibatch = o.get("minibatch")
        if name == "mipro" and minibatch is not None and int(minibatch) > n_dev:
            from .optimize.mipro import minibatch_problem

            raise ConfigError(minibatch_problem(int(minibatch), n_dev), hint="lower --minibatch or give a larger --dev set")


def check_compile_outputs(opts: CompileOptions, target: Target, config: Config, plan: list[tuple[str, dict]]) -> None:
    """Refuse, before any LM call, an artifact, sidecar or fine-tuning file that would overwrite an input."""
    from .files import Output, check_outputs
    from .runner import input_files

    inputs = input_files(target, config) + [("--train file", opts.train), ("--dev file", opts.dev),
                                            ("--passes file", opts.passes_file)]
    outputs = [Output("-o", opts.out), Output("the stats file next to -o", _stats_path(opts.out))]
    if opts.use_cache and opts.cache_dir:
        outputs.append(Output("--cache-dir", opts.cache_dir, directory=True))
    for folder in sorted({o["finetune_dir"] for name, o in plan if name == "finetune-data"}):
        outputs.append(Output("--finetune-dir", folder, directory=True))
        outputs += [Output("--finetune-dir", str(Path(folder) / f"{p.id}.jsonl")) for p in target.ir.predictors]
    check_outputs(outputs, inputs)


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
    from .settings import resolve

    plan = pass_plan(opts)
    config = load_config()
    st = resolve({"lm": opts.lm, "api_base": opts.api_base, "cache_dir": opts.cache_dir,
                  "concurrency": opts.concurrency, "rpm": opts.rpm, "max_steps": opts.max_steps,
                  "example_timeout": opts.example_timeout, "max_calls": opts.max_calls, "max_cost": opts.max_cost,
                  "price_per_mtok_in": opts.price_per_mtok_in, "price_per_mtok_out": opts.price_per_mtok_out,
                  "max_lm_errors": opts.max_lm_errors, "truncate_inputs": opts.truncate_inputs,
                  "transport": opts.transport}, config)
    opts = replace(opts, cache_dir=st.cache_dir, concurrency=st.concurrency, rpm=st.rpm, api_base=st.api_base)
    if opts.threshold is not None and not 0.0 <= opts.threshold <= 1.0:
        raise ConfigError(f"--threshold must be between 0 and 1, got {opts.threshold:g}")
    target = load_target(opts.program, opts.program_name)
    python = policy_for(target, tuple(config.allow_python) + parse_allow(opts.allow_python, "--allow-python"))
    ir = target.ir
    metric = pick_metric(ir, opts.metric, opts.program)
    train, dev, split_note = prepare_data(opts, ir, metric)
    check_pass_options(plan, len(dev))
    check_compile_outputs(opts, target, config, plan)
    if split_note:
        log(split_note)
    threshold = opts.threshold if opts.threshold is not None else 1.0
    spec = choose_lm(opts.lm, opts.api_base, config, target)
    client = LMClient(cache_dir=opts.cache_dir if opts.use_cache else None, use_cache=opts.use_cache,
                      concurrency=opts.concurrency, rpm=opts.rpm, max_calls=st.max_calls, max_cost=st.max_cost,
                      price=settings_price(st), max_lm_errors=parse_error_limit(st.max_lm_errors or DEFAULT_LM_ERRORS),
                      transport=st.transport)
    timeline = Timeline(started)
    timeline.client = client
    log = timeline.wrap_log(log)
    observe(client)  # lets a live view read the running usage
    extra_lms = config.alias_specs()
    warnings = Warnings()  # shared by every runtime of the compile, reported at the end

    def runtime_with(lm_spec):
        def make(x: I.IR):
            return Runtime(x, client, lm=lm_spec, api_base=opts.api_base, extra_lms=extra_lms,
                           warnings=warnings, from_artifact=target.kind == "artifact", python=python,
                           max_steps=st.max_steps, example_timeout=st.example_timeout,
                           truncate_inputs=st.truncate_inputs)
        return make

    teacher_spec = parse_lm(opts.teacher_lm, opts.api_base) if opts.teacher_lm else None
    prompt_spec = parse_lm(opts.prompt_lm, opts.api_base) if opts.prompt_lm else None
    teacher = runtime_with(teacher_spec) if teacher_spec else None
    proposer = runtime_with(prompt_spec) if prompt_spec else None
    # The program text is an internal knob of mipro's proposer, not a compile parameter.
    internal = {"source": target.source}
    main_rt = runtime_with(spec)(ir).vet()  # refused imports and re-routing LM aliases stop here, before any LM call
    check_metric(metric, python)
    # Refused before the first call too: a --max-cost over an LM with no known price, or a server not listening.
    used = main_rt.lms() + [s for s in (teacher_spec, prompt_spec) if s is not None]
    client.check_prices(used)
    from .runner import preflight

    preflight(main_rt, extra=used)
    ctx = Context(make_runtime=runtime_with(spec), trainset=list(train), devset=list(dev), metric=metric,
                  threshold=threshold, seed=opts.seed, concurrency=opts.concurrency, options=dict(internal), log=log,
                  on_score=on_score, teacher_runtime=teacher, prompt_runtime=proposer, on_record=timeline.candidate)
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
        client.check_health()  # every call failed (or too many): no artifact, however the budget ended
        current = ir
        if not ctx.budget_exhausted:
            for name, own in plan:
                log(f"pass {name}")
                ctx.options = {**internal, **own}  # each pass sees its own options only
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
        client.check_health()
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
        client.check_health()
    finally:
        await client.aclose()

    for w in warnings.items + client.warnings.items:
        if w not in ctx.notes:
            ctx.notes.append(w)
    usage = client.usage
    report = {
        "optimizer": list(opts.passes),
        "passes": [{"name": name, "options": _report_options(own)} for name, own in plan],
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
        "budget": {"max_calls": st.max_calls, "max_cost": st.max_cost, "exhausted": ctx.budget_exhausted},
        "notes": list(ctx.notes),
    }
    artifact = Artifact(ir=replace(current, entry=ir.entry), program=target.program_json(), compile=report,
                        lm=spec.to_json())
    write(artifact, opts.out)
    duration = time.perf_counter() - started
    # The sidecar names its artifact, so a report never pairs a stale timeline with a newer compile.
    stats = {"duration_s": round(duration, 3), **usage.to_json(), "timeline": timeline.to_json(),
             "artifact_sha256": sha256_file(opts.out)}
    atomic_write_text(_stats_path(opts.out), _json(stats))
    notes = list(ctx.notes)
    if usage.errors:  # within --max-lm-errors, but the user should know the scores rest on fewer answers
        notes.append(f"{usage.errors} LM call(s) failed after their retries ({usage.failed_requests} failed requests); "
                     f"their examples scored 0 (--max-lm-errors {st.max_lm_errors or DEFAULT_LM_ERRORS})")
    return CompileResult(artifact, baseline, final, report["candidates"], notes, stats, split_note)


def finetune_dir_for(out: str) -> str:
    """Where finetune-data writes by default: next to the artifact, `OUT.finetune/`."""
    name = str(out)
    return (name[: -len(".lmc.json")] if name.endswith(".lmc.json") else name) + ".finetune"


def _report_options(options: dict) -> dict:
    """A pass's options as the artifact records them: what it ran with, paths relative, never absolute.

    The finetune folder derives from -o, so only finetune-data records it (two compiles that differ
    only in their output name stay byte-identical otherwise)."""
    return {k: portable_path(v) if k == "finetune_dir" else v for k, v in sorted(options.items()) if v is not None}


def _stats_path(out: str) -> str:
    name = str(out)
    return (name[: -len(".lmc.json")] if name.endswith(".lmc.json") else name) + ".stats.json"


def _json(data: Any) -> str:
    import json

    return json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


def _plain_detail(detail: dict) -> dict:
    return {k: v for k, v in detail.items() if isinstance(v, (int, float, str, list, dict, bool)) or v is None}


def compile_program(opts: CompileOptions, **kw: Any) -> CompileResult:
    return asyncio.run(compile_async(opts, **kw))
