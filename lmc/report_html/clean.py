"""Shape checks for the parts of an artifact and a stats sidecar that nothing else validates.

An artifact's `compile` section and the `*.stats.json` sidecar are plain JSON a
person may have edited; the pages read them only through these functions, which
keep what has the expected type and drop the rest, so a malformed file gives a
page with gaps rather than a crash.
"""

from __future__ import annotations

import math
from typing import Any


def number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def count(x: Any) -> int:
    v = number(x)
    return int(v) if v is not None and v >= 0 else 0


def text(x: Any) -> str | None:
    return x if isinstance(x, str) else None


def obj(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _list(x: Any) -> list:
    return x if isinstance(x, list) else []


def _dataset(x: Any) -> dict:
    d = obj(x)
    return {"path": text(d.get("path")), "n": count(d.get("n")), "sha256": text(d.get("sha256")) or ""} if d else {}


def compile_section(c: Any) -> dict:
    """The compile report with every key the pages read in its expected type."""
    c = obj(c)
    metric = obj(c.get("metric"))
    data = obj(c.get("data"))
    split = obj(data.get("split"))
    scores = obj(c.get("scores"))
    budget = obj(c.get("budget"))
    cands = []
    for item in c.get("candidates") if isinstance(c.get("candidates"), list) else []:
        if isinstance(item, dict):
            cands.append({**item, "name": text(item.get("name")) or "?", "dev": number(item.get("dev"))})
    by_pred = {str(k): count(v) for k, v in obj(c.get("lm_requests_by_predictor")).items()}
    return {
        "optimizer": [str(x) for x in c.get("optimizer")] if isinstance(c.get("optimizer"), list) else [],
        "metric": {
            "name": text(metric.get("name")) or "—",
            "spec": text(metric.get("spec")) or "—",
            "threshold": number(metric.get("threshold")) if number(metric.get("threshold")) is not None else 1.0,
        },
        "seed": c.get("seed") if isinstance(c.get("seed"), (int, str)) and not isinstance(c.get("seed"), bool) else None,
        "lm": text(c.get("lm")),
        "teacher_lm": text(c.get("teacher_lm")),
        "prompt_lm": text(c.get("prompt_lm")),
        "data": {
            "train": _dataset(data.get("train")),
            "dev": _dataset(data.get("dev")),
            "split": {"from": text(split.get("from")), "dev_fraction": number(split.get("dev_fraction")), "seed": split.get("seed")}
            if split
            else None,
        },
        "scores": {
            "baseline": {"dev": number(obj(scores.get("baseline")).get("dev"))},
            "final": {"dev": number(obj(scores.get("final")).get("dev"))},
            "train": {str(k): number(v) for k, v in obj(scores.get("train")).items()},
        },
        "candidates": cands,
        "lm_requests": count(c.get("lm_requests")),
        "lm_requests_by_predictor": by_pred,
        "budget": {
            "max_calls": number(budget.get("max_calls")),
            "max_cost": number(budget.get("max_cost")),
            "exhausted": budget.get("exhausted") is True,
        },
        "notes": [n for n in c.get("notes") if isinstance(n, str)] if isinstance(c.get("notes"), list) else [],
    }


_USAGE = ("calls", "cached_calls", "prompt_tokens", "completion_tokens", "retries", "errors")


def stats(d: Any) -> dict:
    """The stats sidecar: totals, per-predictor usage and the timeline, each entry checked."""
    d = obj(d)
    out: dict[str, Any] = {k: count(d.get(k)) for k in _USAGE}
    out["cost"] = number(d.get("cost")) or 0.0
    out["duration_s"] = number(d.get("duration_s")) or 0.0
    out["by_tag"] = {
        str(k): {**{u: count(obj(v).get(u)) for u in _USAGE}, "cost": number(obj(v).get("cost")) or 0.0}
        for k, v in obj(d.get("by_tag")).items()
        if isinstance(v, dict)
    }
    out["artifact_sha256"] = text(d.get("artifact_sha256"))
    tl = d.get("timeline")
    if isinstance(tl, dict):
        samples = []
        for s in _list(tl.get("samples")):
            s = obj(s)
            if number(s.get("t")) is not None:
                samples.append(
                    {
                        "t": number(s.get("t")),
                        "calls": count(s.get("calls")),
                        "cached_calls": count(s.get("cached_calls")),
                        "tokens": count(s.get("tokens")),
                        "cost": number(s.get("cost")) or 0.0,
                    }
                )
        cands = []
        for e in _list(tl.get("candidates")):
            e = obj(e)
            if number(e.get("t")) is not None and isinstance(e.get("index"), int):
                cands.append(
                    {"index": e["index"], "t": number(e.get("t")), "calls": count(e.get("calls")), "cached_calls": count(e.get("cached_calls"))}
                )
        out["timeline"] = {"samples": samples, "candidates": cands}
    else:
        out["timeline"] = None
    return out
