"""`ensemble`: the top candidates of a search run together; each output field is decided by majority vote."""

from __future__ import annotations

from .. import ir as I
from . import Context
from .random_search import search


async def run(ir: I.IR, ctx: Context) -> I.IR:
    size = int(ctx.opt("ensemble_size", 3))
    if len([c for c in ctx.candidates if c.score is not None]) < 2:
        ctx.log("ensemble: no earlier search to draw from; running random-search first")
        await search(ir, ctx, label="ensemble")
    ranked = sorted((c for c in ctx.candidates if c.score is not None and not c.ir.extra("ensemble")),
                    key=lambda c: (-c.score, ctx.candidates.index(c)))
    members, seen = [], set()
    for c in ranked:
        key = I.fingerprint(c.ir)
        if key not in seen:
            seen.add(key)
            members.append(c)
        if len(members) >= size:
            break
    if len(members) < 2:
        ctx.notes.append("ensemble: fewer than two distinct candidates; kept the best single program")
        return members[0].ir if members else ir
    best = members[0].ir
    ens = best.with_extra("ensemble", {"members": [list(m.ir.predictors) for m in members],
                                       "names": [m.name for m in members]})
    score = await ctx.score(ens, label="ensemble")
    ctx.record("ensemble", ens, score, members=[m.name for m in members])
    ctx.log(f"ensemble of {len(members)}: {score:.3f} on dev")
    return ens
