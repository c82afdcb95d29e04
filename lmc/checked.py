"""What the checker produces (`Checked`, resolved signatures and tools), the types it resolves and how its messages name things."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from . import nodes as n
from .errors import Diagnostics, LmcError, Span, did_you_mean, one_of
from .kinds import extra_output_names
from .types import ANY, FLOAT, INT, NONE, STR, Type, assignable, dict_of, list_of, literal, optional, unify

TYPE_NAMES = ("str", "int", "float", "bool", "json", "list", "dict")


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
    return resolve(ref, None)


def resolve(ref: n.TypeRef | None, diags: Diagnostics | None) -> Type:
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
    elif ref.name in ("list", "dict"):
        t = _container(ref, diags, err)
    else:
        hint = did_you_mean(ref.name, TYPE_NAMES) or one_of(TYPE_NAMES)
        t = err(f"unknown type '{ref.name}'", hint)
    if ref.optional and t.kind != "any":
        t = optional(t)
    return t


def _container(ref: n.TypeRef, diags: Diagnostics | None, err: Callable[..., Type]) -> Type:
    """`list[T]` or `dict[str, T]`, their arguments resolved (and reported) even when miscounted."""
    want = 1 if ref.name == "list" else 2
    if len(ref.args) != want:
        for a in ref.args:
            resolve(a, diags)
        example = "write list[str]" if want == 1 else "write dict[str, T]"
        return err(f"{ref.name} takes {want} type argument{'s' if want > 1 else ''}, got {len(ref.args)}", example)
    if want == 1:
        return list_of(resolve(ref.args[0], diags))
    key = ref.args[0]
    if not (key.name == "str" and not key.args and not key.optional) and diags is not None:
        diags.error("dict keys must be str", key.span, "write dict[str, T]")
    return dict_of(resolve(ref.args[1], diags))


def show(t: Type) -> str:
    """A type for a message: a lone literal from a constant reads as that string."""
    if t.kind == "literal" and len(t.args) == 1:
        return f'str "{t.args[0]}"'
    if t == NONE:
        return "none"
    return t.name


def feedback_problem(owner: str, t: Type) -> str | None:
    """What is wrong with `return value, feedback` here: only a metric gives feedback, and it is text."""
    if owner != "metric":
        return "only a metric returns feedback with its value; a program returns its outputs alone"
    if t.kind not in ("str", "literal", "any", "json"):
        return f"a metric's feedback is text, got {show(t)}"
    return None


def is_num(t: Type) -> bool:
    return t.kind in ("int", "float", "bool", "any", "json")


def strip_opt(t: Type) -> Type:
    return t.args[0] if t.kind == "optional" and t != NONE else t


def widen(t: Type) -> Type:
    """Literal types of constants widen to str once stored in a variable."""
    if t.kind == "literal":
        return STR
    if t.kind == "list" and t.args[0].kind == "literal":
        return list_of(STR)
    return t


# ---------------------------------------------------------------- naming things in messages


def is_number_value(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def show_value(v) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    return repr(v) if not isinstance(v, (list, tuple)) else "a list"


def hint_for(name: str, options) -> str:
    options = list(options)
    hint = did_you_mean(name, options)
    return hint or one_of(options)


def kind_word(d: n.Node) -> str:
    return {
        n.Signature: "signature",
        n.ModuleDecl: "module",
        n.RetrieverDecl: "retriever",
        n.ToolDecl: "tool",
        n.LMDecl: "lm",
        n.MetricDecl: "metric",
        n.ProgramDecl: "program",
    }.get(type(d), "declaration")


def pred_hint(t: Type, want: Type | None = None) -> str | None:
    t = strip_opt(t)
    if t.kind != "prediction":
        return None
    extras = extra_output_names()
    names = [k for k, ft in t.args if k not in extras] or [k for k, _ in t.args]
    if want is not None:
        fitting = [k for k, ft in t.args if k in names and assignable(ft, want)]
        if len(fitting) == 1:
            return f"use .{fitting[0]}"
    if len(names) == 1:
        return f"use .{names[0]}"
    return "use .<field>" + (f" (one of: {', '.join(names)})" if names else "")


def sig_text(sig: SigInfo) -> str:
    return ", ".join(f[0] for f in sig.inputs) + " -> " + ", ".join(f[0] for f in sig.outputs)


def end_span(d: n.Node) -> Span:
    sp = d.span
    return Span(sp.path, sp.end_line, max(sp.end_col - 1, 1), sp.end_line, max(sp.end_col, 2))


def always_returns(stmts) -> bool:
    for s in stmts:
        if isinstance(s, n.Return):
            return True
        if isinstance(s, n.If) and s.orelse is not None:
            if all(always_returns(body) for _, body in s.branches) and always_returns(s.orelse):
                return True
    return False


def arith_type(op: str, lt: Type, rt: Type) -> Type | None:
    """The type of `lt op rt` for an arithmetic operator, or None when the operator does not apply."""
    a, b = strip_opt(lt), strip_opt(rt)
    if a.kind in ("any", "json") or b.kind in ("any", "json"):
        return ANY
    if op == "+":
        if a.kind in ("str", "literal") and b.kind in ("str", "literal"):
            return STR
        if a.kind == "list" and b.kind == "list":
            return list_of(unify(widen(a.args[0]), widen(b.args[0])))
    if is_num(a) and is_num(b):
        return FLOAT if op == "/" or a.kind == "float" or b.kind == "float" else INT
    if op == "*" and {a.kind, b.kind} & {"str", "literal"} and {a.kind, b.kind} & {"int"}:
        return STR
    return None


def arith_hint(op: str, a: Type, b: Type) -> str | None:
    """What to write instead, when `a op b` was refused."""
    if a.kind == "prediction" or b.kind == "prediction":
        return pred_hint(a if a.kind == "prediction" else b)
    if op == "+" and {a.kind, b.kind} & {"str", "literal"}:
        return "convert with str(...) or use an f-string"
    return None
