"""`knn`: a pool of demos per predictor stored in the artifact; at run time each input gets the k most
similar demos (BM25 over the input fields' text), so demos fit the example at hand."""

from __future__ import annotations

import math
from collections import Counter

from .. import ir as I
from ..prompts import show_value
from . import Context, labeled_demos, with_demos
from .bootstrap import collect

K1, B = 1.2, 0.75


def _tokens(text: str) -> list[str]:
    from ..retrieve import tokenize

    return tokenize(text)


def _text(p: I.Predictor, values: dict) -> str:
    return " ".join(show_value(values.get(f.name), multiline_ok=False) for f in p.signature.inputs if f.name in values)


def choose_demos(knn: dict, p: I.Predictor, values: dict, exclude: frozenset = frozenset()) -> tuple[dict, ...]:
    """The k pool demos most similar to `values` (deterministic: ties keep pool order)."""
    pool = [d for d in knn["pools"].get(p.id, []) if d.get("_id") not in exclude]
    k = int(knn.get("k", 4))
    if len(pool) <= k:
        return tuple(pool)
    docs = [_tokens(_text(p, d)) for d in pool]
    query = _tokens(_text(p, values))
    n = len(docs)
    avg = sum(len(d) for d in docs) / n or 1.0
    df = Counter(t for d in docs for t in set(d))
    scores = []
    for i, d in enumerate(docs):
        tf = Counter(d)
        s = 0.0
        for t in set(query):
            if t in tf:
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                s += idf * tf[t] * (K1 + 1) / (tf[t] + K1 * (1 - B + B * len(d) / avg))
        scores.append((-s, i))
    scores.sort()
    # Most similar last: a demo right before the query influences small models most.
    return tuple(pool[i] for _, i in reversed(scores[:k]))


async def run(ir: I.IR, ctx: Context) -> I.IR:
    k = int(ctx.opt("k", ctx.opt("max_demos", 4)))
    zero = with_demos(ir, {p.id: () for p in ir.predictors})
    boot, stats = await collect(zero, ctx, ctx.trainset, k, label="knn", want_all=True)
    labeled = labeled_demos(ir, ctx.trainset, len(ctx.trainset), ctx.rng("knn"))
    pools = {}
    for p in ir.predictors:
        pool = list(boot.get(p.id, ()))
        have = {d.get("_id") for d in pool}
        pool += [d for d in labeled.get(p.id, ()) if d.get("_id") not in have]
        pools[p.id] = pool
    ctx.log(f"knn: pools {', '.join(f'{pid}={len(v)}' for pid, v in pools.items())}, k={k}")
    return zero.with_extra("knn", {"k": k, "method": "bm25", "pools": pools})
