"""`random-search`: zero-shot, labeled-only and N bootstrap candidates (shuffled trainsets, varied demo
counts), each scored on dev; the best is kept and every candidate's score is reported."""

from __future__ import annotations

from .. import ir as I
from ..datasets import shuffle
from . import Context, guarded, labeled_demos, with_demos
from .bootstrap import bootstrap_ir


async def search(ir: I.IR, ctx: Context, label: str = "random-search") -> None:
    """Adds scored candidates to ctx.candidates (shared with `ensemble`)."""
    n = int(ctx.opt("candidates", 6))
    max_demos = int(ctx.opt("max_demos", 4))
    max_labeled = int(ctx.opt("max_labeled", 4))
    rng = ctx.rng(label)
    zero = with_demos(ir, {p.id: () for p in ir.predictors})
    plans = [("zero-shot", None), ("labeled-only", None), ("bootstrap", (0, max_demos))]
    for i in range(n):
        plans.append((f"bootstrap-{i + 1}", (i + 1, rng.randint(1, max_demos))))
    for name, plan in plans:
        if ctx.budget_exhausted:
            break
        if name == "zero-shot":
            cand = zero
        elif name == "labeled-only":
            cand = with_demos(ir, labeled_demos(ir, ctx.trainset, max_labeled, ctx.rng(f"{label}:labeled")))
        else:
            shuffle_seed, k = plan
            order = ctx.trainset if shuffle_seed == 0 else shuffle(ctx.trainset, ctx.seed * 1000 + shuffle_seed)
            built = await guarded(ctx, bootstrap_ir(zero, ctx, order, k, f"{label}:{name}"), f"{name} bootstrap")
            if built is None:
                break
            cand = built[0]
        score = await guarded(ctx, ctx.score(cand, label=f"{label}:{name}"), f"{name} scoring")
        if score is None:
            break
        ctx.record(f"{label}:{name}", cand, score, demos={p.id: len(p.demos) for p in cand.predictors})
        ctx.log(f"{label}: {name} scored {score:.3f} on dev")


async def run(ir: I.IR, ctx: Context) -> I.IR:
    await search(ir, ctx)
    best = ctx.best()
    if best is None:
        return ir
    ctx.log(f"random-search: best {best.name} ({best.score:.3f})")
    return best.ir
