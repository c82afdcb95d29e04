"""The `compile`, `inspect` and `diff` commands (presentation only; the work is in compiler.py and artifact.py)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .artifact import read
from . import cli_common as common
from .compiler import CompileOptions, compile_program, load_passes_file
from .config import choose_lm, load_config
from .errors import ConfigError, LmcError
from .files import Output, atomic_write_text, check_outputs
from .artifact_view import diff_artifacts, lm_view, python_view, render_diff, render_lineage, render_predictors, render_python
from .optimize import PASS_NAMES
from .optimize.options import OPTIONS
from .progress import Progress, resolve_mode
from .report_html import check_out_path, checked_stats, render_compile, stats_path, write_html
from .targets import load_target


def _console():
    from rich.console import Console

    # Not a terminal (CI logs, tests): wide enough that the summary table's columns are never cut.
    return Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 120)


_PASSES = PASS_NAMES


def _option(key: str):
    """A pass option's command-line flag, range and help (with its default), as optimize/options.py declares it."""
    o = OPTIONS[key]
    if o.choices:
        return typer.Option(o.flag, callback=common.choice(*o.choices), help=o.describe())
    return typer.Option(o.flag, min=o.low, help=o.describe())


def compile_cmd(
    program: Annotated[Path, typer.Argument(help="the .lmp program (or an artifact to compile further)")],
    train: Annotated[Path, typer.Option("--train", help="training examples (JSONL or JSON list)")],
    out: Annotated[Path, typer.Option("-o", "--out", help="where to write the artifact (*.lmc.json)")],
    dev: Annotated[Optional[Path], typer.Option("--dev", help="dev examples; default: a seeded 30% split of --train")] = None,
    metric: Annotated[Optional[str], common.metric_option("compile")] = None,
    optimizer: Annotated[
        Optional[str], typer.Option("--optimizer", callback=common.choice(*_PASSES), help="the first pass (default bootstrap): " + ", ".join(_PASSES))
    ] = None,
    then: Annotated[
        Optional[list[str]], typer.Option("--then", callback=common.choices(*_PASSES), help="further passes, run in order after --optimizer")
    ] = None,
    passes: Annotated[
        Optional[Path], typer.Option("--passes", help="a YAML list of passes, each with its own options (replaces --optimizer/--then)")
    ] = None,
    program_name: common.Program = None,
    seed: Annotated[int, typer.Option("--seed", help="seed for every random choice")] = 0,
    jobs: common.Jobs = None,
    lm: common.Lm = None,
    api_base: common.ApiBase = None,
    teacher_lm: Annotated[Optional[str], typer.Option("--teacher-lm", help="LM that runs the teacher in bootstrapping")] = None,
    prompt_lm: Annotated[
        Optional[str], typer.Option("--prompt-lm", help="LM that proposes instructions (mipro) or reflects on feedback (evolve); default the task LM")
    ] = None,
    threshold: Annotated[Optional[float], common.threshold_option("compile")] = None,
    max_demos: Annotated[Optional[int], _option("max_demos")] = None,
    max_labeled: Annotated[Optional[int], _option("max_labeled")] = None,
    max_rounds: Annotated[Optional[int], _option("max_rounds")] = None,
    candidates: Annotated[Optional[int], _option("candidates")] = None,
    trials: Annotated[Optional[int], _option("trials")] = None,
    instructions: Annotated[Optional[int], _option("instructions")] = None,
    minibatch: Annotated[Optional[int], _option("minibatch")] = None,
    k: Annotated[Optional[int], _option("k")] = None,
    ensemble_size: Annotated[Optional[int], _option("ensemble_size")] = None,
    rounds: Annotated[Optional[int], _option("rounds")] = None,
    merges: Annotated[Optional[int], _option("merges")] = None,
    pick: Annotated[Optional[str], _option("pick")] = None,
    finetune_dir: Annotated[Optional[Path], _option("finetune_dir")] = None,
    max_calls: Annotated[Optional[int], common.max_calls_option("compile")] = None,
    max_cost: common.MaxCost = None,
    price_per_mtok_in: common.PricePerMtokIn = None,
    price_per_mtok_out: common.PricePerMtokOut = None,
    max_lm_errors: Annotated[Optional[str], common.max_lm_errors_option("compile")] = None,
    truncate_inputs: common.TruncateInputs = None,
    transport: common.Transport = None,
    allow_partial: Annotated[bool, typer.Option("--allow-partial", help="write the zero-shot program if the budget runs out first")] = False,
    cache_dir: common.CacheDir = None,
    no_cache: common.NoCache = False,
    rpm: common.Rpm = None,
    example_timeout: common.ExampleTimeout = None,
    max_steps: common.MaxSteps = None,
    keep_worse: Annotated[
        bool, typer.Option("--keep-worse", help="keep the optimized program even if it scores below the program as written")
    ] = False,
    score_dev: Annotated[
        bool, typer.Option("--score-dev/--no-score-dev", help="score the program as written and the result on dev (the cheapest compiles skip it)")
    ] = True,
    allow_python: common.AllowPython = None,
    html: common.HtmlOut = None,
    progress: common.ProgressOpt = None,
    quiet: common.Quiet = False,
    otel: common.Otel = None,
    otel_content: common.OtelContent = False,
) -> None:
    """Optimize every LM call of a program on examples and write a frozen artifact."""
    flags = dict(locals())
    # Only what was given: each pass fills in its own defaults (optimize/options.py).
    params = {
        "max_demos": max_demos,
        "max_labeled": max_labeled,
        "max_rounds": max_rounds,
        "candidates": candidates,
        "trials": trials,
        "instructions": instructions,
        "minibatch": minibatch,
        "k": k,
        "ensemble_size": ensemble_size,
        "finetune_dir": str(finetune_dir) if finetune_dir else None,
        "rounds": rounds,
        "merges": merges,
        "pick": pick,
    }
    pass_params: list[dict] = []
    if passes is not None:
        if optimizer is not None or then:
            raise ConfigError("--passes replaces --optimizer and --then; give the passes in one place")
        names, pass_params = load_passes_file(str(passes))
    else:
        names = [optimizer or "bootstrap"] + list(then or [])
    if html is not None:
        check_out_path(html, "--html", [("program", program), ("--train", train), ("--dev", dev), ("-o", out), ("stats sidecar", stats_path(out))])
    opts = CompileOptions(
        program=str(program),
        train=str(train),
        dev=str(dev) if dev else None,
        out=str(out),
        program_name=program_name,
        metric=metric,
        passes=names,
        seed=seed,
        teacher_lm=teacher_lm,
        prompt_lm=prompt_lm,
        threshold=threshold,
        allow_partial=allow_partial,
        keep_worse=keep_worse,
        score_dev=score_dev,
        passes_file=str(passes) if passes is not None else None,
        params={k_: v for k_, v in params.items() if v is not None},
        pass_params=pass_params,
        run=common.run_options(flags),
    )
    console = _console()
    mode = resolve_mode(progress, quiet)
    status = Progress("compile", mode, score_label="best dev score")
    search: dict = {}  # a search pass's own state (evolve's Pareto front), shown by the panel
    t0 = time.perf_counter()
    live = _LiveView(console, status, t0, search) if mode == "panel" else None

    def log(msg: str) -> None:
        status.set_stage(msg)
        if live is not None:
            live.note(msg)
        elif mode == "lines":
            console.print(f"[dim]{time.perf_counter() - t0:6.1f}s[/dim] {msg}")

    def on_score(name: str, score: float) -> None:
        status.record_best(score)

    def on_example(outcome) -> None:
        status.advance(score=outcome.score, failed=outcome.error is not None)

    def on_progress(info: dict) -> None:
        search.update(info)

    live_or_status = live if live is not None else status
    try:
        with live_or_status:
            result = compile_program(
                opts, log=log, on_score=on_score, observe=status.watch, on_batch=status.begin, on_example=on_example, on_progress=on_progress
            )
    except KeyboardInterrupt:
        # typer turns KeyboardInterrupt into a silent exit 130, so the message is printed here.
        sys.stderr.write("interrupted; no artifact was written; finished LM calls are cached, so rerunning the same command resumes\n")
        raise SystemExit(130) from None
    _print_summary(console, result, str(out))
    if html is not None:
        write_html(html, render_compile(result.artifact, str(out), checked_stats(result.stats, out)))
        console.print(f"wrote {html}", markup=False)


class _LiveView:
    """A status panel on a terminal: stage, examples of the batch, best score, calls, cost and ETA, refreshed live."""

    def __init__(self, console, status: Progress, t0: float, search: dict):
        from rich.live import Live

        self.console, self.status, self.t0, self.search = console, status, t0, search
        self.live = Live(self, console=console, refresh_per_second=4, transient=True)

    def note(self, msg: str) -> None:
        self.console.print(f"[dim]{time.perf_counter() - self.t0:6.1f}s[/dim] {msg}")

    def __rich__(self):
        s = self.status
        usage = s.client.usage if s.client is not None else None
        calls = (
            f"{usage.requests} LM requests ({usage.cached_calls} cached calls"
            + (f", {usage.failed_requests} failed" if usage.failed_requests else "")
            + f"), ${usage.cost:.4f}"
            if usage
            else "starting"
        )
        best = "—" if s.best is None else f"{s.best:.3f}"
        eta = s.eta()
        search = self.search
        front = f"\n        front: {search['front']} of {search['pool']} accepted   best on the front: {search['best_dev']:.3f}" if search else ""
        batch = (f"examples {s.done}/{s.total}" + (f", ETA {eta:.0f}s" if eta else "") + "   ") if s.total else ""
        return f"[bold]{time.perf_counter() - self.t0:6.1f}s[/bold]  {s.stage[:70]}\n        {batch}best dev score: {best}   {calls}{front}"

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        return self.live.__exit__(*exc)


def _print_summary(console, result, out: str) -> None:
    from rich.table import Table

    rep = result.artifact.compile
    t = Table(title=f"compiled {result.artifact.name} → {out}", show_header=True, header_style="bold")
    for col in ("", "dev score", "LM requests", "retries", "failed", "cached", "tokens", "cost", "time"):
        t.add_column(col, justify="right" if col else "left")
    s = result.stats
    fmt = lambda x: "—" if x is None else f"{x:.3f}"  # noqa: E731
    t.add_row("zero-shot", fmt(result.baseline), "", "", "", "", "", "", "")
    t.add_row(
        "compiled",
        fmt(result.final),
        str(s["requests"]),
        str(s["retries"]),
        str(s["failed_requests"]),
        str(s["cached_calls"]),
        str(s["prompt_tokens"] + s["completion_tokens"]),
        f"${s['cost']:.4f}",
        f"{s['duration_s']:.1f}s",
    )
    console.print(t)
    if len(result.candidates) > 1:
        c = Table(title="candidates", show_header=True, header_style="bold")
        c.add_column("candidate")
        c.add_column("dev", justify="right")
        for cand in result.candidates:
            c.add_row(cand["name"], fmt(cand.get("dev")))
        console.print(c)
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    if rep.get("budget", {}).get("exhausted"):
        console.print("[yellow]the budget ran out; the artifact holds the best program found before that[/yellow]")


def inspect_cmd(
    artifact: Annotated[Path, typer.Argument(help="an artifact (*.lmc.json) or a .lmp program")],
    predictor: Annotated[Optional[str], typer.Option("--predictor", help="only this predictor")] = None,
    emit_prompts: Annotated[Optional[Path], typer.Option("--emit-prompts", help="write each predictor's prompt as a text file here")] = None,
    lm: Annotated[Optional[str], typer.Option("--lm", help="render for this LM's prompt format")] = None,
    format: common.TextOrJson = "text",
) -> None:
    """Show each predictor's exact prompt, with its demos, instructions and settings."""
    if format not in ("text", "json"):
        raise LmcError(f"unknown --format '{format}'; expected one of: json, text")
    config = load_config()
    target = load_target(artifact)
    # Inspecting sends no request: the artifact's own server only decides the prompt format here,
    # so a remote one (refused by `run` without --api-base) is shown, not refused.
    art_lm = target.artifact.lm if target.artifact is not None else None
    shown_base = art_lm.get("api_base") if isinstance(art_lm, dict) else None
    spec = choose_lm(lm, shown_base if isinstance(shown_base, str) else None, config, target)
    views = render_predictors(target, spec.mode, predictor)
    python = python_view(target, tuple(config.allow_python))
    if emit_prompts is not None:
        files = [(emit_prompts / f"{v['id']}.txt", v) for v in views]
        check_outputs(
            [Output("--emit-prompts", str(emit_prompts), directory=True)] + [Output("--emit-prompts", str(f)) for f, _ in files],
            [("artifact", str(artifact))],
        )
        for f, v in files:
            atomic_write_text(f, v["prompt"] + "\n")
        sys.stderr.write(f"wrote {len(views)} prompt file(s) to {emit_prompts}\n")
        return
    if format == "json":
        doc = {"target": str(artifact), "kind": target.kind, "python": python, "lms": lm_view(target), "predictors": views}
        if target.artifact is not None and target.artifact.compile.get("lineage"):
            doc["lineage"] = target.artifact.compile["lineage"]
        print(json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False))
        return
    from rich.console import Console
    from rich.panel import Panel
    from rich.text import Text

    out = Console(highlight=False)
    rep = target.artifact.compile if target.artifact else {}
    if rep:
        scores = rep.get("scores", {})
        out.print(
            f"[bold]{target.name}[/bold]  optimizer: {' → '.join(rep.get('optimizer', []))}  "
            f"metric: {rep.get('metric', {}).get('spec')}  dev: {scores.get('baseline', {}).get('dev')} → "
            f"{scores.get('final', {}).get('dev')}  lm: {rep.get('lm')}",
            soft_wrap=True,
        )
        for line in render_lineage(rep.get("lineage", [])):
            out.print(line, markup=False, soft_wrap=True)
    for line in render_python(python):
        out.print(line, markup=False, soft_wrap=True)
    for entry in lm_view(target):
        out.print(
            f"lm {entry['name']}: {entry['model']}" + (f" at {entry['api_base']}" if entry["api_base"] else "") + f"  ({entry['use']})",
            markup=False,
            soft_wrap=True,
        )
    for v in views:
        title = f"{v['id']} ({v['role']} of {v['module']}, {len(v['demos'])} demos, {spec.mode} format)"
        # Text, not markup: prompts contain brackets that rich would read as style tags.
        out.print(Panel(Text(v["prompt"]), title=Text(title), title_align="left", expand=True))
        settings = dict(v["settings"])
        cal = settings.pop("calibration", None)
        if settings:
            out.print(f"{v['id']} settings: " + json.dumps(settings, ensure_ascii=False, sort_keys=True), markup=False, soft_wrap=True)
        if cal:
            out.print(
                f"{v['id']} calibration (added to each label's score before the best is chosen): "
                + ", ".join(f"{label} {off:+.3f}" for label, off in cal.items()),
                markup=False,
                soft_wrap=True,
            )


def diff_cmd(
    a: Annotated[Path, typer.Argument(help="the old artifact")],
    b: Annotated[Path, typer.Argument(help="the new artifact")],
    format: Annotated[str, typer.Option("--format", callback=common.choice("text", "markdown", "json"), help="text, markdown or json")] = "text",
) -> None:
    """Show what changed between two artifacts: instructions, demos, settings, scores."""
    if format not in ("text", "markdown", "json"):
        raise LmcError(f"unknown --format '{format}'; expected one of: json, markdown, text")
    changes = diff_artifacts(read(a), read(b), (str(a), str(b)))
    if format == "json":
        print(json.dumps(changes, indent=2, ensure_ascii=False, allow_nan=False))
    else:
        print(render_diff(changes, str(a), str(b), markdown=(format == "markdown")))


def register(app: typer.Typer) -> None:
    app.command("compile")(compile_cmd)
    app.command("inspect")(inspect_cmd)
    app.command("diff")(diff_cmd)
