"""The `report html` command (presentation only; the page is built in lmc.report_html)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import report_html as H
from .artifact import is_artifact_path, read
from .cli_common import err as _err
from .errors import ConfigError
from .gate import GateOptions, Report, apply_gates, is_report


def html_cmd(
    source: Annotated[Path, typer.Argument(help="an eval report (lmc eval --report) or an artifact (*.lmc.json)", show_default=False)],
    out: Annotated[Path, typer.Option("-o", "--out", help="the HTML file to write", show_default=False)],
    baseline: Annotated[
        Optional[Path], typer.Option("--baseline", help="a baseline report to compare with (paired test, flipped examples)", show_default=False)
    ] = None,
    artifact: Annotated[
        Optional[Path],
        typer.Option("--artifact", help="the evaluated artifact: label types for confusion matrices, and its compile sections", show_default=False),
    ] = None,
    data: Annotated[
        Optional[Path],
        typer.Option("--data", help="the evaluated dataset, when not at the path the report names (checked by sha256)", show_default=False),
    ] = None,
    stats: Annotated[
        Optional[Path], typer.Option("--stats", help="the compile's stats sidecar, when not next to the artifact", show_default=False)
    ] = None,
    max_drop: Annotated[
        Optional[float], typer.Option("--max-drop", help="as for lmc eval: the drop the verdict tolerates vs --baseline", show_default=False)
    ] = None,
    min_score: Annotated[Optional[float], typer.Option("--min-score", help="as for lmc eval", show_default=False)] = None,
    max_errors: Annotated[Optional[int], typer.Option("--max-errors", help="as for lmc eval", show_default=False)] = None,
    confidence: Annotated[float, typer.Option("--confidence", help="confidence of the intervals and the paired test")] = 0.95,
    allow_program_change: Annotated[
        bool,
        typer.Option("--allow-different-program", "--allow-program-change", help="as for lmc eval: compare with a baseline that is another program"),
    ] = False,
) -> None:
    """Write one self-contained HTML page (no network needed to view it) for an eval report or a compiled artifact."""

    named = [("SOURCE", source), ("--baseline", baseline), ("--artifact", artifact), ("--data", data), ("--stats", stats)]
    for flag, p in named:
        if p is not None and not p.is_file():
            raise ConfigError(f"{p}: no such file ({flag})")
    H.check_out_path(out, "-o", named)
    if is_report(source):
        cand = Report.load(source)
        base = None
        if baseline is not None:
            if not is_report(baseline):
                raise ConfigError(
                    f"{baseline}: --baseline must be an eval report (lmc eval --report); "
                    f"evaluate an artifact with `lmc eval {baseline} --data ... --report base.json`"
                )
            base = Report.load(baseline)
        opts = GateOptions(
            min_score=min_score,
            baseline=str(baseline) if baseline else None,
            max_drop=max_drop,
            max_errors=max_errors,
            confidence=confidence,
            allow_program_change=allow_program_change,
        )
        verdict = apply_gates(cand, base, opts)
        art = read(artifact) if artifact is not None else None
        ctx = H.context_from_files(cand, data=str(data) if data else None, artifact=art)
        page_stats = H.load_stats(artifact, stats) if artifact is not None else None
        text = H.render_eval(
            cand, base, verdict, ctx, confidence=confidence, artifact=art, artifact_path=str(artifact) if artifact else None, stats=page_stats
        )
        notes = list(ctx.notes) + ([page_stats[1]] if page_stats and page_stats[1] else [])
    elif is_artifact_path(source):
        for p, flag in ((baseline, "--baseline"), (artifact, "--artifact"), (data, "--data")):
            if p is not None:
                raise ConfigError(f"{flag} applies to an eval report; {source} is an artifact")
        art = read(source)
        page_stats = H.load_stats(source, stats)
        text = H.render_compile(art, str(source), page_stats)
        notes = [page_stats[1]] if page_stats[1] else []
    else:
        raise ConfigError(f"{source}: expected an eval report (lmc-report/1, from lmc eval --report) or an artifact (*.lmc.json)")
    H.write_html(out, text)
    for note in notes:
        _err(f"note: {note}")
    _err(f"wrote {out}")


def register(app: typer.Typer) -> None:
    """Add `html` to the `report` group that cli_eval registers (or make the group when it is absent)."""
    group = next((g.typer_instance for g in app.registered_groups if g.name == "report"), None)
    if group is None:
        group = typer.Typer(help="Work with evaluation reports.", no_args_is_help=True)
        app.add_typer(group, name="report")
    group.command("html")(html_cmd)
