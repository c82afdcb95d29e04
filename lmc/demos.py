"""Which demos a predictor shows for one input: its own, or (after the `knn` pass) the most similar of a pool."""

from __future__ import annotations

import math
from collections import Counter

from . import ir as I
from .prompts import show_value
from .retrieve import tokenize

# BM25's usual constants: term-frequency saturation and length normalisation.
K1, B = 1.2, 0.75
DEFAULT_K = 4


def select_demos(ir: I.IR, p: I.Predictor, values: dict, exclude: frozenset = frozenset()) -> tuple[dict, ...]:
    """The demos `p` shows for `values`, never one whose id is in `exclude` (the example itself)."""
    knn = ir.extra("knn")
    if knn and p.id in knn.get("pools", {}):
        # Leave the example itself out of the pool before choosing, so it still gets k demos.
        return choose_demos(knn, p, values, exclude=exclude)
    if not exclude:
        return p.demos
    return tuple(d for d in p.demos if d.get("_id") not in exclude)


def _text(p: I.Predictor, values: dict) -> str:
    return " ".join(show_value(values.get(f.name), multiline_ok=False) for f in p.signature.inputs if f.name in values)


def choose_demos(knn: dict, p: I.Predictor, values: dict, exclude: frozenset = frozenset()) -> tuple[dict, ...]:
    """The k pool demos most similar to `values` by BM25 over the input fields (ties keep pool order).

    Written out rather than through bm25s (as retrieve.py is): the pool is a few dozen demos
    scored once per call, where building a bm25s index costs more than scoring, and every
    pool demo stays eligible even when it shares no word with the input."""
    pool = [d for d in knn["pools"].get(p.id, []) if d.get("_id") not in exclude]
    k = int(knn.get("k", DEFAULT_K))
    if len(pool) <= k:
        return tuple(pool)
    docs = [tokenize(_text(p, d)) for d in pool]
    query = tokenize(_text(p, values))
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
