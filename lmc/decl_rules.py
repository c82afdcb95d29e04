"""What each declaration accepts: module kinds and their settings, lm settings, retriever kinds, builtin tools and metrics.

The checker reads these tables instead of holding a method per setting: a setting is a `Rule`
(what values it takes), and each declaration or module kind lists the settings it accepts.
Module-kind facts (settings, required settings, extra outputs) are meant to come from one
description per kind (lmc/kinds.py, issue 16) once that lands; until then they are here, together.
"""

from __future__ import annotations

from dataclasses import dataclass

MODULE_KINDS = ("Predict", "ChainOfThought", "MultiChainComparison", "ReAct", "ProgramOfThought", "BestOfN")
# Outputs a kind adds in front of its signature's outputs.
EXTRA_OUTPUTS: dict[str, tuple[str, ...]] = {
    "ChainOfThought": ("reasoning",), "ReAct": ("trajectory",), "ProgramOfThought": ("code",),
}
# Settings every module kind accepts, then each kind's own.
COMMON_SETTINGS = ("temperature", "max_tokens", "lm", "max_backtracks", "instructions", "stop", "truncate_inputs")
KIND_SETTINGS: dict[str, tuple[str, ...]] = {
    "Predict": (),
    "ChainOfThought": (),
    "MultiChainComparison": ("m",),
    "ReAct": ("tools", "max_iters"),
    "ProgramOfThought": ("max_iters", "timeout"),
    "BestOfN": ("n", "reward", "threshold"),
}
# A kind that cannot run without a setting: (setting, message, hint).
REQUIRED_SETTINGS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "BestOfN": (("reward", "BestOfN needs a reward metric", "add reward=<metric name>"),),
    "ReAct": (("tools", "ReAct needs tools", "add tools=[search, calc]"),),
}

LM_SETTINGS = ("temperature", "max_tokens", "api_base", "api_key_env", "stop")
RETRIEVER_KWARGS: dict[str, tuple[str, ...]] = {"bm25": ("text", "k"), "embeddings": ("model", "text", "k")}
BUILTIN_TOOLS = ("calculator",)
METRIC_BUILTINS = ("exact_match", "f1", "contains", "accuracy", "numeric", "passage_match")
DEFAULT_TOOL_DOC = {
    "calculator": "Evaluate an arithmetic expression such as '(3 + 4) * 2' and return the number.",
    "retriever": "Search the corpus; returns the most relevant passages.",
}


@dataclass(frozen=True)
class Rule:
    """The values a setting takes.  `kind` is number or int (a constant within `lo`..`hi`, named by `what`
    in messages), str, bool, stop (a string or a list of strings), or a reference: lm, tools, metric."""

    kind: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    what: str = ""


_INT_1 = Rule("int", lo=1, what="an int of 1 or more")
_NONNEG = Rule("number", lo=0, what="a number of 0 or more")

RULES: dict[str, Rule] = {
    "temperature": Rule("number", lo=0, hi=2, what="a number from 0 to 2"),
    "max_tokens": Rule("int", lo=0, lo_open=True, what="an int above 0"),
    "max_backtracks": Rule("int", lo=0, what="an int of 0 or more"),
    "lm": Rule("lm"),
    "instructions": Rule("str"),
    "stop": Rule("stop"),
    "truncate_inputs": Rule("bool"),
    "m": Rule("int", lo=2, what="an int of 2 or more"),
    "max_iters": _INT_1,
    "n": _INT_1,
    "timeout": _NONNEG,
    "threshold": _NONNEG,
    "tools": Rule("tools"),
    "reward": Rule("metric"),
    # lm declarations
    "api_base": Rule("str"),
    "api_key_env": Rule("str"),
    # retrievers
    "k": _INT_1,
    "text": Rule("str"),
    "model": Rule("str"),
}


def extra_output_names() -> frozenset[str]:
    """Every output some module kind adds (reasoning, trajectory, ...): hints prefer the signature's own."""
    return frozenset(x for outs in EXTRA_OUTPUTS.values() for x in outs)
