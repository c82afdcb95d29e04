"""What each declaration accepts: settings every module takes, lm settings, retriever kinds, builtin tools and metrics.

The checker reads these tables instead of holding a method per setting: a setting is a `Rule`
(what values it takes), and each declaration or module kind lists the settings it accepts.
Module-kind facts (which settings a kind takes, their bounds, which are required, the outputs a
kind adds) live in lmc/kinds.py, one description per kind; `kind_rule` turns a kind's setting into a `Rule`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .kinds import Setting

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

RULES: dict[str, Rule] = {
    "temperature": Rule("number", lo=0, hi=2, what="a number from 0 to 2"),
    "max_tokens": Rule("int", lo=0, lo_open=True, what="an int above 0"),
    "max_backtracks": Rule("int", lo=0, what="an int of 0 or more"),
    "lm": Rule("lm"),
    "instructions": Rule("str"),
    "stop": Rule("stop"),
    "truncate_inputs": Rule("bool"),
    "score_labels": Rule("bool"),
    "length_normalize": Rule("bool"),
    # lm declarations
    "api_base": Rule("str"),
    "api_key_env": Rule("str"),
    # retrievers
    "k": _INT_1,
    "text": Rule("str"),
    "model": Rule("str"),
}


def kind_rule(setting: Setting) -> Rule:
    """The rule for one module kind's own setting, from its description in lmc/kinds.py."""
    if setting.type in ("int", "number"):
        return Rule(setting.type, lo=setting.low, what=setting.expected())
    return Rule(setting.type)
