"""Built-in metrics over plain values: `(gold, pred) -> float` in [0, 1], with answer normalization."""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

from lmc import ir as I
from lmc.errors import ConfigError, LmcError, did_you_mean, one_of

_ARTICLES = {"a", "an", "the"}


def normalize_text(text: Any) -> str:
    """Lower-case, drop punctuation and the articles a/an/the, collapse whitespace.

    >>> normalize_text("  The Eiffel-Tower, in PARIS! ")
    'eiffeltower in paris'
    >>> normalize_text(normalize_text("An apple a day."))
    'apple day'
    """
    if text is None:
        return ""
    s = str(text).lower()
    # Punctuation is removed, not replaced by a space, so "Eiffel-Tower" and
    # "EiffelTower" agree; every Unicode punctuation category counts.
    s = "".join(ch for ch in s if not unicodedata.category(ch).startswith("P"))
    return " ".join(tok for tok in s.split() if tok not in _ARTICLES)


def _light(text: str) -> str:
    """Case and whitespace only: for labels, where punctuation may matter."""
    return " ".join(text.lower().split())


def _alternatives(gold: Any, pred: Any) -> list:
    """Gold given as a list means "any of these" unless the prediction is itself a list."""
    if isinstance(gold, (list, tuple)) and not isinstance(pred, (list, tuple)):
        return list(gold)
    return [gold]


def _best(fn: Callable[[Any, Any], float], gold: Any, pred: Any) -> float:
    alts = _alternatives(gold, pred)
    return max((fn(g, pred) for g in alts), default=0.0)


# ---------------------------------------------------------------- text metrics


def exact_match(gold: Any, pred: Any) -> float:
    """1.0 when the normalized texts are equal.

    >>> exact_match("The Nile", "nile.")
    1.0
    >>> exact_match(["Paris", "City of Paris"], "city of paris")
    1.0
    """
    if pred is None:
        return 0.0
    return _best(lambda g, p: float(normalize_text(g) == normalize_text(p)), gold, pred)


def _f1_one(gold: Any, pred: Any) -> float:
    g = normalize_text(gold).split()
    p = normalize_text(pred).split()
    if not g or not p:
        return float(g == p)
    common = sum((Counter(g) & Counter(p)).values())
    if common == 0:
        return 0.0
    precision = common / len(p)
    recall = common / len(g)
    return 2 * precision * recall / (precision + recall)


def f1(gold: Any, pred: Any) -> float:
    """Token-overlap F1 of the normalized texts (two empty texts score 1.0).

    >>> round(f1("Marie Curie", "Curie"), 3)
    0.667
    """
    if pred is None:
        return 0.0
    return _best(_f1_one, gold, pred)


def _contains_tokens(needle: str, hay: str) -> bool:
    # Token-boundary containment, so gold "4" is not found inside "42".
    if not needle:
        return not hay
    return f" {needle} " in f" {hay} "


def contains(gold: Any, pred: Any) -> float:
    """1.0 when the normalized gold appears, as whole words, inside the normalized prediction.

    >>> contains("Danube", "It is the river Danube.")
    1.0
    >>> contains("4", "42")
    0.0
    """
    if pred is None:
        return 0.0
    return _best(lambda g, p: float(_contains_tokens(normalize_text(g), normalize_text(p))), gold, pred)


# ---------------------------------------------------------------- labels and numbers


def _same(gold: Any, pred: Any) -> bool:
    if isinstance(gold, str) and isinstance(pred, str):
        return _light(gold) == _light(pred)
    if isinstance(gold, bool) or isinstance(pred, bool):
        return type(gold) is type(pred) and gold == pred
    if isinstance(gold, (list, tuple)) and isinstance(pred, (list, tuple)):
        return len(gold) == len(pred) and all(_same(g, p) for g, p in zip(gold, pred))
    if isinstance(gold, dict) and isinstance(pred, dict):
        return gold.keys() == pred.keys() and all(_same(gold[k], pred[k]) for k in gold)
    return gold == pred


def accuracy(gold: Any, pred: Any) -> float:
    """1.0 when equal; strings compare ignoring case and surrounding/repeated whitespace.

    >>> accuracy("Positive", " positive ")
    1.0
    >>> accuracy(True, 1)
    0.0
    """
    return _best(lambda g, p: float(_same(g, p)), gold, pred)


_NUMBER = re.compile(
    r"""
    (?<![\w.])                                   # not glued to a word or another number
    [-+]?
    (?: \d{1,3}(?:,\d{3})+ | \d+ )(?:\.\d+)?     # 1,234.5  or 1234.5
    (?: [eE][-+]?\d+ )?
    (?: \s*/\s* \d+ (?!\d|\.\d) )?               # an optional fraction denominator
    | (?<![\w.])[-+]?\.\d+                       # .5
    """,
    re.VERBOSE,
)


def parse_number(value: Any) -> float | None:
    """The number a value stands for, or None.

    Strings may carry thousands separators, currency, units or surrounding words;
    when a string holds several numbers the last one is taken (models usually end
    with the answer).

    >>> parse_number("$1,234")
    1234.0
    >>> parse_number("42 apples")
    42.0
    >>> parse_number("3/4")
    0.75
    >>> parse_number("5 + 3 = 8")
    8.0
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    text = value.replace("\u2212", "-").replace("\u00a0", " ")
    matches = _NUMBER.findall(text)
    if not matches:
        return None
    token = re.sub(r"\s+", "", matches[-1]).replace(",", "")
    try:
        if "/" in token:
            num, den = token.split("/")
            if float(den) == 0:
                return None
            return float(Fraction(num) / Fraction(den))
        number = float(token)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _numeric_one(gold: Any, pred: Any) -> float:
    g = parse_number(gold)
    p = parse_number(pred)
    if g is None or p is None:
        return 0.0
    if g.is_integer() and p.is_integer() and max(abs(g), abs(p)) < 2**53:
        # Two whole numbers are exact: 999999 is not 1000000, tolerance or not.
        return float(g == p)
    return float(math.isclose(g, p, rel_tol=1e-6, abs_tol=1e-9))


def numeric(gold: Any, pred: Any) -> float:
    """1.0 when both parse to numbers equal within a relative tolerance of 1e-6 (absolute 1e-9).

    Two whole numbers (below 2**53) must be equal exactly.

    >>> numeric(1234, "The total is $1,234.")
    1.0
    >>> numeric("0.75", "3/4")
    1.0
    >>> numeric(3, "three")
    0.0
    """
    return _best(_numeric_one, gold, pred)


# ---------------------------------------------------------------- retrieval


def passage_match(gold: Any, passages: Any) -> float:
    """1.0 when a gold answer appears (normalized, as whole words) in any retrieved passage.

    >>> passage_match("Volta", ["Alessandro Volta built the first battery.", "Unrelated."])
    1.0
    """
    if passages is None:
        return 0.0
    if not isinstance(passages, (list, tuple)):
        passages = [passages]
    normalized = [normalize_text(p) for p in passages]
    golds = list(gold) if isinstance(gold, (list, tuple)) else [gold]
    for g in golds:
        ng = normalize_text(g)
        if ng and any(_contains_tokens(ng, p) for p in normalized):
            return 1.0
    return 0.0


# ---------------------------------------------------------------- feedback


def _shown(value: Any, limit: int = 120) -> str:
    text = repr(value) if not isinstance(value, str) else '"' + value + '"'
    return text if len(text) <= limit else text[: limit - 1] + "…"


def explain(name: str, gold: Any, pred: Any, score: float) -> str:
    """What a built-in metric says about one prediction: the score's reason in words, for the people and
    the optimizers (evolve) that read it.

    >>> explain("accuracy", "positive", "negative", 0.0)
    'wrong: expected "positive", got "negative"'
    >>> explain("numeric", 12, "about 15", 0.0)
    'wrong: expected 12, got "about 15" (read as 15)'
    """
    if pred is None:
        return f"no answer; expected {_shown(gold)}"
    if score >= 1.0:
        return f"correct: {_shown(pred)}"
    verdict = "partly right" if score > 0 else "wrong"
    if name == "numeric":
        parsed = parse_number(pred)
        read = "not a number" if parsed is None else f"read as {parsed:g}"
        return f"{verdict}: expected {_shown(gold)}, got {_shown(pred)} ({read})"
    if name == "f1":
        alts = _alternatives(gold, pred)
        g = normalize_text(max(alts, key=lambda a: _f1_one(a, pred)) if alts else gold).split()
        p = normalize_text(pred).split()
        missing = [w for w in g if w not in p]
        extra = [w for w in p if w not in g]
        parts = [f"{verdict} (token F1 {score:.2f}): expected {_shown(gold)}, got {_shown(pred)}"]
        if missing:
            parts.append("missing words: " + " ".join(missing[:12]))
        if extra:
            parts.append("extra words: " + " ".join(extra[:12]))
        return "; ".join(parts)
    if name == "contains":
        return f"{verdict}: the answer {_shown(pred)} does not contain {_shown(gold)}"
    if name == "passage_match":
        return f"{verdict}: no retrieved passage contains {_shown(gold)}"
    if name == "exact_match":
        return f"{verdict}: expected {_shown(gold)}, got {_shown(pred)} (compared ignoring case, punctuation and articles)"
    return f"{verdict}: expected {_shown(gold)}, got {_shown(pred)}"


# ---------------------------------------------------------------- registry


@dataclass(frozen=True)
class BuiltinMetric:
    """A built-in metric: its name, the function and a one-line description for `--help` and errors."""

    name: str
    fn: Callable[[Any, Any], float]
    description: str

    def __call__(self, gold: Any, pred: Any) -> float:
        return self.fn(gold, pred)


BUILTIN_METRICS: dict[str, BuiltinMetric] = {
    m.name: m
    for m in (
        BuiltinMetric("exact_match", exact_match, "normalized text equal (case, punctuation, articles ignored)"),
        BuiltinMetric("f1", f1, "token-overlap F1 of normalized texts, SQuAD-style"),
        BuiltinMetric("contains", contains, "normalized gold appears as whole words inside the prediction"),
        BuiltinMetric("accuracy", accuracy, "equal values; strings ignore case and extra whitespace"),
        BuiltinMetric("numeric", numeric, "numbers equal within 1e-6 relative tolerance; parses '1,234', '$5', '3/4'"),
        BuiltinMetric("passage_match", passage_match, "gold answer appears in any of a list of retrieved passages"),
    )
}


def builtin_metric(name: str) -> Callable[[Any, Any], float]:
    """The built-in metric function called `name`, or an LmcError suggesting the closest name."""
    metric = BUILTIN_METRICS.get(name)
    if metric is None:
        hint = did_you_mean(name, BUILTIN_METRICS)
        options = one_of(BUILTIN_METRICS)
        raise LmcError(f"unknown metric '{name}'", hint=f"{hint} {options}" if hint else options)
    return metric.fn


def split_feedback(value: Any) -> tuple[Any, str | None]:
    """A metric's result and its feedback: a `(score, "text")` pair gives both, anything else is the score alone."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], (str, type(None))):
        text = value[1].strip() if isinstance(value[1], str) else None
        return value[0], text or None
    return value, None


def to_score(value: Any) -> float:
    """A metric's result as a float in [0, 1]: bools count as 0/1; anything else out of range is an error."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1:
        return float(value)
    raise LmcError(f'a metric returned {value!r}; expected a number between 0 and 1 or a bool, optionally with feedback: (score, "text")')


# ---------------------------------------------------------------- which metric a command scores with


class MetricChoiceError(ConfigError):
    """`--metric` missing, ambiguous or unknown (exit 2)."""


def choose_metric(ir: I.IR, name: str | None, where: str) -> I.MetricIR:
    """The metric named `name` (a metric of the program, or a built-in applied to its only output), or the
    program's only metric; otherwise a one-line error listing the choices.  `lmc compile`, `lmc eval` and the
    Python API choose with it."""
    names = [m.name for m in ir.metrics]
    outs = ir.program().outputs
    if name:
        found = ir.metric(name)
        if found is not None:
            return found
        if name in BUILTIN_METRICS and len(outs) == 1:
            out = outs[0].name
            return I.MetricIR(name, "builtin", builtin=name, field=out, gold=out, spec=f"{name}({out})")
        builtins = list(BUILTIN_METRICS) if len(outs) == 1 else []
        hint = did_you_mean(name, names + builtins)
        listed = "defined: " + ", ".join(names) if names else "the program defines no metric"
        listed += f"; built-ins: {', '.join(builtins)}" if builtins else ""
        raise MetricChoiceError(f"{where}: unknown metric '{name}'; " + (f"{hint} " if hint else "") + listed)
    if len(names) == 1:
        return ir.metrics[0]
    if not names:
        raise MetricChoiceError(
            f"{where}: the program defines no metric; add one such as `metric acc = accuracy(answer)`, or pass --metric with a built-in"
        )
    raise MetricChoiceError(f"{where}: the program defines several metrics ({', '.join(names)}); choose one with --metric NAME")
