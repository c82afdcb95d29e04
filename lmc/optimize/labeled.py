"""`labeled`: k labeled demos per predictor, taken from the trainset in a seeded order."""

from __future__ import annotations

from .. import ir as I
from .demos import labeled_demos, with_demos
from .lab import PassInputs, PassResult


async def labeled(ir: I.IR, inputs: PassInputs, *, max_labeled: int) -> PassResult:
    demos = labeled_demos(ir, inputs.trainset, max_labeled, inputs.rng("labeled"))
    filled = {pid: len(ds) for pid, ds in demos.items()}
    inputs.log(f"labeled: {', '.join(f'{pid}={n}' for pid, n in filled.items())} demos")
    empty = [pid for pid, n in filled.items() if n == 0]
    notes: tuple[str, ...] = ()
    if empty:
        notes = (f"labeled: no labeled demos fit predictor(s) {', '.join(empty)} (their fields are not in the dataset); use bootstrap",)
    return PassResult(with_demos(ir, demos), notes=notes)
