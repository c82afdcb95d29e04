"""What CI reads from a verdict: JSON statistics, JUnit XML and a Markdown summary."""

from __future__ import annotations

import json
import os
import re
from typing import Any

from lmc.files import atomic_write_text

from .gates import GateOptions, Verdict, fmt_p
from .report import ExampleResult, Report
from .stats import mean_ci


def report_stats(report: Report, confidence: float = 0.95) -> dict:
    """The numbers of the eval table: score with its interval, n, errors, calls, cost, time."""
    mean, lo, hi = mean_ci(report.quality_scores(), confidence) if report.examples else (0.0, 0.0, 0.0)
    s = report.summary
    return {
        "target": report.target.path,
        "score": mean,
        "score_lo": lo,
        "score_hi": hi,
        "confidence": confidence,
        "n": s.n,
        "passed": sum(1 for e in report.examples if e.passed),
        "errors": s.errors,
        "infra_errors": len(report.infra_errors()),
        "calls": s.calls,
        "cached_calls": s.cached_calls,
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "cost": s.cost,
        "duration_s": s.duration_s,
        "requests": s.requests,
        "retries": s.retries,
        "failed_requests": s.failed_requests,
    }


def verdict_json(cand: Report, base: Report | None, verdict: Verdict, opts: GateOptions | None = None) -> dict:
    """The `--format json` document: verdict, exit code, reasons, candidate/baseline stats, paired test, options."""
    confidence = opts.confidence if opts else (verdict.paired.confidence if verdict.paired else 0.95)
    out = {
        "verdict": verdict.label,
        "exit_code": verdict.exit_code,
        "reason": verdict.lines[-1] if verdict.lines else "",
        "reasons": list(verdict.reasons),
        "candidate": report_stats(cand, confidence),
        "baseline": report_stats(base, confidence) if base is not None else None,
        "paired": verdict.paired.to_json() if verdict.paired else None,
        "metric": {"name": cand.metric.name, "spec": cand.metric.spec, "threshold": cand.metric.threshold},
        "data": {"path": cand.data.path, "sha256": cand.data.sha256, "n_total": cand.data.n_total},
    }
    if opts is not None:
        out["gates"] = {
            "min_score": opts.min_score,
            "baseline": opts.baseline,
            "max_drop": opts.max_drop,
            "max_errors": opts.max_errors,
            "confidence": opts.confidence,
        }
    return out


# Characters XML 1.0 cannot carry at all; LM output sometimes contains them.
_XML_BAD = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(text: str) -> str:
    return _XML_BAD.sub("\ufffd", text)


def _example_dump(ex: ExampleResult, base_ex: ExampleResult | None) -> str:
    doc: dict[str, Any] = {"line": ex.line, "score": ex.score, "prediction": ex.prediction, "gold": ex.gold}
    if ex.error is not None:
        doc["error"] = ex.error
    if base_ex is not None:
        doc["baseline_score"] = base_ex.quality
        doc["baseline_prediction"] = base_ex.prediction
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False)


def junit_xml(cand: Report, verdict: Verdict, base: Report | None = None) -> str:
    """JUnit XML: one testcase per example.

    Without a baseline a testcase fails when the example does not pass the
    metric.  With one, only regressed examples (pass->fail) fail; examples
    failing on both sides are `skipped` (known failures), so the report's red
    cases match what the gate judged.  Examples with an error are `error`s.
    """
    import xml.etree.ElementTree as ET

    flipped = set(verdict.paired.flipped_to_fail) if verdict.paired else set()
    base_by_id = {e.id: e for e in base.examples} if base is not None else {}
    compared = verdict.paired is not None
    suite_name = f"lmc eval {cand.program.name} ({cand.metric.name})"
    classname = f"lmc.{cand.program.name}.{cand.metric.name}"
    failures = errors = skipped = 0
    cases = []
    for ex in cand.examples:
        case = ET.Element("testcase", {"name": ex.id, "classname": classname, "file": cand.data.path, "line": str(ex.line)})
        base_ex = base_by_id.get(ex.id)
        if ex.error is not None:
            errors += 1
            el = ET.SubElement(case, "error", {"message": _xml_text(_first_line(ex.error)), "type": ex.error_kind or "error"})
            el.text = _xml_text(ex.error)
        elif compared and ex.id in flipped:
            failures += 1
            base_score = base_ex.quality if base_ex else float("nan")
            el = ET.SubElement(case, "failure", {"message": f"regressed: score {base_score:g} on baseline -> {ex.quality:g}", "type": "regression"})
            el.text = f"example {ex.id} (line {ex.line}) passed on the baseline and fails on the candidate"
        elif not ex.passed:
            if compared:
                skipped += 1
                ET.SubElement(case, "skipped", {"message": f"known failure: score {ex.quality:g}, also fails on the baseline"})
            else:
                failures += 1
                el = ET.SubElement(case, "failure", {"message": f"score {ex.quality:g} below threshold {cand.metric.threshold:g}", "type": "metric"})
                el.text = f"example {ex.id} (line {ex.line}) scored {ex.quality:g} on {cand.metric.spec}"
        if len(case):
            out = ET.SubElement(case, "system-out")
            out.text = _xml_text(_example_dump(ex, base_ex))
        cases.append(case)

    total = len(cases)
    duration = f"{cand.summary.duration_s:.3f}"
    attrs = {"tests": str(total), "failures": str(failures), "errors": str(errors), "skipped": str(skipped), "time": duration}
    root = ET.Element("testsuites", {"name": "lmc eval", **attrs})
    suite = ET.SubElement(root, "testsuite", {"name": suite_name, **attrs})
    props = ET.SubElement(suite, "properties")
    stats = report_stats(cand, verdict.paired.confidence if verdict.paired else 0.95)
    prop_values = {
        "verdict": verdict.label,
        "exit_code": str(verdict.exit_code),
        "target": cand.target.path,
        "data": cand.data.path,
        "metric": f"{cand.metric.name} = {cand.metric.spec}",
        "score": f"{stats['score']:.4f}",
    }
    if verdict.paired is not None:
        prop_values.update(
            baseline_score=f"{verdict.paired.base_mean:.4f}", delta=f"{verdict.paired.delta:+.4f}", p_value=f"{verdict.paired.p_value:.4g}"
        )
    for name, value in prop_values.items():
        ET.SubElement(props, "property", {"name": name, "value": _xml_text(value)})
    suite.extend(cases)
    out = ET.SubElement(suite, "system-out")
    out.text = _xml_text("\n".join(verdict.lines))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(cand: Report, verdict: Verdict, path: str | os.PathLike, base: Report | None = None) -> None:
    atomic_write_text(path, junit_xml(cand, verdict, base))


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _md(text: Any, limit: int = 80) -> str:
    """Text safe inside a Markdown table cell: one line, pipes and backticks escaped, bounded length."""
    s = str(text).replace("\r", " ").replace("\n", " ")
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`").replace("<", "&lt;")


def _brief(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict) and len(value) == 1:
        value = next(iter(value.values()))
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def render_markdown(cand: Report, base: Report | None, verdict: Verdict, *, top: int = 10) -> str:
    """Markdown for a PR comment or $GITHUB_STEP_SUMMARY: verdict, score vs baseline, delta with interval, top flips."""
    icon = {"pass": "✅", "fail": "❌", "error": "⚠️"}[verdict.label]
    regressed = bool(verdict.paired and verdict.paired.regressed)
    title = {"pass": "pass", "fail": "quality regression" if regressed else "fail", "error": "too many errors"}[verdict.label]
    confidence = verdict.paired.confidence if verdict.paired else 0.95
    out = [f"### {icon} lmc eval: {title}", ""]
    out.append(
        f"`{_md(cand.target.path)}` on `{_md(cand.data.path)}` ({cand.summary.n} examples), "
        f"metric `{_md(cand.metric.name)}` = `{_md(cand.metric.spec)}`"
    )
    out.append("")
    out.append(f"| | score | {confidence:.0%} CI | n | passed | errors | calls | cost | time |")
    out.append("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    rows = [("candidate", cand)] + ([("baseline", base)] if base is not None else [])
    for label, rep in rows:
        s = report_stats(rep, confidence)
        out.append(
            f"| {label} | {s['score']:.3f} | {s['score_lo']:.3f} – {s['score_hi']:.3f} | {s['n']} | {s['passed']} | "
            f"{s['errors']} | {s['calls']} | ${s['cost']:.4f} | {s['duration_s']:.1f}s |"
        )
    p = verdict.paired
    if p is not None:
        out.append("")
        out.append(
            f"**Delta {p.delta:+.3f}** ({2 * p.confidence - 1:.0%} CI {p.delta_lo:+.3f} to {p.delta_hi:+.3f}), "
            f"one-sided p = {fmt_p(p.p_value)} ({p.method})"
            + (f", improvement p = {fmt_p(p.p_improved)}" if p.delta > 0 else "")
            + f"; max drop {p.max_drop:g}; "
            f"{len(p.flipped_to_fail)} pass→fail, {len(p.flipped_to_pass)} fail→pass."
        )
        cand_by_id = {e.id: e for e in cand.examples}
        base_by_id = {e.id: e for e in base.examples} if base is not None else {}
        for heading, flips in (("pass → fail", p.flipped_to_fail), ("fail → pass", p.flipped_to_pass)):
            if not flips:
                continue
            out += ["", f"<details{' open' if heading == 'pass → fail' else ''}><summary>{heading} ({len(flips)})</summary>", ""]
            out.append("| id | line | baseline | candidate | prediction | gold |")
            out.append("|---|---:|---:|---:|---|---|")
            for ex_id in flips[:top]:
                ex = cand_by_id.get(ex_id)
                bx = base_by_id.get(ex_id)
                if ex is None:
                    continue
                pred = f"error: {ex.error}" if ex.error else _brief(ex.prediction)
                out.append(
                    f"| `{_md(ex_id, 60)}` | {ex.line} | {bx.quality if bx else float('nan'):.2f} | {ex.quality:.2f} | "
                    f"{_md(pred)} | {_md(_brief(ex.gold))} |"
                )
            if len(flips) > top:
                out.append(f"\n… and {len(flips) - top} more")
            out += ["", "</details>"]
    errored = [e for e in cand.examples if e.error is not None]
    if errored:
        out.append("")
        shown = ", ".join(f"`{_md(e.id, 40)}` ({e.error_kind})" for e in errored[:top])
        out.append(f"{len(errored)} example(s) errored: " + shown + (" …" if len(errored) > top else ""))
    out.append("")
    for line in verdict.lines[:-1]:
        if line.startswith("also: "):
            out.append(f"- {_md(line, 300)}")
    out.append(f"**{_md(verdict.lines[-1], 400)}**")
    return "\n".join(out) + "\n"
