"""The `eval` command and the `report merge` command of the CLI (presentation only; logic in evalreport and gate)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from .artifact import is_artifact_path
from . import cli_common as common
from .cli_common import err as _err
from .errors import ConfigError, LmcError
from .evalreport import EvalOptions, TargetDoesNotCompile, evaluate_files
from .files import Output, check_outputs
from .gate import (
    GateOptions,
    Report,
    apply_gates,
    is_report,
    merge_reports,
    render_markdown,
    report_stats,
    verdict_json,
    write_junit,
    write_text_atomic,
)
from .progress import Progress, resolve_mode
from .report_html import context_from_files, eval_context, render_eval, write_html
from .runner import LineWriter, trace_line

# ---------------------------------------------------------------- shared options

Baseline = Annotated[
    Optional[str],
    typer.Option("--baseline", help="artifact or .lmp to evaluate now, or a report JSON written earlier with --report", show_default=False),
]
MinScore = Annotated[Optional[float], typer.Option("--min-score", help="fail (exit 1) when the mean score is below this", show_default=False)]
MaxDrop = Annotated[
    Optional[float],
    typer.Option(
        "--max-drop", help="fail (exit 1) on a significant drop larger than this vs --baseline (default 0 with --baseline)", show_default=False
    ),
]
Confidence = Annotated[float, typer.Option("--confidence", help="confidence of the paired test and the intervals")]
MaxErrors = Annotated[
    Optional[int], typer.Option("--max-errors", help="fail (exit 3) when more examples than this hit LM or parse errors", show_default=False)
]
AllowChange = Annotated[
    bool,
    typer.Option(
        "--allow-different-program",
        "--allow-program-change",
        help="compare with a baseline that is another program (not this program's source, nor an edit of the same file)",
    ),
]
Junit = Annotated[Optional[Path], typer.Option("--junit", help="write JUnit XML here (one test case per example)", show_default=False)]
SummaryOut = Annotated[Optional[Path], typer.Option("--summary", help="write a Markdown summary here", show_default=False)]
GithubSummary = Annotated[bool, typer.Option("--github-summary", help="also append the Markdown summary to $GITHUB_STEP_SUMMARY")]
Format = Annotated[str, typer.Option("--format", callback=common.choice("text", "json"), help="text, or json for the verdict as JSON on stdout")]


def _console():
    from rich.console import Console

    # Not a terminal (CI logs, tests): a fixed width so the table does not wrap into unreadable columns.
    width = None if sys.stderr.isatty() else 160
    return Console(file=sys.stderr, width=width, highlight=False, soft_wrap=False)


def _check_format(format: str) -> None:
    if format not in ("text", "json"):
        raise ConfigError(f"unknown --format '{format}'; expected one of: json, text")


def _check_outputs(outputs: list[tuple[str, Optional[Path]]], inputs: list[tuple[str, Any]], cache_dir: Optional[str] = None) -> None:
    """Refuse outputs that would overwrite an input or each other, or cannot be written, before any LM call."""
    outs = [Output(label, str(p)) for label, p in outputs if p is not None]
    if cache_dir:
        outs.append(Output("--cache-dir", cache_dir, directory=True))
    check_outputs(outs, inputs)


def _answering(format: str, command: Callable[..., None], args: dict) -> None:
    """Run `command(**args)`; with --format json a failure still prints its one JSON document."""
    try:
        command(**args)
    except LmcError as e:
        _fail_json(format, e)
        raise


def _fail_json(format: str, err: LmcError) -> None:
    """With --format json a script still gets one JSON document when the run could not be judged."""
    if format == "json":
        doc = {"verdict": "error", "exit_code": err.exit_code, "reason": f"error: {err}", "reasons": [str(err)]}
        print(json.dumps(doc, indent=2, sort_keys=True, allow_nan=False))


# ---------------------------------------------------------------- presentation


def _table(rows: list[tuple[str, Any]], confidence: float) -> None:
    """One row per evaluated side; the targets go on their own lines so the table fits a 100-column terminal."""
    from rich import box
    from rich.table import Table

    console = _console()
    for label, rep in rows:
        console.print(
            f"{label}: {rep.target.path} ({rep.target.kind} '{rep.program.name}') on {rep.data.path}" + (f", shard {rep.shard}" if rep.shard else ""),
            markup=False,
        )
    if console.width < 100:
        # Too narrow for eleven columns: the same numbers as one line per side.
        for label, rep in rows:
            s = report_stats(rep, confidence)
            console.print(
                f"{label}: score {s['score']:.3f} ({confidence:.0%} CI {s['score_lo']:.3f}-{s['score_hi']:.3f}), "
                f"n {s['n']}, passed {s['passed']}, errors {s['errors']}, calls {s['calls']} ({s['cached_calls']} cached), "
                f"requests {s['requests']} ({s['retries']} retries, {s['failed_requests']} failed), "
                f"{s['prompt_tokens'] + s['completion_tokens']} tokens, ${s['cost']:.4f}, {s['duration_s']:.1f}s",
                markup=False,
            )
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1))
    for name in ("", "score", f"{confidence:.0%} CI", "n", "passed", "errors", "calls", "cached", "requests", "tokens", "cost", "time"):
        table.add_column(name, justify="left" if name in ("", f"{confidence:.0%} CI") else "right", no_wrap=True)
    for label, rep in rows:
        s = report_stats(rep, confidence)
        table.add_row(
            label,
            f"{s['score']:.3f}",
            f"{s['score_lo']:.3f}-{s['score_hi']:.3f}",
            str(s["n"]),
            str(s["passed"]),
            str(s["errors"]),
            str(s["calls"]),
            str(s["cached_calls"]),
            str(s["requests"]) + (f" ({s['failed_requests']} failed)" if s["failed_requests"] else ""),
            str(s["prompt_tokens"] + s["completion_tokens"]),
            f"${s['cost']:.4f}",
            f"{s['duration_s']:.1f}s",
        )
    console.print(table)


def _finish(
    cand,
    base,
    verdict,
    opts,
    *,
    junit: Optional[Path],
    summary: Optional[Path],
    github_summary: bool,
    format: str,
    extra_lines: list[str],
    html: Optional[Path] = None,
    html_context=None,
) -> None:
    """Write JUnit/Markdown/HTML, print the table and the verdict (reason last) and exit with its code."""
    rows = [("candidate", cand)] + ([("baseline", base)] if base is not None else [])
    _table(rows, opts.confidence)
    notes = list(extra_lines)
    if junit is not None:
        write_junit(cand, verdict, junit, base)
        notes.append(f"wrote {junit}")
    markdown = render_markdown(cand, base, verdict) if summary is not None or github_summary else ""
    if summary is not None:
        write_text_atomic(summary, markdown)
        notes.append(f"wrote {summary}")
    if html is not None:
        ctx = html_context if html_context is not None else context_from_files(cand)
        write_html(html, render_eval(cand, base, verdict, ctx, confidence=opts.confidence))
        notes.append(f"wrote {html}")
    if github_summary:
        target = os.environ.get("GITHUB_STEP_SUMMARY")
        if target:
            try:
                with open(target, "a", encoding="utf-8") as fh:
                    fh.write(markdown + "\n")
                notes.append("appended the summary to $GITHUB_STEP_SUMMARY")
            except OSError as e:
                notes.append(f"warning: cannot append to $GITHUB_STEP_SUMMARY ({target}): {e.strerror}")
        else:
            notes.append("note: --github-summary: $GITHUB_STEP_SUMMARY is not set, nothing appended")
    if format == "json":
        print(json.dumps(verdict_json(cand, base, verdict, opts), indent=2, sort_keys=True, allow_nan=False))
    for line in notes + verdict.lines:
        _err(line)
    # SystemExit rather than typer.Exit: cli.main() passes it through unchanged, whatever click does with Exit.
    raise SystemExit(verdict.exit_code)


def _status(progress: Optional[str], quiet: bool, trace: Optional[Path] = None):
    """The eval's progress (a transient bar on a terminal, status lines or JSON elsewhere, or nothing)
    and its --trace: the candidate's examples as lmc-trace/1 lines, each with its score."""
    mode = resolve_mode(progress, quiet)
    status = Progress("eval", mode)
    bar: dict = {}
    labels = ["candidate", "baseline"]
    tracer: dict[str, Any] = {}

    def observe(session: Any) -> None:
        status.watch(session.client)
        if trace is not None:
            program = session.runtime.ir.program()
            tracer["names"], tracer["program"] = [f.name for f in program.inputs], program.name
            Path(trace).write_bytes(b"")  # one eval, one trace: a rerun replaces it (run --trace appends to resume)
            tracer["writer"] = LineWriter(trace)

    def on_start(examples: int, targets: int) -> None:
        status.start()
        status.begin(examples * targets, stage=f"scoring the {labels[0]}")
        if mode == "panel" and examples:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bar

            bar["bar"] = Bar(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=_console(), transient=True
            )
            bar["tasks"] = [bar["bar"].add_task(f"eval {label}", total=examples) for label in labels[:targets]]
            bar["bar"].start()

    def on_result(i: int, outcome: Any) -> None:
        if i and not status.stage.endswith(labels[i]):
            status.set_stage(f"scoring the {labels[i]}")
        # The running score is the candidate's mean; the baseline's would blur it.
        status.advance(score=outcome.score if i == 0 else None, failed=outcome.error is not None)
        if i == 0 and "writer" in tracer:
            ex = outcome.example
            tracer["writer"].write(trace_line(ex, outcome.result, ex.inputs(tracer["names"]), program=tracer["program"], score=outcome.score))
        if "bar" in bar:
            bar["bar"].advance(bar["tasks"][i])

    def close() -> None:
        if "bar" in bar:
            bar["bar"].stop()
        status.close()
        if "writer" in tracer:
            tracer["writer"].close()

    return observe, on_start, on_result, close


# ---------------------------------------------------------------- commands


def register(app: typer.Typer) -> None:
    report_app = typer.Typer(help="Work with evaluation reports (lmc-report/1).", no_args_is_help=True)
    app.add_typer(report_app, name="report")

    @app.command("eval")
    def eval_(
        target: Annotated[str, typer.Argument(help="program (.lmp) or compiled artifact (.lmc.json) to score", show_default=False)],
        data: Annotated[str, typer.Option("--data", help="JSONL examples with the program's inputs and gold labels", show_default=False)],
        metric: Annotated[Optional[str], common.metric_option("eval")] = None,
        program: common.Program = None,
        threshold: Annotated[Optional[float], common.threshold_option("eval")] = None,
        lm: common.Lm = None,
        api_base: common.ApiBase = None,
        cache_dir: common.CacheDir = None,
        no_cache: common.NoCache = False,
        jobs: common.Jobs = None,
        rpm: common.Rpm = None,
        example_timeout: common.ExampleTimeout = None,
        max_steps: common.MaxSteps = None,
        shard: Annotated[Optional[str], typer.Option("--shard", help="evaluate only part i of N, e.g. 2/4", show_default=False)] = None,
        max_calls: Annotated[Optional[int], common.max_calls_option("eval")] = None,
        max_cost: common.MaxCost = None,
        price_per_mtok_in: common.PricePerMtokIn = None,
        price_per_mtok_out: common.PricePerMtokOut = None,
        max_lm_errors: Annotated[Optional[str], common.max_lm_errors_option("eval")] = None,
        truncate_inputs: common.TruncateInputs = None,
        transport: common.Transport = None,
        min_score: MinScore = None,
        baseline: Baseline = None,
        max_drop: MaxDrop = None,
        confidence: Confidence = 0.95,
        max_errors: MaxErrors = None,
        allow_program_change: AllowChange = False,
        report: Annotated[Optional[Path], typer.Option("--report", help="write the full report (lmc-report/1 JSON) here", show_default=False)] = None,
        junit: Junit = None,
        summary: SummaryOut = None,
        github_summary: GithubSummary = False,
        html: common.HtmlOut = None,
        format: Format = "text",
        allow_python: common.AllowPython = None,
        trace: Annotated[
            Optional[Path],
            typer.Option(
                "--trace",
                help="write the candidate's per-example traces (lmc-trace/1 JSONL, each with its score) here; `lmc dataset from-traces` reads them",
                show_default=False,
            ),
        ] = None,
        progress: common.ProgressOpt = None,
        quiet: common.Quiet = False,
        otel: common.Otel = None,
        otel_content: common.OtelContent = False,
    ) -> None:
        """Score a program or artifact on a dataset and gate CI on the result (exit 0 pass, 1 quality, 2 bad input, 3 LM errors)."""
        _answering(format, _eval, locals())

    @report_app.command("merge")
    def merge(
        parts: Annotated[list[str], typer.Argument(help="shard reports written by lmc eval --shard i/N --report", show_default=False)],
        out: Annotated[Optional[Path], typer.Option("-o", "--out", help="write the merged report here", show_default=False)] = None,
        min_score: MinScore = None,
        baseline: Annotated[Optional[str], typer.Option("--baseline", help="a report JSON (merge never evaluates)", show_default=False)] = None,
        max_drop: MaxDrop = None,
        confidence: Confidence = 0.95,
        max_errors: MaxErrors = None,
        allow_program_change: AllowChange = False,
        junit: Junit = None,
        summary: SummaryOut = None,
        github_summary: GithubSummary = False,
        html: common.HtmlOut = None,
        format: Format = "text",
    ) -> None:
        """Join the shard reports of one evaluation and apply the gates once, as `lmc eval` would."""
        _answering(format, _merge, locals())


_GATE_FLAGS = ("min_score", "baseline", "max_drop", "max_errors", "confidence", "allow_program_change")


def _gate_options(flags: dict) -> GateOptions:
    """The gates of `eval` and `report merge` from the command's flags, refused now when they cannot work together."""
    opts = GateOptions(**{name: flags[name] for name in _GATE_FLAGS})
    opts.validate()
    return opts


def _eval(
    *,
    target,
    data,
    metric,
    program,
    threshold,
    shard,
    report,
    junit,
    summary,
    github_summary,
    format,
    html=None,
    progress=None,
    quiet=False,
    trace=None,
    **flags,
) -> None:
    _check_format(format)
    opts = EvalOptions(
        target,
        data,
        metric=metric,
        program=program,
        threshold=threshold,
        shard=shard,
        run=common.run_options(flags),
        gates=_gate_options(flags),
        report=str(report) if report is not None else None,
        outputs=(("--junit", junit), ("--summary", summary), ("--html", html), ("--trace", trace)),
    )
    observe, on_start, on_result, close = _status(progress, quiet, trace)
    try:
        result = evaluate_files(opts, on_result=on_result, on_start=on_start, observe=observe)
    except TargetDoesNotCompile as e:
        if e.errors is not None:
            _err(e.errors.render())
        raise
    finally:
        close()
    if result.verdict is None:
        reason = f"PASS: shard {result.candidate.shard} holds no examples of {data}; nothing to gate"
        notes = list(result.notes)
        if html is not None:
            notes.append(f"note: {html} not written: the shard has no examples to show")
        if format == "json":
            print(json.dumps({"verdict": "pass", "exit_code": 0, "reason": reason, "reasons": []}, indent=2, sort_keys=True))
        for line in notes + [reason]:
            _err(line)
        raise SystemExit(0)
    html_context = None
    if html is not None:
        html_context = eval_context(result.target.ir, result.examples)
    _finish(
        result.candidate,
        result.baseline,
        result.verdict,
        opts.gates,
        junit=junit,
        summary=summary,
        github_summary=github_summary,
        format=format,
        extra_lines=result.notes,
        html=html,
        html_context=html_context,
    )


def _merge(*, parts, out, junit, summary, github_summary, format, html=None, **gates) -> None:
    _check_format(format)
    opts = _gate_options(gates)
    baseline = opts.baseline
    _check_outputs(
        [("-o", out), ("--junit", junit), ("--summary", summary), ("--html", html)], [("shard report", p) for p in parts] + [("--baseline", baseline)]
    )
    reports = [Report.load(p) for p in parts]
    base = None
    if baseline is not None:
        if not Path(baseline).exists():
            raise ConfigError(f"{baseline}: no such file (--baseline)")

        if not is_report(baseline) and (baseline.endswith(".lmp") or is_artifact_path(baseline)):
            raise ConfigError(
                f"{baseline}: report merge never evaluates, so --baseline must be a report; "
                f"write one with `lmc eval {baseline} --data ... --report base.json`"
            )
        base = Report.load(baseline)
    merged = merge_reports(reports)
    notes = [f"merged {len(reports)} shard reports: {merged.summary.n} examples"]
    if out is not None:
        merged.save(out)
        notes.append(f"wrote {out}")
    _finish(
        merged,
        base,
        apply_gates(merged, base, opts),
        opts,
        junit=junit,
        summary=summary,
        github_summary=github_summary,
        format=format,
        extra_lines=notes,
        html=html,
    )
