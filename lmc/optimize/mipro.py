"""`mipro`: LM-proposed instructions and bootstrapped demo sets, searched jointly with Bayesian optimization.

1. Demo-set candidates per predictor: bootstrapped from shuffled trainsets (plus none).
2. Instruction candidates per predictor: the current one plus proposals from the
   prompt LM, grounded in a summary of the data, the program's source, the step's
   fields and bootstrapped examples, each with a different style tip.
3. An optuna TPE search (seeded) over one (instruction, demo set) choice per
   predictor, each trial scored on a dev minibatch; every few trials the
   combination with the best average is scored on the full dev set.  The best
   full-dev combination is kept.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from dataclasses import replace

from .. import ir as I
from ..datasets import shuffle
from ..errors import LmcError
from ..prompts import show_value
from . import Context, guarded, with_demos
from .bootstrap import collect, merge_demos

TIPS = (
    "Keep the instruction short and direct.",
    "Mention what a good answer looks like.",
    "Ask for careful, step-by-step attention to the input.",
    "Describe the task as an expert would.",
    "Point out a common mistake to avoid.",
    "Be specific about the answer's format.",
)

PROPOSER_SOURCE = '''
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
'''


def minibatch_problem(minibatch: int, n_dev: int) -> str:
    return f"--minibatch {minibatch} is larger than the dev set ({n_dev} examples)"


def data_summary(ctx: Context, ir: I.IR) -> str:
    """A short, deterministic description of the trainset: size, fields, label balance, lengths."""
    ex = ctx.trainset
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


async def propose_instructions(ir: I.IR, ctx: Context, demo_sets: dict, source: str, n: int) -> dict[str, list[str]]:
    from ..check import check_source
    from ..lower import lower
    from ..runner import run_one

    proposer = lower(check_source(PROPOSER_SOURCE, "<mipro proposer>"))
    rt = (ctx.prompt_runtime or ctx.make_runtime)(proposer)
    summary = data_summary(ctx, ir)
    out: dict[str, list[str]] = {}
    for p in ir.predictors:
        found = [p.instructions]
        sets = [s for s in demo_sets.get(p.id, []) if s]
        for i in range(n):
            inputs = {"code": source[:4000], "dataset": summary, "step": _step_text(p),
                      "examples": _examples_text(sets[i % len(sets)] if sets else (), p),
                      "current": p.instructions, "tip": TIPS[i % len(TIPS)]}
            # A distinct temperature per proposal gives distinct samples and cache keys.
            prop = proposer.with_predictors([proposer.predictor("propose").with_settings(temperature=round(0.9 + 0.01 * i, 2))])
            rt.ir = prop
            # A proposal the LM cannot give (e.g. a small base model's empty completions) costs one
            # candidate, not the compile: only run-stopping failures (auth, unreachable, budget) raise.
            res = await run_one(rt, inputs)
            if not res.ok:
                ctx.log(f"mipro: proposal {i + 1} for {p.id} failed: {res.error}")
                continue
            text = _clean_instruction(res.outputs["instruction"])
            if text and text not in found:
                found.append(text)
        out[p.id] = found
        ctx.log(f"mipro: {len(found) - 1} instruction proposals for {p.id}")
    return out


async def run(ir: I.IR, ctx: Context) -> I.IR:
    try:
        import optuna
    except ImportError:  # pragma: no cover - a declared dependency
        raise LmcError("mipro needs optuna; reinstall lmc") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)

    n_sets = int(ctx.opt("candidates", 6))
    n_instr = int(ctx.opt("instructions", 4))
    trials = int(ctx.opt("trials", 16))
    full_every = int(ctx.opt("full_eval_every", 5))
    max_demos = int(ctx.opt("max_demos", 4))
    max_labeled = int(ctx.opt("max_labeled", 4))
    minibatch = ctx.options.get("minibatch")
    if minibatch is not None and int(minibatch) > len(ctx.devset):
        raise LmcError(minibatch_problem(int(minibatch), len(ctx.devset)),
                       hint="lower --minibatch or give a larger --dev set")
    minibatch = int(minibatch or min(25, len(ctx.devset)))

    # 1. demo-set candidates per predictor (index 0 = the demos the program has now)
    demo_sets: dict[str, list[tuple]] = {p.id: [p.demos] for p in ir.predictors}
    zero = with_demos(ir, {p.id: () for p in ir.predictors})
    for i in range(n_sets):
        order = shuffle(ctx.trainset, ctx.seed * 1000 + 101 + i)
        k = ctx.rng(f"mipro:k{i}").randint(1, max_demos)
        got = await guarded(ctx, collect(zero, ctx, order, k, label=f"mipro:demos-{i + 1}"), "mipro demo bootstrap")
        if got is None:
            break
        merged = merge_demos(zero, got[0], ctx, k, max_labeled, f"mipro:{i}")
        for pid, ds in merged.items():
            if ds not in demo_sets[pid]:
                demo_sets[pid].append(ds)

    # 2. instruction candidates per predictor (index 0 = the current instruction)
    source = ctx.options.get("source", "")
    instructions = await guarded(ctx, propose_instructions(ir, ctx, demo_sets, source, n_instr), "instruction proposals")
    if instructions is None:
        instructions = {p.id: [p.instructions] for p in ir.predictors}

    def build(choice: dict) -> I.IR:
        preds = []
        for p in ir.predictors:
            preds.append(replace(p, instructions=instructions[p.id][choice[f"{p.id}:i"]],
                                 demos=demo_sets[p.id][choice[f"{p.id}:d"]]))
        return ir.with_predictors(preds)

    # 3. joint Bayesian search over minibatches, with periodic full evaluations
    sampler = optuna.samplers.TPESampler(seed=ctx.seed, n_startup_trials=min(5, trials))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    seen: dict[str, list[float]] = defaultdict(list)
    choices: dict[str, dict] = {}
    full_scores: dict[str, float] = {}
    base_key = json.dumps({**{f"{p.id}:i": 0 for p in ir.predictors}, **{f"{p.id}:d": 0 for p in ir.predictors}}, sort_keys=True)

    async def full_eval(key: str) -> None:
        if key in full_scores or ctx.budget_exhausted:
            return
        cand = build(choices[key])
        score = await guarded(ctx, ctx.score(cand, label="mipro:full"), "mipro full evaluation")
        if score is None:
            return
        full_scores[key] = score
        ctx.record(f"mipro:trial-{len(full_scores)}", cand, score, choice=choices[key])
        ctx.log(f"mipro: full dev score {score:.3f}")

    for t in range(trials):
        if ctx.budget_exhausted:
            break
        trial = study.ask()
        choice = {}
        for p in ir.predictors:
            choice[f"{p.id}:i"] = trial.suggest_int(f"{p.id}:i", 0, len(instructions[p.id]) - 1)
            choice[f"{p.id}:d"] = trial.suggest_int(f"{p.id}:d", 0, len(demo_sets[p.id]) - 1)
        key = json.dumps(choice, sort_keys=True)
        choices[key] = choice
        batch = ctx.rng(f"mipro:batch{t}").sample(ctx.devset, minibatch)
        score = await guarded(ctx, ctx.score(build(choice), batch), "mipro trial")
        if score is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            break
        study.tell(trial, score)
        seen[key].append(score)
        ctx.log(f"mipro: trial {t + 1}/{trials} minibatch {score:.3f}")
        if (t + 1) % full_every == 0 or t == trials - 1:
            best_key = max(seen, key=lambda k: (sum(seen[k]) / len(seen[k]), len(seen[k])))
            await full_eval(best_key)
    if base_key not in full_scores and base_key in choices:
        await full_eval(base_key)
    if not full_scores:
        return ir
    best_key = max(full_scores, key=lambda k: (full_scores[k], -list(full_scores).index(k)))
    ctx.log(f"mipro: best full dev score {full_scores[best_key]:.3f}")
    return build(choices[best_key])
