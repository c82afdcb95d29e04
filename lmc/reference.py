"""The language reference: lmc/help/language.md with its tables filled from the code's own tables, for docs/language.md and `lmc help`.

`{{table NAME}}` in the text is replaced by `TABLES[NAME]()`, built from what the checker, the
interpreter and the optimizer read (builtins, module kinds and their settings, metrics, passes
and their options, exit codes), so the page cannot say what the code does not do.

    python -m lmc.reference --write    # rewrite docs/language.md
    python -m lmc.reference --check    # exit 1 if docs/language.md is out of date
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Callable

from .builtins import BUILTINS
from .decl_rules import BUILTIN_TOOLS, DEFAULT_TOOL_DOC, LM_SETTINGS, RETRIEVER_KWARGS, RULES
from .errors import EXIT_CODES
from .kinds import COMMON_SETTINGS, KINDS
from .metrics import BUILTIN_METRICS
from .optimize import PASS_OPTIONS, PASSES, pass_name
from .optimize.options import OPTIONS
from .syntax import CONSTANTS, KEYWORDS

TEMPLATE = Path(__file__).parent / "help" / "language.md"
DOC = Path(__file__).resolve().parents[1] / "docs" / "language.md"
GENERATED_NOTE = (
    "<!-- Generated from lmc/help/language.md and lmc's own tables by `python -m lmc.reference --write`; "
    "edit those, not this file (tests/test_reference.py checks they agree). -->\n\n"
)


def _table(head: tuple[str, ...], rows) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(out)


def _code(x: str) -> str:
    return f"`{x}`"


def keywords() -> str:
    return ", ".join(_code(k) for k in sorted(KEYWORDS)) + "; and the constants " + ", ".join(_code(c) for c in CONSTANTS) + "."


def _takes(name: str) -> str:
    """In words, the values setting `name` takes (from the checker's rule for it)."""
    rule = RULES[name]
    return {
        "str": "a string",
        "bool": "`true` or `false`",
        "stop": "a string or a list of strings",
        "lm": 'the name of an `lm` of the file, or a litellm model such as `"openai/gpt-4o-mini"`',
        "tools": "a list of tools and retrievers, e.g. `[search, calc]`",
        "metric": "the name of a metric of the file",
    }.get(rule.kind, rule.what)


_SETTING_DOCS = {
    "temperature": "sampling temperature of the module's LM calls",
    "max_tokens": "the most tokens an answer may have",
    "lm": "which LM answers (default: the one `--lm` or `lmc.yaml` names)",
    "max_backtracks": "retries after a failed `assert`/`suggest` (default 2)",
    "instructions": "the module's instructions, replacing its signature's (an optimizer may change them)",
    "stop": "text that ends an answer",
    "truncate_inputs": "cut inputs longer than the LM's context instead of failing the example",
    "score_labels": (
        "choose a lone label output by each label's log-probability (default: on the embedded model, and on a server "
        "that echoes log-probabilities but takes no constraint; true: on every server too; false: decode it)"
    ),
    "length_normalize": "compare scored labels by log-probability per token (default false: summed)",
    "api_base": "the URL of an OpenAI-compatible server",
    "api_key_env": "the environment variable holding the key",
    "text": "the corpus field holding the passage (default `text`)",
    "k": "passages returned per query (default 3)",
    "model": "the embedding model",
}


def common_settings() -> str:
    return _table(("setting", "takes", "what it does"), ((_code(s), _takes(s), _SETTING_DOCS.get(s, "")) for s in COMMON_SETTINGS))


def lm_settings() -> str:
    return _table(("setting", "takes", "what it does"), ((_code(s), _takes(s), _SETTING_DOCS.get(s, "")) for s in LM_SETTINGS))


_KIND_DOCS = {
    "Predict": "one LM call: inputs in, outputs out",
    "ChainOfThought": "the LM writes its reasoning before the outputs",
    "MultiChainComparison": "m reasoning attempts, then one call that compares them and answers",
    "ReAct": "a loop of thought, tool call and observation, then the outputs",
    "ProgramOfThought": "the LM writes Python that computes the outputs; it runs in the sandbox",
    "BestOfN": "n samples, each scored by the reward metric; the best is kept",
}


def _kind_setting(st) -> str:
    """One kind's own setting: what it takes, its default, whether it must be given."""
    takes = {"tools": "a list of tools and retrievers, e.g. `[search, calc]`", "metric": "the name of a metric of the file"}
    text = f"`{st.name}`: " + takes.get(st.type, st.expected() if st.type in ("int", "number") else st.type)
    if st.required:
        return text + " (required)"
    return text + (f" (default {st.default})" if st.default is not None else "")


def kinds() -> str:
    rows = []
    for kind in KINDS.values():
        own = "; ".join(_kind_setting(st) for st in kind.settings) or "—"
        extra = ", ".join(_code(x) for x in kind.extra_outputs) or "—"
        rows.append((_code(kind.name), _KIND_DOCS.get(kind.name, ""), extra, own))
    return _table(("kind", "what it does", "adds outputs", "its own settings"), rows)


def retrievers() -> str:
    return _table(("kind", "settings"), ((_code(k), "; ".join(f"`{s}`: {_takes(s)}" for s in v)) for k, v in RETRIEVER_KWARGS.items()))


def tools() -> str:
    return _table(("tool", "does"), ((_code(f"{t}()"), DEFAULT_TOOL_DOC[t]) for t in BUILTIN_TOOLS))


def builtins() -> str:
    return _table(("function", "gives"), ((_code(b.usage()), b.doc) for b in BUILTINS.values()))


def metrics() -> str:
    return _table(("metric", "scores 1.0 when"), ((_code(f"{m.name}(field)"), m.description) for m in BUILTIN_METRICS.values()))


def passes() -> str:
    rows = []
    for fn in PASSES:
        doc = sys.modules[fn.__module__].__doc__ or ""
        summary = doc.strip().split("\n\n")[0].split(": ", 1)[-1].replace("\n", " ")
        summary = re.sub(r" \(see [^)]*\)", "", summary)
        opts = ", ".join(_code(k) for k in PASS_OPTIONS[pass_name(fn)]) or "—"
        rows.append((_code(pass_name(fn)), summary, opts))
    return _table(("pass", "what it does", "options"), rows)


def pass_options() -> str:
    return _table(("option", "flag", "meaning", "default"), ((_code(o.key), _code(o.flag), o.help, o.shown or o.default) for o in OPTIONS.values()))


def exit_codes() -> str:
    return _table(("code", "meaning"), ((code, text) for code, text in EXIT_CODES.items()))


TABLES: dict[str, Callable[[], str]] = {
    "keywords": keywords,
    "kinds": kinds,
    "common_settings": common_settings,
    "lm_settings": lm_settings,
    "retrievers": retrievers,
    "tools": tools,
    "builtins": builtins,
    "metrics": metrics,
    "passes": passes,
    "pass_options": pass_options,
    "exit_codes": exit_codes,
}
_PLACE = re.compile(r"\{\{table ([a-z_]+)\}\}")


def language_md() -> str:
    """The whole reference, tables filled."""
    text = TEMPLATE.read_text(encoding="utf-8")
    return _PLACE.sub(lambda m: TABLES[m.group(1)](), text)


def topics(text: str | None = None) -> dict[str, str]:
    """Each `## topic` section of the reference, by its name."""
    text = language_md() if text is None else text
    out: dict[str, str] = {}
    parts = re.split(r"^## (\S+)\n", text, flags=re.M)
    for name, body in zip(parts[1::2], parts[2::2]):
        out[name] = body.strip() + "\n"
    return out


# Other words a user may try for a topic.
ALIASES = {
    "kinds": "modules",
    "kind": "modules",
    "module": "modules",
    "settings": "modules",
    "signatures": "signature",
    "type": "types",
    "builtin": "builtins",
    "functions": "builtins",
    "operators": "expressions",
    "statements": "programs",
    "program": "programs",
    "metric": "metrics",
    "optimizers": "passes",
    "optimizer": "passes",
    "passes-file": "passes",
    "exit": "exit-codes",
    "keywords": "file",
    "declarations": "file",
    "tool": "tools",
    "retriever": "retrievers",
    "output": "run",
    "artifacts": "artifact",
}


def topic(name: str) -> str | None:
    """The text of topic `name` (or of the topic it is another word for), or None."""
    found = topics()
    key = name.lower().replace("_", "-")
    key = ALIASES.get(key, key)
    return f"## {key}\n\n{found[key]}" if key in found else None


def main(argv: list[str]) -> int:
    text = GENERATED_NOTE + language_md()
    if "--write" in argv:
        DOC.write_text(text, encoding="utf-8")
        return 0
    if "--check" in argv:
        current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        if current != text:
            print(f"{DOC} is out of date; run: python -m lmc.reference --write", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
