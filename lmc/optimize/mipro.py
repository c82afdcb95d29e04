"""`mipro`: LM-proposed instructions and bootstrapped demo sets, searched jointly with Bayesian optimization.

1. Demo-set candidates per predictor: bootstrapped from shuffled trainsets (plus none).
2. Instruction candidates per predictor: the current one plus proposals from the
   prompt LM, grounded in a summary of the data, the program's source, the step's
   fields and bootstrapped examples, each with a different style tip.
3. An optuna TPE search (seeded) over one (instruction, demo set, demo count from 0
   to the set's size, demo order) choice per predictor, each trial scored on a dev minibatch; every few trials the
   combination with the best average is scored on the full dev set.  The best
   full-dev combination is kept.
4. Its labels calibrated (contextual, or fitted on dev: the `calibrate` pass's tries) when that
   scores higher on dev.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from dataclasses import replace

from .. import ir as I
from ..check import check_source
from ..datasets import shuffle
from ..errors import LmcError
from ..interpreter import run_example
from ..lower import lower
from ..prompts import show_value
from .bootstrap import collect, merge_demos
from .calibrate import calibrate_best
from .demos import ORDERS, arrange, dev_profile, with_demos
from .lab import Candidate, Findings, PassInputs, PassResult

TIPS = (
    "Keep the instruction short and direct.",
    "Mention what a good answer looks like.",
    "Ask for careful, step-by-step attention to the input.",
    "Describe the task as an expert would.",
    "Point out a common mistake to avoid.",
    "Be specific about the answer's format.",
)

PROPOSER_SOURCE = """
signature ProposeInstruction {
  "You improve the instruction of one step of a language-model program so that the step gives better answers."
  code: str "the program's source code"
  dataset: str "a summary of the training data"
  step: str "the step to instruct: its name, inputs and outputs"
  examples: str "a few inputs and outputs of this step that were judged correct"
  current: str "the step's current instruction"
  tip: str "a style hint for the new instruction"
  -> instruction: str "the new instruction: one to three sentences, no preamble"
}
module propose = Predict(ProposeInstruction, temperature=0.9, max_tokens=160)
program main(code: str, dataset: str, step: str, examples: str, current: str, tip: str) -> (instruction: str) {
  return propose(code=code, dataset=dataset, step=step, examples=examples, current=current, tip=tip)
}
"""


def minibatch_problem(minibatch: int, n_dev: int) -> str:
    return f"--minibatch {minibatch} is larger than the dev set ({n_dev} examples)"


def data_summary(examples) -> str:
    """A short, deterministic description of the trainset: size, fields, label balance, lengths."""
    ex = examples
    lines = [f"{len(ex)} training examples."]
    fields = sorted({k for e in ex for k in e.data if k != "id"})
    for name in fields:
        values = [e.data.get(name) for e in ex if name in e.data]
        strs = [v for v in values if isinstance(v, str)]
        if strs and len(set(strs)) <= 8 and len(strs) >= 4:
            counts = Counter(strs).most_common()
            lines.append(f"Field '{name}' takes {len(counts)} values: " + ", ".join(f"{v} ({c})" for v, c in counts) + ".")
        elif strs:
            avg = sum(len(s.split()) for s in strs) / len(strs)
            lines.append(f"Field '{name}' is free text, about {avg:.0f} words on average.")
        elif values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            lines.append(f"Field '{name}' is numeric, from {min(values)} to {max(values)}.")
    return "\n".join(lines)


def _step_text(p: I.Predictor) -> str:
    ins = ", ".join(f"{f.name} ({f.type.name})" for f in p.signature.inputs)
    outs = ", ".join(f"{f.name} ({f.type.name})" for f in p.signature.outputs)
    return f"step '{p.id}' of kind {p.role}: inputs {ins}; outputs {outs}"


def _examples_text(demos: tuple[dict, ...], p: I.Predictor, limit: int = 3) -> str:
    names = [f.name for f in p.signature.inputs + p.signature.outputs]
    rows = []
    for d in demos[:limit]:
        rows.append("; ".join(f"{n}: {show_value(d[n], multiline_ok=False)[:200]}" for n in names if n in d))
    return "\n".join(rows) or "(none)"


def _clean_instruction(text: str) -> str | None:
    t = " ".join(str(text).strip().strip('"').split())
    if len(t) < 12 or len(t) > 800:
        return None
    return t


async def propose_instructions(ir: I.IR, inputs: PassInputs, demo_sets: dict, n: int) -> dict[str, list[str]]:
    proposer = lower(check_source(PROPOSER_SOURCE, "<mipro proposer>"))
    summary = data_summary(inputs.trainset)
    out: dict[str, list[str]] = {}
    for p in ir.predictors:
        found = [p.instructions]
        sets = [s for s in demo_sets.get(p.id, []) if s]
        for i in range(n):
            values = {
                "code": inputs.source[:4000],
                "dataset": summary,
                "step": _step_text(p),
                "examples": _examples_text(sets[i % len(sets)] if sets else (), p),
                "current": p.instructions,
                "tip": TIPS[i % len(TIPS)],
            }
            # A distinct temperature per proposal gives distinct samples and cache keys.
            prop = proposer.with_predictors([proposer.predictor("propose").with_settings(temperature=round(0.9 + 0.01 * i, 2))])
            # A proposal the LM cannot give (e.g. a small base model's empty completions) costs one
            # candidate, not the compile: only run-stopping failures (auth, unreachable, budget) raise.
            res = await run_example(inputs.lab.proposer(prop), values)
            if res.outputs is None:
                inputs.log(f"mipro: proposal {i + 1} for {p.id} failed: {res.error}")
                continue
            text = _clean_instruction(res.outputs["instruction"])
            if text and text not in found:
                found.append(text)
        out[p.id] = found
        inputs.log(f"mipro: {len(found) - 1} instruction proposals for {p.id}")
    return out


async def demo_sets_for(ir: I.IR, found: Findings, n_sets: int, max_demos: int, max_labeled: int) -> dict:
    """Demo-set candidates per predictor, bootstrapped from shuffled trainsets (index 0: the demos it has now)."""
    inputs = found.inputs
    demo_sets: dict[str, list[tuple]] = {p.id: [p.demos] for p in ir.predictors}
    zero = with_demos(ir, {p.id: () for p in ir.predictors})
    for i in range(n_sets):
        order = shuffle(inputs.trainset, inputs.seed * 1000 + 101 + i)
        k = inputs.rng(f"mipro:k{i}").randint(1, max_demos)
        got = await found.guard(collect(zero, inputs, order, k, max_labeled=max_labeled, label=f"mipro:demos-{i + 1}"), "mipro demo bootstrap")
        if got is None:
            break
        for pid, ds in merge_demos(zero, got[0], inputs, k, max_labeled, f"mipro:{i}").items():
            if ds not in demo_sets[pid]:
                demo_sets[pid].append(ds)
    return demo_sets


def _suggest(trial, ir: I.IR, texts: dict, demo_sets: dict, most: dict) -> dict:
    """One trial's choice per predictor: instruction, demo set, demo count and order."""
    choice = {}
    for p in ir.predictors:
        choice[f"{p.id}:i"] = trial.suggest_int(f"{p.id}:i", 0, len(texts[p.id]) - 1)
        choice[f"{p.id}:d"] = trial.suggest_int(f"{p.id}:d", 0, len(demo_sets[p.id]) - 1)
        choice[f"{p.id}:n"] = trial.suggest_int(f"{p.id}:n", 0, most[p.id])
        choice[f"{p.id}:o"] = trial.suggest_int(f"{p.id}:o", 0, len(ORDERS) - 1)
    return choice


def _best(seen: dict[str, list[float]]) -> str:
    """The trial with the best mean minibatch score (ties: the one scored on more minibatches)."""
    return max(seen, key=lambda k: (sum(seen[k]) / len(seen[k]), len(seen[k])))


def _save_for_dev(seen: dict, full_scores: dict, left: int | None, need: float) -> bool:
    """Whether the trials must stop now so that one candidate can still be scored on the whole dev set."""
    return bool(seen) and not full_scores and left is not None and left < need


def _spent(before: int | None, after: int | None) -> int:
    return 0 if before is None or after is None else before - after


async def mipro(
    ir: I.IR,
    inputs: PassInputs,
    *,
    candidates: int,
    instructions: int,
    trials: int,
    minibatch: int | None,
    full_eval_every: int,
    max_demos: int,
    max_labeled: int,
) -> PassResult:
    try:
        import optuna
    except ImportError:  # pragma: no cover - a declared dependency
        raise LmcError("mipro needs optuna; reinstall lmc") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)

    devset = inputs.devset
    if minibatch is not None and minibatch > len(devset):
        raise LmcError(minibatch_problem(minibatch, len(devset)), hint="lower --minibatch or give a larger --dev set")
    minibatch = minibatch or min(25, len(devset))
    found = Findings(inputs)

    # 1. demo sets and 2. instruction candidates per predictor (index 0: what the program has now)
    demo_sets = await demo_sets_for(ir, found, candidates, max_demos, max_labeled)
    proposed = await found.guard(propose_instructions(ir, inputs, demo_sets, instructions), "instruction proposals")
    texts = proposed if proposed is not None else {p.id: [p.instructions] for p in ir.predictors}

    # Demo count (0 .. the largest set) and order are searched too: small models often do best with 1-2 demos,
    # and the order of the same demos moves their accuracy.
    most = {p.id: max(len(s) for s in demo_sets[p.id]) for p in ir.predictors}
    profiles = {p.id: dev_profile(p, devset) for p in ir.predictors}

    def build(choice: dict) -> I.IR:
        return ir.with_predictors(
            [
                replace(
                    p,
                    instructions=texts[p.id][choice[f"{p.id}:i"]],
                    demos=arrange(demo_sets[p.id][choice[f"{p.id}:d"]], p, choice[f"{p.id}:n"], choice[f"{p.id}:o"], profiles[p.id]),
                )
                for p in ir.predictors
            ]
        )

    # 3. joint Bayesian search over minibatches, with periodic full evaluations
    sampler = optuna.samplers.TPESampler(seed=inputs.seed, n_startup_trials=min(5, trials))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    seen: dict[str, list[float]] = defaultdict(list)
    choices: dict[str, dict] = {}
    full_scores: dict[str, float] = {}
    base = {}
    for p in ir.predictors:
        base.update({f"{p.id}:i": 0, f"{p.id}:d": 0, f"{p.id}:n": len(p.demos), f"{p.id}:o": 0})
    base_key = json.dumps(base, sort_keys=True)

    async def full_eval(key: str) -> None:
        if key in full_scores or found.exhausted:
            return
        cand = build(choices[key])
        score = await found.guard(inputs.lab.score(cand, label="mipro:full"), "mipro full evaluation")
        if score is None:
            return
        full_scores[key] = score
        found.record(f"mipro:trial-{len(full_scores)}", cand, score, choice=choices[key])
        inputs.log(f"mipro: full dev score {score:.3f}")

    per_example = 0.0  # LM calls one minibatch example has cost so far, the most of any trial
    for t in range(trials):
        if found.exhausted:
            break
        left = inputs.lab.calls_left()
        if _save_for_dev(seen, full_scores, left, per_example * (minibatch + len(devset))):
            # Another trial could leave too little of --max-calls to score anything on the whole dev set: the
            # search would end with no program measured. Score the best minibatch candidate while it fits.
            found.notes.append(f"mipro: {left} LM calls left of --max-calls; the trials stop so the best of them is scored on dev")
            inputs.log(found.notes[-1])
            await full_eval(_best(seen))
            break
        trial = study.ask()
        choice = _suggest(trial, ir, texts, demo_sets, most)
        key = json.dumps(choice, sort_keys=True)
        choices[key] = choice
        batch = inputs.rng(f"mipro:batch{t}").sample(devset, minibatch)
        before = inputs.lab.calls_left()
        score = await found.guard(inputs.lab.score(build(choice), batch), "mipro trial")
        per_example = max(per_example, _spent(before, inputs.lab.calls_left()) / minibatch)
        if score is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            break
        study.tell(trial, score)
        seen[key].append(score)
        inputs.log(f"mipro: trial {t + 1}/{trials} minibatch {score:.3f}")
        if (t + 1) % full_eval_every == 0 or t == trials - 1:
            await full_eval(_best(seen))
    if base_key not in full_scores and base_key in choices:
        await full_eval(base_key)
    if not full_scores:
        return found.result(ir)
    best_key = max(full_scores, key=lambda k: (full_scores[k], -list(full_scores).index(k)))
    inputs.log(f"mipro: best full dev score {full_scores[best_key]:.3f}")
    best = Candidate("mipro:best", build(choices[best_key]), full_scores[best_key])
    return found.result(await calibrate_best(found, best, "mipro"))
