"""The sections of a compile page: scores, every candidate tried, calls and spend over time, predictors, the diff."""

from __future__ import annotations

import json
from typing import Any

from .. import ir as I
from ..artifact import Artifact
from . import charts
from .markup import Markup, badge, el, esc, join, money, num, section, table, value_block


def _scores(art: Artifact) -> tuple[float | None, float | None]:
    s = art.compile.get("scores") or {}
    return (s.get("baseline") or {}).get("dev"), (s.get("final") or {}).get("dev")


def header(art: Artifact, path: str) -> Markup:
    return join([el("h1", f"lmc compile: {art.name}"), meta(art, path)])


def meta(art: Artifact, path: str) -> Markup:
    """Where the artifact came from: optimizer, metric, LMs and data."""
    c = art.compile
    passes = " → ".join(str(x) for x in c.get("optimizer") or []) or "—"
    metric = c.get("metric") or {}
    data = c.get("data") or {}
    lm_bits = [f"LM {c.get('lm') or '—'}"]
    for key, label in (("teacher_lm", "teacher"), ("prompt_lm", "instruction proposer")):
        if c.get(key):
            lm_bits.append(f"{label} {c[key]}")
    lines = [
        el("p", el("b", path), f" — program '{art.name}' (source sha256 {str(art.program.get('sha256') or '')[:12]})", class_="meta"),
        el(
            "p",
            "optimizer ",
            el("b", passes),
            f", seed {c.get('seed')}, metric {metric.get('name', '—')} = ",
            el("code", metric.get("spec") or "—"),
            f" (success at ≥ {metric.get('threshold', 1.0)}), ",
            ", ".join(lm_bits),
            class_="meta",
        ),
    ]
    ds = []
    for key in ("train", "dev"):
        d = data.get(key) or {}
        if d:
            ds.append(f"{key}: {d.get('path')} ({d.get('n')} examples, sha256 {str(d.get('sha256') or '')[:12]})")
    if data.get("split"):
        sp = data["split"]
        ds.append(f"dev split from {sp.get('from')} (fraction {sp.get('dev_fraction')}, seed {sp.get('seed')})")
    if ds:
        lines.append(el("p", "; ".join(ds), class_="meta"))
    return join(lines)


def overview(art: Artifact, stats: dict | None, notes: list[str]) -> Markup:
    base, final = _scores(art)
    c = art.compile
    cards = [_card(num(base), "dev score as written"), _card(num(final), "dev score compiled")]
    if base is not None and final is not None:
        cards.append(_card(f"{final - base:+.3f}", "gain on dev"))
    cards.append(_card(str(len(c.get("candidates") or [])), "candidates scored"))
    if stats:
        live = stats.get("calls", 0) - stats.get("cached_calls", 0)
        cards += [
            _card(f"{live:,}", f"live LM calls (+{stats.get('cached_calls', 0):,} from cache)"),
            _card(money(stats.get("cost")), "cost"),
            _card(f"{stats.get('duration_s', 0):.1f}s", "wall time"),
        ]
    else:
        cards.append(_card(f"{c.get('lm_requests', 0):,}", "LM requests"))
    budget = c.get("budget") or {}
    parts: list[Any] = [el("div", cards, class_="cards")]
    if budget.get("max_calls") is not None or budget.get("max_cost") is not None:
        parts.append(
            el(
                "p",
                f"Budget: max calls {budget.get('max_calls') or '—'}, max cost "
                f"{money(budget.get('max_cost')) if budget.get('max_cost') is not None else '—'}; "
                + ("it ran out — the artifact holds the best program found before that." if budget.get("exhausted") else "not exhausted."),
            )
        )
    all_notes = list(c.get("notes") or []) + notes
    if all_notes:
        parts += [el("h3", "Notes"), el("ul", [el("li", n) for n in all_notes])]
    return section("Result", *parts, id_="result")


def _card(big: str, label: str) -> Markup:
    return el("div", el("div", big, class_="big"), el("div", label, class_="label"), class_="card")


def _best_index(cands: list[dict]) -> int | None:
    scored = [(c.get("dev"), -i) for i, c in enumerate(cands) if isinstance(c.get("dev"), (int, float))]
    return -max(scored)[1] if scored else None


def candidates(art: Artifact, timeline: dict | None) -> Markup:
    cands = [c for c in art.compile.get("candidates") or [] if isinstance(c, dict)]
    if not cands:
        return section(
            "Candidates",
            el("p", "The optimizer scored no candidate on dev (e.g. `none`, `labeled`, `bootstrap` alone, or --no-score-dev).", class_="muted"),
            id_="candidates",
        )
    best = _best_index(cands)
    base, final = _scores(art)
    rows = [
        (f"{i + 1}. {c.get('name', '?')}", c.get("dev") if isinstance(c.get("dev"), (int, float)) else None, "bar best" if i == best else "bar")
        for i, c in enumerate(cands)
    ]
    parts: list[Any] = [
        charts.hbars(
            rows,
            title="Dev score of every candidate, in the order tried (darkest: best)",
            ref=base,
            ref_label=f"as written {base:.3f}" if base is not None else "",
        )
    ]
    times = {e.get("index"): e for e in (timeline or {}).get("candidates") or [] if isinstance(e, dict)}
    if times:
        dots, running, best_line = [], None, []
        for i, c in enumerate(cands):
            e, dev = times.get(i), c.get("dev")
            if e is None or not isinstance(dev, (int, float)):
                continue
            dots.append((float(e["t"]), float(dev), f"{c.get('name')}: {dev:.3f} at {e['t']:.1f}s", "dot best" if i == best else "dot"))
            running = dev if running is None else max(running, dev)
            best_line.append((float(e["t"]), running))
        if dots:
            parts.append(
                charts.lines(
                    [("best so far", best_line, "line3")],
                    dots=dots,
                    y_top=1.0,
                    title="Candidate dev scores over the compile's wall time",
                    x_label="seconds",
                    y_label="dev score",
                )
            )
    rows_t = []
    for i, c in enumerate(cands):
        detail = {k: v for k, v in c.items() if k not in ("name", "dev")}
        e = times.get(i)
        rows_t.append(
            [
                str(i + 1),
                el("span", c.get("name", "?"), class_="mono"),
                join([num(c.get("dev") if isinstance(c.get("dev"), (int, float)) else None), " ", badge("best", "pass") if i == best else ""]),
                f"{e['t']:.1f}s" if e else "—",
                f"{e['calls'] - e['cached_calls']:,}" if e else "—",
                value_block(detail) if detail else "",
            ]
        )
    parts.append(table(["#", "candidate", "dev", "at", "live calls so far", "detail"], rows_t, numeric=(0, 2, 3, 4)))
    if final is not None:
        parts.append(el("p", f"The artifact holds the program scoring {final:.3f} on dev.", class_="muted"))
    return section("Candidates", *parts, id_="candidates")


def spend(art: Artifact, stats: dict | None, timeline: dict | None, stats_note: str | None) -> Markup:
    parts: list[Any] = []
    samples = [s for s in (timeline or {}).get("samples") or [] if isinstance(s, dict)]
    if samples:
        live = [(float(s["t"]), float(s["calls"] - s["cached_calls"])) for s in samples]
        cached = [(float(s["t"]), float(s["cached_calls"])) for s in samples]
        parts.append(
            charts.lines(
                [("live LM calls", live, "line1"), ("served from cache", cached, "line2")],
                title="LM calls over the compile's wall time",
                x_label="seconds",
                y_label="calls",
            )
        )
        if samples[-1].get("cost", 0) > 0:
            parts.append(
                charts.lines(
                    [("cost (USD)", [(float(s["t"]), float(s["cost"])) for s in samples], "line1")],
                    title="Spend over the compile's wall time",
                    x_label="seconds",
                    y_label="USD",
                )
            )
        else:
            parts.append(
                charts.lines(
                    [("tokens", [(float(s["t"]), float(s["tokens"])) for s in samples], "line1")],
                    title="Tokens over the compile's wall time (no cost was reported by the LM)",
                    x_label="seconds",
                    y_label="tokens",
                )
            )
    elif stats_note:
        parts.append(el("p", stats_note, class_="muted"))
    if stats:
        rows = [
            ["LM calls", f"{stats.get('calls', 0):,}"],
            ["served from cache", f"{stats.get('cached_calls', 0):,}"],
            ["prompt tokens", f"{stats.get('prompt_tokens', 0):,}"],
            ["completion tokens", f"{stats.get('completion_tokens', 0):,}"],
            ["cost", money(stats.get("cost"))],
            ["retries", str(stats.get("retries", 0))],
            ["errors", str(stats.get("errors", 0))],
            ["wall time", f"{stats.get('duration_s', 0):.1f}s"],
        ]
        parts.append(table(["", "total"], rows, numeric=(1,), class_="narrow"))
    by_pred = art.compile.get("lm_requests_by_predictor") or {}
    by_tag = (stats or {}).get("by_tag") or {}
    if by_pred:
        top = charts.nice_max(max([v for v in by_pred.values() if isinstance(v, (int, float))], default=1))
        items = [(str(k), float(v), "bar") for k, v in by_pred.items() if isinstance(v, (int, float))]
        parts.append(_count_bars(items, top))
        if by_tag:
            rows = [
                [
                    el("span", k, class_="mono"),
                    f"{v.get('calls', 0):,}",
                    f"{v.get('cached_calls', 0):,}",
                    f"{v.get('prompt_tokens', 0) + v.get('completion_tokens', 0):,}",
                    money(v.get("cost")),
                ]
                for k, v in by_tag.items()
                if isinstance(v, dict)
            ]
            parts.append(table(["predictor", "calls", "cached", "tokens", "cost"], rows, numeric=(1, 2, 3, 4)))
    return section("Calls and spend", *parts, id_="spend")


def _count_bars(items: list[tuple[str, float, str]], top: float) -> Markup:
    return charts.hbars(items, title="LM requests per predictor", top=top, fmt="{:,.0f}")


def predictors(art: Artifact, written: I.IR | None, anchors: dict[str, str]) -> Markup:
    ir = art.ir
    blocks = []
    knn = ir.extra("knn") or {}
    for p in ir.predictors:
        old = _find(written, p.id)
        kind = ir.module(p.module).kind
        sig = p.signature
        fields = join((_field(f) for f in sig.inputs), ", ")
        outs = join((_field(f) for f in sig.outputs), ", ")
        parts: list[Any] = [
            el("h3", el("span", p.id, class_="mono"), f" — {kind} ({p.role}), signature {sig.name}"),
            el("p", "inputs: ", fields, el("br"), "outputs: ", outs, class_="meta"),
        ]
        if old is not None and old.instructions != p.instructions:
            parts += [
                el("div", el("span", "instructions as written", class_="tag"), el("div", old.instructions, class_="val"), class_="instr old"),
                el("div", el("span", "instructions compiled", class_="tag"), el("div", p.instructions, class_="val"), class_="instr new"),
            ]
        else:
            tag = "instructions (unchanged)" if old is not None else "instructions"
            parts.append(el("div", el("span", tag, class_="tag"), el("div", p.instructions, class_="val"), class_="instr"))
        settings = dict(p.settings)
        old_settings = dict(old.settings) if old is not None else settings
        if settings or old_settings:
            parts.append(
                el(
                    "p",
                    "settings: ",
                    el("code", json.dumps(settings, sort_keys=True, ensure_ascii=False)),
                    f" (as written: {json.dumps(old_settings, sort_keys=True, ensure_ascii=False)})" if old_settings != settings else "",
                    class_="meta",
                )
            )
        parts.append(_demos(p, old))
        if p.id in (knn.get("pools") or {}):
            parts.append(
                el("p", f"knn: {len(knn['pools'][p.id])} demos in the pool; {knn.get('k')} of them are chosen per input at run time.", class_="meta")
            )
        blocks.append(el("div", parts, class_="pred", id=anchors[p.id]))
    return section("Predictors: chosen instructions and demos", *blocks, id_="predictors")


def _field(f: I.FieldSpec) -> Markup:
    desc = el("span", f" — {f.description}", class_="muted") if f.description else ""
    return join([el("code", f"{f.name}: {f.type.name}"), desc])


def _find(ir: I.IR | None, pid: str) -> I.Predictor | None:
    if ir is None:
        return None
    return next((p for p in ir.predictors if p.id == pid), None)


def _demos(p: I.Predictor, old: I.Predictor | None) -> Markup:
    if not p.demos:
        return el("p", "no demos", class_="muted")
    order = [f.name for f in p.signature.inputs + p.signature.outputs]
    seen = [k for k in order if any(k in d for d in p.demos)]
    seen += sorted({k for d in p.demos for k in d if k not in order and k != "_id"})
    before = {json.dumps(d, sort_keys=True, ensure_ascii=False) for d in (old.demos if old else ())}
    rows = []
    for i, d in enumerate(p.demos, 1):
        new = json.dumps(d, sort_keys=True, ensure_ascii=False) not in before
        rows.append(
            [str(i)]
            + [value_block(d.get(k)) if k in d else el("span", "—", class_="muted") for k in seen]
            + [join([el("span", str(d.get("_id", "")), class_="mono"), " ", badge("new", "up") if new and old else ""])]
        )
    return join(
        [
            el("p", f"{len(p.demos)} demo(s)" + (f" (as written: {len(old.demos)})" if old is not None else ""), class_="meta"),
            table(["#"] + seen + ["from example"], rows, numeric=(0,)),
        ]
    )


def diff(changes: dict | None, note: str | None, anchors: dict[str, str]) -> Markup:
    if changes is None:
        return section("Diff against the program as written", el("p", note or "not available", class_="muted"), id_="diff")
    items = []
    for pid in changes.get("added", []):
        items.append(el("li", el("span", f"+ predictor {pid}", class_="add")))
    for pid in changes.get("removed", []):
        items.append(el("li", el("span", f"- predictor {pid}", class_="del")))
    for pid, ch in changes.get("predictors", {}).items():
        bits = []
        if "instructions" in ch:
            bits.append("instructions rewritten")
        if "demos" in ch:
            d = ch["demos"]
            bits.append(
                "demos reordered"
                if d.get("reordered")
                else f"demos {d['old_count']} → {d['new_count']} (+{len(d.get('added', []))} / -{len(d.get('removed', []))})"
            )
        if "settings" in ch:
            bits.append(f"settings {json.dumps(ch['settings']['old'], sort_keys=True)} → {json.dumps(ch['settings']['new'], sort_keys=True)}")
        if "signature" in ch:
            bits.append("signature changed")
        link = el("a", pid, href=f"#{anchors[pid]}") if pid in anchors else esc(pid)
        items.append(el("li", link, ": ", "; ".join(bits)))
    if changes.get("extras"):
        items.append(
            el("li", "run-time strategies: ", ", ".join(changes["extras"]["old"]) or "none", " → ", ", ".join(changes["extras"]["new"]) or "none")
        )
    body = (
        el("ul", items, class_="diff")
        if items
        else el("p", "The compiled program is the program as written (no instruction, demo or setting changed).")
    )
    return section(
        "Diff against the program as written",
        body,
        id_="diff",
        intro="What the optimizer changed, predictor by predictor (details above). The same as "
        "`lmc diff` between a zero-shot compile and this artifact.",
    )


def extras(art: Artifact) -> Markup | None:
    ens = art.ir.extra("ensemble")
    knn = art.ir.extra("knn")
    items = []
    if knn:
        pools = knn.get("pools") or {}
        items.append(
            el(
                "li",
                f"knn: k = {knn.get('k')} demos chosen per input by {knn.get('method', 'bm25')} similarity "
                f"from pools of " + ", ".join(f"{pid}: {len(v)}" for pid, v in pools.items()),
            )
        )
    if ens:
        items.append(
            el("li", f"ensemble: majority vote of {len(ens.get('members') or [])} programs: " + ", ".join(str(n) for n in ens.get("names") or []))
        )
    if not items:
        return None
    return section("Run-time strategies", el("ul", items), id_="extras")


def predictor_anchors(art: Artifact) -> dict[str, str]:
    return {p.id: f"pred-{i + 1}" for i, p in enumerate(art.ir.predictors)}


def footer(art: Artifact, path: str) -> Markup:
    return esc(f"lmc compile report for {path} · IR entry '{art.ir.entry}' · {len(art.ir.predictors)} predictor(s)")
