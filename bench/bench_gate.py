"""False-alarm and detection rates of the CI gate's paired test on simulated noisy 0/1 evaluations.

Model: each of n examples has a latent pass probability p_i (most near 1, some
near 0, a quarter in between, as with a sampled LM and no cache).  A run draws
score_i ~ Bernoulli(p_i).  "Unchanged" re-runs the same p for baseline and
candidate.  A 5-point drop lowers the mean pass probability by exactly 0.05,
either *concentrated* (a few previously reliable examples break: q_i = 0) or
*diffuse* (every p_i scaled down).  Each trial draws a fresh set of p_i.

Rules compared (all one-sided at 95%, max_drop 0.02 unless named):
  gate       lmc's rule: drop significant (p < 0.05) and observed drop > max_drop
  gate-0     the same with max_drop 0
  strict     confident the *true* drop exceeds max_drop (upper bound < -max_drop)
  gate-midp  lmc's rule with McNemar mid-p instead of exact
  naive      observed drop > max_drop, no test at all
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmc.gate import paired_test  # noqa: E402

N = 300
DROP = 0.05
MAX_DROP = 0.02
CONFIDENCE = 0.95
SEED = 20240601


def latent(n: int, rng: random.Random) -> list[float]:
    out = []
    for _ in range(n):
        u = rng.random()
        if u < 0.55:
            out.append(rng.betavariate(30, 1))  # reliably solved, occasional slip
        elif u < 0.75:
            out.append(rng.betavariate(1, 30))  # reliably failed, occasional lucky hit
        else:
            out.append(rng.betavariate(2, 2))  # genuinely uncertain examples
    return out


def drop_concentrated(p: list[float], drop: float, rng: random.Random) -> list[float]:
    """Break previously reliable examples (q = 0) until the mean falls by exactly `drop`."""
    q = list(p)
    need = drop * len(p)
    for i in rng.sample(range(len(p)), len(p)):
        if need <= 0:
            break
        if p[i] > 0.5:
            cut = min(p[i], need)
            q[i] = p[i] - cut
            need -= cut
    return q


def drop_diffuse(p: list[float], drop: float, rng: random.Random) -> list[float]:
    mean = sum(p) / len(p)
    return [x * (1 - drop / mean) for x in p]


def sample(p: list[float], rng: random.Random) -> list[float]:
    return [1.0 if rng.random() < x else 0.0 for x in p]


def _trial(kind: str, rng: random.Random) -> dict[str, bool]:
    p = latent(N, rng)
    q = {"unchanged": lambda: p, "concentrated": lambda: drop_concentrated(p, DROP, rng), "diffuse": lambda: drop_diffuse(p, DROP, rng)}[kind]()
    base, cand = sample(p, rng), sample(q, rng)
    ids = [f"ex-{i}" for i in range(N)]
    exact = paired_test(base, cand, ids, max_drop=MAX_DROP, confidence=CONFIDENCE)
    exact0 = paired_test(base, cand, ids, max_drop=0.0, confidence=CONFIDENCE)
    midp = paired_test(base, cand, ids, max_drop=MAX_DROP, confidence=CONFIDENCE, method="mcnemar-midp")
    return {
        "gate": exact.regressed,
        "gate-0": exact0.regressed,
        "strict": exact.delta_hi < -MAX_DROP,
        "gate-midp": midp.regressed,
        "naive": exact.delta < -MAX_DROP,
    }


def rates(kind: str, trials: int, seed: int) -> dict[str, float]:
    rng = random.Random(f"{seed}-{kind}")
    hits: dict[str, int] = {}
    for _ in range(trials):
        for rule, fired in _trial(kind, rng).items():
            hits[rule] = hits.get(rule, 0) + int(fired)
    return {rule: round(count / trials, 4) for rule, count in hits.items()}


def run(trials: int = 200, precise_trials: int = 1000, seed: int = SEED) -> dict:
    """Figures for the gate: false-alarm rate (unchanged program) and detection rate of a 5-point drop."""
    start = time.perf_counter()
    out: dict = {"n_examples": N, "drop": DROP, "max_drop": MAX_DROP, "confidence": CONFIDENCE, "seed": seed, "trials": trials}
    for kind in ("unchanged", "concentrated", "diffuse"):
        out[kind] = rates(kind, trials, seed)
    out["precise_trials"] = precise_trials
    if precise_trials:
        out["precise"] = {kind: rates(kind, precise_trials, seed + 1) for kind in ("unchanged", "concentrated", "diffuse")}
    out["false_alarm_rate"] = out["unchanged"]["gate"]
    out["detection_rate"] = round((out["concentrated"]["gate"] + out["diffuse"]["gate"]) / 2, 4)
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


if __name__ == "__main__":
    fig = run()
    print(f"lmc gate on {fig['n_examples']} examples, 0/1 scores, max_drop {fig['max_drop']}, confidence {fig['confidence']}")
    print(f"false-alarm rate (unchanged program, {fig['trials']} re-runs): {fig['false_alarm_rate']:.1%}  (target <= 5%)")
    print(f"detection rate (true 5-point drop, {fig['trials']} runs, mean of concentrated/diffuse): {fig['detection_rate']:.1%}")
    for label, block in (("", fig), (f" ({fig['precise_trials']} trials)", fig.get("precise", {}))):
        if not block:
            continue
        print(f"\nrule        unchanged  concentrated  diffuse{label}")
        for rule in ("gate", "gate-0", "strict", "gate-midp", "naive"):
            print(f"{rule:<11} {block['unchanged'][rule]:>8.1%}  {block['concentrated'][rule]:>12.1%}  {block['diffuse'][rule]:>7.1%}")
    print(f"\n{fig['seconds']}s")
    print(json.dumps(fig, sort_keys=True))
