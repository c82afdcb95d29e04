"""`random-search`: zero-shot, labeled-only and N bootstrap candidates (shuffled trainsets, varied demo
counts), then the best of them with 1 and 2 demos and in two other orders, each scored on dev; the best is
kept, calibrated when that scores higher on dev, and every candidate's score is reported."""

from __future__ import annotations

from .. import ir as I
from ..datasets import shuffle
from .bootstrap import bootstrap_ir
from .calibrate import calibrate_best
from .demos import ORDERS, arrange, dev_profile, labeled_demos, with_demos
from .lab import Findings, PassInputs, PassResult


async def search(
    ir: I.IR, found: Findings, *, candidates: int, max_demos: int, max_labeled: int, max_rounds: int, label: str = "random-search"
) -> None:
    """Scores the candidates and records them in `found` (`ensemble` searches this way too)."""
    inputs = found.inputs
    rng = inputs.rng(label)
    zero = with_demos(ir, {p.id: () for p in ir.predictors})
    plans: list[tuple[str, tuple[int, int]]] = [("zero-shot", (0, 0)), ("labeled-only", (0, 0)), ("bootstrap", (0, max_demos))]
    for i in range(candidates):
        plans.append((f"bootstrap-{i + 1}", (i + 1, rng.randint(1, max_demos))))
    for name, plan in plans:
        if found.exhausted:
            break
        if name == "zero-shot":
            cand = zero
        elif name == "labeled-only":
            cand = with_demos(ir, labeled_demos(ir, inputs.trainset, max_labeled, inputs.rng(f"{label}:labeled")))
        else:
            shuffle_seed, k = plan
            order = inputs.trainset if shuffle_seed == 0 else shuffle(inputs.trainset, inputs.seed * 1000 + shuffle_seed)
            built = await found.guard(
                bootstrap_ir(zero, found, order, k, f"{label}:{name}", max_labeled=max_labeled, max_rounds=max_rounds), f"{name} bootstrap"
            )
            if built is None:
                break
            cand = built[0]
        score = await found.guard(inputs.lab.score(cand, label=f"{label}:{name}"), f"{name} scoring")
        if score is None:
            break
        found.record(f"{label}:{name}", cand, score, demos={p.id: len(p.demos) for p in cand.predictors})
        inputs.log(f"{label}: {name} scored {score:.3f} on dev")
    await arrangements(found, label)


# Fewer demos (small models often do best with one or two) and other orders of the best set, each scored on dev.
ARRANGEMENTS = ((1, 0), (2, 0), (None, 1), (None, 2))  # (demo count or all, order in demos.ORDERS)


async def arrangements(found: Findings, label: str) -> None:
    """Score the best demo-holding candidate of this search with fewer demos and in other orders."""
    inputs = found.inputs
    holding = [c for c in found.candidates if c.score is not None and any(p.demos for p in c.ir.predictors)]
    if not holding or found.exhausted:
        return
    top = max(holding, key=lambda c: (c.score, -found.candidates.index(c)))
    profiles = {p.id: dev_profile(p, inputs.devset) for p in top.ir.predictors}
    tried = {I.fingerprint(c.ir) for c in found.candidates}
    for count, order in ARRANGEMENTS:
        cand = with_demos(
            top.ir, {p.id: arrange(p.demos, p, len(p.demos) if count is None else count, order, profiles[p.id]) for p in top.ir.predictors}
        )
        if I.fingerprint(cand) in tried:
            continue
        tried.add(I.fingerprint(cand))
        name = f"{top.name.split(':', 1)[-1]}-{'all' if count is None else count}-{ORDERS[order]}"
        score = await found.guard(inputs.lab.score(cand, label=f"{label}:{name}"), f"{name} scoring")
        if score is None:
            return
        found.record(f"{label}:{name}", cand, score, demos={p.id: len(p.demos) for p in cand.predictors}, order=ORDERS[order])
        inputs.log(f"{label}: {name} scored {score:.3f} on dev")


async def random_search(ir: I.IR, inputs: PassInputs, *, candidates: int, max_demos: int, max_labeled: int, max_rounds: int) -> PassResult:
    found = Findings(inputs)
    await search(ir, found, candidates=candidates, max_demos=max_demos, max_labeled=max_labeled, max_rounds=max_rounds)
    best = found.best()
    if best is None:
        return found.result(ir)
    inputs.log(f"random-search: best {best.name} ({best.score:.3f})")
    return found.result(await calibrate_best(found, best, "random-search"))
