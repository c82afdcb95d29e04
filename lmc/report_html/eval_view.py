"""The sections of an eval page: verdict and score, the paired comparison, confusion matrices, every example."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .. import gate
from . import charts
from .markup import Markup, badge, el, esc, fields_block, join, money, num, section, table, value_block

NO_ANSWER = "(no answer)"
OTHER = "(other)"


@dataclass
class EvalContext:
    """What the report itself does not hold: the examples' inputs and the label sets of the outputs."""

    inputs: dict[str, dict] | None = None  # example id -> input fields
    input_order: list[str] | None = None
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict)  # output field -> its literal union
    notes: list[str] = field(default_factory=list)


def header(cand: gate.Report, verdict: gate.Verdict) -> Markup:
    t = cand.target
    bits = [
        el("b", t.path),
        f" ({t.kind} '{cand.program.name}', sha256 {t.sha256[:12]})",
        " on ",
        el("b", cand.data.path),
        f" ({cand.summary.n} of {cand.data.n_total} examples",
        f", shard {cand.shard}" if cand.shard else "",
        ")",
    ]
    metric = [f"metric {cand.metric.name} = ", el("code", cand.metric.spec), f", an example passes at score ≥ {cand.metric.threshold:g}"]
    return join(
        [
            el("h1", f"lmc eval: {cand.program.name} ", badge(verdict.label.upper(), verdict.label)),
            el("p", bits, class_="meta"),
            el("p", metric, class_="meta"),
        ]
    )


def overview(cand: gate.Report, base: gate.Report | None, verdict: gate.Verdict, confidence: float) -> Markup:
    s = gate.report_stats(cand, confidence)
    cards = [
        _card(f"{s['score']:.3f}", f"score ({confidence:.0%} CI {s['score_lo']:.3f}–{s['score_hi']:.3f})"),
        _card(f"{s['passed']}/{s['n']}", "examples passed"),
        _card(str(s["errors"]), f"errors ({s['infra_errors']} LM/parse)"),
        _card(str(s["calls"]), f"LM calls ({s['cached_calls']} cached)"),
        _card(f"{s['prompt_tokens'] + s['completion_tokens']:,}", "tokens (live calls)"),
        _card(money(s["cost"]), "cost"),
        _card(f"{s['duration_s']:.1f}s", "wall time"),
    ]
    rows = [("candidate", s["score"], s["score_lo"], s["score_hi"], "bar cand")]
    if base is not None:
        b = gate.report_stats(base, confidence)
        rows.append(("baseline", b["score"], b["score_lo"], b["score_hi"], "bar base"))
    lines = el("div", [el("p", line) for line in verdict.lines], class_=f"verdict {verdict.label}")
    chart = charts.intervals(rows, title=f"Mean score with its {confidence:.0%} confidence interval")
    parts = [el("div", cards, class_="cards"), lines, chart]
    scores = [e.score for e in cand.examples if e.score is not None]
    if scores and any(0.0 < v < 1.0 for v in scores):
        parts.append(charts.histogram(scores, title="Distribution of per-example scores (errored examples left out)"))
    return section("Score", *parts, id_="score")


def _card(big: str, label: str) -> Markup:
    return el("div", el("div", big, class_="big"), el("div", label, class_="label"), class_="card")


def paired(cand: gate.Report, base: gate.Report, verdict: gate.Verdict, anchors: dict[str, str]) -> Markup:
    p = verdict.paired
    assert p is not None
    gained = p.delta > 0
    outcome = (
        "regression"
        if p.regressed
        else "significant drop, within --max-drop"
        if p.p_value < 1 - p.confidence
        else "significant improvement"
        if gained and p.p_improved < 1 - p.confidence
        else "no significant drop"
    )
    # For a gain the drop test's p is near 1; the mirror test's p is the one that says something.
    p_shown, p_name = (p.p_improved, "improvement p") if gained else (p.p_value, "p")
    intro = (
        f"Candidate and baseline scored on the same {p.n} examples. Delta {p.delta:+.3f} "
        f"({2 * p.confidence - 1:.0%} CI {p.delta_lo:+.3f} to {p.delta_hi:+.3f}), one-sided {p_name} = {p_shown:.3g} "
        f"({p.method}); {p.discordant} examples changed. Verdict: {outcome}."
    )
    cards = el(
        "div",
        [
            _card(f"{p.base_mean:.3f} → {p.cand_mean:.3f}", "baseline → candidate"),
            _card(f"{p.delta:+.3f}", "delta"),
            _card(f"{p_shown:.3g}", f"{'improvement p-value' if gained else 'p-value'} ({p.method})"),
            _card(str(len(p.flipped_to_fail)), "pass → fail"),
            _card(str(len(p.flipped_to_pass)), "fail → pass"),
        ],
        class_="cards",
    )
    chart = charts.delta_interval(p.delta, p.delta_lo, p.delta_hi, max_drop=p.max_drop, title="Candidate minus baseline, with its interval")
    by_c = {e.id: e for e in cand.examples}
    by_b = {e.id: e for e in base.examples}
    parts: list[Any] = [cards, chart]
    for heading, ids in (
        ("Regressed: passed on the baseline, fail now", p.flipped_to_fail),
        ("Improved: failed on the baseline, pass now", p.flipped_to_pass),
    ):
        parts.append(el("h3", f"{heading} ({len(ids)})"))
        if not ids:
            parts.append(el("p", "none", class_="muted"))
            continue
        rows = []
        for ex_id in ids:
            c, b = by_c[ex_id], by_b.get(ex_id)
            rows.append(
                [
                    el("a", ex_id, href=f"#{anchors[ex_id]}"),
                    _answer(b) if b else "—",
                    _answer(c),
                    fields_block(c.gold),
                    num(b.quality if b else None, 2),
                    num(c.quality, 2),
                ]
            )
        parts.append(table(["id", "baseline prediction", "candidate prediction", "gold", "baseline", "candidate"], rows, numeric=(4, 5)))
    return section("Compared with the baseline", *parts, id_="paired", intro=intro)


def _answer(ex: gate.ExampleResult) -> Markup:
    if ex.error is not None:
        return join([badge(ex.error_kind or "error", "error"), " ", value_block(ex.error)])
    return fields_block(ex.prediction)


def confusion(cand: gate.Report, labels: dict[str, tuple[str, ...]]) -> Markup | None:
    """One matrix per literal-union output: gold label by row, predicted by column, with recall and precision."""
    blocks = []
    for name, allowed in labels.items():
        golds = [e for e in cand.examples if isinstance(e.gold, dict) and name in e.gold]
        if not golds:
            continue
        counts: Counter = Counter()
        for e in golds:
            g = (e.gold or {})[name]
            pred = e.prediction.get(name) if isinstance(e.prediction, dict) else None
            counts[(_cls(g, allowed), NO_ANSWER if pred is None else _cls(pred, allowed))] += 1
        rows_l = list(allowed) + ([OTHER] if any(r == OTHER for r, _ in counts) else [])
        cols_l = list(allowed) + [c for c in (OTHER, NO_ANSWER) if any(k == c for _, k in counts)]
        top = max(counts.values())
        head = el("tr", el("th", "gold ↓ / predicted →", class_="rowh"), [el("th", c) for c in cols_l], el("th", "total"), el("th", "recall"))
        body = []
        for r in rows_l:
            total = sum(counts[(r, c)] for c in cols_l)
            cells = []
            for c in cols_l:
                n = counts[(r, c)]
                shade = 0 if n == 0 else 1 + min(4, int(4 * n / top))
                cells.append(el("td", str(n), class_=f"q{shade}" + (" diag" if r == c else ""), title=f"gold {r}, predicted {c}: {n}"))
            recall = f"{counts[(r, r)] / total:.2f}" if total and r in allowed else "—"
            body.append(el("tr", el("th", r, class_="rowh"), cells, el("td", str(total)), el("td", recall)))
        col_tot = [sum(counts[(r, c)] for r in rows_l) for c in cols_l]
        prec = [f"{counts[(c, c)] / t:.2f}" if t and c in allowed else "—" for c, t in zip(cols_l, col_tot)]
        body.append(el("tr", el("th", "total", class_="rowh"), [el("td", str(t)) for t in col_tot], el("td", str(len(golds))), el("td", "")))
        body.append(el("tr", el("th", "precision", class_="rowh"), [el("td", p) for p in prec], el("td", ""), el("td", "")))
        correct = sum(counts[(a, a)] for a in allowed)
        blocks += [el("h3", f"{name}: {correct}/{len(golds)} correct"), el("table", el("thead", head), el("tbody", body), class_="cm")]
    if not blocks:
        return None
    return section(
        "Confusion matrix", *blocks, id_="confusion", intro="Label outputs (literal unions): gold label by row, predicted label by column."
    )


def _cls(value: Any, allowed: tuple[str, ...]) -> str:
    return value if isinstance(value, str) and value in allowed else OTHER


def examples(cand: gate.Report, base: gate.Report | None, verdict: gate.Verdict, ctx: EvalContext, anchors: dict[str, str]) -> Markup:
    """Every example in one table; inline JS adds filtering and sorting, and without JS it is a plain table."""
    p = verdict.paired
    to_fail = set(p.flipped_to_fail) if p else set()
    to_pass = set(p.flipped_to_pass) if p else set()
    by_b = {e.id: e for e in base.examples} if base is not None else {}
    cols = [("line", "#"), ("id", "id"), ("inputs", "inputs"), ("prediction", "prediction"), ("gold", "gold"), ("score", "score")]
    if base is not None:
        cols.append(("baseline", "baseline"))
    cols += [("status", "status"), ("error", "error")]
    with_feedback = any(e.feedback for e in cand.examples)
    if with_feedback:
        cols.append(("feedback", "metric feedback"))
    head = el(
        "tr", [el("th", label, data_key=key, scope="col", class_="num" if key in ("line", "score", "baseline") else None) for key, label in cols]
    )
    rows = []
    for e in cand.examples:
        status = "error" if e.error is not None else "pass" if e.passed else "fail"
        tags = [status]
        marks: list[Any] = [badge(status, status)]
        if e.id in to_fail:
            tags.append("regressed")
            marks += [" ", badge("↓ regressed", "down")]
        if e.id in to_pass:
            tags.append("improved")
            marks += [" ", badge("↑ improved", "up")]
        inputs = ctx.inputs.get(e.id) if ctx.inputs is not None else None
        cells = [
            el("td", str(e.line), class_="num", data_sort=e.line),
            el("td", e.id, class_="mono nowrap" if len(e.id) <= 40 else "mono"),
            el("td", fields_block(inputs, ctx.input_order) if inputs is not None else el("span", "not available", class_="muted")),
            el("td", fields_block(e.prediction) if e.prediction is not None else el("span", "—", class_="muted")),
            el("td", fields_block(e.gold)),
            el("td", num(e.score), class_="num", data_sort="" if e.score is None else repr(e.score)),
        ]
        if base is not None:
            b = by_b.get(e.id)
            cells.append(el("td", num(b.quality) if b else "—", class_="num", data_sort="" if b is None else repr(b.quality)))
        cells.append(el("td", marks, data_sort=status))
        err = join([badge(e.error_kind or "error", "error"), " ", value_block(e.error)]) if e.error else ""
        cells.append(el("td", err))
        if with_feedback:
            cells.append(el("td", value_block(e.feedback) if e.feedback else ""))
        rows.append(el("tr", cells, id=anchors[e.id], data_status=" ".join(tags)))
    options = [("all", "all"), ("pass", "passed"), ("fail", "failed"), ("error", "errored")]
    if p is not None:
        options += [("regressed", "regressed (pass → fail)"), ("improved", "improved (fail → pass)")]
    controls = el(
        "div",
        el("label", "Filter ", el("input", type="search", id="filter-text", placeholder="text in any column")),
        el("label", "Show ", el("select", [el("option", label, value=v) for v, label in options], id="filter-status")),
        el("span", "", id="filter-count", class_="count"),
        el("span", "click a column header to sort", class_="muted"),
        class_="controls",
        id="example-controls",
        hidden=True,
    )
    intro = f"{len(cand.examples)} examples in file order."
    if ctx.inputs is None:
        intro += " Inputs are not shown: " + "; ".join(ctx.notes or ["the dataset was not available"]) + "."
    tbl = el("table", el("thead", head), el("tbody", rows), class_="examples", id="examples")
    return section("Examples", controls, tbl, id_="examples-section", intro=intro)


def example_anchors(cand: gate.Report) -> dict[str, str]:
    """Anchors by position, not by id: ids are arbitrary text and need not make good fragment names."""
    return {e.id: f"ex-{i + 1}" for i, e in enumerate(cand.examples)}


def footer(cand: gate.Report, base: gate.Report | None) -> Markup:
    bits = [f"lmc {cand.lmc_version} eval report", f"data sha256 {cand.data.sha256[:12]}"]
    if base is not None:
        bits.append(f"baseline {base.target.path} (sha256 {base.target.sha256[:12]})")
    return esc(" · ".join(bits))
