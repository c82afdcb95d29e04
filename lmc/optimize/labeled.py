"""`labeled`: k labeled demos per predictor, taken from the trainset in a seeded order."""

from __future__ import annotations

from .. import ir as I
from . import Context, labeled_demos, with_demos


async def run(ir: I.IR, ctx: Context) -> I.IR:
    k = int(ctx.opt("max_labeled", 4))
    demos = labeled_demos(ir, ctx.trainset, k, ctx.rng("labeled"))
    filled = {pid: len(ds) for pid, ds in demos.items()}
    ctx.log(f"labeled: {', '.join(f'{pid}={n}' for pid, n in filled.items())} demos")
    empty = [pid for pid, n in filled.items() if n == 0]
    if empty:
        ctx.notes.append(f"labeled: no labeled demos fit predictor(s) {', '.join(empty)} "
                         "(their fields are not in the dataset); use bootstrap")
    return with_demos(ir, demos)
