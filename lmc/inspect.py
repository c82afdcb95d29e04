"""What an artifact says, for people: each predictor's exact prompt, and what changed between two artifacts."""

from __future__ import annotations

import json
from typing import Any

from . import ir as I
from .artifact import Artifact, predictor_view
from .errors import LmcError
from .prompts import render


def render_predictors(target, mode: str, only: str | None = None) -> list[dict]:
    """Every predictor's prompt with its demos, the inputs shown as `{field}` placeholders."""
    ir: I.IR = target.ir
    preds = list(ir.predictors)
    if only:
        preds = [p for p in preds if p.id == only]
        if not preds:
            from .errors import did_you_mean

            hint = did_you_mean(only, ir.predictor_ids())
            raise LmcError(f"no predictor '{only}'", hint=(hint + " " if hint else "") + "expected one of: " + ", ".join(ir.predictor_ids()))
    knn = ir.extra("knn")
    views = []
    for p in preds:
        placeholders = {f.name: "{" + f.name + "}" for f in p.signature.inputs}
        demos = p.demos
        note = ""
        if knn and p.id in knn.get("pools", {}):
            pool = knn["pools"][p.id]
            demos = tuple(pool[: int(knn.get("k", 4))])
            note = f"(knn: {knn.get('k')} of {len(pool)} pool demos are chosen per input; the first {len(demos)} shown)\n\n"
        prompt = render(p, placeholders, mode=mode, demos=demos)
        text = prompt.as_text()
        if prompt.stop:
            text += "\n\n[stop: " + ", ".join(json.dumps(s) for s in prompt.stop) + "]"
        views.append({"id": p.id, "module": p.module, "role": p.role, "instructions": p.instructions,
                      "demos": [dict(d) for d in demos], "settings": dict(p.settings), "prompt": note + text})
    return views


def diff_artifacts(a: Artifact, b: Artifact) -> dict:
    pa = {p.id: predictor_view(p) for p in a.ir.predictors}
    pb = {p.id: predictor_view(p) for p in b.ir.predictors}
    out: dict[str, Any] = {"predictors": {}, "added": sorted(set(pb) - set(pa)), "removed": sorted(set(pa) - set(pb))}
    for pid in sorted(set(pa) & set(pb)):
        x, y = pa[pid], pb[pid]
        ch: dict[str, Any] = {}
        if x["instructions"] != y["instructions"]:
            ch["instructions"] = {"old": x["instructions"], "new": y["instructions"]}
        dx = [_demo_key(d) for d in x["demos"]]
        dy = [_demo_key(d) for d in y["demos"]]
        order = [f.name for f in b.ir.predictor(pid).signature.inputs + b.ir.predictor(pid).signature.outputs]
        added = [_in_order(d, order) for d, k in zip(y["demos"], dy) if k not in dx]
        removed = [_in_order(d, order) for d, k in zip(x["demos"], dx) if k not in dy]
        if added or removed:
            ch["demos"] = {"added": added, "removed": removed, "old_count": len(dx), "new_count": len(dy)}
        elif dx != dy:
            ch["demos"] = {"reordered": True, "old_count": len(dx), "new_count": len(dy)}
        if x["settings"] != y["settings"]:
            ch["settings"] = {"old": x["settings"], "new": y["settings"]}
        if x["signature"] != y["signature"]:
            ch["signature"] = {"old": x["signature"], "new": y["signature"]}
        if ch:
            out["predictors"][pid] = ch
    sa, sb = a.compile.get("scores", {}), b.compile.get("scores", {})
    out["scores"] = {"old": sa.get("final", {}).get("dev"), "new": sb.get("final", {}).get("dev")}
    out["optimizer"] = {"old": a.compile.get("optimizer"), "new": b.compile.get("optimizer")}
    out["program_changed"] = a.program.get("sha256") != b.program.get("sha256")
    ea, eb = {k for k, _ in a.ir.extras}, {k for k, _ in b.ir.extras}
    if ea != eb or any(a.ir.extra(k) != b.ir.extra(k) for k in ea & eb):
        out["extras"] = {"old": sorted(ea), "new": sorted(eb)}
    return out


def _in_order(d: dict, order: list[str]) -> dict:
    """A demo's fields in signature order (inputs, then outputs), as a reviewer reads a step."""
    return {**{k: d[k] for k in order if k in d}, **{k: v for k, v in d.items() if k not in order}}


def _demo_key(d: dict) -> str:
    return json.dumps({k: v for k, v in d.items() if k != "_id"}, sort_keys=True, ensure_ascii=False)


def _demo_line(d: dict, limit: int = 110) -> str:
    text = "; ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in d.items() if k != "_id")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_diff(changes: dict, name_a: str, name_b: str, markdown: bool = False) -> str:
    lines = [f"{'## ' if markdown else ''}lmc diff {name_a} → {name_b}"]
    s = changes["scores"]
    lines.append(f"dev score: {s['old']} → {s['new']}")
    if changes["optimizer"]["old"] != changes["optimizer"]["new"]:
        lines.append(f"optimizer: {changes['optimizer']['old']} → {changes['optimizer']['new']}")
    if changes["program_changed"]:
        lines.append("program source changed")
    for pid in changes["added"]:
        lines.append(f"+ predictor {pid}")
    for pid in changes["removed"]:
        lines.append(f"- predictor {pid}")
    if changes.get("extras"):
        lines.append(f"run-time strategies: {changes['extras']['old']} → {changes['extras']['new']}")
    bullet = "- " if markdown else "  "
    for pid, ch in changes["predictors"].items():
        lines.append(("### " if markdown else "") + f"predictor {pid}")
        if "instructions" in ch:
            lines.append(f"{bullet}instructions:")
            lines.append(f"{bullet}  - {ch['instructions']['old']}")
            lines.append(f"{bullet}  + {ch['instructions']['new']}")
        if "demos" in ch:
            d = ch["demos"]
            if d.get("reordered"):
                lines.append(f"{bullet}demos reordered ({d['new_count']})")
            else:
                lines.append(f"{bullet}demos: {d['old_count']} → {d['new_count']}")
                for demo in d["removed"]:
                    lines.append(f"{bullet}  - {_demo_line(demo)}")
                for demo in d["added"]:
                    lines.append(f"{bullet}  + {_demo_line(demo)}")
        if "settings" in ch:
            lines.append(f"{bullet}settings: {ch['settings']['old']} → {ch['settings']['new']}")
        if "signature" in ch:
            lines.append(f"{bullet}signature changed")
    if len(lines) == 2 and not changes["predictors"]:
        lines.append("no changes to predictors")
    return "\n".join(lines)
