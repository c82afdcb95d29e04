"""Name resolution and type checking of a parsed .lmp file; every error of the file is collected."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import nodes as n
from .builtins import BUILTINS, BuiltinTypeError
from .errors import CompileErrors, Diagnostics, LmcError, Span, did_you_mean, one_of
from .kinds import COMMON_SETTINGS, KINDS, extra_output_names, extra_outputs
from .types import (
    ANY, BOOL, FLOAT, INT, JSON, NONE, STR, Type, assignable, dict_of, list_of, literal, optional, prediction, unify,
)

LM_SETTINGS = ("temperature", "max_tokens", "api_base", "api_key_env", "stop")
RETRIEVER_KWARGS = {"bm25": ("text", "k"), "embeddings": ("model", "text", "k")}
BUILTIN_TOOLS = ("calculator",)
METRIC_BUILTINS = ("exact_match", "f1", "contains", "accuracy", "numeric", "passage_match")
TYPE_NAMES = ("str", "int", "float", "bool", "json", "list", "dict")
PY_REF = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")
DEFAULT_TOOL_DOC = {
    "calculator": "Evaluate an arithmetic expression such as '(3 + 4) * 2' and return the number.",
    "retriever": "Search the corpus; returns the most relevant passages.",
}

KIND_WORDS = {
    "signature": "signature", "module": "module", "retriever": "retriever", "tool": "tool",
    "lm": "lm", "metric": "metric", "program": "program",
}


@dataclass(frozen=True)
class SigInfo:
    """A resolved signature: typed inputs and outputs, untyped fields being str."""

    name: str
    instructions: str | None
    inputs: tuple[tuple[str, Type, str | None], ...]
    outputs: tuple[tuple[str, Type, str | None], ...]
    span: Span


@dataclass(frozen=True)
class ToolInfo:
    """A resolved tool: `kind` is python, retriever or builtin; `target` the reference, retriever or builtin name."""

    name: str
    kind: str
    target: str
    params: tuple[tuple[str, Type], ...]
    returns: Type
    description: str
    span: Span


@dataclass(frozen=True)
class Checked:
    file: n.File
    source: str
    signatures: dict[str, SigInfo]
    modules: dict[str, n.ModuleDecl]
    module_sigs: dict[str, SigInfo]
    retrievers: dict[str, n.RetrieverDecl]
    tools: dict[str, n.ToolDecl]
    lms: dict[str, n.LMDecl]
    metrics: dict[str, n.MetricDecl]
    programs: dict[str, n.ProgramDecl]
    tool_infos: dict[str, ToolInfo] = field(default_factory=dict)

    def program(self, name: str | None = None) -> n.ProgramDecl:
        """The program called `name`; by default the only one, else the one named 'main'."""
        names = ", ".join(self.programs)
        if name is not None:
            if name in self.programs:
                return self.programs[name]
            hint = did_you_mean(name, self.programs)
            raise LmcError(f"{self.file.path}: no program '{name}'", hint=hint or (f"the file defines {names}" if names else None))
        if len(self.programs) == 1:
            return next(iter(self.programs.values()))
        if "main" in self.programs:
            return self.programs["main"]
        if not self.programs:
            raise LmcError(f"{self.file.path}: defines no program", hint="add one: program main(question: str) -> (answer: str) { ... }")
        raise LmcError(f"{self.file.path} defines programs {names}; pick one with --program")

    def program_inputs(self, name: str | None = None) -> tuple[tuple[str, Type], ...]:
        return tuple((p.name, resolve_type(p.type)) for p in self.program(name).params)

    def program_outputs(self, name: str | None = None) -> tuple[tuple[str, Type], ...]:
        return tuple((p.name, resolve_type(p.type)) for p in self.program(name).outputs)


# ---------------------------------------------------------------- types


def resolve_type(ref: n.TypeRef | None) -> Type:
    """The Type a TypeRef denotes (None means str); unknown names become `any` (the checker reports them)."""
    return _resolve(ref, None)


def _resolve(ref: n.TypeRef | None, diags: Diagnostics | None) -> Type:
    if ref is None:
        return STR

    def err(msg: str, hint: str | None = None) -> Type:
        if diags is not None:
            diags.error(msg, ref.span, hint)
        return ANY

    if ref.name == "literal" and ref.literals:
        if len(set(ref.literals)) != len(ref.literals):
            dup = next(x for x in ref.literals if ref.literals.count(x) > 1)
            err(f'"{dup}" appears twice in the literal union')
        t = literal(*dict.fromkeys(ref.literals))
    elif ref.name in ("str", "int", "float", "bool", "json"):
        t = Type(ref.name)
        if ref.args:
            t = err(f"type '{ref.name}' takes no type arguments, got {len(ref.args)}")
    elif ref.name == "list":
        if len(ref.args) != 1:
            t = err(f"list takes 1 type argument, got {len(ref.args)}", "write list[str]")
            for a in ref.args:
                _resolve(a, diags)
        else:
            t = list_of(_resolve(ref.args[0], diags))
    elif ref.name == "dict":
        if len(ref.args) != 2:
            t = err(f"dict takes 2 type arguments, got {len(ref.args)}", "write dict[str, T]")
            for a in ref.args:
                _resolve(a, diags)
        else:
            key = ref.args[0]
            if not (key.name == "str" and not key.args and not key.optional):
                if diags is not None:
                    diags.error("dict keys must be str", key.span, "write dict[str, T]")
            t = dict_of(_resolve(ref.args[1], diags))
    else:
        hint = did_you_mean(ref.name, TYPE_NAMES) or one_of(TYPE_NAMES)
        t = err(f"unknown type '{ref.name}'", hint)
    if ref.optional and t.kind != "any":
        t = optional(t)
    return t


def show(t: Type) -> str:
    """A type for a message: a lone literal from a constant reads as that string."""
    if t.kind == "literal" and len(t.args) == 1:
        return f'str "{t.args[0]}"'
    if t == NONE:
        return "none"
    return t.name


def _is_num(t: Type) -> bool:
    return t.kind in ("int", "float", "bool", "any", "json")


def _strip_opt(t: Type) -> Type:
    return t.args[0] if t.kind == "optional" and t != NONE else t


def _widen(t: Type) -> Type:
    """Literal types of constants widen to str once stored in a variable."""
    if t.kind == "literal":
        return STR
    if t.kind == "list" and t.args[0].kind == "literal":
        return list_of(STR)
    return t


# ---------------------------------------------------------------- entry points


def check_source(text: str, path: str) -> Checked:
    from .parser import parse

    if text.startswith("\ufeff"):
        text = text[1:]
    text = text.replace("\r\n", "\n")
    return check(parse(text, path), text)


def check_path(path) -> Checked:
    """Read (UTF-8, BOM and CRLF accepted), parse and check one file."""
    from .parser import read_source

    return check_source(read_source(path), str(path))


def check(file: n.File, source: str) -> Checked:
    """Resolve names and check types; raises CompileErrors with all diagnostics, sorted."""
    import gc

    # As in the parser: the checker's data holds no cycles, and the cycle collector rescanning the
    # freshly built AST of a large file cost seven times the check itself (bench/bench_parse_scaling.py).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _Checker(file, source).run()
    finally:
        if was_enabled:
            gc.enable()


# ---------------------------------------------------------------- the checker


@dataclass
class _Scope:
    """Variables of one program or metric body, in the order they are assigned."""

    types: dict[str, Type] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)  # var -> "module 'x'" for predictions
    loops: int = 0
    called_module: bool = False
    owner: str = "program"
    owner_name: str = ""


class _Checker:
    def __init__(self, file: n.File, source: str):
        self.file = file
        self.source = source
        self.path = file.path
        self.diags = Diagnostics(file.path, source)
        self.lines = source.split("\n")
        self.decls: dict[str, n.Node] = {}
        self.signatures: dict[str, SigInfo] = {}
        self.modules: dict[str, n.ModuleDecl] = {}
        self.module_sigs: dict[str, SigInfo] = {}
        self.retrievers: dict[str, n.RetrieverDecl] = {}
        self.tools: dict[str, n.ToolDecl] = {}
        self.tool_infos: dict[str, ToolInfo] = {}
        self.lms: dict[str, n.LMDecl] = {}
        self.metrics: dict[str, n.MetricDecl] = {}
        self.programs: dict[str, n.ProgramDecl] = {}
        self.program_calls: dict[str, set[str]] = {}
        self.current_program: str | None = None

    def error(self, msg: str, span: Span, hint: str | None = None) -> None:
        self.diags.error(msg, span, hint)

    # -- spans ------------------------------------------------------------------
    def name_span(self, decl: n.Node, name: str) -> Span:
        """The span of a declaration's name: the first whole-word match after its keyword."""
        sp = decl.span
        for ln in range(sp.line, min(sp.end_line, sp.line + 3) + 1):
            text = self.lines[ln - 1] if ln - 1 < len(self.lines) else ""
            start = sp.col - 1 if ln == sp.line else 0
            if ln == sp.line:
                # skip the declaration keyword itself
                m = re.match(r"\s*[A-Za-z_]+", text[start:])
                start += m.end() if m else 0
            m = re.search(r"(?<![A-Za-z0-9_])" + re.escape(name) + r"(?![A-Za-z0-9_])", text[start:])
            if m:
                col = start + m.start() + 1
                return Span(self.path, ln, col, ln, col + len(name))
        return sp

    @staticmethod
    def key_span(kw: n.Keyword) -> Span:
        sp = kw.span
        return Span(sp.path, sp.line, sp.col, sp.line, sp.col + len(kw.name))

    @staticmethod
    def head_span(node: n.Node, word: str) -> Span:
        sp = node.span
        return Span(sp.path, sp.line, sp.col, sp.line, sp.col + len(word))

    # -- driver -------------------------------------------------------------------
    def run(self) -> Checked:
        self.collect()
        for d in self.file.decls:
            if isinstance(d, n.Signature):
                self.signature(d)
        for d in self.file.decls:
            if isinstance(d, n.LMDecl):
                self.lm(d)
            elif isinstance(d, n.RetrieverDecl):
                self.retriever(d)
        for d in self.file.decls:
            if isinstance(d, n.ToolDecl):
                self.tool(d)
        for d in self.file.decls:
            if isinstance(d, n.ModuleDecl):
                self.module(d)
        for d in self.file.decls:
            if isinstance(d, n.ProgramDecl):
                self.program(d)
        for d in self.file.decls:
            if isinstance(d, n.MetricDecl):
                self.metric(d)
        self.recursion()
        self.diags.raise_if_any()
        return Checked(
            file=self.file, source=self.source, signatures=self.signatures, modules=self.modules,
            module_sigs=self.module_sigs, retrievers=self.retrievers, tools=self.tools, lms=self.lms,
            metrics=self.metrics, programs=self.programs, tool_infos=self.tool_infos,
        )

    def collect(self) -> None:
        tables = {
            n.Signature: None, n.ModuleDecl: self.modules, n.RetrieverDecl: self.retrievers,
            n.ToolDecl: self.tools, n.LMDecl: self.lms, n.MetricDecl: self.metrics, n.ProgramDecl: self.programs,
        }
        for d in self.file.decls:
            if d.name in self.decls:
                first = self.decls[d.name]
                self.error(f"'{d.name}' is already declared", self.name_span(d, d.name),
                           f"the first {_kind_word(first)} '{d.name}' is at line {first.span.line}; names are unique per file")
                continue
            if d.name in BUILTINS or d.name in KINDS:
                self.error(f"'{d.name}' is a builtin name and cannot be declared", self.name_span(d, d.name), "pick another name")
            self.decls[d.name] = d
            table = tables[type(d)]
            if table is not None:
                table[d.name] = d

    # -- signatures --------------------------------------------------------------
    def fields(self, fields: tuple[n.Field, ...], seen: dict[str, n.Field], owner: str):
        out = []
        for f in fields:
            if f.name in seen:
                self.error(f"field '{f.name}' appears twice in signature '{owner}'", f.span)
                continue
            seen[f.name] = f
            out.append((f.name, _resolve(f.type, self.diags), f.description))
        return tuple(out)

    def signature(self, d: n.Signature) -> None:
        seen: dict[str, n.Field] = {}
        ins = self.fields(d.inputs, seen, d.name)
        outs = self.fields(d.outputs, seen, d.name)
        if not d.outputs and d.form != "shorthand":
            self.error(f"signature '{d.name}' has no output fields", self.name_span(d, d.name), "add outputs after '->', e.g. -> answer: str")
        self.signatures[d.name] = SigInfo(d.name, d.instructions, ins, outs, d.span)

    def shorthand(self, text: str, span: Span, key: str) -> SigInfo | None:
        if text.count("->") != 1:
            self.error("a signature shorthand needs exactly one '->'", span, 'write it as "inputs -> outputs", e.g. "question -> answer"')
            return None
        left, right = text.split("->")
        parts = []
        ok = True
        seen: set[str] = set()
        for side in (left, right):
            names = []
            for raw in side.split(","):
                name = raw.strip()
                if not name and not side.strip():
                    continue
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                    self.error(f"'{name}' is not a valid field name" if name else "empty field name in signature shorthand", span,
                               "field names are letters, digits and '_'")
                    ok = False
                    continue
                if name in seen:
                    self.error(f"field '{name}' appears twice in the signature shorthand", span)
                    ok = False
                    continue
                seen.add(name)
                names.append((name, STR, None))
            parts.append(tuple(names))
        if ok and not parts[1]:
            self.error("a signature needs at least one output field", span)
            ok = False
        return SigInfo(key, None, parts[0], parts[1], span) if ok else None

    # -- constants in settings ------------------------------------------------
    @staticmethod
    def const(e: n.Node):
        """(True, value) for a literal constant (numbers may be negated, lists of constants), else (False, None)."""
        if isinstance(e, n.Const):
            return True, e.value
        if isinstance(e, n.UnaryOp) and e.op == "-" and isinstance(e.operand, n.Const) and _isnum(e.operand.value):
            return True, -e.operand.value
        if isinstance(e, n.ListExpr):
            vals = []
            for item in e.items:
                ok, v = _Checker.const(item)
                if not ok:
                    return False, None
                vals.append(v)
            return True, vals
        return False, None

    def number_setting(self, kw: n.Keyword, *, integer: bool, lo: float | None = None, hi: float | None = None,
                       lo_open: bool = False, what: str = "") -> None:
        ok, v = self.const(kw.value)
        if not ok:
            self.error(f"setting '{kw.name}' must be a constant", kw.value.span, "settings are fixed when the program is compiled")
            return
        good = _isnum(v) and (not integer or isinstance(v, int))
        if good and lo is not None:
            good = v > lo if lo_open else v >= lo
        if good and hi is not None:
            good = v <= hi
        if not good:
            self.error(f"setting '{kw.name}' must be {what}, got {_show_value(v)}", kw.value.span)

    def str_setting(self, kw: n.Keyword) -> str | None:
        if isinstance(kw.value, n.Const) and isinstance(kw.value.value, str):
            return kw.value.value
        ok, v = self.const(kw.value)
        self.error(f"setting '{kw.name}' must be a string, got {_show_value(v) if ok else 'an expression'}", kw.value.span)
        return None

    def stop_setting(self, kw: n.Keyword) -> None:
        ok, v = self.const(kw.value)
        if ok and isinstance(v, str):
            return
        if not (ok and isinstance(v, list) and all(isinstance(x, str) for x in v)):
            self.error("setting 'stop' must be a list of strings", kw.value.span, 'e.g. stop=["\\n\\n"]')

    def lm_ref(self, kw: n.Keyword) -> None:
        value = self.str_setting(kw)
        if value is None or "/" in value:
            return
        if value not in self.lms:
            hint = did_you_mean(value, self.lms)
            self.error(f"unknown lm '{value}'", kw.value.span,
                       hint or "name an `lm` declared in this file or a litellm model such as \"openai/gpt-4o-mini\"")

    def common_setting(self, kw: n.Keyword) -> bool:
        name = kw.name
        if name == "temperature":
            self.number_setting(kw, integer=False, lo=0, hi=2, what="a number from 0 to 2")
        elif name == "max_tokens":
            self.number_setting(kw, integer=True, lo=0, lo_open=True, what="an int above 0")
        elif name == "max_backtracks":
            self.number_setting(kw, integer=True, lo=0, what="an int of 0 or more")
        elif name == "lm":
            self.lm_ref(kw)
        elif name == "instructions":
            self.str_setting(kw)
        elif name == "stop":
            self.stop_setting(kw)
        elif name in ("truncate_inputs", "score_labels", "length_normalize"):
            ok, v = self.const(kw.value)
            if not (ok and isinstance(v, bool)):
                self.error(f"setting '{name}' must be true or false, got {_show_value(v) if ok else 'an expression'}",
                           kw.value.span)
        else:
            return False
        return True

    # -- lm / retrievers / tools / modules ------------------------------------
    def lm(self, d: n.LMDecl) -> None:
        if "/" not in d.model or d.model.startswith("/") or d.model.endswith("/"):
            self.error(f"model '{d.model}' must be written provider/model", self.name_span(d, f'"{d.model}"') if d.model else d.span,
                       'e.g. "openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-latest" or "ollama/llama3"')
        for kw in d.settings:
            if kw.name in ("temperature", "max_tokens", "stop"):
                self.common_setting(kw)
            elif kw.name in ("api_base", "api_key_env"):
                self.str_setting(kw)
            else:
                self.error(f"unknown lm setting '{kw.name}'", self.key_span(kw), _hint(kw.name, LM_SETTINGS))

    def retriever(self, d: n.RetrieverDecl) -> None:
        if d.kind not in RETRIEVER_KWARGS:
            self.error(f"unknown retriever kind '{d.kind}'", d.kind_span, _hint(d.kind, RETRIEVER_KWARGS))
            return
        if not d.args:
            self.error(f"{d.kind}() needs the path of a JSONL corpus", d.kind_span, f'write {d.kind}("datasets/corpus.jsonl", text="text")')
        else:
            path = d.args[0]
            if not (isinstance(path, n.Const) and isinstance(path.value, str)):
                self.error("the corpus path must be a string literal", path.span)
            elif not path.value.strip():
                self.error("the corpus path is empty", path.span)
            for extra in d.args[1:]:
                self.error(f"{d.kind}() takes one positional argument, the corpus path", extra.span, "write other settings as name=value")
        allowed = RETRIEVER_KWARGS[d.kind]
        for kw in d.kwargs:
            if kw.name not in allowed:
                self.error(f"unknown {d.kind} setting '{kw.name}'", self.key_span(kw), _hint(kw.name, allowed))
            elif kw.name == "k":
                self.number_setting(kw, integer=True, lo=1, what="an int of 1 or more")
            else:
                self.str_setting(kw)

    def tool(self, d: n.ToolDecl) -> None:
        impl = d.impl
        params = tuple((p.name, _resolve(p.type, self.diags)) for p in (d.params or ()))
        returns = _resolve(d.returns, self.diags) if d.returns is not None else STR
        seen = set()
        for p in d.params or ():
            if p.name in seen:
                self.error(f"parameter '{p.name}' appears twice", p.span)
            seen.add(p.name)
        info = None
        if isinstance(impl, n.Name):
            target = self.decls.get(impl.id)
            if isinstance(target, n.RetrieverDecl):
                if d.params is not None:
                    self.error("a retriever tool takes its parameter from the retriever", d.span, f"write tool {d.name} = {impl.id}")
                info = ToolInfo(d.name, "retriever", impl.id, (("query", STR),), list_of(STR),
                                d.description or DEFAULT_TOOL_DOC["retriever"], d.span)
            elif target is None:
                hint = did_you_mean(impl.id, self.retrievers) or ("declare it: retriever r = bm25(...)" if not self.retrievers else one_of(self.retrievers))
                self.error(f"unknown retriever '{impl.id}'", impl.span, hint)
            else:
                self.error(f"'{impl.id}' is a {_kind_word(target)}, not a retriever", impl.span,
                           'a tool is python("pkg.mod:fn"), a retriever, or a builtin tool such as calculator()')
        elif isinstance(impl, n.Call) and isinstance(impl.func, n.Name):
            fname = impl.func.id
            if fname == "python":
                ref = self.python_ref(impl, "tool")
                if d.params is None:
                    self.error(f"python tool '{d.name}' needs its parameters", self.name_span(d, d.name),
                               f'write tool {d.name}(query: str) -> str "what it does" = python(...)')
                if ref is not None:
                    info = ToolInfo(d.name, "python", ref, params, returns, d.description or f"Call {d.name}.", d.span)
            elif fname in BUILTIN_TOOLS:
                if impl.args or impl.kwargs:
                    self.error(f"{fname}() takes no arguments", impl.span)
                if d.params is not None:
                    self.error(f"builtin tool {fname}() has fixed parameters", d.span, f"write tool {d.name} = {fname}()")
                info = ToolInfo(d.name, "builtin", fname, (("expression", STR),), FLOAT,
                                d.description or DEFAULT_TOOL_DOC[fname], d.span)
            else:
                self.error(f"unknown builtin tool '{fname}'", impl.func.span, _hint(fname, BUILTIN_TOOLS + ("python",)))
        else:
            self.error("a tool is python(\"pkg.mod:fn\"), a retriever name, or a builtin tool such as calculator()", impl.span)
        if info is not None:
            self.tool_infos[d.name] = info

    def python_ref(self, call: n.Call, what: str) -> str | None:
        if len(call.args) != 1 or call.kwargs or not (isinstance(call.args[0], n.Const) and isinstance(call.args[0].value, str)):
            self.error('python() takes one string, "pkg.module:function"', call.span)
            return None
        ref = call.args[0].value
        if not PY_REF.fullmatch(ref):
            self.error(f"'{ref}' is not a python reference", call.args[0].span, 'write "pkg.module:function"')
            return None
        return ref

    def module(self, d: n.ModuleDecl) -> None:
        kind = d.kind
        if kind not in KINDS:
            self.error(f"unknown module kind '{kind}'", d.kind_span, _hint(kind, KINDS))
        sig: SigInfo | None = None
        s = d.signature
        if s is None:
            self.error(f"module '{d.name}' needs a signature", d.kind_span,
                       f'write {kind}(SignatureName) or {kind}("question -> answer")')
        elif isinstance(s, n.Const) and isinstance(s.value, str):
            sig = self.shorthand(s.value, s.span, f"{d.name}.sig")
            if sig is not None:
                self.signatures[sig.name] = sig
        elif isinstance(s, n.Name):
            target = self.decls.get(s.id)
            if isinstance(target, n.Signature):
                sig = self.signatures.get(s.id)
            elif target is None:
                sigs = [k for k, v in self.decls.items() if isinstance(v, n.Signature)]
                self.error(f"unknown signature '{s.id}'", s.span, did_you_mean(s.id, sigs) or (one_of(sigs) if sigs else None))
            else:
                self.error(f"'{s.id}' is a {_kind_word(target)}, not a signature", s.span)
        else:
            self.error("the first argument of a module is a signature name or a string like \"question -> answer\"", s.span)
        if kind in KINDS:
            self.module_settings(d)
        if sig is not None:
            for extra in extra_outputs(kind):
                if any(f[0] == extra for f in sig.inputs + sig.outputs):
                    self.error(f"signature '{sig.name}' already has a field '{extra}', which {kind} adds", (s or d).span, "rename that field")
            self.module_sigs[d.name] = sig

    def module_settings(self, d: n.ModuleDecl) -> None:
        kind = KINDS[d.kind]
        allowed = COMMON_SETTINGS + tuple(s.name for s in kind.settings)
        names = {kw.name for kw in d.settings}
        for kw in d.settings:
            if self.common_setting(kw):
                continue
            spec = kind.setting(kw.name)
            if spec is None:
                other = [k.name for k in KINDS.values() if k.setting(kw.name)]
                hint = f"'{kw.name}' is a setting of {', '.join(other)}" if other else did_you_mean(kw.name, allowed)
                self.error(f"unknown setting '{kw.name}' for {kind.name}", self.key_span(kw), hint or one_of(allowed))
            elif spec.type in ("int", "number"):
                self.number_setting(kw, integer=spec.type == "int", lo=spec.low, what=spec.expected())
            elif spec.type == "tools":
                self.tools_setting(kw)
            elif spec.type == "metric":
                v = kw.value
                if isinstance(v, n.Const) and isinstance(v.value, str):
                    v = n.Name(v.span, id=v.value)
                if not isinstance(v, n.Name):
                    self.error(f"setting '{kw.name}' must name a metric", kw.value.span, f"e.g. {kw.name}=judge")
                elif v.id not in self.metrics:
                    self.error(f"unknown metric '{v.id}'", v.span, did_you_mean(v.id, self.metrics) or one_of(self.metrics))
        for spec in kind.settings:
            if spec.required and spec.name not in names:
                self.error(f"{kind.name} needs {spec.required[0]}", d.kind_span, spec.required[1])

    def tools_setting(self, kw: n.Keyword) -> None:
        if not isinstance(kw.value, n.ListExpr):
            self.error("setting 'tools' must be a list of tool names", kw.value.span, "e.g. tools=[search, calc]")
            return
        if not kw.value.items:
            self.error("setting 'tools' is empty", kw.value.span, "give ReAct at least one tool")
        seen = set()
        for item in kw.value.items:
            if not isinstance(item, n.Name):
                self.error("a tool is named, not written as an expression", item.span, "declare it: tool t = ... and list t")
                continue
            target = self.decls.get(item.id)
            if item.id in seen:
                self.error(f"tool '{item.id}' is listed twice", item.span)
            seen.add(item.id)
            if isinstance(target, n.RetrieverDecl):
                if item.id not in self.tool_infos:
                    self.tool_infos.setdefault(item.id, ToolInfo(item.id, "retriever", item.id, (("query", STR),), list_of(STR),
                                                                 DEFAULT_TOOL_DOC["retriever"], target.span))
            elif not isinstance(target, n.ToolDecl):
                cands = list(self.tools) + list(self.retrievers)
                if target is None:
                    self.error(f"unknown tool '{item.id}'", item.span, did_you_mean(item.id, cands) or (one_of(cands) if cands else "declare it: tool t = calculator()"))
                else:
                    self.error(f"'{item.id}' is a {_kind_word(target)}, not a tool", item.span)

    # -- programs --------------------------------------------------------------
    def params(self, params: tuple[n.Param, ...], what: str) -> dict[str, Type]:
        out: dict[str, Type] = {}
        for p in params:
            if p.name in out:
                self.error(f"{what} '{p.name}' appears twice", p.span)
                continue
            if what == "input" and p.name in self.decls:
                self.error(f"{what} '{p.name}' has the name of {_kind_word(self.decls[p.name])} '{p.name}'", p.span, "rename it")
            out[p.name] = _resolve(p.type, self.diags)
        return out

    def program(self, d: n.ProgramDecl) -> None:
        ins = self.params(d.params, "input")
        outs = self.params(d.outputs, "output")
        for name in set(ins) & set(outs):
            self.error(f"'{name}' is both an input and an output", next(p for p in d.outputs if p.name == name).span)
        if not d.outputs:
            self.error(f"program '{d.name}' declares no outputs", self.name_span(d, d.name),
                       f"write program {d.name}(...) -> (answer: str) {{ ... }}")
        scope = _Scope(types=dict(ins), owner="program", owner_name=d.name)
        self.current_program = d.name
        self.program_calls.setdefault(d.name, set())
        self.outputs = outs
        self.block(d.body, scope)
        self.current_program = None
        if d.outputs and not _always_returns(d.body):
            self.error(f"program '{d.name}' does not return its outputs", _end_span(d),
                       "end the program with return <module call> or return {" + ", ".join(f'"{k}": ...' for k in outs) + "}")

    def recursion(self) -> None:
        def reach(start: str) -> set[str]:
            seen, todo = set(), [start]
            while todo:
                for nxt in self.program_calls.get(todo.pop(), ()):
                    if nxt not in seen:
                        seen.add(nxt)
                        todo.append(nxt)
            return seen

        for name, d in self.programs.items():
            if name in reach(name):
                self.error(f"program '{name}' calls itself", self.name_span(d, name), "programs cannot be recursive; use a bounded loop")

    # -- metrics ---------------------------------------------------------------
    def metric(self, d: n.MetricDecl) -> None:
        if d.body is not None:
            return self.metric_block(d)
        impl = d.impl
        if not (isinstance(impl, n.Call) and isinstance(impl.func, n.Name)):
            self.error("a metric is a builtin such as exact_match(answer), python(\"pkg.mod:fn\"), or a block", impl.span)
            return
        fname = impl.func.id
        if fname == "python":
            self.python_ref(impl, "metric")
            return
        if fname not in METRIC_BUILTINS:
            self.error(f"unknown metric '{fname}'", impl.func.span, _hint(fname, METRIC_BUILTINS))
            return
        if not impl.args:
            self.error(f"{fname}() needs the output field to score", impl.span, f"e.g. {fname}(answer)")
        else:
            fieldname = impl.args[0]
            if isinstance(fieldname, n.Const) and isinstance(fieldname.value, str):
                fieldname = n.Name(fieldname.span, id=fieldname.value)
            if not isinstance(fieldname, n.Name):
                self.error("a metric's first argument is an output field name", fieldname.span, f"e.g. {fname}(answer)")
            else:
                self.metric_field(fieldname)
        gold = list(impl.args[1:2])
        for extra in impl.args[2:]:
            self.error(f"{fname}() takes at most two fields: the output and the gold example field", extra.span)
        for kw in impl.kwargs:
            if kw.name != "gold":
                self.error(f"unknown metric argument '{kw.name}'", self.key_span(kw), "expected one of: gold")
                continue
            if gold:
                self.error("the gold field is given twice", kw.span)
            gold.append(kw.value)
        for g in gold:
            if not (isinstance(g, n.Name) or (isinstance(g, n.Const) and isinstance(g.value, str))):
                self.error("the gold field is a name of an example field", g.span, "e.g. gold=answer")

    def metric_field(self, f: n.Name) -> None:
        if not self.programs:
            return
        if len(self.programs) == 1:
            prog = next(iter(self.programs.values()))
            outs = [p.name for p in prog.outputs]
            where = f"program '{prog.name}'"
        else:
            outs = sorted({p.name for prog in self.programs.values() for p in prog.outputs})
            where = "any program"
        if f.id not in outs:
            opts = "expected one of: " + ", ".join(outs) if outs else "it declares no outputs"
            self.error(f"metric field '{f.id}' is not an output of {where}", f.span, opts)

    def metric_block(self, d: n.MetricDecl) -> None:
        if len(d.params) != 2:
            self.error(f"a metric block takes two parameters, got {len(d.params)}", self.name_span(d, d.name),
                       f"write metric {d.name}(example, pred) {{ ... }}")
        types: dict[str, Type] = {}
        if len(self.programs) == 1:
            prog = next(iter(self.programs.values()))
            pred_t = prediction([(p.name, resolve_type(p.type)) for p in prog.outputs])
        else:
            pred_t = ANY
        for i, p in enumerate(d.params[:2]):
            types[p.name] = ANY if i == 0 else pred_t
            if p.type is not None:
                self.error(f"metric parameter '{p.name}' is untyped", p.type.span, "the example and prediction are records")
        scope = _Scope(types=types, owner="metric", owner_name=d.name)
        if len(d.params) == 2:
            scope.origin[d.params[1].name] = "the prediction"
        self.outputs = None
        self.block(d.body, scope)
        if not any(isinstance(x, n.Return) for x in n.walk(d.body)):
            self.error(f"metric '{d.name}' never returns a score", _end_span(d), "end it with return <number from 0 to 1 or bool>")

    # -- statements ------------------------------------------------------------
    def block(self, stmts, scope: _Scope) -> None:
        for s in stmts:
            self.stmt(s, scope)

    def stmt(self, s, scope: _Scope) -> None:
        if isinstance(s, n.Assign):
            self.assign(s, scope)
        elif isinstance(s, n.ExprStmt):
            self.expr(s.expr, scope)
        elif isinstance(s, n.For):
            t = _strip_opt(self.expr(s.iter, scope))
            if t.kind == "list":
                elem = t.args[0]
            elif t.kind in ("str", "literal"):
                elem = STR
            elif t.kind == "dict":
                elem = STR
            elif t.kind in ("any", "json"):
                elem = ANY
            else:
                self.error(f"cannot loop over {show(t)}", s.iter.span, "loop over a list, e.g. for i in range(3)")
                elem = ANY
            self.bind(s.var, elem, self.head_span(s, "for"), scope, var_span=_var_span(s))
            scope.loops += 1
            self.block(s.body, scope)
            scope.loops -= 1
        elif isinstance(s, n.If):
            for cond, body in s.branches:
                self.expr(cond, scope)
                self.block(body, scope)
            if s.orelse is not None:
                self.block(s.orelse, scope)
        elif isinstance(s, n.While):
            self.expr(s.cond, scope)
            if s.bound is None:
                self.error("a while loop needs a bound", self.head_span(s, "while"), "write 'while <cond> max N { ... }'")
            else:
                ok, v = self.const(s.bound)
                if not ok or not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                    self.error(f"the bound of a while loop must be a positive int constant, got {_show_value(v) if ok else 'an expression'}",
                               s.bound.span)
            scope.loops += 1
            self.block(s.body, scope)
            scope.loops -= 1
        elif isinstance(s, n.Return):
            self.ret(s, scope)
        elif isinstance(s, n.Check):
            self.check_stmt(s, scope)
        elif isinstance(s, (n.Break, n.Continue)):
            word = "break" if isinstance(s, n.Break) else "continue"
            if scope.loops == 0:
                self.error(f"'{word}' outside a loop", s.span)

    def bind(self, name: str, t: Type, span: Span, scope: _Scope, var_span: Span | None = None) -> None:
        target = self.decls.get(name)
        sp = var_span or span
        if target is not None:
            self.error(f"cannot assign to {_kind_word(target)} '{name}'", sp, "pick another variable name")
            return
        if name in BUILTINS:
            self.error(f"cannot assign to builtin '{name}'", sp, "pick another variable name")
            return
        t = _widen(t)
        old = scope.types.get(name)
        scope.types[name] = t if old is None else unify(old, t) if old.kind != "any" or t.kind == "any" else t

    def assign(self, s: n.Assign, scope: _Scope) -> None:
        t = self.expr(s.value, scope)
        sp = s.target_span or s.span
        if s.op != "=":
            if s.target not in scope.types:
                self.undefined(s.target, sp, scope)
                return
            t = self.binop(s.op[0], scope.types[s.target], t, s.span)
        origin = self.origin(s.value, scope)
        self.bind(s.target, t, sp, scope)
        if origin:
            scope.origin[s.target] = origin
        else:
            scope.origin.pop(s.target, None)

    def ret(self, s: n.Return, scope: _Scope) -> None:
        if scope.owner == "metric":
            if s.value is None:
                self.error("a metric returns a score", s.span, "return a number from 0 to 1 or a bool")
                return
            t = _strip_opt(self.expr(s.value, scope))
            if not _is_num(t):
                self.error(f"a metric returns a number or bool, got {show(t)}", s.value.span)
            return
        outs: dict[str, Type] = self.outputs or {}
        if s.value is None:
            if outs:
                self.error("return needs the program's outputs", s.span, "return {" + ", ".join(f'"{k}": ...' for k in outs) + "}")
            return
        v = s.value
        if isinstance(v, n.DictExpr) and all(isinstance(k, n.Const) and isinstance(k.value, str) for k, _ in v.items):
            keys = {}
            for k, val in v.items:
                vt = self.expr(val, scope)
                if k.value in keys:
                    self.error(f"output '{k.value}' is returned twice", k.span)
                keys[k.value] = vt
                if k.value not in outs:
                    self.error(f"'{k.value}' is not an output of program '{scope.owner_name}'", k.span,
                               _hint(k.value, outs))
                elif not assignable(vt, outs[k.value]):
                    self.error(f"output '{k.value}' is declared {outs[k.value].name}, got {show(vt)}", val.span, _pred_hint(vt))
            missing = [k for k in outs if k not in keys]
            if missing:
                self.error(f"return is missing output{'s' if len(missing) > 1 else ''} " + ", ".join(f"'{m}'" for m in missing),
                           v.span)
            return
        t = self.expr(v, scope)
        ts = _strip_opt(t)
        if ts.kind == "prediction":
            missing = [k for k in outs if ts.field(k) is None]
            if len(outs) == 1 and missing:
                src = self.origin(v, scope) or "the returned prediction"
                self.error(f"{src} has no output '{missing[0]}' to return", v.span,
                           _pred_hint(t, outs[missing[0]]) or f'return {{"{missing[0]}": ...}}')
                return
            for k in missing:
                src = self.origin(v, scope) or "the returned value"
                self.error(f"{src} has no output '{k}' to return", v.span,
                           "return {" + ", ".join(f'"{o}": ...' for o in outs) + "} to build the outputs")
            for k, ot in outs.items():
                ft = ts.field(k)
                if ft is not None and not assignable(ft, ot):
                    self.error(f"output '{k}' is declared {ot.name}, got {show(ft)}", v.span)
            return
        if ts.kind in ("any", "json") or (ts.kind == "dict" and len(outs) != 1):
            return
        if len(outs) == 1:
            k, ot = next(iter(outs.items()))
            if not assignable(t, ot):
                self.error(f"output '{k}' is declared {ot.name}, got {show(t)}", v.span)
            return
        self.error(f"return {{...}} with the outputs " + ", ".join(f"'{k}'" for k in outs) + f", got {show(t)}", v.span,
                   "a program with several outputs returns a module call or a dict literal")

    def check_stmt(self, s: n.Check, scope: _Scope) -> None:
        self.expr(s.cond, scope)
        if s.message is not None:
            mt = self.expr(s.message, scope)
            if not assignable(mt, STR):
                self.error(f"the message of '{s.kind}' must be a str, got {show(mt)}", s.message.span)
        if s.target is not None:
            tsp = s.target_span or s.span
            target = self.decls.get(s.target)
            tsp = Span(tsp.path, tsp.end_line, tsp.end_col - len(s.target), tsp.end_line, tsp.end_col)
            if target is None:
                self.error(f"unknown module '{s.target}'", tsp, did_you_mean(s.target, self.modules) or one_of(self.modules))
            elif not isinstance(target, n.ModuleDecl):
                self.error(f"'{s.target}' is a {_kind_word(target)}, not a module", tsp, "a check retries a module call")
        elif not scope.called_module:
            self.error(f"nothing to retry: '{s.kind}' follows no module call", self.head_span(s, s.kind),
                       "name one with 'for <module>'")

    # -- expressions -------------------------------------------------------------
    def undefined(self, name: str, span: Span, scope: _Scope) -> None:
        cands = list(scope.types) + [k for k, v in self.decls.items() if not isinstance(v, n.Signature)] + list(BUILTINS)
        self.error(f"'{name}' is not defined", span, did_you_mean(name, cands))

    def origin(self, e, scope: _Scope) -> str | None:
        if isinstance(e, n.Call) and isinstance(e.func, n.Name):
            d = self.decls.get(e.func.id)
            if isinstance(d, (n.ModuleDecl, n.ProgramDecl)):
                return f"{_kind_word(d)} '{d.name}'"
        if isinstance(e, n.Name):
            return scope.origin.get(e.id)
        return None

    def expr(self, e, scope: _Scope) -> Type:
        if isinstance(e, n.Const):
            v = e.value
            if isinstance(v, bool):
                return BOOL
            if isinstance(v, int):
                return INT
            if isinstance(v, float):
                return FLOAT
            if isinstance(v, str):
                return literal(v)
            return NONE
        if isinstance(e, n.Name):
            if e.id in scope.types:
                return scope.types[e.id]
            d = self.decls.get(e.id)
            if d is not None:
                if isinstance(d, (n.ModuleDecl, n.ProgramDecl, n.ToolDecl, n.RetrieverDecl)):
                    self.error(f"{_kind_word(d)} '{e.id}' must be called", e.span,
                               f"write {e.id}(...)" if not isinstance(d, n.ModuleDecl) else f"write {e.id}(field=value, ...)")
                else:
                    self.error(f"{_kind_word(d)} '{e.id}' is not a value", e.span)
                return ANY
            if e.id in BUILTINS:
                self.error(f"builtin '{e.id}' must be called", e.span, f"write {e.id}(...)")
                return ANY
            self.undefined(e.id, e.span, scope)
            return ANY
        if isinstance(e, n.FString):
            for part in e.parts:
                if not isinstance(part, str):
                    t = self.expr(part, scope)
                    if _strip_opt(t).kind == "prediction":
                        self.error(f"cannot put a prediction in an f-string", part.span, _pred_hint(t))
            return STR
        if isinstance(e, n.ListExpr):
            t = None
            for item in e.items:
                it = self.expr(item, scope)
                t = it if t is None else unify(t, it)
            return list_of(t if t is not None else ANY)
        if isinstance(e, n.DictExpr):
            t = None
            for k, v in e.items:
                kt = self.expr(k, scope)
                if not assignable(kt, STR) or _strip_opt(kt).kind == "optional":
                    self.error(f"dict keys must be str, got {show(kt)}", k.span)
                vt = self.expr(v, scope)
                t = vt if t is None else unify(t, vt)
            return dict_of(_widen(t) if t is not None else ANY)
        if isinstance(e, n.Attr):
            return self.attr(e, scope)
        if isinstance(e, n.Index):
            return self.index(e, scope)
        if isinstance(e, n.Call):
            return self.call(e, scope)
        if isinstance(e, n.BinOp):
            lt = self.expr(e.left, scope)
            rt = self.expr(e.right, scope)
            return self.binop(e.op, lt, rt, e.span)
        if isinstance(e, n.UnaryOp):
            t = self.expr(e.operand, scope)
            if e.op == "not":
                return BOOL
            if not _is_num(_strip_opt(t)):
                self.error(f"cannot apply unary '{e.op}' to {show(t)}", e.span)
                return ANY
            return INT if t.kind == "bool" else _strip_opt(t)
        if isinstance(e, n.Compare):
            lt = _strip_opt(self.expr(e.left, scope))
            rt = _strip_opt(self.expr(e.right, scope))
            if e.op in ("in", "not in"):
                if rt.kind not in ("list", "dict", "str", "literal", "any", "json"):
                    self.error(f"'{e.op}' needs a list, dict or str on the right, got {show(rt)}", e.right.span)
                elif rt.kind in ("str", "literal") and not assignable(lt, STR):
                    self.error(f"'{e.op}' on a str needs a str on the left, got {show(lt)}", e.left.span)
            elif e.op in ("<", "<=", ">", ">="):
                ok = (_is_num(lt) and _is_num(rt)) or (lt.kind in ("str", "literal") and rt.kind in ("str", "literal")) \
                    or "any" in (lt.kind, rt.kind) or "json" in (lt.kind, rt.kind)
                if not ok:
                    self.error(f"cannot compare {show(lt)} and {show(rt)} with '{e.op}'", e.span)
            else:
                self.literal_compare(e, lt, rt)
            return BOOL
        if isinstance(e, n.BoolOp):
            lt = self.expr(e.left, scope)
            rt = self.expr(e.right, scope)
            return BOOL if lt == BOOL and rt == BOOL else unify(_widen(lt), _widen(rt))
        return ANY

    def literal_compare(self, e: n.Compare, lt: Type, rt: Type) -> None:
        """`x == "neutral"` where x can only be "positive" | "negative" is always false: say so."""
        for a, b, node in ((lt, rt, e.right), (rt, lt, e.left)):
            if a.kind == "literal" and len(a.args) > 1 and b.kind == "literal" and len(b.args) == 1 and b.args[0] not in a.args:
                self.error(f'"{b.args[0]}" is never equal to a value of type {a.name}', node.span)

    def binop(self, op: str, lt: Type, rt: Type, span: Span) -> Type:
        a, b = _strip_opt(lt), _strip_opt(rt)
        if a.kind in ("any", "json") or b.kind in ("any", "json"):
            return ANY
        if op == "+":
            if a.kind in ("str", "literal") and b.kind in ("str", "literal"):
                return STR
            if a.kind == "list" and b.kind == "list":
                return list_of(unify(_widen(a.args[0]), _widen(b.args[0])))
        if _is_num(a) and _is_num(b):
            if op == "/":
                return FLOAT
            if a.kind == "float" or b.kind == "float":
                return FLOAT
            return INT
        if op == "*" and {a.kind, b.kind} & {"str", "literal"} and {a.kind, b.kind} & {"int"}:
            return STR
        hint = None
        if op == "+" and {a.kind, b.kind} & {"str", "literal"}:
            hint = "convert with str(...) or use an f-string"
        if a.kind == "prediction" or b.kind == "prediction":
            hint = _pred_hint(a if a.kind == "prediction" else b)
        self.error(f"cannot apply '{op}' to {show(a)} and {show(b)}", span, hint)
        return ANY

    def attr(self, e: n.Attr, scope: _Scope) -> Type:
        t = _strip_opt(self.expr(e.obj, scope))
        if t.kind in ("any", "json"):
            return ANY
        if t.kind == "prediction":
            ft = t.field(e.name)
            if ft is not None:
                return ft
            names = [k for k, _ in t.args]
            src = self.origin(e.obj, scope) or "the prediction"
            hint = did_you_mean(e.name, names) or one_of(names)
            self.error(f"{src} has no output '{e.name}'", _attr_span(e), hint)
            return ANY
        if e.name in BUILTINS:
            self.error(f"{show(t)} has no method '{e.name}'", _attr_span(e), f"call the function: {e.name}(...)")
        else:
            self.error(f"'.{e.name}' needs a prediction, got {show(t)}", _attr_span(e), "fields are read from module calls")
        return ANY

    def index(self, e: n.Index, scope: _Scope) -> Type:
        t = _strip_opt(self.expr(e.obj, scope))
        it = _strip_opt(self.expr(e.index, scope))
        if t.kind in ("any", "json"):
            return ANY
        if t.kind in ("list", "str", "literal"):
            if it.kind not in ("int", "bool", "any", "json"):
                self.error(f"a {t.kind if t.kind != 'literal' else 'str'} index must be an int, got {show(it)}", e.index.span)
            return t.args[0] if t.kind == "list" else STR
        if t.kind == "dict":
            if not assignable(it, STR):
                self.error(f"a dict key must be a str, got {show(it)}", e.index.span)
            return t.args[0]
        if t.kind == "prediction":
            hint = f"use .{e.index.value}" if isinstance(e.index, n.Const) and isinstance(e.index.value, str) else "use .<field>"
            self.error("a prediction is not indexed", e.span, hint)
            return ANY
        self.error(f"cannot index {show(t)}", e.span)
        return ANY

    # -- calls -------------------------------------------------------------------
    def call(self, e: n.Call, scope: _Scope) -> Type:
        if not isinstance(e.func, n.Name):
            for a in e.args:
                self.expr(a, scope)
            for kw in e.kwargs:
                self.expr(kw.value, scope)
            if isinstance(e.func, n.Attr):
                self.expr(e.func.obj, scope)
                self.error(f"there are no methods; call '{e.func.name}' as a function", _attr_span(e.func),
                           f"write {e.func.name}(x, ...)" if e.func.name in BUILTINS else None)
            else:
                self.expr(e.func, scope)
                self.error("only declared names and builtins can be called", e.func.span)
            return ANY
        name = e.func.id
        if name in scope.types:
            self.error(f"variable '{name}' cannot be called", e.func.span)
            return ANY
        d = self.decls.get(name)
        if isinstance(d, n.ModuleDecl):
            return self.call_module(e, d, scope)
        if isinstance(d, n.ProgramDecl):
            return self.call_program(e, d, scope)
        if isinstance(d, n.RetrieverDecl):
            return self.call_retriever(e, d, scope)
        if isinstance(d, n.ToolDecl):
            return self.call_tool(e, d, scope)
        if d is not None:
            self.args_only(e, scope)
            hint = {
                n.MetricDecl: "metrics score predictions outside the program",
                n.Signature: f"declare a module for it: module m = Predict({name})",
                n.LMDecl: "use it in a module: lm=\"" + name + "\"",
            }.get(type(d))
            self.error(f"{_kind_word(d)} '{name}' cannot be called{' inside a program' if isinstance(d, n.MetricDecl) else ''}",
                       e.func.span, hint)
            return ANY
        b = BUILTINS.get(name)
        if b is None:
            self.args_only(e, scope)
            cands = list(BUILTINS) + [k for k, v in self.decls.items() if isinstance(v, (n.ModuleDecl, n.ProgramDecl, n.RetrieverDecl, n.ToolDecl))]
            self.error(f"unknown function '{name}'", e.func.span, did_you_mean(name, cands))
            return ANY
        ts = [self.expr(a, scope) for a in e.args]
        for kw in e.kwargs:
            self.expr(kw.value, scope)
        if e.kwargs:
            self.error(f"{name}() takes positional arguments only", self.key_span(e.kwargs[0]), f"write {name}(x, ...)")
            return ANY
        msg = b.arity_error(len(ts))
        if msg:
            self.error(msg, e.span)
            return ANY
        for a, t in zip(e.args, ts):
            if _strip_opt(t).kind == "prediction" and name not in ("print",):
                self.error(f"{name}() cannot take a prediction", a.span, _pred_hint(t))
                return ANY
        try:
            return b.returns(ts)
        except BuiltinTypeError as err:
            self.error(str(err), e.span)
            return ANY

    def args_only(self, e: n.Call, scope: _Scope) -> None:
        for a in e.args:
            self.expr(a, scope)
        for kw in e.kwargs:
            self.expr(kw.value, scope)

    def keyword_call(self, e: n.Call, inputs: list[tuple[str, Type]], what: str, extra: str, scope: _Scope) -> None:
        for a in e.args:
            self.expr(a, scope)
        if e.args:
            first = inputs[0][0] if inputs else "field"
            self.error(f"{what} takes keyword arguments only", e.args[0].span, f"write {e.func.id}({first}=...)")
        given = {}
        want = dict(inputs)
        for kw in e.kwargs:
            t = self.expr(kw.value, scope)
            given[kw.name] = kw
            if kw.name not in want:
                hint = did_you_mean(kw.name, want) or (one_of(want) if want else "it takes no inputs")
                self.error(f"{what} has no input '{kw.name}'", self.key_span(kw), hint)
                continue
            self.flow(t, want[kw.name], kw.value, f"input '{kw.name}' of {what}")
        if not e.args:
            for name, _ in inputs:
                if name not in given:
                    self.error(f"missing input '{name}' for {what}{extra}", e.span)

    def flow(self, t: Type, want: Type, node, what: str) -> None:
        if assignable(t, want):
            return
        ts = _strip_opt(t)
        if ts.kind == "prediction" and want.kind != "prediction":
            self.error(f"{what} expects {want.name}, got a prediction", node.span, _pred_hint(t, want))
            return
        if t.kind == "literal" and want.kind == "literal":
            self.error(f"{what} expects {want.name}, got {show(t)}", node.span, f"expected one of: {', '.join(want.args)}")
            return
        self.error(f"{what} expects {want.name}, got {show(t)}", node.span)

    def call_module(self, e: n.Call, d: n.ModuleDecl, scope: _Scope) -> Type:
        sig = self.module_sigs.get(d.name)
        scope.called_module = True
        if sig is None:
            self.args_only(e, scope)
            return ANY
        inputs = [(name, t) for name, t, _ in sig.inputs]
        signame = sig.name if not sig.name.endswith(".sig") else f'"{_sig_text(sig)}"'
        self.keyword_call(e, inputs, f"module '{d.name}'", f" (signature {signame})", scope)
        outs = [(x, STR) for x in extra_outputs(d.kind)] + [(name, t) for name, t, _ in sig.outputs]
        return prediction(outs)

    def call_program(self, e: n.Call, d: n.ProgramDecl, scope: _Scope) -> Type:
        scope.called_module = True
        if self.current_program is not None:
            self.program_calls.setdefault(self.current_program, set()).add(d.name)
        inputs = [(p.name, resolve_type(p.type)) for p in d.params]
        self.keyword_call(e, inputs, f"program '{d.name}'", "", scope)
        return prediction([(p.name, resolve_type(p.type)) for p in d.outputs])

    def call_retriever(self, e: n.Call, d: n.RetrieverDecl, scope: _Scope) -> Type:
        ts = [self.expr(a, scope) for a in e.args]
        if len(ts) != 1:
            self.error(f"retriever '{d.name}' takes 1 argument (the query), got {len(ts)}", e.span, f"write {d.name}(query, k=3)")
        elif not assignable(ts[0], STR):
            self.flow(ts[0], STR, e.args[0], f"the query of retriever '{d.name}'")
        for kw in e.kwargs:
            t = self.expr(kw.value, scope)
            if kw.name != "k":
                self.error(f"retriever '{d.name}' has no argument '{kw.name}'", self.key_span(kw), "expected one of: k")
            elif not assignable(t, INT):
                self.error(f"'k' of retriever '{d.name}' expects int, got {show(t)}", kw.value.span)
        return list_of(STR)

    def call_tool(self, e: n.Call, d: n.ToolDecl, scope: _Scope) -> Type:
        info = self.tool_infos.get(d.name)
        if info is None:
            self.args_only(e, scope)
            return ANY
        params = list(info.params)
        ts = [self.expr(a, scope) for a in e.args]
        if len(ts) > len(params):
            self.error(f"tool '{d.name}' takes {len(params)} argument{'s' if len(params) != 1 else ''}, got {len(ts) + len(e.kwargs)}", e.span)
        given = set()
        for (pname, pt), a, t in zip(params, e.args, ts):
            given.add(pname)
            self.flow(t, pt, a, f"argument '{pname}' of tool '{d.name}'")
        want = dict(params)
        for kw in e.kwargs:
            t = self.expr(kw.value, scope)
            if kw.name not in want:
                self.error(f"tool '{d.name}' has no parameter '{kw.name}'", self.key_span(kw), _hint(kw.name, want))
                continue
            if kw.name in given:
                self.error(f"argument '{kw.name}' given twice", self.key_span(kw))
            given.add(kw.name)
            self.flow(t, want[kw.name], kw.value, f"argument '{kw.name}' of tool '{d.name}'")
        for pname, _ in params:
            if pname not in given and len(ts) <= len(params):
                self.error(f"missing argument '{pname}' for tool '{d.name}'", e.span)
        return info.returns


# ---------------------------------------------------------------- helpers


def _isnum(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _show_value(v) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    return repr(v) if not isinstance(v, list) else "a list"


def _hint(name: str, options) -> str:
    options = list(options)
    hint = did_you_mean(name, options)
    return hint or one_of(options)


def _kind_word(d: n.Node) -> str:
    return {
        n.Signature: "signature", n.ModuleDecl: "module", n.RetrieverDecl: "retriever", n.ToolDecl: "tool",
        n.LMDecl: "lm", n.MetricDecl: "metric", n.ProgramDecl: "program",
    }.get(type(d), "declaration")


def _pred_hint(t: Type, want: Type | None = None) -> str | None:
    t = _strip_opt(t)
    if t.kind != "prediction":
        return None
    names = [k for k, ft in t.args if k not in extra_output_names()] or [k for k, _ in t.args]
    if want is not None:
        fitting = [k for k, ft in t.args if k in names and assignable(ft, want)]
        if len(fitting) == 1:
            return f"use .{fitting[0]}"
    if len(names) == 1:
        return f"use .{names[0]}"
    return "use .<field>" + (f" (one of: {', '.join(names)})" if names else "")


def _sig_text(sig: SigInfo) -> str:
    return ", ".join(f[0] for f in sig.inputs) + " -> " + ", ".join(f[0] for f in sig.outputs)


def _attr_span(e: n.Attr) -> Span:
    sp = e.span
    return Span(sp.path, sp.end_line, max(sp.end_col - len(e.name), 1), sp.end_line, sp.end_col)


def _var_span(s: n.For) -> Span:
    sp = s.span
    return Span(sp.path, sp.line, sp.col + 4, sp.line, sp.col + 4 + len(s.var))


def _end_span(d: n.Node) -> Span:
    sp = d.span
    return Span(sp.path, sp.end_line, max(sp.end_col - 1, 1), sp.end_line, max(sp.end_col, 2))


def _always_returns(stmts) -> bool:
    for s in stmts:
        if isinstance(s, n.Return):
            return True
        if isinstance(s, n.If) and s.orelse is not None:
            if all(_always_returns(body) for _, body in s.branches) and _always_returns(s.orelse):
                return True
    return False
