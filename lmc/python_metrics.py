"""Python metrics (`metric m = python("pkg.mod:fn")`): imported as the run allows, their arity read from their signature, called."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable

from . import ir as I
from .errors import ConfigError, RunError
from .metrics import split_feedback, to_score
from .runtime import load_python_ref

_ARITY: dict[Any, int] = {}  # python metric -> how many arguments it takes (2 or 3), decided once


def metric_arity(fn: Callable, what: str) -> int:
    """3 when `fn` takes (example, pred, trace), 2 for (example, pred); decided from its signature, once.

    Never by calling it and catching TypeError: that would hide a TypeError raised inside it."""
    known = _ARITY.get(fn)
    if known is not None:
        return known
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: the documented two-argument form
        _ARITY[fn] = 2
        return 2
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    star = any(p.kind is p.VAR_POSITIONAL for p in params)
    required_kw = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    arity = 3 if (star or len(positional) >= 3) else len(positional)
    if arity < 2 or len(required) > 3 or required_kw:
        shown = ", ".join(p.name for p in params) or "nothing"
        raise ConfigError(f"{what} takes ({shown}); expected (example, pred) or (example, pred, trace)")
    _ARITY[fn] = arity
    return arity


def check_metric(metric: I.MetricIR, policy: Any) -> None:
    """Import a python metric (as `policy` allows) and check its signature now, before any LM call is spent."""
    if metric.kind == "python":
        fn = load_python_ref("metric", metric.name, metric.ref, policy)
        metric_arity(fn, f"metric '{metric.name}' ({metric.ref})")


async def score_python(metric: I.MetricIR, policy: Any, example: dict, pred: dict, trace: list | None = None) -> tuple[float, str | None]:
    """The score of a python metric and its feedback (`(score, "text")` from the function); a metric that raises
    fails this example, named."""
    what = f"metric '{metric.name}' ({metric.ref})"
    fn = load_python_ref("metric", metric.name, metric.ref, policy)
    args = (example, pred, [c.to_json(False) for c in trace or ()])[: metric_arity(fn, what)]
    try:
        value = fn(*args)
        if asyncio.iscoroutine(value):
            value = await value
    except Exception as e:  # noqa: BLE001 - a bug in the user's metric fails this example, named
        raise RunError(f"{what} raised {type(e).__name__}: {e}", "metric") from None
    value, feedback = split_feedback(value)
    return to_score(value), feedback
