"""`bootstrap`: run a teacher over training examples; traces that pass the metric become demos for every predictor.

The teacher is the program itself, primed with labeled demos when the trainset can
fill them (a small model answers far more examples right with a few examples in its
prompt, so fewer calls are spent finding successes), optionally on `--teacher-lm`.
An example is never shown as its own demo.  Later rounds retry the failures with
sampling (temperature > 0) to find more successful traces.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from typing import Sequence

from .. import ir as I
from ..datasets import Example
from .demos import balanced, class_quota, enough, label_field, labeled_demos, with_demos
from .lab import Findings, PassInputs, PassResult

TEACHER_TEMPERATURE = 0.7
# With a graded metric (F1, a judge's 0-1 score) and no --threshold, few traces reach 1.0; demo slots
# still open after the teacher ran are filled with its best other traces: those in the top quarter of
# the scores that fell short (and above 0), best first.
GRADED_TOP_SHARE = 0.25


def _teacher_ir(ir: I.IR, inputs: PassInputs, max_labeled: int, round_: int) -> I.IR:
    labeled = labeled_demos(ir, inputs.trainset, max_labeled, inputs.rng("teacher"))
    usable = {pid: ds for pid, ds in labeled.items() if ds and not ir.predictor(pid).demos}
    teacher = with_demos(ir, usable) if usable else ir
    if round_ > 0:
        # A distinct temperature per round gives each round fresh samples (and fresh cache keys).
        temp = round(TEACHER_TEMPERATURE + 0.01 * round_, 2)
        teacher = teacher.with_predictors([p.with_settings(temperature=temp) for p in teacher.predictors])
    return replace(teacher, extras=())


class _Collection:
    """The demos a bootstrap has gathered per predictor, and which examples could still add one."""

    def __init__(self, ir: I.IR, metric: I.MetricIR, max_demos: int, want_all: bool):
        self.preds = {p.id: p for p in ir.predictors}
        self.demos: dict[str, list[dict]] = {pid: [] for pid in self.preds}
        self.max_demos, self.want_all, self.gold = max_demos, want_all, metric.gold or ""
        # Only a metric that compares the label with its gold value says what a passing trace's label is.
        equality = metric.kind == "builtin" and metric.builtin in ("accuracy", "exact_match")
        self.fields = {
            pid: (f if equality and f is not None and metric.field == f.name else None)
            for pid, f in ((pid, label_field(p)) for pid, p in self.preds.items())
        }
        self.tried: Counter = Counter()  # (predictor, gold class) -> examples of that class run this round

    def enough(self, pid: str) -> bool:
        return enough(self.demos[pid], self.preds[pid], self.max_demos)

    def full(self) -> bool:
        return not self.want_all and all(self.enough(pid) for pid in self.demos)

    def missing(self) -> int:
        """How many examples to run next: the demos still missing, never -j (so -j cannot change the artifact)."""
        return max(1, self.max_demos - min(len(v) for v in self.demos.values()))

    def useful(self, ex: Example) -> bool:
        """Whether running `ex` could add a demo somebody still needs."""
        if self.want_all:
            return True
        for pid, bucket in self.demos.items():
            if self.enough(pid):
                continue
            f = self.fields[pid]
            gold = ex.get(self.gold) if f is not None else None
            if f is None or gold not in f.type.args:
                return True  # nothing known about what this example would add
            quota, cap = class_quota(f, self.max_demos), 3 * self.max_demos
            have = Counter(d.get(f.name) for d in bucket)
            given_up = [c for c in f.type.args if have[c] < quota and self.tried[(pid, c)] >= cap]
            if self.tried[(pid, gold)] >= cap and have[gold] < quota:
                continue  # the teacher never gets this class right
            if have[gold] < quota or (given_up and len(bucket) < self.max_demos):
                return True
        return False

    def running(self, batch: list[Example]) -> None:
        for ex in batch:
            for pid, f in self.fields.items():
                if f is not None and ex.get(self.gold) in f.type.args:
                    self.tried[(pid, ex.get(self.gold))] += 1

    def add(self, example_id: str, trace: list) -> None:
        """The calls of a passing trace as demos, for the predictors that still need them."""
        for call in trace:
            bucket = self.demos.get(call.predictor)
            if bucket is None or call.outputs is None or call.error:
                continue
            if self.want_all or not self.enough(call.predictor):
                bucket.append({**call.inputs, **call.outputs, "_id": example_id})

    def result(self) -> dict:
        if self.want_all:
            return {pid: tuple(v) for pid, v in self.demos.items()}
        return {pid: balanced(v, self.preds[pid], self.max_demos) for pid, v in self.demos.items()}


async def collect(
    ir: I.IR,
    inputs: PassInputs,
    order: Sequence[Example],
    max_demos: int,
    *,
    max_labeled: int,
    max_rounds: int = 1,
    label: str = "bootstrap",
    want_all: bool = False,
) -> tuple[dict, dict]:
    """Demos per predictor from passing traces; stops once every predictor has `max_demos` (unless want_all).

    A classifier's demos must cover its classes (see `enough`). When the training examples carry the
    gold class, an example whose class every classifier already holds enough of is not run: a passing
    trace reproduces its gold label, so it could only add a demo nobody needs. A class the teacher
    never gets right stops being tried after 3 x max_demos of its examples; the others then fill up.
    """
    found = _Collection(ir, inputs.metric, max_demos, want_all)
    stats: dict = {"tried": 0, "passed": 0, "skipped": 0, "broke_rules": 0, "admitted": 0, "scores": []}
    near: list[tuple[float, int, str, list]] = []  # traces below the threshold, for a graded metric
    done: set[str] = set()
    for round_ in range(max(1, max_rounds)):
        teacher = _teacher_ir(ir, inputs, max_labeled, round_)
        rt = inputs.lab.teacher(teacher)
        pending = [ex for ex in order if ex.id not in done]
        tried_ids: set[str] = set()
        found.tried = Counter()
        while not found.full():
            # want_all runs everything, so any batch size gives the same demos.
            need = inputs.concurrency if want_all else found.missing()
            batch: list[Example] = []
            for ex in pending:
                if len(batch) >= need:
                    break
                if ex.id in tried_ids:
                    continue
                if found.useful(ex):
                    batch.append(ex)
                else:
                    stats["skipped"] += 1
                    tried_ids.add(ex.id)
            if not batch:
                break
            tried_ids.update(ex.id for ex in batch)
            found.running(batch)
            outcomes = await inputs.lab.run_all(teacher, batch, exclude_self=True, runtime=rt)
            # Results are consumed in example order, so concurrency never changes which demos are kept.
            for out in outcomes:
                stats["tried"] += 1
                if out.score is not None:
                    stats["scores"].append(out.score)
                if out.result.failed_checks:
                    # A trace whose suggest still failed would teach the rule's violation by example.
                    stats["broke_rules"] += 1
                    continue
                if not out.passed:
                    if out.score is not None and out.score > 0:
                        near.append((out.score, len(near), out.example.id, out.result.trace))
                    continue
                stats["passed"] += 1
                done.add(out.example.id)
                found.add(out.example.id, out.result.trace)
                if found.full():
                    break
        skipped = f", {stats['skipped']} examples of classes already covered not run" if stats["skipped"] else ""
        inputs.log(f"{label}: round {round_ + 1}: {stats['passed']}/{stats['tried']} traces passed{skipped}")
        if found.full():
            break
    _admit_best(found, inputs, near, stats, label)
    return found.result(), stats


def graded(scores: Sequence[float]) -> bool:
    return any(0.0 < s < 1.0 for s in scores)


def _admit_best(found: _Collection, inputs: PassInputs, near: list, stats: dict, label: str) -> None:
    """With a graded metric and the default threshold, fill open demo slots with the teacher's best traces."""
    if inputs.lab.threshold_given or found.full() or not near or not graded(stats["scores"]):
        return
    short = sorted((t[0] for t in near), reverse=True)
    cutoff = short[max(0, math.ceil(len(short) * GRADED_TOP_SHARE) - 1)]
    seen: set[str] = set()
    for score, _, example_id, trace in sorted(near, key=lambda t: (-t[0], t[1])):
        if score < cutoff or found.full():
            break
        if example_id in seen:  # tried again in a later round: its best trace is already in
            continue
        seen.add(example_id)
        found.add(example_id, trace)
        stats["admitted"] += 1
    if stats["admitted"]:
        inputs.log(
            f"{label}: the metric is graded and {stats['passed']} traces reached the threshold "
            f"{inputs.lab.threshold:g}; admitted the {stats['admitted']} best others (the top "
            f"{GRADED_TOP_SHARE:.0%} of the scores below it, >= {cutoff:.2f}); pass --threshold to choose"
        )


def no_demo_reason(stats: dict, threshold: float, max_demos: int) -> str | None:
    """Why a bootstrap that ran found no demo, and what to change; None when it found some (or ran nothing)."""
    if not stats["tried"] or stats["passed"] or stats["admitted"] or max_demos == 0:
        return None
    best = max(stats["scores"], default=None)
    why = f"no trace of {stats['tried']} passed the metric at threshold {threshold:g}"
    if best is not None:
        why += f" (best score {best:.2f})"
    if stats["broke_rules"]:
        why += f"; {stats['broke_rules']} broke a suggest"
    fixes = [
        "lower --threshold" if best is not None and best > 0 else "check that the metric can score the teacher's answers",
        "try a stronger --teacher-lm",
        "or add labeled demos (--max-labeled)",
    ]
    return why + ": " + ", ".join(fixes)


def merge_demos(ir: I.IR, boot: dict, inputs: PassInputs, max_demos: int, max_labeled: int, salt: str) -> dict:
    """Bootstrapped demos first, then labeled examples to fill up to max(max_demos, max_labeled) per predictor."""
    total = max(max_demos, max_labeled)
    labeled = labeled_demos(ir, inputs.trainset, total, inputs.rng(salt)) if max_labeled > 0 else {}
    out = {}
    for p in ir.predictors:
        chosen = list(boot.get(p.id, ()))[:max_demos]
        n_boot = len(chosen)
        used = {d.get("_id") for d in chosen}
        for d in labeled.get(p.id, ()):
            if len(chosen) >= total or len(chosen) - n_boot >= max_labeled:
                break
            if d.get("_id") not in used:
                chosen.append(d)
                used.add(d.get("_id"))
        out[p.id] = tuple(chosen)
    return out


async def bootstrap_ir(
    ir: I.IR, found: Findings, order: Sequence[Example], max_demos: int, label: str, *, max_labeled: int, max_rounds: int
) -> tuple[I.IR, dict]:
    """`ir` with bootstrapped demos (filled up with labeled ones); the teacher's pass rate goes to `found`."""
    inputs = found.inputs
    boot, stats = await collect(ir, inputs, order, max_demos, max_labeled=max_labeled, max_rounds=max_rounds, label=label)
    if stats["tried"]:
        found.train_scores.setdefault("teacher_pass_rate", round(stats["passed"] / stats["tried"], 4))
    reason = no_demo_reason(stats, inputs.lab.threshold, max_demos)
    if reason is not None:
        inputs.log(f"{label}: {reason}")
        found.notes.append(f"{label}: {reason}")
    if stats["broke_rules"]:
        found.notes.append(f"{label}: {stats['broke_rules']} traces not used as demos: a suggest failed on them")
    return with_demos(ir, merge_demos(ir, boot, inputs, max_demos, max_labeled, label)), stats


async def bootstrap(ir: I.IR, inputs: PassInputs, *, max_demos: int, max_labeled: int, max_rounds: int) -> PassResult:
    found = Findings(inputs)
    new_ir, stats = await bootstrap_ir(ir, found, inputs.trainset, max_demos, "bootstrap", max_labeled=max_labeled, max_rounds=max_rounds)
    counts = ", ".join(f"{p.id}={len(p.demos)}" for p in new_ir.predictors)
    inputs.log(f"bootstrap: {stats['passed']} passing traces of {stats['tried']} tried; demos {counts}")
    return found.result(new_ir)
