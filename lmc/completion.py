"""What may be written at a position of a .lmp file, for an editor: judged from the text before it and the block around it."""

from __future__ import annotations

from dataclasses import dataclass

from . import nodes as n
from .builtins import BUILTINS
from .checked import show
from .decl_rules import LM_SETTINGS, METRIC_BUILTINS, RETRIEVER_KWARGS
from .ide import Index, kind_text, metric_text
from .kinds import COMMON_SETTINGS, KINDS, extra_outputs


@dataclass(frozen=True)
class Completion:
    label: str
    kind: str  # keyword, class (module kind), field, function, variable, module, property (setting), value
    detail: str = ""
    insert: str | None = None


DECL_SNIPPETS = {
    "signature": "signature ${1:Name}(${2:question}: str -> ${3:answer}: str)",
    "module": "module ${1:name} = ${2:Predict}(${3:Signature})",
    "retriever": 'retriever ${1:name} = bm25("${2:datasets/corpus.jsonl}", text="text", k=3)',
    "tool": 'tool ${1:name}(${2:query}: str) -> str "${3:what it does}" = python("${4:pkg.mod:fn}")',
    "lm": 'lm ${1:name} = "${2:openai/gpt-4o-mini}" (temperature=0.2)',
    "metric": "metric ${1:name} = exact_match(${2:answer})",
    "program": "program ${1:main}(${2:question}: str) -> (${3:answer}: str) {\n  $0\n}",
}
STATEMENT_KEYWORDS = ("for", "if", "elif", "else", "while", "return", "assert", "suggest", "break", "continue", "and", "or", "not", "in")


def complete(ix: Index, line: int, col: int) -> list[Completion]:  # noqa: C901 - one branch per place in the grammar
    """What may be written at (line, col), judged from the text before it on its line and the block around it."""
    lines = ix.analysis.source.split("\n")
    text = lines[line - 1][: col - 1] if 1 <= line <= len(lines) else ""
    decls = ix.analysis.decls
    head = text[: len(text) - len(_trailing_word(text))]
    if head.endswith("."):
        return _fields_after_dot(ix, head[:-1], line)
    inside = _enclosing_call(head)
    if head.rstrip().endswith("=") and inside is None:
        before = head.rstrip()[:-1].split()
        if len(before) == 2 and before[0] == "module":
            return [Completion(k, "class", kind_text(k, short=True)) for k in KINDS]
        if len(before) == 2 and before[0] == "retriever":
            return [Completion(k, "class", ", ".join(v)) for k, v in RETRIEVER_KWARGS.items()]
        if len(before) == 2 and before[0] == "metric":
            return [Completion(m, "function", metric_text(m)) for m in METRIC_BUILTINS] + [Completion("python", "function", '"pkg.mod:fn"')]
    if inside is not None:
        callee, args_text = inside
        m_head = head.split("=", 1)[0].split() if head.lstrip().startswith("module ") else []
        if len(m_head) == 2 and callee in KINDS:
            after_eq = args_text.rsplit(",", 1)[-1]
            if "=" in after_eq:
                return _setting_values(ix, after_eq.split("=")[0].strip())
            if "," not in args_text:
                return [Completion(s, "class", "signature") for s, v in decls.signatures.items() if not s.endswith(".sig")]
            given = {a.split("=")[0].strip() for a in args_text.split(",")}
            settings = COMMON_SETTINGS + tuple(st.name for st in KINDS[callee].settings)
            return [Completion(s, "property", "setting", f"{s}=") for s in settings if s not in given]
        if head.lstrip().startswith("lm ") and "(" in head:
            return [Completion(s, "property", "lm setting", f"{s}=") for s in LM_SETTINGS]
        if callee in decls.module_sigs:
            sig = decls.module_sigs[callee]
            return [Completion(f, "field", show(t), f"{f}=") for f, t, _ in sig.inputs]
    if not text.startswith((" ", "\t")) and _owner_at(ix, line) is None:
        return [Completion(k, "keyword", "declaration", DECL_SNIPPETS[k]) for k in DECL_SNIPPETS]
    return _names_in_body(ix, line)


def _trailing_word(text: str) -> str:
    i = len(text)
    while i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_"):
        i -= 1
    return text[i:]


def _enclosing_call(text: str) -> tuple[str, str] | None:
    """(callee, text of its arguments so far) when `text` ends inside an unclosed `name(`."""
    depth = 0
    for i in range(len(text) - 1, -1, -1):
        c = text[i]
        if c in ")]}":
            depth += 1
        elif c in "([{":
            if depth == 0:
                if c != "(":
                    return None
                name = _trailing_word(text[:i])
                return (name, text[i + 1 :]) if name else None
            depth -= 1
    return None


def _setting_values(ix: Index, setting: str) -> list[Completion]:
    decls = ix.analysis.decls
    if setting == "lm":
        return [Completion(f'"{k}"', "value", v.model) for k, v in decls.lms.items()]
    if setting == "reward":
        return [Completion(k, "value", "metric") for k in decls.metrics]
    if setting == "tools":
        return [Completion(k, "value", "tool") for k in list(decls.tools) + list(decls.retrievers)]
    return []


def _fields_after_dot(ix: Index, before: str, line: int) -> list[Completion]:
    """Output fields of the prediction written before the dot: a variable holding one, or a module call."""
    decls = ix.analysis.decls
    name = _trailing_word(before)
    t = None
    if name:
        owner = _owner_at(ix, line)
        t = ix.recorder.var_types.get((owner, name)) if owner else None
    elif before.endswith(")"):  # `qa(question=q).`: the module called
        depth = 0
        for i in range(len(before) - 1, -1, -1):
            depth += before[i] == ")"
            depth -= before[i] == "("
            if depth == 0:
                callee = _trailing_word(before[:i])
                sig = decls.module_sigs.get(callee)
                mod = decls.modules.get(callee)
                if sig is not None and mod is not None:
                    outs = [(x, "str") for x in extra_outputs(mod.kind)] + [(f, show(t)) for f, t, _ in sig.outputs]
                    return [Completion(f, "field", ty) for f, ty in outs]
                break
    if t is not None and t.kind == "optional":
        t = t.args[0]
    if t is not None and t.kind == "prediction":
        return [Completion(k, "field", show(ft)) for k, ft in t.args]
    return []


def _owner_at(ix: Index, line: int) -> str | None:
    for d in ix.analysis.parsed.file.decls:
        if isinstance(d, (n.ProgramDecl, n.MetricDecl)) and d.span.line <= line <= d.span.end_line:
            return d.name
    return None


def _names_in_body(ix: Index, line: int) -> list[Completion]:
    decls = ix.analysis.decls
    owner = _owner_at(ix, line)
    out = []
    if owner is not None:
        out += [Completion(v, "variable", show(t)) for (o, v), t in ix.recorder.var_types.items() if o == owner]
        d = decls.programs.get(owner) or decls.metrics.get(owner)
        for p in getattr(d, "params", ()):
            if all(c.label != p.name for c in out):
                out.append(Completion(p.name, "variable", "input"))
    for name, m in decls.modules.items():
        sig = decls.module_sigs.get(name)
        args = ", ".join(f"{f}=${{{i + 1}:{f}}}" for i, (f, _, _) in enumerate(sig.inputs)) if sig else ""
        out.append(Completion(name, "module", f"{m.kind} module", f"{name}({args})"))
    out += [Completion(k, "function", "program") for k in decls.programs if k != owner]
    out += [Completion(k, "function", "retriever: (query: str) -> list[str]") for k in decls.retrievers]
    out += [Completion(k, "function", "tool") for k in decls.tools]
    out += [Completion(b.name, "function", b.usage() + " — " + b.doc) for b in BUILTINS.values()]
    out += [Completion(k, "keyword") for k in STATEMENT_KEYWORDS]
    out += [Completion(k, "value") for k in ("true", "false", "none")]
    return out
