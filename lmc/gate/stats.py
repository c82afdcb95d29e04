"""The statistics behind the gates: confidence intervals of a mean and the paired regression test."""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass
from statistics import NormalDist
from typing import Iterable, Sequence

# Bootstrap settings: enough resamples for stable 95% bounds, few enough to stay fast.
BOOTSTRAP_RESAMPLES = 2000
# Above this many examples the paired/mean bootstrap is replaced by the normal
# approximation, which the central limit theorem makes accurate there.
BOOTSTRAP_MAX_N = 2000


def _is_binary(values: Iterable[float]) -> bool:
    return all(v == 0.0 or v == 1.0 for v in values)


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(confidence)


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of an already sorted list."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _bootstrap_means(values: Sequence[float], seed: int) -> list[float]:
    rng = random.Random(seed)
    n = len(values)
    means = [math.fsum(rng.choices(values, k=n)) / n for _ in range(BOOTSTRAP_RESAMPLES)]
    means.sort()
    return means


def mean_ci(scores: Sequence[float], confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Mean and two-sided `confidence` interval: Wilson for 0/1 scores, seeded percentile bootstrap otherwise.

    >>> [round(x, 3) for x in mean_ci([1.0] * 8 + [0.0] * 2)]
    [0.8, 0.49, 0.943]
    """
    scores = [float(s) for s in scores]
    n = len(scores)
    if n == 0:
        raise ValueError("mean_ci needs at least one score")
    mean = math.fsum(scores) / n
    alpha = 1.0 - confidence
    if _is_binary(scores):
        z = _z(1.0 - alpha / 2)
        denom = 1.0 + z * z / n
        centre = (mean + z * z / (2 * n)) / denom
        half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / denom
        return mean, max(0.0, centre - half), min(1.0, centre + half)
    if n > BOOTSTRAP_MAX_N:
        sd = math.sqrt(math.fsum((s - mean) ** 2 for s in scores) / (n - 1))
        half = _z(1.0 - alpha / 2) * sd / math.sqrt(n)
        return mean, mean - half, mean + half
    means = _bootstrap_means(scores, seed)
    return mean, _quantile(means, alpha / 2), _quantile(means, 1 - alpha / 2)


def _upper_tail(k: int, m: int, p: float, mid: bool) -> float:
    """P(X >= k) for X ~ Binomial(m, p); with `mid`, P(X > k) + P(X = k) / 2 (the mid-p value)."""
    if k < 0:
        return 1.0
    if k > m:
        return 0.0
    if p <= 0.0:
        return (0.5 if mid else 1.0) if k == 0 else 0.0
    if p >= 1.0:
        return 0.5 if (mid and k == m) else 1.0
    # Log-space recurrence over the terms k..m: one lgamma per call instead of one per term.
    log_odds = math.log(p) - math.log1p(-p)
    t = math.lgamma(m + 1) - math.lgamma(k + 1) - math.lgamma(m - k + 1) + k * math.log(p) + (m - k) * math.log1p(-p)
    logs = [t]
    for j in range(k, m):
        t += math.log((m - j) / (j + 1)) + log_odds
        logs.append(t)
    top = max(logs)
    terms = [math.exp(x - top) for x in logs]
    if mid:
        terms[0] *= 0.5
    return min(1.0, math.exp(top) * math.fsum(terms))


def _lower_tail(k: int, m: int, p: float, mid: bool) -> float:
    """P(X <= k), or the mid-p version."""
    return _upper_tail(m - k, m, 1.0 - p, mid)


def _solve(f, target: float, increasing: bool) -> float:
    """The p in [0, 1] where the monotone f(p) crosses `target` (bisection; 45 steps give 3e-14)."""
    lo, hi = 0.0, 1.0
    for _ in range(45):
        mid = (lo + hi) / 2
        if (f(mid) < target) == increasing:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@functools.lru_cache(maxsize=4096)
def _mcnemar(b: int, c: int, alpha: float, mid: bool) -> tuple[float, float, float]:
    """One-sided p-value for "candidate no worse" and bounds on pi = P(a changed example improved).

    Cached because CI runs and the benchmark ask for the same few (b, c) pairs again and again.
    """
    m = b + c
    if m == 0:
        return 1.0, 0.5, 0.5
    # b ~ Bin(m, 1/2) under H0; a large b means the candidate lost examples.
    p_value = _upper_tail(b, m, 0.5, mid)
    # Clopper-Pearson (or mid-p) bounds, the interval that inverts the same binomial test.
    pi_hi = 1.0 if c == m else _solve(lambda p: _lower_tail(c, m, p, mid), alpha, increasing=False)
    pi_lo = 0.0 if c == 0 else _solve(lambda p: _upper_tail(c, m, p, mid), alpha, increasing=True)
    return p_value, pi_lo, pi_hi


@dataclass(frozen=True)
class PairedResult:
    """Candidate vs baseline on the same examples.

    `delta = cand_mean - base_mean`; `delta_lo`/`delta_hi` are the one-sided
    `confidence` bounds (together a two-sided 2*confidence-1 interval, e.g. 90%
    for 0.95); `p_value` is one-sided for "the candidate is no worse" (small: it got worse), and
    `p_improved` the mirror test of "the candidate is no better" (small: it got better).
    """

    n: int
    base_mean: float
    cand_mean: float
    delta: float
    delta_lo: float
    delta_hi: float
    p_value: float
    method: str
    regressed: bool
    flipped_to_fail: list[str]
    flipped_to_pass: list[str]
    max_drop: float = 0.0
    confidence: float = 0.95
    discordant: int = 0
    p_improved: float = 1.0

    def to_json(self) -> dict:
        return {
            "n": self.n,
            "base_mean": self.base_mean,
            "cand_mean": self.cand_mean,
            "delta": self.delta,
            "delta_lo": self.delta_lo,
            "delta_hi": self.delta_hi,
            "interval": f"one-sided {self.confidence:g} bounds",
            "p_value": self.p_value,
            "p_improved": self.p_improved,
            "method": self.method,
            "regressed": self.regressed,
            "max_drop": self.max_drop,
            "confidence": self.confidence,
            "discordant": self.discordant,
            "flipped_to_fail": list(self.flipped_to_fail),
            "flipped_to_pass": list(self.flipped_to_pass),
        }


METHODS = ("auto", "mcnemar-exact", "mcnemar-midp", "bootstrap", "normal")


def paired_test(
    base: Sequence[float],
    cand: Sequence[float],
    ids: Sequence[str],
    *,
    max_drop: float,
    confidence: float = 0.95,
    seed: int = 0,
    threshold: float = 1.0,
    method: str = "auto",
) -> PairedResult:
    """Paired comparison of per-example scores; `regressed` when the drop is significant *and* above `max_drop`.

    Hypothesis: H0 "the candidate is no worse than the baseline" (true delta >= 0)
    is tested one-sided at level 1 - confidence.  The gate fails when H0 is
    rejected (p < 1 - confidence, equivalently `delta_hi < 0`) and the observed
    drop exceeds `max_drop`.  Why not "fail only when `delta_hi < -max_drop`"
    (confident that the *true* drop exceeds max_drop)?  That rule also keeps
    false alarms under 1 - confidence, but with max_drop=0.02 it catches a real
    5-point drop on 300 examples only about a third of the time; ours keeps the
    same false-alarm guarantee for an unchanged program and roughly doubles the
    detection rate (bench/bench_gate.py).  Its cost: a real drop slightly under
    max_drop can fail sometimes.

    Methods: 0/1 scores use McNemar's exact binomial test on the discordant pairs
    (b examples pass->fail, c fail->pass; under H0 b ~ Bin(b+c, 1/2)) with a
    Clopper-Pearson bound on c/(b+c) mapped to delta = (c-b)/n, which makes
    `delta_hi < 0` exactly equivalent to p < alpha.  Other scores use a seeded
    paired bootstrap of the per-example differences (normal approximation above
    BOOTSTRAP_MAX_N examples).  `threshold` decides pass/fail for the flip lists,
    which are ordered by size of the change, then by position.

    >>> r = paired_test([1.0] * 100, [1.0] * 80 + [0.0] * 20, [str(i) for i in range(100)], max_drop=0.02)
    >>> r.regressed, r.method, len(r.flipped_to_fail)
    (True, 'mcnemar-exact', 20)
    """
    base = [float(x) for x in base]
    cand = [float(x) for x in cand]
    ids = [str(i) for i in ids]
    n = len(base)
    if len(cand) != n or len(ids) != n:
        raise ValueError(f"paired_test needs equal lengths, got base={n} cand={len(cand)} ids={len(ids)}")
    if n == 0:
        raise ValueError("paired_test needs at least one example")
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0.5 and 1, got {confidence}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    alpha = 1.0 - confidence
    base_mean = math.fsum(base) / n
    cand_mean = math.fsum(cand) / n
    diffs = [c - b for b, c in zip(base, cand)]
    delta = math.fsum(diffs) / n
    binary = _is_binary(base) and _is_binary(cand)
    if method == "auto":
        method = "mcnemar-exact" if binary else ("bootstrap" if n <= BOOTSTRAP_MAX_N else "normal")
    if method.startswith("mcnemar") and not binary:
        raise ValueError(f"{method} needs 0/1 scores")

    b = sum(1 for d in diffs if d < 0)
    c = sum(1 for d in diffs if d > 0)
    m = b + c
    if method.startswith("mcnemar"):
        mid = method == "mcnemar-midp"
        p_value, pi_lo, pi_hi = _mcnemar(b, c, alpha, mid)
        p_improved = _upper_tail(c, m, 0.5, mid) if m else 1.0
        lo, hi = (m / n) * (2 * pi_lo - 1), (m / n) * (2 * pi_hi - 1)
    elif method == "bootstrap":
        means = _bootstrap_means(diffs, seed)
        lo, hi = _quantile(means, alpha), _quantile(means, 1 - alpha)
        # Share of resampled means at or above zero: consistent with `hi < 0` up to resampling resolution.
        p_value = (1 + sum(1 for x in means if x >= 0)) / (len(means) + 1)
        p_improved = (1 + sum(1 for x in means if x <= 0)) / (len(means) + 1)
        if all(d == diffs[0] for d in diffs):
            p_value = 1.0 if diffs[0] >= 0 else 0.0
            p_improved = 1.0 if diffs[0] <= 0 else 0.0
    else:  # normal
        sd = math.sqrt(math.fsum((d - delta) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
        se = sd / math.sqrt(n)
        z = _z(confidence)
        lo, hi = delta - z * se, delta + z * se
        p_value = (1.0 if delta >= 0 else 0.0) if se == 0 else 1.0 - NormalDist().cdf(-delta / se)
        p_improved = (1.0 if delta <= 0 else 0.0) if se == 0 else 1.0 - NormalDist().cdf(delta / se)

    # A tiny epsilon so that a drop of exactly max_drop (e.g. 0.02 from 6/300) is not a float-rounding regression.
    regressed = p_value < alpha and delta < -max_drop - 1e-12

    order = sorted(range(n), key=lambda i: (-abs(diffs[i]), i))
    to_fail = [ids[i] for i in order if base[i] >= threshold > cand[i]]
    to_pass = [ids[i] for i in order if cand[i] >= threshold > base[i]]
    return PairedResult(
        n=n,
        base_mean=base_mean,
        cand_mean=cand_mean,
        delta=delta,
        delta_lo=lo,
        delta_hi=hi,
        p_value=p_value,
        method=method,
        regressed=regressed,
        flipped_to_fail=to_fail,
        flipped_to_pass=to_pass,
        max_drop=max_drop,
        confidence=confidence,
        discordant=m,
        p_improved=p_improved,
    )
