"""`ensemble`: the top candidates of a search run together; each output field is decided by majority vote."""

from __future__ import annotations

from .. import ir as I
from ..errors import LMError
from .lab import Findings, PassInputs, PassResult
from .random_search import search


def member_tables(members: list) -> list[list[dict]]:
    """Each member's predictor table as tagged IR JSON, so the extra survives fingerprints and artifacts."""
    return [I.to_json(m.ir)["predictors"] for m in members]


async def ensemble(
    ir: I.IR, inputs: PassInputs, *, ensemble_size: int, candidates: int, max_demos: int, max_labeled: int, max_rounds: int
) -> PassResult:
    """The vote of the best `ensemble_size` distinct candidates found so far (by earlier passes, or by a
    random search run here when fewer than two were scored)."""
    found = Findings(inputs)
    if len([c for c in found.everything() if c.score is not None]) < 2:
        inputs.log("ensemble: no earlier search to draw from; running random-search first")
        await search(ir, found, candidates=candidates, max_demos=max_demos, max_labeled=max_labeled, max_rounds=max_rounds, label="ensemble")
    pool = found.everything()
    # Best first; equal scores keep the order they were found in.
    ranked = sorted(
        ((i, c) for i, c in enumerate(pool) if c.score is not None and not c.ir.extra("ensemble")), key=lambda t: (-(t[1].score or 0.0), t[0])
    )
    members, seen = [], set()
    for _, c in ranked:
        key = I.fingerprint(c.ir)
        if key not in seen:
            seen.add(key)
            members.append(c)
        if len(members) >= ensemble_size:
            break
    if len(members) < 2:
        found.notes.append("ensemble: fewer than two distinct candidates; kept the best single program")
        return found.result(members[0].ir if members else ir)
    best = members[0]
    ens = best.ir.with_extra("ensemble", {"members": member_tables(members), "names": [m.name for m in members]})
    try:
        score = await found.guard(inputs.lab.score(ens, label="ensemble"), "ensemble")
    except LMError:
        raise
    except Exception as e:  # noqa: BLE001 - a runtime that cannot run the vote must not crash the compile
        found.notes.append(f"ensemble: could not run the vote ({type(e).__name__}: {e}); kept the best single program")
        return found.result(best.ir)
    if score is None:  # the budget ran out scoring the vote: the best program found so far
        so_far = found.best()
        return found.result(so_far.ir if so_far else ir)
    found.record("ensemble", ens, score, members=[m.name for m in members])
    inputs.log(f"ensemble of {len(members)}: {score:.3f} on dev")
    if best.score is not None and score < best.score:
        # A vote that scores below its best member is worse on the evidence we have.
        found.notes.append(f"ensemble: the vote scored {score:.3f}, below its best member {best.name} ({best.score:.3f}); kept that member")
        return found.result(best.ir)
    return found.result(ens)
