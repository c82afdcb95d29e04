"""Optimizer passes: each `async run(ir, ctx) -> ir` changes only predictor parameters or run-time extras.

`Context` carries what every pass reads: the datasets, the metric, the LM client,
the seed and the options; it scores candidate IRs (memoised by fingerprint) and
records every candidate tried for the compile report.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from .. import ir as I
from ..datasets import Example
from ..errors import BudgetExceeded, LmcError
from ..evaluate import Outcome, evaluate, mean_score

PASS_NAMES = ("none", "labeled", "bootstrap", "random-search", "mipro", "knn", "ensemble", "finetune-data")


@dataclass
class Candidate:
    name: str
    ir: I.IR
    score: float | None = None  # dev score
    detail: dict = field(default_factory=dict)


@dataclass
class Context:
    make_runtime: Callable[[I.IR], Any]  # IR -> interpreter.Runtime sharing one LM client
    trainset: list[Example]
    devset: list[Example]
    metric: I.MetricIR
    threshold: float = 1.0
    seed: int = 0
    concurrency: int = 8
    options: dict = field(default_factory=dict)
    log: Callable[[str], None] = lambda msg: None
    on_score: Callable[[str, float], None] = lambda name, score: None
    candidates: list[Candidate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    budget_exhausted: bool = False
    train_scores: dict = field(default_factory=dict)  # label -> score on train (e.g. the teacher's pass rate)
    teacher_runtime: Callable[[I.IR], Any] | None = None
    prompt_runtime: Callable[[I.IR], Any] | None = None
    on_record: Callable[["Candidate"], None] = lambda cand: None  # wall-clock timeline for the stats sidecar
    _scores: dict = field(default_factory=dict)

    def opt(self, key: str, default: Any) -> Any:
        value = self.options.get(key)
        return default if value is None else value

    def rng(self, salt: str = "") -> random.Random:
        return random.Random(f"{self.seed}:{salt}")

    async def run_all(self, ir: I.IR, examples: Sequence[Example], *, exclude_self: bool = False,
                      runtime: Any = None) -> list[Outcome]:
        rt = runtime or self.make_runtime(ir)
        return await evaluate(rt, examples, self.metric, threshold=self.threshold, concurrency=self.concurrency,
                              exclude_self=exclude_self)

    async def score(self, ir: I.IR, examples: Sequence[Example] | None = None, label: str = "") -> float:
        """Mean metric of `ir` on `examples` (default: the dev set); memoised per (IR, examples)."""
        examples = self.devset if examples is None else examples
        key = (I.fingerprint(ir), tuple(e.id for e in examples))
        if key in self._scores:
            return self._scores[key]
        outcomes = await self.run_all(ir, examples)
        value = mean_score(outcomes)
        self._scores[key] = value
        if label:
            self.on_score(label, value)
        return value

    def record(self, name: str, ir: I.IR, score: float | None, **detail: Any) -> Candidate:
        c = Candidate(name, ir, score, detail)
        self.candidates.append(c)
        self.on_record(c)
        return c

    def best(self) -> Candidate | None:
        scored = [c for c in self.candidates if c.score is not None]
        if not scored:
            return None
        # Highest score; ties go to the earliest (simplest) candidate, so results are stable.
        return max(scored, key=lambda c: (c.score, -self.candidates.index(c)))


def input_names(ir: I.IR) -> list[str]:
    return [f.name for f in ir.program().inputs]


# ---------------------------------------------------------------- demos


def demo_from(ex: Example, p: I.Predictor) -> dict | None:
    """A labeled demo for predictor `p` from a raw example, when the example holds its fields."""
    sig = p.signature
    if not all(f.name in ex.data for f in sig.inputs if f.type.kind != "optional"):
        return None
    outs = [f for f in sig.outputs if f.name in ex.data]
    needed = [f for f in sig.outputs if f.name not in ("reasoning", "rationale")]
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


def strip_extras(ir: I.IR) -> I.IR:
    return replace(ir, extras=())


async def guarded(ctx: Context, coro, what: str):
    """Run one step of a search; a spent budget ends the search gracefully."""
    try:
        return await coro
    except BudgetExceeded as e:
        ctx.budget_exhausted = True
        ctx.notes.append(f"budget exhausted during {what}: {e}")
        ctx.log(f"budget exhausted during {what}; keeping the best program so far")
        return None


async def run_pass(name: str, ir: I.IR, ctx: Context) -> I.IR:
    from . import bootstrap, ensemble, finetune, knn, labeled, mipro, none, random_search

    table = {
        "none": none.run, "labeled": labeled.run, "bootstrap": bootstrap.run,
        "random-search": random_search.run, "mipro": mipro.run, "knn": knn.run,
        "ensemble": ensemble.run, "finetune-data": finetune.run,
    }
    fn = table.get(name)
    if fn is None:
        from ..errors import did_you_mean

        hint = did_you_mean(name, table)
        raise LmcError(f"unknown optimizer '{name}'", hint=(hint + " " if hint else "") + "expected one of: " + ", ".join(PASS_NAMES))
    return await fn(ir, ctx)
