"""Small SVG charts drawn at write time (no chart library, no script): bars, intervals, lines and histograms.

Each function returns one `<svg>` with a viewBox, so it scales with the page;
every label goes through `markup.esc`, and colours come from CSS classes.
"""

from __future__ import annotations

import math
from typing import Sequence

from .markup import Markup, esc

WIDTH = 760
LABEL_CHARS = 30


def _f(x: float) -> str:
    return f"{x:.1f}"


def _svg(height: float, body: list[str], title: str, width: int = WIDTH) -> Markup:
    return Markup(
        f'<svg viewBox="0 0 {width} {_f(height)}" width="{width}" height="{_f(height)}" role="img" '
        f'aria-label="{esc(title)}" xmlns="http://www.w3.org/2000/svg"><title>{esc(title)}</title>' + "".join(body) + "</svg>"
    )


def _text(x: float, y: float, text: str, anchor: str = "start", cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<text x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}"{c}>{esc(text)}</text>'


def _line(x1: float, y1: float, x2: float, y2: float, cls: str) -> str:
    return f'<line x1="{_f(x1)}" y1="{_f(y1)}" x2="{_f(x2)}" y2="{_f(y2)}" class="{cls}"/>'


def _short(label: str, limit: int = LABEL_CHARS) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def nice_max(value: float) -> float:
    """The smallest 1/2/2.5/5 x 10^k at or above `value` (an axis end that reads well)."""
    if value <= 0:
        return 1.0
    exp = math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        top = m * 10**exp
        if top >= value - 1e-12:
            return top
    return 10 ** (exp + 1)


def _ticks(top: float, n: int = 4) -> list[float]:
    return [top * i / n for i in range(n + 1)]


def _tick_label(v: float, top: float) -> str:
    if top <= 1.0 and top >= 0.1:
        return f"{v:.2f}"
    if top < 0.1:
        return f"{v:.3g}"
    return f"{v:,.0f}" if top >= 10 else f"{v:.1f}"


def hbars(
    rows: Sequence[tuple[str, float | None, str]], *, title: str, ref: float | None = None, ref_label: str = "", top: float = 1.0, fmt: str = "{:.3f}"
) -> Markup:
    """One horizontal bar per row (label, value, css class), top to bottom in the given order; `ref` draws a dashed line."""
    left, right, row_h, head = 215, 60, 20, 26
    plot_w = WIDTH - left - right
    height = head + row_h * len(rows) + 26
    x = lambda v: left + plot_w * (max(0.0, min(v, top)) / top)  # noqa: E731
    body = [_text(0, 14, title, cls="title")]
    for v in _ticks(top):
        body.append(_line(x(v), head - 4, x(v), head + row_h * len(rows), "grid"))
        body.append(_text(x(v), head + row_h * len(rows) + 14, _tick_label(v, top), "middle"))
    for i, (label, value, cls) in enumerate(rows):
        y = head + i * row_h
        body.append(f"<g><title>{esc(label)}: {esc('not scored' if value is None else f'{value:.4f}')}</title>")
        body.append(_text(left - 8, y + 14, _short(label), "end"))
        if value is None:
            body.append(_text(left + 4, y + 14, "not scored", cls="muted"))
        else:
            w = max(x(value) - left, 1.0)
            body.append(f'<rect x="{left}" y="{_f(y + 3)}" width="{_f(w)}" height="{row_h - 6}" class="{esc(cls)}"/>')
            body.append(_text(left + w + 5, y + 14, fmt.format(value)))
        body.append("</g>")
    body.append(_line(left, head - 4, left, head + row_h * len(rows), "axis"))
    if ref is not None:
        label = ref_label or f"{ref:.3f}"
        body.append(_line(x(ref), head - 8, x(ref), head + row_h * len(rows) + 2, "ref"))
        # Near the right edge the label goes left of the line, so it is never cut off.
        right_side = x(ref) + 4 + 6 * len(label) < WIDTH
        body.append(_text(x(ref) + (4 if right_side else -4), head - 10, label, "start" if right_side else "end"))
    return _svg(height, body, title)


def intervals(rows: Sequence[tuple[str, float, float, float, str]], *, title: str) -> Markup:
    """Score bars on 0..1 with their confidence interval drawn as a whisker: (label, mean, lo, hi, css class)."""
    left, right, row_h, head = 110, 140, 30, 26
    plot_w = WIDTH - left - right
    height = head + row_h * len(rows) + 24
    x = lambda v: left + plot_w * max(0.0, min(v, 1.0))  # noqa: E731
    body = [_text(0, 14, title, cls="title")]
    for v in _ticks(1.0, 5):
        body.append(_line(x(v), head - 4, x(v), head + row_h * len(rows), "grid"))
        body.append(_text(x(v), head + row_h * len(rows) + 14, f"{v:.1f}", "middle"))
    for i, (label, mean, lo, hi, cls) in enumerate(rows):
        y = head + i * row_h
        body.append(_text(left - 8, y + 19, label, "end"))
        body.append(f'<rect x="{left}" y="{_f(y + 6)}" width="{_f(max(x(mean) - left, 1.0))}" height="{row_h - 12}" class="{esc(cls)}"/>')
        mid = y + row_h / 2
        body += [
            _line(x(lo), mid, x(hi), mid, "whisker"),
            _line(x(lo), mid - 6, x(lo), mid + 6, "whisker"),
            _line(x(hi), mid - 6, x(hi), mid + 6, "whisker"),
        ]
        body.append(_text(WIDTH - right + 8, y + 19, f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"))
    return _svg(height, body, title)


def delta_interval(delta: float, lo: float, hi: float, *, max_drop: float, title: str) -> Markup:
    """The candidate-minus-baseline difference with its interval on an axis centred on zero; the dashed line is -max_drop."""
    span = nice_max(max(abs(lo), abs(hi), abs(delta), max_drop, 0.02) * 1.15)
    left, right, head = 40, 40, 30
    plot_w = WIDTH - left - right
    x = lambda v: left + plot_w * (max(-span, min(v, span)) + span) / (2 * span)  # noqa: E731
    mid = head + 18
    body = [_text(0, 14, title, cls="title")]
    for i in range(-2, 3):
        v = span * i / 2
        body.append(_line(x(v), head, x(v), head + 36, "grid"))
        body.append(_text(x(v), head + 50, f"{v:+.3g}" if v else "0", "middle"))
    body.append(_line(x(0), head - 2, x(0), head + 38, "zero"))
    if max_drop > 0:
        body.append(_line(x(-max_drop), head - 2, x(-max_drop), head + 38, "ref"))
        body.append(_text(x(-max_drop) - 4, head - 6, f"-max drop {max_drop:g}", "end"))
    body += [
        _line(x(lo), mid, x(hi), mid, "whisker"),
        _line(x(lo), mid - 7, x(lo), mid + 7, "whisker"),
        _line(x(hi), mid - 7, x(hi), mid + 7, "whisker"),
        f'<circle cx="{_f(x(delta))}" cy="{_f(mid)}" r="5" class="dot"/>',
    ]
    body.append(_text(x(delta), mid - 10, f"{delta:+.3f}", "middle"))
    return _svg(head + 62, body, title)


def lines(
    series: Sequence[tuple[str, Sequence[tuple[float, float]], str]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    dots: Sequence[tuple[float, float, str, str]] = (),
    y_top: float | None = None,
    step: bool = True,
) -> Markup:
    """Line series over a shared x axis (step lines for running totals); `dots` are (x, y, label, css class) markers."""
    left, right, head, plot_h = 64, 20, 40, 200
    plot_w = WIDTH - left - right
    xs = [px for _, pts, _ in series for px, _ in pts] + [d[0] for d in dots]
    ys = [py for _, pts, _ in series for _, py in pts] + [d[1] for d in dots]
    x_top = nice_max(max(xs, default=1.0))
    top = y_top if y_top is not None else nice_max(max(ys, default=1.0))
    x = lambda v: left + plot_w * (v / x_top if x_top else 0)  # noqa: E731
    y = lambda v: head + plot_h - plot_h * (v / top if top else 0)  # noqa: E731
    body = [_text(0, 14, title, cls="title")]
    for v in _ticks(top):
        body.append(_line(left, y(v), left + plot_w, y(v), "grid"))
        body.append(_text(left - 6, y(v) + 4, _tick_label(v, top), "end"))
    for v in _ticks(x_top, 5):
        body.append(_text(x(v), head + plot_h + 16, _tick_label(v, x_top), "middle"))
    body += [_line(left, head, left, head + plot_h, "axis"), _line(left, head + plot_h, left + plot_w, head + plot_h, "axis")]
    body.append(_text(left + plot_w / 2, head + plot_h + 32, x_label, "middle"))
    body.append(
        f'<text x="12" y="{_f(head + plot_h / 2)}" text-anchor="middle" transform="rotate(-90 12 {_f(head + plot_h / 2)})">{esc(y_label)}</text>'
    )
    legend_x = left
    for name, pts, cls in series:
        if pts:
            path = []
            for j, (px, py) in enumerate(pts):
                if j and step:
                    path.append(f"L{_f(x(px))},{_f(y(pts[j - 1][1]))}")
                path.append(f"{'L' if j else 'M'}{_f(x(px))},{_f(y(py))}")
            body.append(f'<path d="{" ".join(path)}" class="{esc(cls)}"/>')
        body.append(f'<rect x="{_f(legend_x)}" y="22" width="12" height="4" class="legend{esc(cls[-1])}"/>')
        body.append(_text(legend_x + 16, 28, name))
        legend_x += 24 + 7 * len(name)
    for px, py, label, cls in dots:
        body.append(f'<circle cx="{_f(x(px))}" cy="{_f(y(py))}" r="4" class="{esc(cls)}"><title>{esc(label)}</title></circle>')
    return _svg(head + plot_h + 40, body, title)


def histogram(values: Sequence[float], *, title: str, bins: int = 10) -> Markup:
    """Counts of scores in `bins` equal bins over 0..1 (the last bin includes 1.0)."""
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, max(0, int(v * bins)))] += 1
    left, right, head, plot_h = 44, 20, 26, 140
    plot_w = WIDTH - left - right
    top = nice_max(max(counts, default=1))
    bw = plot_w / bins
    body = [_text(0, 14, title, cls="title")]
    for v in _ticks(top):
        yy = head + plot_h - plot_h * v / top
        body += [_line(left, yy, left + plot_w, yy, "grid"), _text(left - 6, yy + 4, _tick_label(v, top), "end")]
    for i, c in enumerate(counts):
        h = plot_h * c / top
        body.append(
            f'<rect x="{_f(left + i * bw + 2)}" y="{_f(head + plot_h - h)}" width="{_f(bw - 4)}" '
            f'height="{_f(h)}" class="bar"><title>{i / bins:.1f}–{(i + 1) / bins:.1f}: {c}</title></rect>'
        )
        if c:
            body.append(_text(left + i * bw + bw / 2, head + plot_h - h - 3, str(c), "middle"))
        body.append(_text(left + i * bw, head + plot_h + 14, f"{i / bins:.1f}", "middle"))
    body.append(_text(left + plot_w, head + plot_h + 14, "1.0", "middle"))
    body.append(_line(left, head + plot_h, left + plot_w, head + plot_h, "axis"))
    return _svg(head + plot_h + 24, body, title)
