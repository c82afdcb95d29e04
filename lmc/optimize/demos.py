"""Demos from labeled examples: which examples fill a predictor's fields, balanced across a classifier's labels."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import replace
from typing import Sequence

from .. import ir as I
from ..datasets import Example
from ..kinds import THINKING_FIELDS
from ..prompts import show_value
from ..retrieve import tokenize


def demo_from(ex: Example, p: I.Predictor) -> dict | None:
    """A labeled demo for predictor `p` from a raw example, when the example holds its fields."""
    sig = p.signature
    if not all(f.name in ex.data for f in sig.inputs if f.type.kind != "optional"):
        return None
    outs = [f for f in sig.outputs if f.name in ex.data]
    needed = [f for f in sig.outputs if f.name not in THINKING_FIELDS]
    if not needed or not all(f.name in ex.data for f in needed):
        return None
    demo = {f.name: ex.data[f.name] for f in sig.inputs if f.name in ex.data}
    demo.update({f.name: ex.data[f.name] for f in outs})
    demo["_id"] = ex.id
    return demo


def label_field(p: I.Predictor) -> I.FieldSpec | None:
    """The predictor's class label: its only literal-union output, if it has exactly one."""
    lits = [f for f in p.signature.outputs if f.type.kind == "literal"]
    return lits[0] if len(lits) == 1 else None


def class_quota(f: I.FieldSpec, k: int) -> int:
    """Demos each class of label field `f` needs among k: k / classes, rounded up."""
    return -(-k // len(f.type.args))


def enough(demos: Sequence[dict], p: I.Predictor, k: int) -> bool:
    """k demos, and for a classifier at least k/classes of every class (small models copy the majority
    label of their demos); a class that never shows up stops counting after 3k candidates."""
    f = label_field(p)
    if f is None:
        return len(demos) >= k
    quota = class_quota(f, k)
    counts = {v: 0 for v in f.type.args}
    for d in demos:
        if d.get(f.name) in counts:
            counts[d.get(f.name)] += 1
    return len(demos) >= 3 * k or (len(demos) >= k and all(c >= quota for c in counts.values()))


def balanced(demos: Sequence[dict], p: I.Predictor, k: int) -> tuple[dict, ...]:
    """k demos; for a classifier, classes alternate (round robin in the order of the type's options)."""
    f = label_field(p)
    if f is None:
        return tuple(demos[:k])
    groups = {v: [d for d in demos if d.get(f.name) == v] for v in f.type.args}
    rest = [d for d in demos if d.get(f.name) not in groups]
    out: list[dict] = []
    while len(out) < k and any(groups.values()):
        for v in f.type.args:
            if groups[v] and len(out) < k:
                out.append(groups[v].pop(0))
    out += rest[: k - len(out)]
    return tuple(out)


def labeled_demos(ir: I.IR, examples: Sequence[Example], k: int, rng: random.Random) -> dict[str, tuple[dict, ...]]:
    """Up to k labeled demos per predictor that the examples can fill, in a seeded order (classes balanced)."""
    order = list(examples)
    rng.shuffle(order)
    out: dict[str, tuple[dict, ...]] = {}
    for p in ir.predictors:
        demos: list[dict] = []
        for ex in order:
            if enough(demos, p, k):
                break
            d = demo_from(ex, p)
            if d is not None:
                demos.append(d)
        out[p.id] = balanced(demos, p, k)
    return out


def with_demos(ir: I.IR, demos: dict[str, tuple[dict, ...]]) -> I.IR:
    return ir.with_predictors([replace(ir.predictor(pid), demos=tuple(ds)) for pid, ds in demos.items()])


# How a demo set can be arranged: the order it was built in (a classifier's classes alternate), reversed, or
# with the demos most like the dev set's inputs last (a small model copies the demo right before the query most).
ORDERS = ("built", "reversed", "similar-last")


def dev_profile(p: I.Predictor, examples: Sequence[Example]) -> Counter:
    """How often each word occurs in the dev examples' values of `p`'s inputs."""
    words: Counter = Counter()
    for ex in examples:
        for f in p.signature.inputs:
            if f.name in ex.data:
                words.update(tokenize(show_value(ex.data[f.name], multiline_ok=False)))
    return words


def _likeness(d: dict, p: I.Predictor, profile: Counter) -> float:
    words = [w for f in p.signature.inputs if f.name in d for w in tokenize(show_value(d[f.name], multiline_ok=False))]
    return sum(math.log1p(profile[w]) for w in words) / max(len(words), 1)


def arrange(demos: tuple[dict, ...], p: I.Predictor, count: int, order: int, profile: Counter) -> tuple[dict, ...]:
    """The first `count` demos of a set, in order number `order` of ORDERS."""
    chosen = tuple(demos[: max(0, count)])
    if ORDERS[order] == "reversed":
        return chosen[::-1]
    if ORDERS[order] == "similar-last":
        return tuple(d for _, _, d in sorted((_likeness(d, p, profile), i, d) for i, d in enumerate(chosen)))
    return chosen
