"""`evolve`: instructions rewritten by a reflection LM that reads the metric's feedback, kept on a Pareto front.

The idea is GEPA's (Agrawal et al., 2025).  Every candidate ever accepted is scored on each dev
example; the front holds the candidates that are best on at least one example and not dominated
by another, so the search keeps several ways of being right instead of one local optimum.  A round:

1. pick a parent from the front, weighted by how many dev examples it is best on (seeded);
2. run it on a minibatch of the trainset, keeping each example's trace, score and feedback;
3. pick one of its predictors, in turn (`--pick round-robin`) or the one the failures point at
   (`--pick blame`: a predictor that failed to answer, else the last one called before a wrong answer);
4. show the reflection LM (`--prompt-lm`) that predictor's instruction with its inputs, outputs and
   the feedback, and ask for a better instruction;
5. accept the child if it beats its parent on the same minibatch, then score it on dev and update the front.

After an accepted child, up to `--merges` times, two front members that descend from a common
ancestor and improved different predictors are merged (each predictor taken from the one that
changed it), and the merge is kept when it does at least as well as both on a few dev examples.
Budgets end the search with the best dev candidate so far.  Every candidate records its lineage.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any, Sequence

from .. import ir as I
from ..check import check_source
from ..datasets import Example
from ..errors import LmcError
from ..interpreter import run_example
from ..lower import lower
from ..prompts import show_value
from ..scoring import Outcome
from .lab import Findings, PassInputs, PassResult

REFLECT_INSTRUCTION = (
    "You improve the instruction of one step of a language-model program. You see the step's current instruction and "
    "what the step did on a few examples: its inputs, its outputs, the score the final answer got and the feedback on "
    "it. Work out what the failures have in common, then write a better instruction for the step: complete, specific "
    "to this task, and self-contained."
)
REFLECT_SOURCE = (
    '''
signature Reflect {
  "'''
    + REFLECT_INSTRUCTION
    + """"
  step: str "the step: its name, inputs and outputs"
  current: str "the step's current instruction"
  examples: str "the step at work on a few examples, each with its score and the metric's feedback"
  -> instruction: str "the new instruction, with no preamble"
}
module reflect = Predict(Reflect, max_tokens=400)
program main(step: str, current: str, examples: str) -> (instruction: str) {
  return reflect(step=step, current=current, examples=examples)
}
"""
)

PICKS = ("round-robin", "blame")
DEFAULT_MINIBATCH = 3  # examples a reflection reads (GEPA's default); small so each round is cheap


def minibatch_problem(minibatch: int, n_train: int) -> str:
    return f"--minibatch {minibatch} is larger than the trainset ({n_train} examples), which evolve's minibatches come from"


@dataclass(frozen=True)
class Member:
    """A candidate accepted into the pool: its program, its score on each dev example, and where it came from."""

    name: str
    ir: I.IR
    scores: tuple[float, ...]
    parents: tuple[int, ...] = ()
    round: int = 0
    predictor: str | None = None  # whose instruction its reflection changed (None: the start, or a merge)
    minibatch: tuple[float, float] | None = None  # the parent's and its own mean on the minibatch that admitted it

    @property
    def dev(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else 0.0


def pareto_front(scores: Sequence[Sequence[float]]) -> dict[int, int]:
    """Candidate index -> on how many dev examples it is best, for the candidates on the front.

    A candidate dominated by another (as good everywhere, better somewhere) or scoring exactly like an
    earlier one is left out: it adds no example the front does not already win."""
    n = len(scores)
    keep = []
    for i in range(n):
        dominated = any(
            j != i and (all(a >= b for a, b in zip(scores[j], scores[i])) and (any(a > b for a, b in zip(scores[j], scores[i])) or j < i))
            for j in range(n)
        )
        if not dominated:
            keep.append(i)
    counts: dict[int, int] = {}
    for e in range(len(scores[0]) if scores else 0):
        top = max(scores[i][e] for i in keep)
        for i in keep:
            if scores[i][e] == top:
                counts[i] = counts.get(i, 0) + 1
    return counts


def ancestors(pool: Sequence[Member], i: int) -> set[int]:
    seen: set[int] = set()
    todo = list(pool[i].parents)
    while todo:
        j = todo.pop()
        if j not in seen:
            seen.add(j)
            todo += pool[j].parents
    return seen


def merged_instructions(pool: Sequence[Member], i: int, j: int, a: int, pids: Sequence[str]) -> dict[str, str] | None:
    """Each predictor's instruction from whichever of i and j changed it since their ancestor a (both: the
    better on dev); None unless the result takes something new from each, so it differs from both."""
    take: dict[str, str] = {}
    from_i = from_j = False
    for pid in pids:
        ai, aj, aa = (pool[k].ir.predictor(pid).instructions for k in (i, j, a))
        if ai != aa and aj == aa:
            take[pid], from_i = ai, True
        elif aj != aa and ai == aa:
            take[pid], from_j = aj, True
        elif ai != aa:
            take[pid] = ai if pool[i].dev >= pool[j].dev else aj
        else:
            take[pid] = aa
    return take if from_i and from_j else None


def tunable(ir: I.IR) -> list[str]:
    """The predictors the program calls: a module only a metric calls (a judge) is not the program's to improve."""
    judged = {m for metric in ir.metrics if metric.program is not None for m in _modules_called(metric.program)}
    used = {m for prog in ir.programs for m in _modules_called(prog)}
    return [p.id for p in ir.predictors if p.module not in judged or p.module in used]


def _modules_called(node: Any) -> set[str]:
    found: set[str] = set()
    todo = [node]
    while todo:
        x = todo.pop()
        if isinstance(x, I.CallModule):
            found.add(x.module)
        if isinstance(x, (list, tuple)):
            todo += list(x)
        elif hasattr(x, "__dataclass_fields__"):
            todo += [getattr(x, f) for f in x.__dataclass_fields__]
    return found


def blame(outcomes: Sequence[Outcome], pids: Sequence[str], turn: int) -> str:
    """The predictor the minibatch's failures point at: one that failed to answer counts twice, the last one
    called before a wrong answer once; a tie (or no failure) goes to whose turn it is."""
    weight = dict.fromkeys(pids, 0)
    for o in outcomes:
        if o.passed:
            continue
        calls = [c for c in o.result.trace if c.predictor in weight]
        for c in calls:
            if c.error:
                weight[c.predictor] += 2
        answered = [c for c in calls if not c.error]
        if answered:
            weight[answered[-1].predictor] += 1
    order = [pids[(turn + k) % len(pids)] for k in range(len(pids))]
    return max(order, key=lambda pid: (weight[pid], -order.index(pid)))


def _fields(values: dict | None, limit: int = 500) -> str:
    if not values:
        return "(none)"
    return "\n".join(f"  {k}: {show_value(v, multiline_ok=False)[:limit]}" for k, v in values.items())


def reflective_examples(outcomes: Sequence[Outcome], pid: str) -> str:
    """The predictor at work on each minibatch example: its inputs and outputs, the score and the feedback."""
    blocks = []
    for k, o in enumerate(outcomes, 1):
        calls = [c for c in o.result.trace if c.predictor == pid][:2]
        lines = [f"Example {k}:"]
        if not calls:
            lines.append("The step was not called. Program inputs:\n" + _fields(o.example.data))
        for c in calls:
            lines.append("Inputs:\n" + _fields(c.inputs))
            lines.append(f"Failed to answer: {c.error}" if c.error else "Outputs:\n" + _fields(c.outputs))
        score = "none" if o.score is None else f"{o.score:.2f}"
        lines.append(f"Score: {score}")
        lines.append(f"Feedback: {o.feedback or o.error or 'none given'}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _short(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return '"' + (flat if len(flat) <= limit else flat[: limit - 1] + "…") + '"'


def _step_text(p: I.Predictor) -> str:
    ins = ", ".join(f"{f.name} ({f.type.name})" for f in p.signature.inputs)
    outs = ", ".join(f"{f.name} ({f.type.name})" for f in p.signature.outputs)
    return f"step '{p.id}' ({p.role} of module {p.module}): inputs {ins}; outputs {outs}"


def clean_instruction(text: Any) -> str | None:
    """The instruction of a reflection's answer: fences and quotes stripped; None when too short or too long."""
    t = str(text).strip()
    if t.startswith("```"):
        t = t.strip("`").strip()
    t = t.strip().strip('"').strip()
    return t if 12 <= len(t) <= 4000 else None


class Search:
    """One run of evolve: the pool of accepted candidates, the front over them, and the steps that grow it."""

    def __init__(self, ir: I.IR, inputs: PassInputs, found: Findings, minibatch: int, merges: int, pick: str):
        self.inputs, self.found, self.lab = inputs, found, inputs.lab
        self.minibatch, self.merges_left, self.pick = minibatch, merges, pick
        self.pids = tunable(ir) or [p.id for p in ir.predictors]
        self.pool: list[Member] = []
        self.seen: set[str] = set()  # fingerprints of every program tried, accepted or not
        self.turn = 0
        self.reflector = lower(check_source(REFLECT_SOURCE, "<evolve reflection>"))
        # A second evolve pass of one chain names its candidates evolve2:..., so lineages never mix.
        earlier = sum(1 for c in inputs.candidates if c.name.startswith("evolve") and c.name.endswith(":start"))
        self.tag = f"evolve{earlier + 1}" if earlier else "evolve"

    async def outcomes(self, ir: I.IR, examples: Sequence[Example], label: str = "") -> list[Outcome] | None:
        return await self.found.guard(self.lab.outcomes(ir, examples, label=label), "evolve")

    def front(self) -> dict[int, int]:
        return pareto_front([m.scores for m in self.pool])

    def admit(self, member: Member, **detail: Any) -> None:
        self.pool.append(member)
        self.seen.add(I.fingerprint(member.ir))
        parents = [self.pool[p].name for p in member.parents]
        lineage: dict[str, Any] = {"round": member.round, "parent": parents[0] if len(parents) == 1 else parents or None}
        if member.predictor is not None:
            lineage.update(predictor=member.predictor, instruction=member.ir.predictor(member.predictor).instructions)
        if member.minibatch is not None:
            lineage["minibatch"] = {"parent": round(member.minibatch[0], 6), "child": round(member.minibatch[1], 6)}
        self.found.record(member.name, member.ir, member.dev, lineage=lineage, **detail)
        front = self.front()
        best = max(self.pool, key=lambda m: m.dev)
        self.inputs.on_progress({"front": len(front), "pool": len(self.pool), "best_dev": best.dev})
        self.inputs.log(f"evolve: {member.name} dev {member.dev:.3f}; front {len(front)} of {len(self.pool)}, best dev {best.dev:.3f}")

    async def start(self, ir: I.IR) -> bool:
        outs = await self.outcomes(ir, self.lab.devset, label=f"{self.tag}:start")
        if outs is None:
            return False
        self.admit(Member(f"{self.tag}:start", ir, tuple(o.score or 0.0 for o in outs)))
        return True

    def choose_parent(self, r: int) -> int:
        front = self.front()
        ids = sorted(front)
        return self.inputs.rng(f"{self.tag}:parent{r}").choices(ids, weights=[front[i] for i in ids])[0]

    async def reflect(self, p: I.Predictor, outcomes: Sequence[Outcome], r: int) -> str | None:
        values = {"step": _step_text(p), "current": p.instructions, "examples": reflective_examples(outcomes, p.id)}
        res = await self.found.guard(run_example(self.lab.proposer(self.reflector), values), "evolve reflection")
        if res is None:
            return None
        if res.outputs is None:
            self.inputs.log(f"evolve: round {r}: the reflection LM gave no instruction: {res.error}")
            return None
        text = clean_instruction(res.outputs["instruction"])
        if text is None:
            self.inputs.log(
                f"evolve: round {r}: the reflection LM's instruction is too short or too long to use: {_short(str(res.outputs['instruction']))}"
            )
        return text

    async def round(self, r: int, batch: Sequence[Example]) -> None:
        i = self.choose_parent(r)
        parent = self.pool[i]
        before = await self.outcomes(parent.ir, batch)
        if before is None:
            return
        pid = blame(before, self.pids, self.turn) if self.pick == "blame" else self.pids[self.turn % len(self.pids)]
        self.turn += 1
        if all(o.passed for o in before):
            self.inputs.log(f"evolve: round {r}: {parent.name} already passes its minibatch; nothing to learn from")
            return
        text = await self.reflect(parent.ir.predictor(pid), before, r)
        if text is None or self.found.exhausted:
            return
        child = parent.ir.with_predictors([replace(parent.ir.predictor(pid), instructions=text)])
        if I.fingerprint(child) in self.seen:
            self.inputs.log(f"evolve: round {r}: the reflection repeated an instruction already tried")
            return
        self.seen.add(I.fingerprint(child))
        after = await self.outcomes(child, batch)
        if after is None:
            return
        old, new = (sum(o.score or 0.0 for o in outs) / len(outs) for outs in (before, after))
        if new <= old:
            self.inputs.log(f"evolve: round {r}: new instruction for {pid} rejected (minibatch {old:.3f} -> {new:.3f}): {_short(text)}")
            return
        dev = await self.outcomes(child, self.lab.devset, label=f"{self.tag}:round-{r}")
        if dev is None:
            return
        self.admit(Member(f"{self.tag}:round-{r}", child, tuple(o.score or 0.0 for o in dev), (i,), r, pid, (old, new)))
        if self.merges_left > 0 and len(self.pids) > 1:
            await self.merge(r)

    async def merge(self, r: int) -> None:
        found = self.find_merge(r)
        if found is None:
            return
        i, j, instructions = found
        self.merges_left -= 1
        base = self.pool[i].ir
        merged = base.with_predictors([replace(base.predictor(pid), instructions=t) for pid, t in instructions.items()])
        self.seen.add(I.fingerprint(merged))
        dev = self.lab.devset
        # The dev examples where the two parents disagree tell a merge apart from them; a few of those.
        differ = [e for e in range(len(dev)) if self.pool[i].scores[e] != self.pool[j].scores[e]]
        rest = [e for e in range(len(dev)) if e not in differ]
        rng = self.inputs.rng(f"{self.tag}:merge{r}")
        picked = sorted(
            (rng.sample(differ, min(len(differ), self.minibatch)) + rng.sample(rest, max(0, min(len(rest), self.minibatch - len(differ)))))
        )
        outs = await self.outcomes(merged, [dev[e] for e in picked])
        if outs is None:
            return
        got = sum(o.score or 0.0 for o in outs)
        bar = max(sum(self.pool[k].scores[e] for e in picked) for k in (i, j))
        name = f"{self.tag}:merge-{r}"
        if got < bar:
            self.inputs.log(
                f"evolve: {name} of {self.pool[i].name} and {self.pool[j].name} rejected ({got:.2f} < {bar:.2f} on {len(picked)} dev examples)"
            )
            return
        full = await self.outcomes(merged, dev, label=name)
        if full is not None:
            self.admit(Member(name, merged, tuple(o.score or 0.0 for o in full), (i, j), r), merge_of=[self.pool[i].name, self.pool[j].name])

    def find_merge(self, r: int) -> tuple[int, int, dict[str, str]] | None:
        ids = sorted(self.front())
        pairs = [(i, j) for i, j in itertools.combinations(ids, 2)]
        self.inputs.rng(f"{self.tag}:pairs{r}").shuffle(pairs)
        for i, j in pairs:
            anc_i, anc_j = ancestors(self.pool, i), ancestors(self.pool, j)
            if i in anc_j or j in anc_i:
                continue
            for a in sorted(anc_i & anc_j, key=lambda k: (-self.pool[k].dev, k)):
                take = merged_instructions(self.pool, i, j, a, self.pids)
                if take is None:
                    continue
                base = self.pool[i].ir
                merged = base.with_predictors([replace(base.predictor(pid), instructions=t) for pid, t in take.items()])
                if I.fingerprint(merged) not in self.seen:
                    return i, j, take
        return None


async def evolve(ir: I.IR, inputs: PassInputs, *, rounds: int, minibatch: int | None, merges: int, pick: str) -> PassResult:
    if pick not in PICKS:
        raise LmcError(f"--pick must be one of: {', '.join(PICKS)}; got '{pick}'")
    if minibatch is not None and minibatch > len(inputs.trainset):
        raise LmcError(minibatch_problem(minibatch, len(inputs.trainset)), hint="lower --minibatch")
    size = minibatch or min(DEFAULT_MINIBATCH, len(inputs.trainset))
    found = Findings(inputs)
    if not ir.predictors:
        found.notes.append("evolve: the program calls no LM, so there is no instruction to improve")
        return found.result(ir)
    search = Search(ir, inputs, found, size, merges, pick)
    if not await search.start(ir):
        return found.result(ir)
    for r in range(1, rounds + 1):
        if found.exhausted:
            break
        batch = inputs.rng(f"{search.tag}:batch{r}").sample(list(inputs.trainset), size)
        inputs.log(f"evolve: round {r}/{rounds}")
        await search.round(r, batch)
    best = max(range(len(search.pool)), key=lambda k: (search.pool[k].dev, -k))
    chosen = search.pool[best]
    inputs.log(f"evolve: kept {chosen.name} (dev {chosen.dev:.3f}) of {len(search.pool)} accepted candidates")
    return found.result(chosen.ir)


def lineage(candidates: Sequence[Any], final: I.IR) -> list[dict]:
    """The ancestry of the program a compile kept, oldest first: each evolve step that led to it, with its round,
    parent(s), the predictor it changed and the new instruction, its minibatch and dev scores."""
    by_name = {c.name: c for c in candidates if "lineage" in c.detail}
    fp = I.fingerprint(final)
    end = next((c for c in reversed(candidates) if "lineage" in c.detail and I.fingerprint(c.ir) == fp), None)
    if end is None:
        return []
    steps, todo, seen = [], [end.name], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in by_name:
            continue
        seen.add(name)
        c = by_name[name]
        info = dict(c.detail["lineage"])
        steps.append({"candidate": name, "dev": None if c.score is None else round(c.score, 6), **info})
        parent = info.get("parent")
        todo += parent if isinstance(parent, list) else [parent] if parent else []
    return sorted(steps, key=lambda s: (s["round"], s["candidate"]))
