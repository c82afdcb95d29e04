"""What an editor asks of one .lmp file (symbols, references, hover text, outline, rename), answered from check.analyze.

Completions are in lmc.completion.  Nothing here knows the Language Server Protocol: lmc.lsp turns
these answers into its messages.
Positions are the front end's: 1-based lines and columns counted in characters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import nodes as n
from .builtins import BUILTINS
from .check import Analysis, analyze
from .check_body import Bodies
from .checked import SigInfo, kind_word, resolve_type, show
from .decl_rules import METRIC_BUILTINS
from .errors import Span
from .kinds import COMMON_SETTINGS, KINDS, extra_outputs
from .metrics import BUILTIN_METRICS
from .parser import Parsed
from .syntax import CONSTANTS, KEYWORDS
from .types import Type


class _Recorder(Bodies):
    """The checker's body typing, noting the type it found for each name and field read, and each variable's."""

    def __init__(self, decls):
        super().__init__(decls)
        self.seen: dict[tuple[int, int], Type] = {}  # (line, col) of a name or `.field` -> its type
        self.var_types: dict[tuple[str, str], Type] = {}  # (owner, variable) -> its type after the body

    def expr(self, e, scope):
        t = super().expr(e, scope)
        if isinstance(e, n.Name):
            self.seen[(e.span.line, e.span.col)] = t
        elif isinstance(e, n.Attr):
            self.seen[(e.name_span.line, e.name_span.col)] = t
        return t

    def bind(self, name, t, span, scope, var_span=None):
        super().bind(name, t, span, scope, var_span)
        if name in scope.types:
            self.var_types[(scope.owner_name, name)] = scope.types[name]


@dataclass(frozen=True)
class Symbol:
    """Something with a name a user can point at: a declaration, a signature field, a program's input or output, a variable."""

    key: tuple[str, ...]  # ("decl", name), ("field", signature, name), ("input"|"output"|"var", owner, name)
    name: str
    kind: str
    span: Span  # the name where it is declared
    whole: Span  # the whole declaration (the outline's range)
    node: Any = None


@dataclass
class Index:
    """One analysed version of a file: its diagnostics, and every symbol with every place it is named."""

    analysis: Analysis
    recorder: _Recorder
    symbols: dict[tuple[str, ...], Symbol] = field(default_factory=dict)
    occurrences: list[tuple[Span, tuple[str, ...]]] = field(default_factory=list)

    # -- questions ----------------------------------------------------------------
    def at(self, line: int, col: int) -> tuple[Span, Symbol] | None:
        """The symbol named at (line, col), with the span of that naming."""
        for sp, key in self.occurrences:
            if sp.line == line and sp.col <= col <= sp.end_col and key in self.symbols:
                return sp, self.symbols[key]
        return None

    def references(self, sym: Symbol) -> list[Span]:
        return [sp for sp, key in self.occurrences if key == sym.key]

    def word_at(self, line: int, col: int) -> tuple[str, Span] | None:
        """The identifier under (line, col) in the source, whatever it names."""
        lines = self.analysis.source.split("\n")
        if not 1 <= line <= len(lines):
            return None
        text = lines[line - 1]
        i = min(col - 1, len(text))
        start = i
        while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
            start -= 1
        end = i
        while end < len(text) and (text[end].isalnum() or text[end] == "_"):
            end += 1
        if start == end:
            return None
        return text[start:end], Span(self.analysis.parsed.file.path, line, start + 1, line, end + 1)

    def type_at(self, sp: Span) -> Type | None:
        return self.recorder.seen.get((sp.line, sp.col))

    # -- building -------------------------------------------------------------------
    def define(self, key: tuple[str, ...], name: str, kind: str, span: Span, whole: Span | None = None, node=None) -> None:
        if key not in self.symbols:
            self.symbols[key] = Symbol(key, name, kind, span, whole or span, node)
        self.occurrences.append((span, key))

    def use(self, key: tuple[str, ...], span: Span) -> None:
        self.occurrences.append((span, key))


def analyze_for_index(text: str, path: str, parsed: Parsed | None = None) -> Analysis:
    """check.analyze, noting the types the index's hover reads (what the language server runs on each change)."""
    return analyze(text, path, bodies=_Recorder, parsed=parsed)


def index_source(text: str, path: str, parsed: Parsed | None = None, analysis: Analysis | None = None) -> Index:
    """Analyse `text` (or its already `parsed` form, or take its `analysis`) and index every symbol in it."""
    a = analysis if analysis is not None else analyze_for_index(text, path, parsed)
    rec = a.bodies
    assert isinstance(rec, _Recorder)
    ix = Index(a, rec)
    decls = a.parsed.file.decls
    names = {d.name: d for d in decls}
    with n.cycle_collector_paused():
        for d in decls:
            ix.define(("decl", d.name), d.name, kind_word(d), d.name_span, d.span, d)
        for d in decls:
            _Walker(ix, names).decl(d)
        ix.occurrences.sort(key=lambda o: (o[0].line, o[0].col))
    return ix


def _unquoted(sp: Span) -> Span:
    """The span inside a one-line string literal's quotes (a name written as "alias")."""
    if sp.line == sp.end_line and sp.end_col - sp.col >= 2:
        return Span(sp.path, sp.line, sp.col + 1, sp.end_line, sp.end_col - 1)
    return sp


class _Walker:
    """Finds where each declaration, field, input, output and variable is named."""

    def __init__(self, ix: Index, names: dict[str, n.Decl]):
        self.ix = ix
        self.names = names
        self.owner = ""
        self.vars: set[str] = set()

    def decl(self, d: n.Decl) -> None:
        ix = self.ix
        if isinstance(d, n.Signature):
            for f in d.inputs + d.outputs:
                kind = "input field" if f in d.inputs else "output field"
                ix.define(("field", d.name, f.name), f.name, kind, f.name_span, f.span, f)
        elif isinstance(d, n.ModuleDecl):
            if isinstance(d.signature, n.Name):
                self.ref(d.signature)
            self.settings(d.settings)
        elif isinstance(d, n.RetrieverDecl):
            self.settings(d.kwargs)
        elif isinstance(d, n.LMDecl):
            pass
        elif isinstance(d, n.ToolDecl):
            if isinstance(d.impl, n.Name):
                self.ref(d.impl)
        elif isinstance(d, n.MetricDecl):
            self.metric(d)
        elif isinstance(d, n.ProgramDecl):
            self.body(d.name, d.params, d.body, d)

    def settings(self, kws: tuple[n.Keyword, ...]) -> None:
        for kw in kws:
            v = kw.value
            if kw.name == "lm" and isinstance(v, n.Const) and isinstance(v.value, str) and isinstance(self.names.get(v.value), n.LMDecl):
                self.ix.use(("decl", v.value), _unquoted(v.span))
            elif kw.name == "reward" and isinstance(v, n.Name):
                self.ref(v)
            elif kw.name == "tools" and isinstance(v, n.ListExpr):
                for item in v.items:
                    if isinstance(item, n.Name):
                        self.ref(item)

    def ref(self, name: n.Name) -> None:
        if name.id in self.vars:
            self.ix.use(("var", self.owner, name.id), name.span)
        elif name.id in self.names:
            self.ix.use(("decl", name.id), name.span)

    def metric(self, d: n.MetricDecl) -> None:
        if d.body is not None:
            self.body(d.name, d.params, d.body, d)
            return
        impl = d.impl
        programs = [p for p in self.names.values() if isinstance(p, n.ProgramDecl)]
        if isinstance(impl, n.Call) and len(programs) == 1:
            for a in impl.args[:1]:
                if isinstance(a, n.Name) and any(o.name == a.id for o in programs[0].outputs):
                    self.ix.use(("output", programs[0].name, a.id), a.span)

    def body(self, owner: str, params: tuple[n.Param, ...], body: tuple[n.Stmt, ...], d: n.Decl) -> None:
        self.owner = owner
        self.vars = {p.name for p in params}
        for s in n.walk(body):
            if isinstance(s, n.Assign):
                self.vars.add(s.target)
            elif isinstance(s, n.For):
                self.vars.add(s.var)
        for p in params:
            self.ix.define(("var", owner, p.name), p.name, "input", p.name_span, p.span, p)
        if isinstance(d, n.ProgramDecl):
            for o in d.outputs:
                self.ix.define(("output", owner, o.name), o.name, "output", o.name_span, o.span, o)
        for s in body:
            self.stmt(s)
        self.vars = set()

    def stmt(self, s: n.Stmt) -> None:  # noqa: C901 - one branch per statement kind
        ix = self.ix
        if isinstance(s, n.Assign):
            self.expr(s.value)
            ix.define(("var", self.owner, s.target), s.target, "variable", s.target_span, s.span, s)
        elif isinstance(s, n.For):
            self.expr(s.iter)
            ix.define(("var", self.owner, s.var), s.var, "variable", s.var_span, s.span, s)
            for b in s.body:
                self.stmt(b)
        elif isinstance(s, n.If):
            for cond, body in s.branches:
                self.expr(cond)
                for b in body:
                    self.stmt(b)
            for b in s.orelse or ():
                self.stmt(b)
        elif isinstance(s, n.While):
            self.expr(s.cond)
            for b in s.body:
                self.stmt(b)
        elif isinstance(s, n.Return) and s.value is not None:
            v = s.value
            if isinstance(v, n.DictExpr):
                for k, val in v.items:
                    if isinstance(k, n.Const) and isinstance(k.value, str):
                        ix.use(("output", self.owner, k.value), _unquoted(k.span))
                    self.expr(val)
            else:
                self.expr(v)
        elif isinstance(s, n.Check):
            self.expr(s.cond)
            if s.message is not None:
                self.expr(s.message)
            if s.target and s.target_span is not None:
                ix.use(("decl", s.target), s.target_span)
        elif isinstance(s, n.ExprStmt):
            self.expr(s.expr)

    def expr(self, e) -> None:
        for x in n.walk(e):
            if isinstance(x, n.Name):
                self.ref(x)
            elif isinstance(x, n.Call) and isinstance(x.func, n.Name):
                self.call_keywords(x, x.func.id)

    def call_keywords(self, call: n.Call, callee: str) -> None:
        """`qa(question=...)`: each keyword names an input field of the module's signature (or of the program)."""
        d = self.names.get(callee)
        if callee in self.vars or d is None:
            return
        sig = self.ix.analysis.decls.module_sigs.get(callee) if isinstance(d, n.ModuleDecl) else None
        for kw in call.kwargs:
            if sig is not None and not sig.name.endswith(".sig"):
                self.ix.use(("field", sig.name, kw.name), kw.name_span)
            elif isinstance(d, n.ProgramDecl):
                self.ix.use(("var", d.name, kw.name), kw.name_span)


# ---------------------------------------------------------------- hover


def hover(ix: Index, line: int, col: int) -> str | None:
    """Markdown describing what is at (line, col), or None."""
    found = ix.at(line, col)
    if found is not None:
        sp, sym = found
        return describe(ix, sym, sp)
    word = ix.word_at(line, col)
    if word is None:
        return None
    text, sp = word
    t = ix.type_at(sp)
    if t is not None:
        return _code(f"{text}: {show(t)}")
    if text in BUILTINS:
        b = BUILTINS[text]
        return _code(b.usage()) + "\n\n" + b.doc
    if text in KINDS:
        return kind_text(text)
    if text in METRIC_BUILTINS:
        return metric_text(text)
    return None


def describe(ix: Index, sym: Symbol, at: Span | None = None) -> str:  # noqa: C901 - one branch per symbol kind
    d = sym.node
    decls = ix.analysis.decls
    if isinstance(d, n.Signature):
        sig = decls.signatures.get(d.name)
        return signature_text(sig) if sig else _code(f"signature {d.name}")
    if isinstance(d, n.ModuleDecl):
        sig = decls.module_sigs.get(d.name)
        head = _code(f"module {d.name} = {d.kind}(" + ", ".join(_module_args(d, sig)) + ")")
        parts = [head, kind_text(d.kind, short=True)]
        if sig is not None:
            parts.append(_fields_text(sig, extra=extra_outputs(d.kind)))
        return "\n\n".join(p for p in parts if p)
    if isinstance(d, n.RetrieverDecl):
        return _code(f"retriever {d.name} = {d.kind}(...)") + "\n\nCalled with a query str; returns list[str] (the top passages)."
    if isinstance(d, n.ToolDecl):
        info = decls.tool_infos.get(d.name)
        if info is None:
            return _code(f"tool {d.name}")
        params = ", ".join(f"{p}: {show(t)}" for p, t in info.params)
        return _code(f"tool {d.name}({params}) -> {show(info.returns)}") + f"\n\n{info.kind} tool: {info.description}"
    if isinstance(d, n.LMDecl):
        settings = ", ".join(f"{k.name}={_const(k.value)}" for k in d.settings)
        return _code(f'lm {d.name} = "{d.model}"' + (f" ({settings})" if settings else ""))
    if isinstance(d, n.MetricDecl):
        if d.body is not None:
            head = _code(f"metric {d.name}(" + ", ".join(p.name for p in d.params) + ") { ... }")
            return head + "\n\nA metric written as a block: returns a score from 0 to 1 or a bool."
        if isinstance(d.impl, n.Call) and isinstance(d.impl.func, n.Name):
            fname = d.impl.func.id
            return _code(f"metric {d.name} = {fname}(...)") + "\n\n" + (metric_text(fname) if fname in METRIC_BUILTINS else "")
        return _code(f"metric {d.name}")
    if isinstance(d, n.ProgramDecl):
        ins = ", ".join(f"{p.name}: {_typeref(p.type)}" for p in d.params)
        outs = ", ".join(f"{p.name}: {_typeref(p.type)}" for p in d.outputs)
        return _code(f"program {d.name}({ins}) -> ({outs})")
    if sym.key[0] == "field":
        sig = decls.signatures.get(sym.key[1])
        if sig is not None:
            for fname, t, desc in sig.inputs + sig.outputs:
                if fname == sym.name:
                    return _code(f"{fname}: {show(t)}") + f"\n\n{sym.kind} of signature `{sig.name}`" + (f": {desc}" if desc else "")
    if sym.key[0] in ("var", "output"):
        vt = ix.type_at(at) if at is not None else None
        if vt is None:
            vt = ix.recorder.var_types.get((sym.key[1], sym.name))
        if vt is None and isinstance(d, n.Param):
            return _code(f"{sym.name}: {_typeref(d.type)}") + f"\n\n{sym.kind} of `{sym.key[1]}`"
        return _code(f"{sym.name}: {show(vt) if vt is not None else '?'}") + f"\n\n{sym.kind} of `{sym.key[1]}`"
    return _code(sym.name)


def signature_text(sig: SigInfo) -> str:
    head = _code(
        f"signature {sig.name}("
        + ", ".join(f"{f}: {show(t)}" for f, t, _ in sig.inputs)
        + " -> "
        + ", ".join(f"{f}: {show(t)}" for f, t, _ in sig.outputs)
        + ")"
    )
    return "\n\n".join(x for x in (head, sig.instructions or "", _fields_text(sig)) if x)


def _fields_text(sig: SigInfo, extra: tuple[str, ...] = ()) -> str:
    rows = [f"- in `{f}: {show(t)}`" + (f" — {d}" if d else "") for f, t, d in sig.inputs]
    rows += [f"- out `{x}: str` (added by the module kind)" for x in extra]
    rows += [f"- out `{f}: {show(t)}`" + (f" — {d}" if d else "") for f, t, d in sig.outputs]
    return "\n".join(rows)


def kind_text(kind: str, short: bool = False) -> str:
    k = KINDS.get(kind)
    own = tuple(f"{st.name}={st.default}" if st.default is not None else st.name for st in k.settings) if k else ()
    extra = extra_outputs(kind)
    text = f"**{kind}**" + (f": adds output {', '.join(extra)}" if extra else "")
    text += "\n\nsettings: " + ", ".join(own + COMMON_SETTINGS)
    return text if not short else text.replace("\n\n", "; ")


def metric_text(name: str) -> str:
    m = BUILTIN_METRICS.get(name)
    return f"**{name}**(field, gold=field): " + (m.description if m else "")


def _module_args(d: n.ModuleDecl, sig: SigInfo | None) -> list[str]:
    first = []
    if isinstance(d.signature, n.Name):
        first = [d.signature.id]
    elif isinstance(d.signature, n.Const):
        first = [f'"{d.signature.value}"']
    return first + [f"{k.name}={_const(k.value)}" for k in d.settings]


def _const(e) -> str:
    v = n.constant(e, names=True)
    if v is n.NOT_CONSTANT:
        return "..."
    if isinstance(v, str):
        return v if isinstance(e, n.Name) else f'"{v}"'
    if isinstance(v, tuple):
        return "[" + ", ".join(map(str, v)) + "]"
    return str(v).lower() if isinstance(v, bool) else str(v)


def _typeref(t: n.TypeRef | None) -> str:
    return show(resolve_type(t))


def _code(text: str) -> str:
    return f"```lmp\n{text}\n```"


# ---------------------------------------------------------------- outline and rename


def outline(ix: Index) -> list[tuple[Symbol, list[Symbol]]]:
    """Each declaration with its children (a signature's fields, a program's inputs and outputs)."""
    out = []
    for d in ix.analysis.parsed.file.decls:
        sym = ix.symbols.get(("decl", d.name))
        if sym is None or sym.node is not d:
            continue
        kids = [s for k, s in ix.symbols.items() if k[0] in ("field", "output") and k[1] == d.name]
        kids += [s for k, s in ix.symbols.items() if k[0] == "var" and k[1] == d.name and s.kind == "input"]
        out.append((sym, sorted(kids, key=lambda s: (s.span.line, s.span.col))))
    return out


class RenameError(ValueError):
    """A rename that would not give a valid program."""


def rename(ix: Index, line: int, col: int, new: str) -> list[Span]:
    """The spans to rewrite as `new` to rename what is at (line, col) everywhere in the file."""
    import re

    found = ix.at(line, col)
    if found is None:
        raise RenameError("nothing to rename here")
    _, sym = found
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", new):
        raise RenameError(f"'{new}' is not a valid name")
    if new in KEYWORDS or new in CONSTANTS:
        raise RenameError(f"'{new}' is a keyword")
    if sym.key[0] == "decl" and (new in ix.analysis.decls.decls or new in BUILTINS or new in KINDS):
        raise RenameError(f"'{new}' is already a name in this file")
    if sym.key[0] == "var" and (new in ix.analysis.decls.decls or any(k[:2] == ("var", sym.key[1]) and k[2] == new for k in ix.symbols)):
        raise RenameError(f"'{new}' is already a name in '{sym.key[1]}'")
    return ix.references(sym)
