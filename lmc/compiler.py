"""`lmc compile`: datasets + metric + optimizer passes → a frozen artifact.

The artifact holds only what is reproducible (scores, candidates, LM requests);
wall-clock figures and cache statistics go to the returned `CompileResult` and a
`*.stats.json` sidecar, so two compiles with the same seed, data and cache are
byte-identical.  Everything that can be refused is refused before the first LM
call; then `run_chain` runs the passes one after another, each on the program the
one before returned, and accumulates what they found.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from . import ir as I
from .artifact import Artifact, portable_path, sha256_file, write
from .budget import DEFAULT_LM_ERRORS
from .config import Config
from .datasets import Dataset, load_dataset, split, validate
from .errors import BudgetExceeded, ConfigError, DatasetError, LmcError
from .files import Output, atomic_write_text, check_outputs
from .limits import read_bounded
from .lm import LMClient, parse_lm
from .lm.usage import PROBE_TAG
from .metrics import choose_metric
from .optimize import check_chain, check_pass_entry, options_for, pass_named
from .optimize.lab import Candidate, Lab, PassInputs, best
from .optimize.evolve import lineage
from .optimize.evolve import minibatch_problem as evolve_minibatch_problem
from .optimize.mipro import minibatch_problem
from .python_metrics import check_metric
from .scoring import metric_needs_gold
from .session import RunOptions, prepare
from .targets import Target, load_target
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
    teacher_lm: str | None = None
    prompt_lm: str | None = None
    threshold: float | None = None
    allow_partial: bool = False
    keep_worse: bool = False  # keep the optimized program even when it scores below the one as written
    score_dev: bool = True  # score the program as written and the result on dev (costs 2 x dev calls)
    passes_file: str | None = None  # the --passes YAML the pass list came from (an input: never overwritten)
    params: dict = field(default_factory=dict)  # pass options given on the command line, for every pass that takes them
    pass_params: list[dict] = field(default_factory=list)  # each pass's own options (from --passes), by position
    # The LM, cache, caps and limits (as `lmc run` takes them); failed LM calls stop the compile at 20% unless told.
    run: RunOptions = field(default_factory=RunOptions)


@dataclass
class CompileResult:
    artifact: Artifact
    baseline: float | None
    final: float | None
    candidates: list[dict]
    notes: list[str]
    stats: dict
    split_note: str | None = None
    passes: list[dict] = field(default_factory=list)  # per pass: name, LM requests and cost it took, candidates


def load_passes_file(path: str) -> tuple[list[str], list[dict]]:
    """A YAML list of passes, `- bootstrap` or `- {name: random-search, candidates: 8}`: names and each one's options."""
    import yaml

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
        pass_named(name, f"{path}: pass {i}: ")
        names.append(name)
        options.append(check_pass_entry(name, own, f"{path}: pass {i} ({name})"))
    return names, options


def pass_plan(opts: CompileOptions) -> list[tuple[str, dict]]:
    """Each pass with the options it runs with; refuses options no pass uses, unknown keys, bad values."""
    own = list(opts.pass_params) + [{}] * (len(opts.passes) - len(opts.pass_params))
    check_chain(opts.passes, opts.params, {"--teacher-lm": opts.teacher_lm, "--prompt-lm": opts.prompt_lm})
    return [(name, options_for(name, opts.params, mine, out=opts.out)) for name, mine in zip(opts.passes, own)]


def check_pass_options(plan: list[tuple[str, dict]], n_dev: int, n_train: int) -> None:
    """Refuse option values a pass would reject, before any LM call is spent."""
    for name, o in plan:
        minibatch = o.get("minibatch")
        if name == "mipro" and minibatch is not None and int(minibatch) > n_dev:
            raise ConfigError(minibatch_problem(int(minibatch), n_dev), hint="lower --minibatch or give a larger --dev set")
        if name == "evolve" and minibatch is not None and int(minibatch) > n_train:
            raise ConfigError(evolve_minibatch_problem(int(minibatch), n_train), hint="lower --minibatch")


def check_compile_outputs(opts: CompileOptions, target: Target, config: Config, cache_dir: str | None, plan: list[tuple[str, dict]]) -> None:
    """Refuse, before any LM call, an artifact, sidecar or fine-tuning file that would overwrite an input."""
    inputs = target.input_files("program", config.path) + [
        ("--train file", opts.train),
        ("--dev file", opts.dev),
        ("--passes file", opts.passes_file),
    ]
    outputs = [Output("-o", opts.out), Output("the stats file next to -o", _stats_path(opts.out))]
    if cache_dir:
        outputs.append(Output("--cache-dir", cache_dir, directory=True))
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
            raise DatasetError(f"the trainset has {len(train)} examples; without --dev it needs at least 4 to split", opts.train)
        train, dev = split(train, DEFAULT_DEV_FRACTION, seed=opts.seed)
        note = f"no --dev given: split {opts.train} with seed {opts.seed} into {len(train)} train and {len(dev)} dev examples"
    return train, dev, note


@dataclass
class Chain:
    """What the passes of a compile found together."""

    ir: I.IR
    baseline: float | None = None  # dev score of the program as written
    final: float | None = None
    candidates: list[Candidate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    train_scores: dict = field(default_factory=dict)
    exhausted: bool = False
    passes: list[dict] = field(default_factory=list)

    def record(self, cand: Candidate, inputs: PassInputs) -> None:
        self.candidates.append(cand)
        inputs.on_record(cand)


async def run_chain(
    ir: I.IR,
    plan: list[tuple[str, dict]],
    inputs: PassInputs,
    client: LMClient,
    *,
    score_dev: bool = True,
    allow_partial: bool = False,
    keep_worse: bool = False,
) -> Chain:
    """Score the program as written, run each pass on what the one before returned, score the result.

    A budget that runs out ends the chain with the best program found so far; the program as written
    wins against a worse result unless `keep_worse`."""
    lab, log = inputs.lab, inputs.log
    chain = Chain(ir)
    if score_dev:
        try:
            log("scoring the program as written (zero-shot) on dev")
            chain.baseline = await lab.score(ir, label="zero-shot")
            chain.record(Candidate("as-written", ir, chain.baseline), inputs)
        except BudgetExceeded as e:
            chain.exhausted = True
            chain.notes.append(f"budget exhausted before the first candidate was scored: {e}")
    else:
        chain.notes.append("--no-score-dev: the program as written and the result were not scored on dev")
    client.check_health()  # every call failed (or too many): no artifact, however the budget ended
    for name, options in plan if not chain.exhausted else ():
        log(f"pass {name}")
        before = client.usage.requests, client.usage.cost
        try:
            result = await pass_named(name)(chain.ir, replace(inputs, candidates=tuple(chain.candidates)), **options)
        except BudgetExceeded as e:
            chain.exhausted = True
            chain.notes.append(f"budget exhausted during {name}: {e}")
            so_far = best(chain.candidates)
            chain.ir = so_far.ir if so_far else chain.ir
            break
        chain.ir = result.ir
        chain.candidates += result.candidates
        chain.notes += result.notes
        for key, value in result.train_scores.items():
            chain.train_scores.setdefault(key, value)
        chain.passes.append(
            {
                "name": name,
                "requests": client.usage.requests - before[0],
                "cost": round(client.usage.cost - before[1], 8),
                "candidates": len(result.candidates),
            }
        )
        if result.exhausted:
            chain.exhausted = True
            break
    client.check_health()
    if chain.exhausted and chain.baseline is None:
        if not allow_partial:
            raise LmcError(
                "the budget (--max-calls/--max-cost) ran out before the first candidate was scored; nothing was written",
                hint="raise the budget, or pass --allow-partial to write the zero-shot program",
            )
        chain.ir = ir
    elif score_dev or best(chain.candidates) is not None:
        try:
            # Free when a search already scored this program (scores are memoised).
            chain.final = await lab.score(chain.ir, label="final")
        except BudgetExceeded:
            chain.exhausted = True
            so_far = best(chain.candidates)
            if so_far is not None:
                chain.ir, chain.final = so_far.ir, so_far.score
    if chain.final is not None and chain.baseline is not None and chain.final < chain.baseline:
        if keep_worse:
            chain.notes.append(
                f"the compiled program scores {chain.final:.3f} on dev, below the program as written "
                f"({chain.baseline:.3f}); kept it because of --keep-worse"
            )
        else:
            # A compiler must not make a program worse: the one the user wrote wins a tie or a loss.
            chain.notes.append(
                f"the optimized program scored {chain.final:.3f} on dev, below the program as written "
                f"({chain.baseline:.3f}); kept the program as written (--keep-worse keeps the other)"
            )
            chain.ir, chain.final = ir, chain.baseline
    client.check_health()
    return chain


async def compile_async(
    opts: CompileOptions,
    log: Callable[[str], None] = lambda m: None,
    on_score: Callable[[str, float], None] = lambda n, s: None,
    observe: Callable[[Any], None] = lambda client: None,
    on_batch: Callable[[int], None] = lambda n: None,
    on_example: Callable[[Any], None] = lambda outcome: None,
    on_progress: Callable[[dict], None] = lambda info: None,
) -> CompileResult:
    started = time.perf_counter()
    for name in opts.passes:
        pass_named(name)
    plan = pass_plan(opts)
    setup = prepare(replace(opts.run, default_max_lm_errors=DEFAULT_LM_ERRORS))
    st = setup.settings
    if opts.threshold is not None and not 0.0 <= opts.threshold <= 1.0:
        raise ConfigError(f"--threshold must be between 0 and 1, got {opts.threshold:g}")
    target = load_target(opts.program, opts.program_name)
    ir = target.ir
    metric = choose_metric(ir, opts.metric, opts.program)
    train, dev, split_note = prepare_data(opts, ir, metric)
    check_pass_options(plan, len(dev), len(train))
    check_compile_outputs(opts, target, setup.config, setup.cache_dir, plan)
    if split_note:
        log(split_note)
    threshold = opts.threshold if opts.threshold is not None else 1.0
    # Refused here, before the first call: an import the run may not make, an LM alias re-routing the key,
    # a --max-cost over an LM with no known price, a metric that cannot be called, a server not listening.
    session = setup.open(target)
    client = session.client
    client.ledger.count_cached = True  # the same search, cold or warm, under --max-calls (README: Caps and failures)
    timeline = Timeline(started)
    timeline.client = client
    log = timeline.wrap_log(log)
    observe(client)  # lets a live view read the running usage
    teacher = parse_lm(opts.teacher_lm, st.api_base) if opts.teacher_lm else None
    proposer = parse_lm(opts.prompt_lm, st.api_base) if opts.prompt_lm else None
    check_metric(metric, session.python)
    extra = [s for s in (teacher, proposer) if s is not None]
    client.check_prices(extra)
    session.preflight(extra=extra)
    lab = Lab(
        session.runtime_for,
        list(dev),
        metric,
        threshold=threshold,
        threshold_given=opts.threshold is not None,
        concurrency=st.concurrency,
        teacher=(lambda x: session.runtime_for(x, teacher)) if teacher else None,
        proposer=(lambda x: session.runtime_for(x, proposer)) if proposer else None,
        on_score=on_score,
        on_batch=on_batch,
        on_example=on_example,
        calls_left=client.calls_left,
    )
    inputs = PassInputs(
        tuple(train), metric, lab, seed=opts.seed, source=target.source, log=log, on_record=timeline.candidate, on_progress=on_progress
    )
    try:
        chain = await run_chain(ir, plan, inputs, client, score_dev=opts.score_dev, allow_partial=opts.allow_partial, keep_worse=opts.keep_worse)
    finally:
        await client.aclose()

    notes = list(chain.notes)
    for w in session.warnings.items + client.warnings.items:
        if w not in notes:
            notes.append(w)
    usage = client.usage
    candidates = [{"name": c.name, "dev": _r(c.score), **_plain_detail(c.detail)} for c in chain.candidates]
    report = {
        "optimizer": list(opts.passes),
        "passes": [{"name": name, "options": _report_options(own)} for name, own in plan],
        "metric": {"name": metric.name, "spec": metric.spec, "threshold": threshold},
        "seed": opts.seed,
        "lm": session.lm.model,
        "teacher_lm": opts.teacher_lm,
        "prompt_lm": opts.prompt_lm,
        "data": {
            "train": _dataset_json(train),
            "dev": _dataset_json(dev),
            "split": None if opts.dev else {"from": portable_path(opts.train), "dev_fraction": DEFAULT_DEV_FRACTION, "seed": opts.seed},
        },
        "scores": {"baseline": {"dev": _r(chain.baseline)}, "final": {"dev": _r(chain.final)}, "train": dict(chain.train_scores)},
        "candidates": candidates,
        # The program's calls: the probes of an endpoint (the stats sidecar has them) would differ on a warm recompile.
        "lm_requests": usage.program_calls,
        "lm_requests_by_predictor": {k: v.calls for k, v in sorted(usage.by_tag.items()) if k != PROBE_TAG},
        "budget": {"max_calls": st.max_calls, "max_cost": st.max_cost, "exhausted": chain.exhausted},
        "notes": list(notes),
    }
    steps = lineage(chain.candidates, chain.ir)
    if steps:  # how the kept program's instructions came about (evolve); other compiles stay as they were
        report["lineage"] = steps
    artifact = Artifact(ir=replace(chain.ir, entry=ir.entry), program=target.program_json(), compile=report, lm=session.lm.to_json())
    write(artifact, opts.out)
    duration = time.perf_counter() - started
    # The sidecar names its artifact, so a report never pairs a stale timeline with a newer compile.
    stats = {"duration_s": round(duration, 3), **usage.to_json(), "timeline": timeline.to_json(), "artifact_sha256": sha256_file(opts.out)}
    atomic_write_text(_stats_path(opts.out), _json(stats))
    if usage.errors:  # within --max-lm-errors, but the user should know the scores rest on fewer answers
        notes.append(
            f"{usage.errors} LM call(s) failed after their retries ({usage.failed_requests} failed requests); "
            f"their examples scored 0 (--max-lm-errors {st.max_lm_errors or DEFAULT_LM_ERRORS})"
        )
    return CompileResult(artifact, chain.baseline, chain.final, candidates, notes, stats, split_note, chain.passes)


def _report_options(options: dict) -> dict:
    """A pass's options as the artifact records them: what it ran with, paths relative, never absolute.

    The finetune folder derives from -o, so only finetune-data records it (two compiles that differ
    only in their output name stay byte-identical otherwise)."""
    return {k: portable_path(v) if k == "finetune_dir" else v for k, v in sorted(options.items()) if v is not None}


def _stats_path(out: str) -> str:
    name = str(out)
    return (name[: -len(".lmc.json")] if name.endswith(".lmc.json") else name) + ".stats.json"


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


def _plain_detail(detail: Mapping[str, Any]) -> dict:
    return {k: v for k, v in detail.items() if isinstance(v, (int, float, str, list, dict, bool)) or v is None}


def compile_program(opts: CompileOptions, **kw: Any) -> CompileResult:
    return asyncio.run(compile_async(opts, **kw))
