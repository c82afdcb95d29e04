"""Escaped HTML building blocks and the self-contained page shell (inline CSS and JS, a CSP that forbids the network).

Every piece of text that reaches the page goes through `esc` (or `el`, which
escapes its text children and attribute values); only `Markup` built here is
trusted.  The page's Content-Security-Policy allows exactly the one inline
script and style below (by hash) and nothing from the network, so even a
value that slipped past escaping could neither run nor fetch anything.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from typing import Any, Iterable

# Values longer than this are folded into a <details> whose summary shows the start.
FOLD_AT = 400
FOLD_PREVIEW = 160


_VOID = frozenset({"br", "hr", "img", "input", "meta", "wbr"})


class Markup(str):
    """HTML that is already safe to emit as is."""


def esc(value: Any) -> Markup:
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def _children(items: Iterable[Any]) -> Iterable[str]:
    for c in items:
        if c is None or c is False:
            continue
        if isinstance(c, (list, tuple)):
            yield from _children(c)
        else:
            yield esc(c)


def el(tag: str, *children: Any, **attrs: Any) -> Markup:
    """`<tag attrs>children</tag>`; `class_` gives `class`, `data_x` gives `data-x`, True gives a bare attribute."""
    parts = [tag]
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        name = key.rstrip("_").replace("_", "-")
        parts.append(name if value is True else f'{name}="{esc(value)}"')
    if tag in _VOID:
        return Markup(f"<{' '.join(parts)}>")
    inner = "".join(_children(children))
    return Markup(f"<{' '.join(parts)}>{inner}</{tag}>")


def join(items: Iterable[Any], sep: str = "") -> Markup:
    return Markup(esc(sep).join(_children(list(items))))


def text_of(value: Any) -> str:
    """A value as a reader sees it: strings as they are, everything else as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, indent=None if _short(value) else 1)


def _short(value: Any) -> bool:
    return len(json.dumps(value, ensure_ascii=False)) <= 80


def value_block(value: Any, *, none: str = "—") -> Markup:
    """A value for a table cell: pre-wrapped text, folded behind <details> when long."""
    if value is None:
        return el("span", none, class_="muted")
    text = text_of(value)
    if len(text) <= FOLD_AT:
        return el("span", text, class_="val")
    return el("details", el("summary", text[:FOLD_PREVIEW] + "…", class_="val"), el("div", text, class_="val"))


def fields_block(values: dict | None, order: list[str] | None = None) -> Markup:
    """`name: value` lines for a dict of fields (inputs, a prediction, a demo)."""
    if values is None:
        return el("span", "—", class_="muted")
    if not isinstance(values, dict):
        return value_block(values)
    keys = [k for k in (order or []) if k in values] + [k for k in values if k not in (order or [])]
    if len(keys) == 1 and order is None:
        return value_block(values[keys[0]])
    return join(el("div", el("span", k, class_="k"), " ", value_block(values[k]), class_="kv") for k in keys)


def num(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def money(x: float | None) -> str:
    return "—" if x is None else f"${x:.4f}"


def badge(text: str, kind: str) -> Markup:
    return el("span", text, class_=f"badge {kind}")


def section(title: str, *body: Any, id_: str | None = None, intro: str | None = None) -> Markup:
    return el("section", el("h2", title), el("p", intro, class_="intro") if intro else None, *body, id=id_)


def table(headers: list[Any], rows: Iterable[Iterable[Any]], *, class_: str = "grid", numeric: Iterable[int] = ()) -> Markup:
    """A plain table; `numeric` columns are right-aligned."""
    numeric = set(numeric)
    head = el("thead", el("tr", [el("th", h, class_="num" if i in numeric else None) for i, h in enumerate(headers)]))
    body = el("tbody", [el("tr", [el("td", c, class_="num" if i in numeric else None) for i, c in enumerate(r)]) for r in rows])
    return el("table", head, body, class_=class_)


# ---------------------------------------------------------------- the page shell

CSS = """
:root { --fg:#1d2430; --muted:#5d6878; --line:#d9dee6; --bg:#fff; --alt:#f6f8fa; --accent:#2f6fdb;
  --good:#1f8a4c; --bad:#c93c37; --warn:#b7791f; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif; color:var(--fg); background:var(--bg); }
main { max-width:1280px; margin:0 auto; padding:20px 28px 60px; }
header.top { border-bottom:1px solid var(--line); padding-bottom:12px; margin-bottom:8px; }
h1 { font-size:22px; margin:0 0 6px; }
h2 { font-size:17px; margin:28px 0 10px; padding-bottom:4px; border-bottom:1px solid var(--line); }
h3 { font-size:15px; margin:18px 0 6px; }
p { margin:6px 0; }
.muted, .intro { color:var(--muted); }
.meta { color:var(--muted); font-size:13px; }
.meta b { color:var(--fg); font-weight:600; }
code, .val, .mono { font-family:ui-monospace,"SFMono-Regular",Menlo,Consolas,"DejaVu Sans Mono",monospace; font-size:12.5px; }
.val { white-space:pre-wrap; overflow-wrap:break-word; }
.kv { margin:1px 0; }
.kv .k { color:var(--muted); font-size:12px; }
.kv .k::after { content:":"; }
table { border-collapse:collapse; margin:8px 0 14px; }
table.grid, table.examples { width:100%; }
th, td { border:1px solid var(--line); padding:5px 8px; text-align:left; vertical-align:top; }
th { background:var(--alt); font-weight:600; white-space:nowrap; }
tbody tr:nth-child(even) { background:#fbfcfd; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
table.examples td { max-width:420px; }
td.nowrap { white-space:nowrap; }
table.examples th[data-key] { cursor:pointer; }
table.examples th[aria-sort=ascending]::after { content:" ▲"; font-size:10px; }
table.examples th[aria-sort=descending]::after { content:" ▼"; font-size:10px; }
tr:target { outline:2px solid var(--accent); }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; color:#fff; white-space:nowrap; }
.badge.pass { background:var(--good); } .badge.fail { background:var(--bad); } .badge.error { background:var(--warn); }
.badge.info { background:#6b7687; } .badge.up { background:var(--good); } .badge.down { background:var(--bad); }
.cards { display:grid; grid-template-columns:repeat(auto-fill, minmax(130px, 1fr)); gap:10px; margin:12px 0; }
.card { border:1px solid var(--line); border-radius:8px; padding:8px 12px; background:var(--alt); }
.card .big { font-size:21px; font-weight:650; font-variant-numeric:tabular-nums; }
.card .label { color:var(--muted); font-size:12px; }
.verdict { border-left:4px solid var(--muted); padding:6px 12px; background:var(--alt); margin:10px 0; }
.verdict.pass { border-color:var(--good); } .verdict.fail { border-color:var(--bad); } .verdict.error { border-color:var(--warn); }
.verdict p { margin:2px 0; font-family:ui-monospace,Menlo,Consolas,monospace; font-size:12.5px; white-space:pre-wrap; }
.controls { display:flex; gap:10px; align-items:center; margin:8px 0; flex-wrap:wrap; }
.controls input[type=search] { width:320px; padding:5px 8px; border:1px solid var(--line); border-radius:6px; font:inherit; }
.controls select { padding:4px 6px; font:inherit; }
.controls .count { color:var(--muted); }
.cm td { text-align:right; min-width:52px; font-variant-numeric:tabular-nums; }
.cm th { text-align:right; }
.cm th.rowh { text-align:left; }
.cm td.q0 { background:#fff; } .cm td.q1 { background:#e8f0fc; } .cm td.q2 { background:#cfe0f8; }
.cm td.q3 { background:#a9c6f1; } .cm td.q4 { background:#7ba6e6; } .cm td.q5 { background:#4f86dc; color:#fff; }
.cm td.diag { font-weight:700; }
.instr { border:1px solid var(--line); border-radius:6px; padding:8px 10px; background:var(--alt); margin:6px 0; }
.instr.old { background:#fdf0ef; border-color:#f0c5c2; } .instr.new { background:#eef8f1; border-color:#bfe3cb; }
.instr .tag { font-size:11px; font-weight:700; text-transform:uppercase; color:var(--muted); display:block; margin-bottom:2px; }
.pred { border:1px solid var(--line); border-radius:8px; padding:4px 14px 10px; margin:14px 0; }
ul.diff li { margin:2px 0; }
ul.diff .add { color:var(--good); } ul.diff .del { color:var(--bad); }
svg { display:block; width:100%; max-width:900px; height:auto; margin:6px 0 12px; }
svg text { font:11px system-ui,sans-serif; fill:#3b4452; }
svg .title { font-size:12px; font-weight:600; }
svg .axis { stroke:#9aa4b2; stroke-width:1; }
svg .grid { stroke:#e6e9ee; stroke-width:1; }
svg .bar { fill:#7ba6e6; } svg .bar.best { fill:#2f6fdb; } svg .bar.cand { fill:#2f6fdb; } svg .bar.base { fill:#a7b1bf; }
svg .whisker { stroke:#1d2430; stroke-width:1.5; }
svg .ref { stroke:#c93c37; stroke-width:1.2; stroke-dasharray:4 3; }
svg .zero { stroke:#5d6878; stroke-width:1; }
svg .line1 { stroke:#2f6fdb; stroke-width:2; fill:none; } svg .line2 { stroke:#9aa4b2; stroke-width:2; fill:none; stroke-dasharray:5 3; }
svg .line3 { stroke:#1f8a4c; stroke-width:2; fill:none; }
svg .dot { fill:#2f6fdb; } svg .dot.best { fill:#1f8a4c; }
svg .legend1 { fill:#2f6fdb; } svg .legend2 { fill:#9aa4b2; } svg .legend3 { fill:#1f8a4c; }
footer { margin-top:40px; color:var(--muted); font-size:12px; border-top:1px solid var(--line); padding-top:8px; }
@media print { .controls { display:none; } }
"""

# Progressive enhancement: without JS the tables are complete and unfiltered.  The state of the
# examples table (filter text, status, sort column and direction) lives in the URL fragment, so a
# filtered view can be linked to; fragments without '=' are ordinary anchors and left alone.
JS = """
(function () {
  function cellValue(row, i) {
    var c = row.cells[i];
    if (!c) return "";
    var s = c.getAttribute("data-sort");
    return s !== null ? s : c.textContent.trim().toLowerCase();
  }
  function compare(a, b) {
    var x = parseFloat(a), y = parseFloat(b);
    var nx = a !== "" && !isNaN(x) && isFinite(a), ny = b !== "" && !isNaN(y) && isFinite(b);
    if (nx && ny) return x - y;
    if (nx !== ny) return nx ? -1 : 1;
    return a < b ? -1 : a > b ? 1 : 0;
  }
  function sortBy(table, key, dir) {
    var heads = table.tHead.rows[0].cells, col = -1;
    for (var i = 0; i < heads.length; i++) {
      var k = heads[i].getAttribute("data-key");
      if (k === key) { col = i; heads[i].setAttribute("aria-sort", dir === "desc" ? "descending" : "ascending"); }
      else if (k !== null) heads[i].removeAttribute("aria-sort");
    }
    if (col < 0) return;
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    rows.forEach(function (r, i) { if (!r.hasAttribute("data-order")) r.setAttribute("data-order", i); });
    rows.sort(function (a, b) {
      var c = compare(cellValue(a, col), cellValue(b, col));
      if (dir === "desc") c = -c;
      return c || (+a.getAttribute("data-order")) - (+b.getAttribute("data-order"));
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  function readHash() {
    var out = {}, h = location.hash.replace(/^#/, "");
    if (h.indexOf("=") < 0) return null;
    h.split("&").forEach(function (p) {
      var i = p.indexOf("=");
      if (i > 0) out[decodeURIComponent(p.slice(0, i))] = decodeURIComponent(p.slice(i + 1).replace(/\\+/g, " "));
    });
    return out;
  }
  var table = document.getElementById("examples");
  if (!table) return;
  var controls = document.getElementById("example-controls");
  var q = document.getElementById("filter-text"), st = document.getElementById("filter-status");
  var count = document.getElementById("filter-count");
  var state = { q: "", status: "all", sort: "", dir: "asc" };
  controls.hidden = false;
  function apply(write) {
    var needle = state.q.toLowerCase(), shown = 0, rows = table.tBodies[0].rows;
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i], tags = " " + (r.getAttribute("data-status") || "") + " ";
      var ok = (state.status === "all" || tags.indexOf(" " + state.status + " ") >= 0) &&
               (!needle || r.textContent.toLowerCase().indexOf(needle) >= 0);
      r.hidden = !ok;
      if (ok) shown++;
    }
    if (state.sort) sortBy(table, state.sort, state.dir);
    count.textContent = shown + " of " + rows.length + " shown";
    if (write) {
      var parts = [];
      if (state.q) parts.push("q=" + encodeURIComponent(state.q));
      if (state.status !== "all") parts.push("status=" + encodeURIComponent(state.status));
      if (state.sort) parts.push("sort=" + encodeURIComponent(state.sort) + "&dir=" + state.dir);
      history.replaceState(null, "", parts.length ? "#" + parts.join("&") : location.pathname + location.search);
    }
  }
  function load() {
    var h = readHash();
    if (!h) return false;
    state.q = h.q || ""; state.status = h.status || "all"; state.sort = h.sort || ""; state.dir = h.dir === "desc" ? "desc" : "asc";
    q.value = state.q; st.value = state.status;
    if (st.value !== state.status) { state.status = "all"; st.value = "all"; }
    return true;
  }
  q.addEventListener("input", function () { state.q = q.value; apply(true); });
  st.addEventListener("change", function () { state.status = st.value; apply(true); });
  var heads = table.tHead.rows[0].cells;
  for (var i = 0; i < heads.length; i++) (function (th) {
    var key = th.getAttribute("data-key");
    if (key === null) return;
    th.tabIndex = 0;
    function go() {
      state.dir = state.sort === key && state.dir === "asc" ? "desc" : "asc";
      state.sort = key; apply(true);
    }
    th.addEventListener("click", go);
    th.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); go(); } });
  })(heads[i]);
  window.addEventListener("hashchange", function () { if (load()) apply(false); });
  load();
  apply(false);
})();
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def page(title: str, header: Any, body: Any, footer: Any) -> str:
    """The whole document: no external resource of any kind; the CSP allows only the inline CSS and JS."""
    csp = f"default-src 'none'; script-src {_csp_hash(JS)}; style-src {_csp_hash(CSS)}; img-src data:; base-uri 'none'; form-action 'none'"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="generator" content="lmc">'
        f"{el('title', title)}<style>{CSS}</style></head>\n"
        f"<body><main>{el('header', header, class_='top')}\n{body}\n{el('footer', footer)}</main>"
        f"<script>{JS}</script></body></html>\n"
    )
