"""`ensemble`: the top candidates of a search run together; each output field is decided by majority vote."""

from __future__ import annotations

from .. import ir as I
from ..errors import BudgetExceeded, LMError
from . import Context
from .random_search import search


def member_tables(members: list) -> list[list[dict]]:
    """Each member's predictor table as tagged IR JSON, so the extra survives fingerprints and artifacts."""
    return [I.to_json(m.ir)["predictors"] for m in members]


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
    best = members[0]
    ens = best.ir.with_extra("ensemble", {"members": member_tables(members), "names": [m.name for m in members]})
    try:
        score = await ctx.score(ens, label="ensemble")
    except (BudgetExceeded, LMError):
        raise
    except Exception as e:  # noqa: BLE001 - a runtime that cannot run the vote must not crash the compile
        ctx.notes.append(f"ensemble: could not run the vote ({type(e).__name__}: {e}); kept the best single program")
        return best.ir
    ctx.record("ensemble", ens, score, members=[m.name for m in members])
    ctx.log(f"ensemble of {len(members)}: {score:.3f} on dev")
    if score < best.score:
        # A vote that scores below its best member is worse on the evidence we have.
        ctx.notes.append(f"ensemble: the vote scored {score:.3f}, below its best member {best.name} "
                         f"({best.score:.3f}); kept that member")
        return best.ir
    return ens
