"""Self-contained HTML reports of an eval (`lmc-report/1`) and of a compile (artifact + `*.stats.json` sidecar).

The page is one file: inline CSS, a few lines of inline JS for sorting and
filtering (the tables are complete without it), charts drawn to SVG here, and a
Content-Security-Policy that allows no network access at all.  Everything read
from reports, datasets and artifacts is escaped (`markup.esc`).

Reports do not hold the examples' inputs, nor the output types a confusion
matrix needs: `eval_context` takes them from the run (`lmc eval --html`), and
`context_from_files` finds them again from the paths a report names, using them
only when their sha256 still matches.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from ..artifact import Artifact, sha256_file
from ..check import check_source
from ..datasets import load_dataset
from ..errors import ConfigError, LmcError
from ..files import Output, atomic_write_text, check_outputs
from ..gate import Report
from ..artifact_view import diff_artifacts
from ..lower import lower
from ..targets import load_target
from . import compile_view as C
from . import eval_view as V
from .clean import compile_section, stats as clean_stats
from .eval_view import EvalContext
from .markup import join, page, section

__all__ = ["EvalContext", "check_out_path", "context_from_files", "eval_context", "load_stats", "render_compile", "render_eval", "write_html"]


# ---------------------------------------------------------------- inputs to a page


def label_sets(ir: Any) -> dict[str, tuple[str, ...]]:
    """The program's outputs whose type is a literal union (optional or not), with their labels."""
    out = {}
    for f in ir.program().outputs:
        t = f.type.args[0] if f.type.kind == "optional" else f.type
        if t.kind == "literal":
            out[f.name] = tuple(t.args)
    return out


def eval_context(ir: Any, examples: Sequence[Any]) -> EvalContext:
    """From a run in progress: the examples just evaluated and the evaluated program's IR."""
    names = [f.name for f in ir.program().inputs]
    inputs = {ex.id: {k: ex.data[k] for k in names if k in ex.data} for ex in examples}
    return EvalContext(inputs=inputs, input_order=names, labels=label_sets(ir))


def context_from_files(report: Any, *, data: str | None = None, artifact: Any = None) -> EvalContext:
    """Inputs from the report's dataset (or `data`) and labels from `artifact` (or the report's target), when they match."""
    assert isinstance(report, Report)
    ctx = EvalContext()
    ir = artifact.ir if artifact is not None else _target_ir(report, ctx.notes)
    if ir is not None:
        ctx.labels = label_sets(ir)
        ctx.input_order = [f.name for f in ir.program().inputs]
    else:
        ctx.notes.append("confusion matrices need the program's output types; pass --artifact")
    path = data or report.data.path
    if not Path(path).is_file():
        ctx.notes.append(f"the dataset {path} was not found (pass --data)")
        return ctx

    try:
        ds = load_dataset(path)
    except LmcError as e:
        ctx.notes.append(f"the dataset {path} could not be read ({e})")
        return ctx
    if ds.sha256 != report.data.sha256:
        ctx.notes.append(f"{path} changed since the evaluation (sha256 {ds.sha256[:12]}, the report has {report.data.sha256[:12]})")
        return ctx
    gold = {k for e in report.examples if isinstance(e.gold, dict) for k in e.gold}
    names = ctx.input_order or [k for k in ds.fields() if k != "id" and k not in gold]
    ctx.inputs = {ex.id: {k: ex.data[k] for k in names if k in ex.data} for ex in ds.examples}
    ctx.input_order = names
    return ctx


def _target_ir(report: Any, notes: list[str]) -> Any:
    """The evaluated program's IR, when the report's target is still there unchanged (read, never run)."""
    path = report.target.path
    try:
        if not Path(path).is_file() or sha256_file(path) != report.target.sha256:
            return None

        return load_target(path).ir
    except (LmcError, OSError) as e:
        notes.append(f"the evaluated {report.target.kind} {path} could not be loaded ({e})")
        return None


def stats_path(artifact_path: str | os.PathLike) -> str:
    name = str(artifact_path)
    return (name[: -len(".lmc.json")] if name.endswith(".lmc.json") else name) + ".stats.json"


def load_stats(artifact_path: str | os.PathLike, stats: str | os.PathLike | None = None) -> tuple[dict | None, str | None]:
    """The compile's stats sidecar if it belongs to this artifact; otherwise None and why."""
    path = str(stats) if stats is not None else stats_path(artifact_path)
    if not Path(path).is_file():
        return None, f"no stats sidecar ({path}) next to the artifact, so calls and spend over time are not shown"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return None, f"the stats sidecar {path} could not be read ({e.__class__.__name__})"
    if not isinstance(data, dict):
        return None, f"the stats sidecar {path} is not a JSON object"
    return checked_stats(data, artifact_path, path)


def checked_stats(raw: dict, artifact_path: str | os.PathLike, shown: str = "the stats") -> tuple[dict | None, str | None]:
    """Stats in the shape the page reads, refused when they name another artifact; the note says what is missing."""
    data = clean_stats(raw)
    owner = data.get("artifact_sha256")
    if owner is not None and Path(artifact_path).is_file() and owner != sha256_file(artifact_path):
        return None, f"{shown} belongs to another compile of this file, so calls and spend are not shown"
    if data["timeline"] is None:
        return data, ("calls and spend over time were not recorded (the artifact was compiled by an lmc without the compile timeline)")
    return data, None


def as_written(art: Any) -> tuple[Any, str | None]:
    """The IR of the program source the artifact carries, compiled again with no optimizer (parsing runs nothing)."""
    src = art.program.get("source")
    if not isinstance(src, str) or not src.strip():
        return None, "the artifact holds no program source to compare with"

    try:
        return lower(check_source(src, str(art.program.get("path") or "<artifact source>")), art.ir.entry), None
    except LmcError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return None, f"the program source in the artifact does not compile with this lmc ({first})"


# ---------------------------------------------------------------- pages


def cleaned(art: Any) -> Any:
    """The artifact with its compile section in the shape the page reads (it is not covered by the IR hash)."""
    from dataclasses import replace

    return replace(art, compile=compile_section(art.compile))


def render_eval(
    cand: Any,
    base: Any,
    verdict: Any,
    ctx: EvalContext,
    *,
    confidence: float = 0.95,
    artifact: Any = None,
    artifact_path: str | None = None,
    stats: tuple | None = None,
) -> str:
    """An eval page; with `artifact` its compile sections follow the eval's."""
    anchors = V.example_anchors(cand)
    parts = [V.overview(cand, base, verdict, confidence)]
    if verdict.paired is not None and base is not None:
        parts.append(V.paired(cand, base, verdict, anchors))
    cm = V.confusion(cand, ctx.labels)
    if cm is not None:
        parts.append(cm)
    parts.append(V.examples(cand, base, verdict, ctx, anchors))
    if artifact is not None:
        artifact = cleaned(artifact)
        parts.append(section("How the artifact was compiled", C.meta(artifact, artifact_path or "artifact"), id_="compiled"))
        parts += _compile_parts(artifact, stats or (None, None))
    title = f"lmc eval {cand.program.name}: {verdict.label}"
    return page(title, V.header(cand, verdict), join(parts, "\n"), V.footer(cand, base))


def render_compile(art: Any, path: str, stats: tuple[dict | None, str | None], notes: Sequence[str] = ()) -> str:
    """A compile page: `stats` is what `load_stats` returned (or the stats of the compile that just ran)."""
    art = cleaned(art)
    body = _compile_parts(art, stats, notes)
    return page(f"lmc compile {art.name}", C.header(art, path), join(body, "\n"), C.footer(art, path))


def _compile_parts(art: Any, stats: tuple[dict | None, str | None], notes: Sequence[str] = ()) -> list:
    art = cleaned(art)

    data, note = stats
    data = clean_stats(data) if data is not None else None
    timeline = data.get("timeline") if data else None
    written, why = as_written(art)
    changes = None
    if written is not None:
        changes = diff_artifacts(Artifact(written, art.program, {}, None), art)
    anchors = C.predictor_anchors(art)
    parts = [
        C.overview(art, data, list(notes)),
        C.candidates(art, timeline),
        C.spend(art, data, timeline, note),
        C.predictors(art, written, anchors),
        C.diff(changes, why, anchors),
    ]
    extra = C.extras(art)
    if extra is not None:
        parts.append(extra)
    return parts


# ---------------------------------------------------------------- writing


def check_out_path(path: str | os.PathLike, flag: str = "--html", inputs: Sequence[tuple[str, Any]] = ()) -> None:
    """Refuse, before any work, an output path that is an input, a directory, or cannot be written."""
    check_outputs([Output(flag, os.fspath(path))], inputs)


def write_html(path: str | os.PathLike, text: str) -> None:
    """Atomic write; text that cannot be UTF-8 (lone surrogates from JSON escapes) is replaced, never fatal."""
    safe = text.encode("utf-8", "replace").decode("utf-8")

    try:
        atomic_write_text(path, safe)
    except OSError as e:
        raise ConfigError(f"{path}: cannot write the HTML report: {e.strerror or e}") from None
