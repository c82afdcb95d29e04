"""`calibrate`: correct a label predictor's bias toward some labels, by contextual calibration and a bias fitted on dev.

For every predictor whose output is a literal union (or a bool) and whose LM scores labels
(lmc/labels.py), the pass

1. runs the predictor, with its demos, on content-free inputs (every input "N/A", then empty,
   then "[MASK]"), takes the label distribution p_cf it gives them (each a softmax over the
   labels' scores, averaged), and offsets each label's score by -log p_cf (Zhao et al.,
   "Calibrate Before Use", 2021: the model's prior for a label is divided out);
2. fits one more offset per label to the metric on dev (coordinate ascent over a grid, at most
   `MAX_FIT_LABELS` labels), re-running dev with each setting: calibration is applied after the
   LM call, so with the LM cache these runs send no request;

and keeps whichever of none / contextual / fitted scores best on dev (the simplest on a tie).
The offsets are stored per predictor in the artifact (setting `calibration`, label -> offset),
which `lmc inspect` and `lmc diff` show, and `lmc run` applies.

`random-search` and `mipro` make the same tries on their best program (`calibrate_best`) and keep
one only when it scores higher on dev than the program as the search left it.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from .. import ir as I
from ..labels import label_options, log_softmax
from ..predict import predict
from ..runtime import Frame
from .lab import Candidate, Findings, PassInputs, PassResult

CONTENT_FREE = ("N/A", "", "[MASK]")
GRID = tuple(x / 2 for x in range(-6, 7) if x)  # offsets tried per label: -3 .. 3 in steps of 0.5
MAX_FIT_LABELS = 10
SWEEPS = 2


def content_free(p: I.Predictor, text: str) -> dict | None:
    """`p`'s inputs all set to `text` (lists to [text]); None when an input takes neither text nor a list of it."""
    out: dict[str, Any] = {}
    for f in p.signature.inputs:
        t = f.type.args[0] if f.type.kind == "optional" else f.type
        if t.kind == "str":
            out[f.name] = text
        elif t.kind == "list" and t.args and t.args[0].kind == "str":
            out[f.name] = [text] if text else []
        else:
            return None
    return out


async def prior(inputs: PassInputs, ir: I.IR, p: I.Predictor) -> dict[str, float] | None:
    """The mean label distribution `p` gives content-free inputs; None when its LM returns no label scores."""
    bare = ir.with_predictors([p.with_settings(calibration={})])
    rt = inputs.lab.make_runtime(bare)
    labels = label_options(p)
    total = {lb: 0.0 for lb in labels}
    runs = 0
    for text in CONTENT_FREE:
        values = content_free(p, text)
        if values is None:
            return None
        ctx = Frame(None, [], {})
        await predict(rt, ctx, p.id, values)
        scores = ctx.trace[-1].scores if ctx.trace else None
        if not scores:
            return None
        probs = [math.exp(x) for x in log_softmax(scores[lb] for lb in labels)]
        for lb, pr in zip(labels, probs):
            total[lb] += pr
        runs += 1
    return {lb: v / runs for lb, v in total.items()}


def contextual_offsets(p_cf: dict[str, float]) -> dict[str, float]:
    """-log p_cf per label, shifted so the first label's offset is 0 (only differences between labels matter)."""
    raw = {lb: -math.log(max(pr, 1e-12)) for lb, pr in p_cf.items()}
    first = next(iter(raw.values()))
    return {lb: round(v - first, 6) for lb, v in raw.items()}


def with_calibration(ir: I.IR, offsets: dict[str, dict[str, float]]) -> I.IR:
    """`ir` with these predictors' offsets; an empty map removes a predictor's calibration."""
    out = []
    for pid, off in offsets.items():
        p = ir.predictor(pid)
        out.append(p.with_settings(calibration=dict(off)) if off else replace(p, settings=tuple(kv for kv in p.settings if kv[0] != "calibration")))
    return ir.with_predictors(out)


async def fit(found: Findings, ir: I.IR, start: dict[str, dict[str, float]], base: float) -> tuple[dict, float]:
    """Coordinate ascent on each label's offset (the first label of each predictor stays put), scored on dev."""
    lab = found.inputs.lab
    best, best_score = {pid: dict(off) for pid, off in start.items()}, base
    for _ in range(SWEEPS):
        improved = False
        for pid, off in best.items():
            for label in list(off)[1:]:
                for delta in GRID:
                    trial = {k: dict(v) for k, v in best.items()}
                    trial[pid][label] = round(off[label] + delta, 6)
                    score = await found.guard(lab.score(with_calibration(ir, trial)), "calibrate fitting")
                    if score is None:
                        return best, best_score
                    if score > best_score + 1e-12:
                        best, best_score, improved = trial, score, True
                        off = best[pid]
        if not improved:
            break
    return best, best_score


async def calibrate(ir: I.IR, inputs: PassInputs) -> PassResult:
    found = Findings(inputs)
    targets = [p for p in ir.predictors if label_options(p)]
    if not targets:
        found.notes.append("calibrate: no predictor has a literal-union or bool output; nothing to calibrate")
        inputs.log(found.notes[-1])
        return found.result(ir)
    return found.result(await choose(found, ir, targets, label="calibrate"))


async def calibrate_best(found: Findings, best: Candidate, label: str) -> I.IR:
    """A search's best program, calibrated when that scores higher on dev than `best` as it is (random-search, mipro).

    Only predictors whose labels were chosen by score on dev are tried (their dev runs are memoised, so
    finding them is free); the tries are recorded as `<label>:calibrate:contextual` and `...:fitted`."""
    lab = found.inputs.lab
    if found.exhausted or best.score is None:
        return best.ir
    outcomes = await found.guard(lab.outcomes(best.ir, lab.devset), f"{label}: dev runs")
    scored = {c.predictor for o in outcomes or () for c in o.result.trace if c.scores}
    targets = [p for p in best.ir.predictors if p.id in scored and label_options(p)]
    if not targets:
        return best.ir
    return await choose(found, best.ir, targets, label=f"{label}:calibrate", base=best.score)


async def choose(found: Findings, ir: I.IR, targets: list[I.Predictor], *, label: str, base: float | None = None) -> I.IR:
    """The best on dev of `ir` uncalibrated (`base`: its known score as it is), contextually calibrated and fitted.

    A tie goes to the simpler: none, then contextual.  The calibrate pass scores and records `ir`
    uncalibrated itself and says in notes what it left out; a search passes its best's score and logs."""
    inputs = found.inputs
    say = found.notes.append if base is None else inputs.log
    contextual: dict[str, dict[str, float]] = {}
    for p in targets:
        p_cf = await found.guard(prior(inputs, ir, p), f"{label}: {p.id} content-free inputs")
        if found.exhausted:
            return ir
        if p_cf is None:
            say(f"{label}: predictor '{p.id}': its LM returned no label scores (or its inputs take no text), so it is left as it is")
            continue
        contextual[p.id] = contextual_offsets(p_cf)
        inputs.log(f"{label}: {p.id}: content-free label distribution " + ", ".join(f"{lb} {pr:.2f}" for lb, pr in p_cf.items()))
    if not contextual:
        return ir
    tries = [("none", with_calibration(ir, {pid: {} for pid in contextual}))] if base is None else []
    tries.append(("contextual", with_calibration(ir, contextual)))
    scored = [] if base is None else [(base, "none", ir)]
    for name, cand in tries:
        score = await found.guard(inputs.lab.score(cand, label=f"{label}:{name}"), f"{label}:{name} scoring")
        if score is None:
            break
        found.record(f"{label}:{name}", cand, score)
        scored.append((score, name, cand))
    cached = inputs.lab.make_runtime(ir).client.cache is not None
    if len(scored) == 2 and not cached:
        say(f"{label}: without the LM cache every fitting step would send the dev set again; contextual calibration only")
    elif len(scored) == 2 and all(len(label_options(ir.predictor(pid))) <= MAX_FIT_LABELS for pid in contextual):
        fitted, score = await fit(found, ir, contextual, scored[1][0])
        if fitted != contextual:
            cand = with_calibration(ir, fitted)
            found.record(f"{label}:fitted", cand, score)
            scored.append((score, "fitted", cand))
    elif len(scored) == 2:
        say(f"{label}: more than {MAX_FIT_LABELS} labels; contextual calibration only")
    if not scored:
        return ir
    best = max(scored, key=lambda t: (t[0], -[s[1] for s in scored].index(t[1])))
    inputs.log(f"{label}: " + ", ".join(f"{n} {s:.3f}" for s, n, _ in scored) + f" on dev; keeping {best[1]}")
    return best[2]
