"""`knn`: a pool of demos per predictor stored in the artifact; at run time each input gets the k most
similar demos (see lmc/demos.py), so demos fit the example at hand."""

from __future__ import annotations

from .. import ir as I
from .bootstrap import collect
from .demos import labeled_demos, with_demos
from .lab import PassInputs, PassResult


async def knn(ir: I.IR, inputs: PassInputs, *, k: int, max_demos: int, max_labeled: int) -> PassResult:
    zero = with_demos(ir, {p.id: () for p in ir.predictors})
    boot, stats = await collect(zero, inputs, inputs.trainset, k, max_labeled=max_labeled, label="knn", want_all=True)
    labeled = labeled_demos(ir, inputs.trainset, len(inputs.trainset), inputs.rng("knn"))
    pools = {}
    for p in ir.predictors:
        pool = list(boot.get(p.id, ()))
        have = {d.get("_id") for d in pool}
        pool += [d for d in labeled.get(p.id, ()) if d.get("_id") not in have]
        pools[p.id] = pool
    inputs.log(f"knn: pools {', '.join(f'{pid}={len(v)}' for pid, v in pools.items())}, k={k}")
    return PassResult(zero.with_extra("knn", {"k": k, "method": "bm25", "pools": pools}))
