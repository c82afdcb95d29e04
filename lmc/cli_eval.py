"""The `eval` command and the `report merge` command of the CLI (presentation only; logic in evalreport and gate)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .cli_common import choice
from .cli_report import HtmlOut
from .errors import CompileError, CompileErrors, ConfigError, LmcError

# ---------------------------------------------------------------- shared options

Baseline = Annotated[Optional[str], typer.Option("--baseline", help="artifact or .lmp to evaluate now, or a report JSON written earlier with --report", show_default=False)]
MinScore = Annotated[Optional[float], typer.Option("--min-score", help="fail (exit 1) when the mean score is below this", show_default=False)]
MaxDrop = Annotated[Optional[float], typer.Option("--max-drop", help="fail (exit 1) on a significant drop larger than this vs --baseline (default 0 with --baseline)", show_default=False)]
Confidence = Annotated[float, typer.Option("--confidence", help="confidence of the paired test and the intervals")]
MaxErrors = Annotated[Optional[int], typer.Option("--max-errors", help="fail (exit 3) when more examples than this hit LM or parse errors", show_default=False)]
AllowChange = Annotated[bool, typer.Option("--allow-different-program", "--allow-program-change", help="compare with a baseline that is another program (not this program's source, nor an edit of the same file)")]
Junit = Annotated[Optional[Path], typer.Option("--junit", help="write JUnit XML here (one test case per example)", show_default=False)]
SummaryOut = Annotated[Optional[Path], typer.Option("--summary", help="write a Markdown summary here", show_default=False)]
GithubSummary = Annotated[bool, typer.Option("--github-summary", help="also append the Markdown summary to $GITHUB_STEP_SUMMARY")]
Format = Annotated[str, typer.Option("--format", callback=choice("text", "json"), help="text, or json for the verdict as JSON on stdout")]


def _err(text: str = "") -> None:
    sys.stderr.write(text.rstrip("\n") + "\n")
    sys.stderr.flush()


def _console():
    from rich.console import Console

    # Not a terminal (CI logs, tests): a fixed width so the table does not wrap into unreadable columns.
    width = None if sys.stderr.isatty() else 160
    return Console(file=sys.stderr, width=width, highlight=False, soft_wrap=False)


def _check_format(format: str) -> None:
    if format not in ("text", "json"):
        raise ConfigError(f"unknown --format '{format}'; expected one of: json, text")


def _check_outputs(outputs: list[tuple[str, Optional[Path]]], inputs: list[tuple[str, Any]],
                   cache_dir: Optional[str] = None) -> None:
    """Refuse outputs that would overwrite an input or each other, or cannot be written, before any LM call."""
    from .files import Output, check_outputs

    outs = [Output(label, str(p)) for label, p in outputs if p is not None]
    if cache_dir:
        outs.append(Output("--cache-dir", cache_dir, directory=True))
    check_outputs(outs, inputs)


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

    from .gate import report_stats

    console = _console()
    for label, rep in rows:
        console.print(f"{label}: {rep.target.path} ({rep.target.kind} '{rep.program.name}') on {rep.data.path}"
                      + (f", shard {rep.shard}" if rep.shard else ""), markup=False)
    if console.width < 100:
        # Too narrow for eleven columns: the same numbers as one line per side.
        for label, rep in rows:
            s = report_stats(rep, confidence)
            console.print(
                f"{label}: score {s['score']:.3f} ({confidence:.0%} CI {s['score_lo']:.3f}-{s['score_hi']:.3f}), "
                f"n {s['n']}, passed {s['passed']}, errors {s['errors']}, calls {s['calls']} ({s['cached_calls']} cached), "
                f"requests {s['requests']} ({s['retries']} retries, {s['failed_requests']} failed), "
                f"{s['prompt_tokens'] + s['completion_tokens']} tokens, ${s['cost']:.4f}, {s['duration_s']:.1f}s",
                markup=False)
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1))
    for name in ("", "score", f"{confidence:.0%} CI", "n", "passed", "errors", "calls", "cached", "requests", "tokens",
                 "cost", "time"):
        table.add_column(name, justify="left" if name in ("", f"{confidence:.0%} CI") else "right", no_wrap=True)
    for label, rep in rows:
        s = report_stats(rep, confidence)
        table.add_row(label, f"{s['score']:.3f}", f"{s['score_lo']:.3f}-{s['score_hi']:.3f}", str(s["n"]),
                      str(s["passed"]), str(s["errors"]), str(s["calls"]), str(s["cached_calls"]),
                      str(s["requests"]) + (f" ({s['failed_requests']} failed)" if s["failed_requests"] else ""),
                      str(s["prompt_tokens"] + s["completion_tokens"]), f"${s['cost']:.4f}", f"{s['duration_s']:.1f}s")
    console.print(table)


def _finish(cand, base, opts, *, junit: Optional[Path], summary: Optional[Path], github_summary: bool,
            format: str, extra_lines: list[str], html: Optional[Path] = None, html_context=None) -> None:
    """Gate, write JUnit/Markdown, print the verdict (reason last) and exit with its code."""
    from .gate import apply_gates, render_markdown, verdict_json, write_junit, write_text_atomic

    try:
        verdict = apply_gates(cand, base, opts)
    except LmcError as e:
        _fail_json(format, e)
        raise
    rows = [("candidate", cand)] + ([("baseline", base)] if base is not None else [])
    _table(rows, opts.confidence)
    notes = list(extra_lines)
    if junit is not None:
        write_junit(cand, verdict, junit, base)
        notes.append(f"wrote {junit}")
    markdown = None
    if summary is not None or github_summary:
        markdown = render_markdown(cand, base, verdict)
    if summary is not None:
        write_text_atomic(summary, markdown)
        notes.append(f"wrote {summary}")
    if html is not None:
        from .report_html import context_from_files, render_eval, write_html

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


def _progress(total: int, labels: list[str]):
    """A transient progress bar on a terminal; nothing in logs and tests."""
    if not sys.stderr.isatty() or total == 0:
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=_console(), transient=True)
    tasks = [progress.add_task(f"eval {label}", total=total) for label in labels]
    return progress, (lambda i, _out: progress.advance(tasks[i]))


def _load(path: str, program: Optional[str], role: str):
    """A target, with compile errors of a .lmp being bad input here (exit 2), shown in full, reason last."""
    from .gate import is_report
    from .load import load_target

    if Path(path).is_file() and is_report(path):
        raise ConfigError(f"{path}: is an evaluation report; the {role} must be a program (.lmp) or an artifact")
    try:
        return load_target(path, program)
    except CompileErrors as e:
        _err(e.render())
        n = len(e.diagnostics)
        raise LmcError(f"{path}: the {role} does not compile ({n} error{'s' if n != 1 else ''} above)") from None
    except CompileError as e:
        # A single diagnosis from lowering would otherwise exit 1, which here means "quality regressed".
        raise LmcError(f"{path}: the {role} does not compile: {e.span}: {e}") from None


# ---------------------------------------------------------------- commands


def register(app: typer.Typer) -> None:
    report_app = typer.Typer(help="Work with evaluation reports (lmc-report/1).", no_args_is_help=True)
    app.add_typer(report_app, name="report")

    @app.command("eval")
    def eval_(
        target: Annotated[str, typer.Argument(help="program (.lmp) or compiled artifact (.lmc.json) to score", show_default=False)],
        data: Annotated[str, typer.Option("--data", help="JSONL examples with the program's inputs and gold labels", show_default=False)],
        metric: Annotated[Optional[str], typer.Option("--metric", help="metric to score with (default: the program's only metric)", show_default=False)] = None,
        program: Annotated[Optional[str], typer.Option("--program", help="program of the .lmp file to evaluate", show_default=False)] = None,
        threshold: Annotated[float, typer.Option("--threshold", min=0.0, max=1.0, help="an example passes when its score is at least this")] = 1.0,
        lm: Annotated[Optional[str], typer.Option("--lm", help="LM for predictors that name none, e.g. openai/gpt-4o-mini", show_default=False)] = None,
        api_base: Annotated[Optional[str], typer.Option("--api-base", help="base URL of an OpenAI-compatible server", show_default=False)] = None,
        cache_dir: Annotated[Optional[str], typer.Option("--cache-dir", help="LM call cache (default .lmc/cache)", show_default=False)] = None,
        no_cache: Annotated[bool, typer.Option("--no-cache", help="neither read nor write the LM call cache")] = False,
        jobs: Annotated[Optional[int], typer.Option("-j", "--jobs", min=1, help="examples run at once (default 8)", show_default=False)] = None,
        rpm: Annotated[Optional[float], typer.Option("--rpm", min=0.001, help="at most this many LM requests per minute", show_default=False)] = None,
        example_timeout: Annotated[Optional[float], typer.Option("--example-timeout", min=0.001, help="fail an example that runs longer than this many seconds", show_default=False)] = None,
        max_steps: Annotated[Optional[int], typer.Option("--max-steps", min=1, help="fail an example after this many statements and loop iterations (default 10,000,000)", show_default=False)] = None,
        shard: Annotated[Optional[str], typer.Option("--shard", help="evaluate only part i of N, e.g. 2/4", show_default=False)] = None,
        max_calls: Annotated[Optional[int], typer.Option("--max-calls", min=1, help="send at most this many LM requests (retries and failures count; cache hits are free); running out is exit 3", show_default=False)] = None,
        max_cost: Annotated[Optional[float], typer.Option("--max-cost", min=0.0, help="spend at most this much (USD); each request reserves its worst case before it is sent", show_default=False)] = None,
        price_per_mtok_in: Annotated[Optional[float], typer.Option("--price-per-mtok-in", min=0.0, help="USD per million prompt tokens of an LM litellm's price table does not list (0 = free)", show_default=False)] = None,
        price_per_mtok_out: Annotated[Optional[float], typer.Option("--price-per-mtok-out", min=0.0, help="USD per million completion tokens of such an LM", show_default=False)] = None,
        max_lm_errors: Annotated[Optional[str], typer.Option("--max-lm-errors", help="LM calls that may fail after their retries before the eval stops with exit 3: a share (20%, 0.2) of at least 10 calls, or a count (5); default 20%", show_default=False)] = None,
        truncate_inputs: Annotated[bool, typer.Option("--truncate-inputs", help="cut an input too long for the LM's context from its middle instead of failing its example")] = False,
        transport: Annotated[Optional[str], typer.Option("--transport", help="send LM requests through 'direct' (lmc's HTTP client) or 'litellm'; default: each LM by its protocol", show_default=False)] = None,
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
        html: HtmlOut = None,
        format: Format = "text",
        allow_python: Annotated[Optional[list[str]], typer.Option("--allow-python", help="let tools/metrics import this module (pkg, pkg.mod or pkg.mod:fn; repeatable); a .lmp's own directory is allowed, an artifact's is not", show_default=False)] = None,
    ) -> None:
        """Score a program or artifact on a dataset and gate CI on the result (exit 0 pass, 1 quality, 2 bad input, 3 LM errors)."""
        try:
            _eval(**locals())
        except LmcError as e:
            _fail_json(format, e)
            raise

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
        html: HtmlOut = None,
        format: Format = "text",
    ) -> None:
        """Join the shard reports of one evaluation and apply the gates once, as `lmc eval` would."""
        try:
            _merge(**locals())
        except LmcError as e:
            _fail_json(format, e)
            raise


def _gate_options(**kw):
    from .gate import GateOptions

    opts = GateOptions(**kw)
    opts.validate()
    return opts


def _eval(*, target, data, metric, program, threshold, lm, api_base, cache_dir, no_cache, jobs, rpm, example_timeout,
          max_steps, shard, min_score, baseline, max_drop, confidence, max_errors, allow_program_change, report, junit,
          summary, github_summary, format, allow_python=None, html=None, max_calls=None, max_cost=None,
          price_per_mtok_in=None, price_per_mtok_out=None, max_lm_errors=None, truncate_inputs=False,
          transport=None) -> None:
    from . import evalreport as E
    from .datasets import load_dataset
    from .gate import parse_shard

    # Everything that can be refused is refused before the first LM call.
    _check_format(format)
    opts = _gate_options(min_score=min_score, baseline=baseline, max_drop=max_drop, max_errors=max_errors,
                         confidence=confidence, allow_program_change=allow_program_change)
    shard_spec = parse_shard(shard) if shard is not None else None

    from .load import choose_lm, load_config
    from .settings import resolve

    config = load_config()
    st = resolve({"lm": lm, "api_base": api_base, "cache_dir": cache_dir, "concurrency": jobs, "rpm": rpm,
                  "max_steps": max_steps, "example_timeout": example_timeout, "max_calls": max_calls,
                  "max_cost": max_cost, "price_per_mtok_in": price_per_mtok_in, "price_per_mtok_out": price_per_mtok_out,
                  "max_lm_errors": max_lm_errors, "truncate_inputs": truncate_inputs or None, "transport": transport},
                 config)
    cand_t = _load(target, program, "target")
    cand_metric = E.choose_metric(cand_t.ir, metric, target)
    dataset = load_dataset(data)
    E.check_data(cand_t.ir, dataset, cand_metric)
    examples = E.select_shard(dataset, shard_spec)
    if not examples and (min_score is not None or baseline is not None or max_errors is not None):
        raise ConfigError(f"shard {shard} holds no examples of {data}, so there is nothing to gate; "
                          "gate once after `lmc report merge` instead")
    cand_mref = E.metric_ref(cand_metric, threshold)
    dref = E.data_ref(dataset)

    base_report = None
    base_t = None
    if baseline is not None:
        if not Path(baseline).exists():
            raise ConfigError(f"{baseline}: no such file (--baseline)")
        if not baseline.endswith((".lmp", ".json")):
            raise ConfigError(f"{baseline}: --baseline expects a program (.lmp), an artifact (.lmc.json) "
                              "or a report (.json written by --report)")
        if E.baseline_is_report(baseline):
            base_report = E.load_baseline_report(baseline)
            E.check_baseline_report(base_report, E.program_ref(cand_t), E.target_ref(cand_t.kind, target), cand_mref,
                                    dref, examples, allow_program_change=allow_program_change)
        else:
            base_t = _load(baseline, program, "baseline")
            base_metric = E.baseline_metric(base_t.ir, cand_metric, baseline)
            E.check_baseline_target(E.program_ref(base_t), baseline, E.metric_ref(base_metric, threshold),
                                    E.program_ref(cand_t), cand_mref, dref, examples,
                                    allow_program_change=allow_program_change)
            E.check_data(base_t.ir, dataset, base_metric)

    from .runner import input_files

    inputs = input_files(cand_t, config, "target") + [("--data file", data)]
    if baseline is not None:
        inputs += input_files(base_t, None, "--baseline") if base_t is not None else [("--baseline", baseline)]
    outputs = [("--report", report), ("--junit", junit), ("--summary", summary), ("--html", html)]
    _check_outputs(outputs, inputs, cache_dir=None if no_cache else st.cache_dir)

    from .budget import DEFAULT_LM_ERRORS, parse_error_limit, settings_price
    from .lm import LMClient
    from .pyrefs import parse_allow, policy_for

    allowed = tuple(config.allow_python) + parse_allow(allow_python or (), "--allow-python")
    work = [E.Job(cand_t.ir, choose_lm(lm, st.api_base, config, cand_t), cand_metric, cand_t.kind == "artifact",
                  policy_for(cand_t, allowed))]
    if base_t is not None:
        work.append(E.Job(base_t.ir, choose_lm(lm, st.api_base, config, base_t), base_metric, base_t.kind == "artifact",
                          policy_for(base_t, allowed)))
    extra_lms = config.alias_specs()
    concurrency = st.concurrency
    client = LMClient(cache_dir=st.cache_dir, use_cache=not no_cache, concurrency=concurrency, rpm=st.rpm,
                      max_calls=st.max_calls, max_cost=st.max_cost, price=settings_price(st),
                      max_lm_errors=parse_error_limit(st.max_lm_errors or DEFAULT_LM_ERRORS), transport=st.transport)
    progress, on_result = _progress(len(examples), ["candidate", "baseline"][: len(work)])
    try:
        if progress is not None:
            progress.start()
        runs = E.evaluate_targets(work, examples, threshold=threshold, client=client, concurrency=concurrency,
                                  api_base=st.api_base, extra_lms=extra_lms, on_result=on_result,
                                  max_steps=st.max_steps, example_timeout=st.example_timeout,
                                  truncate_inputs=st.truncate_inputs)
    finally:
        if progress is not None:
            progress.stop()

    cand = E.build_report(program=cand_t.name, program_sha256=cand_t.sha256, kind=cand_t.kind, path=target,
                          ir=cand_t.ir, metric=cand_metric, threshold=threshold, dataset=dataset, shard=shard_spec,
                          run=runs[0], program_path=E.program_ref(cand_t).path)
    base = base_report
    if base_t is not None:
        base = E.build_report(program=base_t.name, program_sha256=base_t.sha256, kind=base_t.kind, path=baseline,
                              ir=base_t.ir, metric=base_metric, threshold=threshold, dataset=dataset,
                              shard=shard_spec, run=runs[1], program_path=E.program_ref(base_t).path)
    notes = []
    if report is not None:
        cand.save(report)
        notes.append(f"wrote {report}")
    if shard_spec is not None:
        notes.insert(0, f"shard {shard_spec[0]}/{shard_spec[1]}: {len(examples)} of {len(dataset)} examples")
    if not examples:
        reason = f"PASS: shard {shard_spec[0]}/{shard_spec[1]} holds no examples of {data}; nothing to gate"
        if html is not None:
            notes.append(f"note: {html} not written: the shard has no examples to show")
        if format == "json":
            print(json.dumps({"verdict": "pass", "exit_code": 0, "reason": reason, "reasons": []}, indent=2, sort_keys=True))
        for line in notes + [reason]:
            _err(line)
        raise SystemExit(0)
    html_context = None
    if html is not None:
        from .report_html import eval_context

        html_context = eval_context(cand_t.ir, examples)
    _finish(cand, base, opts, junit=junit, summary=summary, github_summary=github_summary, format=format,
            extra_lines=notes, html=html, html_context=html_context)


def _merge(*, parts, out, min_score, baseline, max_drop, confidence, max_errors, allow_program_change, junit, summary,
           github_summary, format, html=None) -> None:
    from .gate import Report, is_report, merge_reports

    _check_format(format)
    opts = _gate_options(min_score=min_score, baseline=baseline, max_drop=max_drop, max_errors=max_errors,
                         confidence=confidence, allow_program_change=allow_program_change)
    _check_outputs([("-o", out), ("--junit", junit), ("--summary", summary), ("--html", html)],
                   [("shard report", p) for p in parts] + [("--baseline", baseline)])
    reports = [Report.load(p) for p in parts]
    base = None
    if baseline is not None:
        if not Path(baseline).exists():
            raise ConfigError(f"{baseline}: no such file (--baseline)")
        from .artifact import is_artifact_path

        if not is_report(baseline) and (baseline.endswith(".lmp") or is_artifact_path(baseline)):
            raise ConfigError(f"{baseline}: report merge never evaluates, so --baseline must be a report; "
                              f"write one with `lmc eval {baseline} --data ... --report base.json`")
        base = Report.load(baseline)
    merged = merge_reports(reports)
    notes = [f"merged {len(reports)} shard reports: {merged.summary.n} examples"]
    if out is not None:
        merged.save(out)
        notes.append(f"wrote {out}")
    _finish(merged, base, opts, junit=junit, summary=summary, github_summary=github_summary, format=format,
            extra_lines=notes, html=html)
