"""What an artifact says, for people: each predictor's exact prompt, and what changed between two artifacts.

Named artifact_view, not inspect, so it never shadows the standard library module `inspect`."""

from __future__ import annotations

import json
from typing import Any

from . import ir as I
from .artifact import Artifact, predictor_view
from .errors import LmcError, did_you_mean
from .netguard import is_loopback
from .prompts import render
from .pyrefs import describe, policy_for


def render_predictors(target, mode: str, only: str | None = None) -> list[dict]:
    """Every predictor's prompt with its demos, the inputs shown as `{field}` placeholders."""
    ir: I.IR = target.ir
    preds = list(ir.predictors)
    if only:
        preds = [p for p in preds if p.id == only]
        if not preds:
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
        views.append(
            {
                "id": p.id,
                "module": p.module,
                "role": p.role,
                "instructions": p.instructions,
                "demos": [dict(d) for d in demos],
                "settings": dict(p.settings),
                "prompt": note + text,
            }
        )
    return views


def python_view(target, allowed: tuple[str, ...] = ()) -> list[dict]:
    """Every python(...) reference the target imports when run: kind, name, module, file, and whether it may.

    Found without importing anything (lmc/pyrefs.py): inspecting a hostile artifact is safe.
    """
    return describe(target.ir, policy_for(target, allowed))


def lm_view(target) -> list[dict]:
    """The servers the target's LMs name (its compiled-with LM and its aliases), and whether each is used as is."""
    out = []
    art = getattr(target, "artifact", None)
    entries = []
    if art is not None and isinstance(art.lm, dict):
        entries.append(("(compiled with)", art.lm.get("model"), art.lm.get("api_base"), art.lm.get("api_key_env")))
    for a in target.ir.lms:
        s = dict(a.settings)
        entries.append((a.name, a.model, s.get("api_base"), s.get("api_key_env")))
    for name, model, base, key_env in entries:
        if base and target.kind == "artifact" and not is_loopback(base):
            use = "remote: used only when you pass --api-base (or set api_base in lmc.yaml)"
        else:
            use = "used as is"
        out.append({"name": name, "model": model, "api_base": base, "api_key_env": key_env, "use": use})
    return out


def render_python(refs: list[dict]) -> list[str]:
    """Text lines for `lmc inspect`: one per reference, saying what would be imported and whether it may be."""
    if not refs:
        return ["python references: none (this program imports no Python)"]
    lines = [f"python references ({len(refs)}), imported only when run and only if allowed:"]
    for r in refs:
        where = r["file"] or {"stdlib": "Python's standard library", "missing": "not found"}.get(r["found"], r["found"])
        if r["found"] == "stdlib" and r["file"]:
            where = f"Python's standard library, {r['file']}"
        verdict = f"allowed ({r['why']})" if r["allowed"] else f"REFUSED ({r['why']}; --allow-python {r['module'].split('.')[0]})"
        lines.append(f"  {r['kind']} {r['name']}: {r['ref']}  [{where}]  {verdict}")
    return lines


def diff_python(a, b) -> dict:
    """The python(...) references of two artifacts: all of the new one's, and what was added, removed or changed."""
    old = {(r["kind"], r["name"]): r for r in python_view(a)}
    new = {(r["kind"], r["name"]): r for r in python_view(b)}
    return {
        "new": list(new.values()),
        "added": [new[k]["kind"] + " " + new[k]["name"] + ": " + new[k]["ref"] for k in new if k not in old],
        "removed": [old[k]["kind"] + " " + old[k]["name"] + ": " + old[k]["ref"] for k in old if k not in new],
        "changed": [
            {"what": f"{k[0]} {k[1]}", "old": old[k]["ref"], "new": new[k]["ref"]} for k in new if k in old and old[k]["ref"] != new[k]["ref"]
        ],
    }


def diff_artifacts(a: Artifact, b: Artifact, paths: tuple[str, str] = ("a", "b")) -> dict:
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
    # What running the new artifact would import is part of every diff, changed or not: a reviewer must see it.
    out["python"] = diff_python(_as_target(a, paths[0]), _as_target(b, paths[1]))
    return out


def _as_target(art: Artifact, path: str):
    from types import SimpleNamespace

    return SimpleNamespace(kind="artifact", path=path, artifact=art, ir=art.ir)


def _in_order(d: dict, order: list[str]) -> dict:
    """A demo's fields in signature order (inputs, then outputs), as a reviewer reads a step."""
    return {**{k: d[k] for k in order if k in d}, **{k: v for k, v in d.items() if k not in order}}


def _demo_key(d: dict) -> str:
    return json.dumps({k: v for k, v in d.items() if k != "_id"}, sort_keys=True, ensure_ascii=False)


def _demo_line(d: dict, limit: int = 110) -> str:
    text = "; ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in d.items() if k != "_id")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_diff(changes: dict, name_a: str, name_b: str, markdown: bool = False) -> str:  # noqa: C901 - one section per kind of change, in the order shown
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
    py = changes.get("python")
    if py is not None:
        lines.append(("### " if markdown else "") + "python references of the new artifact (imported when run, if allowed)")
        if not py["new"]:
            lines.append(f"{bullet}none")
        added = set(py["added"])
        changed = {c["what"]: c for c in py["changed"]}
        for r in py["new"]:
            label = f"{r['kind']} {r['name']}"
            mark = "+ " if f"{label}: {r['ref']}" in added else ("~ " if label in changed else "")
            was = f" (was {changed[label]['old']})" if label in changed else ""
            state = "allowed" if r["allowed"] else "refused unless --allow-python " + r["module"].split(".")[0]
            lines.append(f"{bullet}{mark}{label}: {r['ref']}{was} [{state}]")
        for gone in py["removed"]:
            lines.append(f"{bullet}- {gone}")
    return "\n".join(lines)


def render_lineage(steps: list) -> list[str]:
    """The kept program's ancestry (evolve's search), one line per step and the instruction it wrote, oldest first."""
    if not isinstance(steps, list) or not steps:
        return []
    lines = ["lineage of the kept program (evolve):"]
    for s in steps:
        if not isinstance(s, dict):
            continue
        parent = s.get("parent")
        parent = " + ".join(parent) if isinstance(parent, list) else parent
        head = f"  round {s.get('round')}: {s.get('candidate')}"
        head += f" from {parent}" if parent else " (the program it started from)"
        mb = s.get("minibatch")
        if isinstance(mb, dict):
            head += f", minibatch {mb.get('parent')} -> {mb.get('child')}"
        if s.get("dev") is not None:
            head += f", dev {s['dev']}"
        if s.get("predictor"):
            head += f", rewrote {s['predictor']}"
        elif isinstance(parent, str) and " + " in parent:
            head += ", merged"
        lines.append(head)
        if s.get("instruction"):
            lines.append(f'      "{s["instruction"]}"')
    return lines
