"""Typing the expressions and calls of program and metric bodies, against the checked declarations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from . import nodes as n
from .builtins import BUILTINS, BuiltinTypeError
from .check_decls import Declarations
from .checked import arith_hint, arith_type, hint_for, is_num, kind_word, pred_hint, resolve_type, show, sig_text, strip_opt, widen
from .errors import Span, did_you_mean, one_of
from .kinds import extra_outputs
from .types import ANY, BOOL, FLOAT, INT, NONE, STR, Type, assignable, dict_of, list_of, literal, prediction, unify


@dataclass
class Scope:
    """Variables of one program or metric body, in the order they are assigned."""

    types: dict[str, Type] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)  # var -> "module 'x'" for predictions
    loops: int = 0
    called_module: bool = False
    owner: str = "program"
    owner_name: str = ""


class Expressions:
    """Types expressions and calls; notes which programs call which (for recursion).  `Bodies` adds the statements."""

    def __init__(self, decls: Declarations):
        self.d = decls
        self.program_calls: dict[str, set[str]] = {}
        self.current_program: str | None = None

    def error(self, msg: str, span: Span, hint: str | None = None) -> None:
        self.d.diags.error(msg, span, hint)

    def undefined(self, name: str, span: Span, scope: Scope) -> None:
        cands = list(scope.types) + [k for k, v in self.d.decls.items() if not isinstance(v, n.Signature)] + list(BUILTINS)
        few = "defined here: " + ", ".join(sorted(scope.types)) if 0 < len(scope.types) <= 8 else None
        self.error(f"'{name}' is not defined", span, did_you_mean(name, cands) or few)

    def origin(self, e, scope: Scope) -> str | None:
        if isinstance(e, n.Call) and isinstance(e.func, n.Name):
            d = self.d.decls.get(e.func.id)
            if isinstance(d, (n.ModuleDecl, n.ProgramDecl)):
                return f"{kind_word(d)} '{d.name}'"
        if isinstance(e, n.Name):
            return scope.origin.get(e.id)
        return None

    def expr(self, e: n.Expr, scope: Scope) -> Type:
        return _EXPRS[type(e)](self, e, scope)

    def const(self, e: n.Const, scope: Scope) -> Type:
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

    def name(self, e: n.Name, scope: Scope) -> Type:
        if e.id in scope.types:
            return scope.types[e.id]
        d = self.d.decls.get(e.id)
        if d is not None:
            if isinstance(d, (n.ModuleDecl, n.ProgramDecl, n.ToolDecl, n.RetrieverDecl)):
                self.error(
                    f"{kind_word(d)} '{e.id}' must be called",
                    e.span,
                    f"write {e.id}(...)" if not isinstance(d, n.ModuleDecl) else f"write {e.id}(field=value, ...)",
                )
            else:
                self.error(f"{kind_word(d)} '{e.id}' is not a value", e.span)
        elif e.id in BUILTINS:
            self.error(f"builtin '{e.id}' must be called", e.span, f"write {e.id}(...)")
        else:
            self.undefined(e.id, e.span, scope)
        return ANY

    def fstring(self, e: n.FString, scope: Scope) -> Type:
        for part in e.parts:
            if not isinstance(part, str):
                t = self.expr(part, scope)
                if strip_opt(t).kind == "prediction":
                    self.error("cannot put a prediction in an f-string", part.span, pred_hint(t))
        return STR

    def list_expr(self, e: n.ListExpr, scope: Scope) -> Type:
        t: Type | None = None
        for item in e.items:
            it = self.expr(item, scope)
            t = it if t is None else unify(t, it)
        return list_of(t if t is not None else ANY)

    def dict_expr(self, e: n.DictExpr, scope: Scope) -> Type:
        t: Type | None = None
        for k, v in e.items:
            kt = self.expr(k, scope)
            if not assignable(kt, STR) or strip_opt(kt).kind == "optional":
                self.error(f"dict keys must be str, got {show(kt)}", k.span)
            vt = self.expr(v, scope)
            t = vt if t is None else unify(t, vt)
        return dict_of(widen(t) if t is not None else ANY)

    def binop_expr(self, e: n.BinOp, scope: Scope) -> Type:
        return self.binop(e.op, self.expr(e.left, scope), self.expr(e.right, scope), e.span)

    def unary(self, e: n.UnaryOp, scope: Scope) -> Type:
        t = self.expr(e.operand, scope)
        if e.op == "not":
            return BOOL
        if not is_num(strip_opt(t)):
            self.error(f"cannot apply unary '{e.op}' to {show(t)}", e.span)
            return ANY
        return INT if t.kind == "bool" else strip_opt(t)

    def compare(self, e: n.Compare, scope: Scope) -> Type:
        lt = strip_opt(self.expr(e.left, scope))
        rt = strip_opt(self.expr(e.right, scope))
        if e.op in ("in", "not in"):
            if rt.kind not in ("list", "dict", "str", "literal", "any", "json"):
                self.error(f"'{e.op}' needs a list, dict or str on the right, got {show(rt)}", e.right.span)
            elif rt.kind in ("str", "literal") and not assignable(lt, STR):
                self.error(f"'{e.op}' on a str needs a str on the left, got {show(lt)}", e.left.span)
        elif e.op in ("<", "<=", ">", ">="):
            ok = (
                (is_num(lt) and is_num(rt))
                or (lt.kind in ("str", "literal") and rt.kind in ("str", "literal"))
                or "any" in (lt.kind, rt.kind)
                or "json" in (lt.kind, rt.kind)
            )
            if not ok:
                self.error(f"cannot compare {show(lt)} and {show(rt)} with '{e.op}'", e.span)
        else:
            self.literal_compare(e, lt, rt)
        return BOOL

    def boolop(self, e: n.BoolOp, scope: Scope) -> Type:
        lt = self.expr(e.left, scope)
        rt = self.expr(e.right, scope)
        return BOOL if lt == BOOL and rt == BOOL else unify(widen(lt), widen(rt))

    def literal_compare(self, e: n.Compare, lt: Type, rt: Type) -> None:
        """`x == "neutral"` where x can only be "positive" | "negative" is always false: say so."""
        for a, b, node in ((lt, rt, e.right), (rt, lt, e.left)):
            if a.kind == "literal" and len(a.args) > 1 and b.kind == "literal" and len(b.args) == 1 and b.args[0] not in a.args:
                self.error(f'"{b.args[0]}" is never equal to a value of type {a.name}', node.span)

    def binop(self, op: str, lt: Type, rt: Type, span: Span) -> Type:
        t = arith_type(op, lt, rt)
        if t is None:  # refused: say why, and carry on with the type that hides follow-on errors
            a, b = strip_opt(lt), strip_opt(rt)
            self.error(f"cannot apply '{op}' to {show(a)} and {show(b)}", span, arith_hint(op, a, b))
        return ANY if t is None else t

    def attr(self, e: n.Attr, scope: Scope) -> Type:
        t = strip_opt(self.expr(e.obj, scope))
        if t.kind in ("any", "json"):
            return ANY
        if t.kind == "prediction":
            ft = t.field(e.name)
            if ft is not None:
                return ft
            names = [k for k, _ in t.args]
            src = self.origin(e.obj, scope) or "the prediction"
            hint = did_you_mean(e.name, names) or one_of(names)
            self.error(f"{src} has no output '{e.name}'", e.name_span, hint)
            return ANY
        if e.name in BUILTINS:
            self.error(f"{show(t)} has no method '{e.name}'", e.name_span, f"call the function: {e.name}(...)")
        else:
            self.error(f"'.{e.name}' needs a prediction, got {show(t)}", e.name_span, "fields are read from module calls")
        return ANY

    def index(self, e: n.Index, scope: Scope) -> Type:
        t = strip_opt(self.expr(e.obj, scope))
        it = strip_opt(self.expr(e.index, scope))
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
    def call(self, e: n.Call, scope: Scope) -> Type:
        if not isinstance(e.func, n.Name):
            self.args_only(e, scope)
            if isinstance(e.func, n.Attr):
                self.expr(e.func.obj, scope)
                self.error(
                    f"there are no methods; call '{e.func.name}' as a function",
                    e.func.name_span,
                    f"write {e.func.name}(x, ...)" if e.func.name in BUILTINS else None,
                )
            else:
                self.expr(e.func, scope)
                self.error("only declared names and builtins can be called", e.func.span)
            return ANY
        name = e.func.id
        if name in scope.types:
            self.error(f"variable '{name}' cannot be called", e.func.span)
            return ANY
        d = self.d.decls.get(name)
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
                n.LMDecl: 'use it in a module: lm="' + name + '"',
            }.get(type(d))
            self.error(f"{kind_word(d)} '{name}' cannot be called{' inside a program' if isinstance(d, n.MetricDecl) else ''}", e.func.span, hint)
            return ANY
        return self.call_builtin(e, name, scope)

    def call_builtin(self, e: n.Call, name: str, scope: Scope) -> Type:
        b = BUILTINS.get(name)
        if b is None:
            self.args_only(e, scope)
            cands = list(BUILTINS) + [k for k, v in self.d.decls.items() if isinstance(v, (n.ModuleDecl, n.ProgramDecl, n.RetrieverDecl, n.ToolDecl))]
            self.error(f"unknown function '{name}'", e.func.span, did_you_mean(name, cands) or "'lmc help builtins' lists the builtins")
            return ANY
        ts = [self.expr(a, scope) for a in e.args]
        for kw in e.kwargs:
            self.expr(kw.value, scope)
        if e.kwargs:
            self.error(f"{name}() takes positional arguments only", e.kwargs[0].name_span, f"write {name}(x, ...)")
            return ANY
        msg = b.arity_error(len(ts))
        if msg:
            self.error(msg, e.span)
            return ANY
        for a, t in zip(e.args, ts):
            if strip_opt(t).kind == "prediction" and name not in ("print",):
                self.error(f"{name}() cannot take a prediction", a.span, pred_hint(t))
                return ANY
        try:
            return b.returns(ts)
        except BuiltinTypeError as err:
            self.error(str(err), e.span)
            return ANY

    def args_only(self, e: n.Call, scope: Scope) -> None:
        for a in e.args:
            self.expr(a, scope)
        for kw in e.kwargs:
            self.expr(kw.value, scope)

    def keyword_call(self, e: n.Call, inputs: list[tuple[str, Type]], what: str, extra: str, scope: Scope) -> None:
        for a in e.args:
            self.expr(a, scope)
        if e.args:
            first = inputs[0][0] if inputs else "field"
            callee = e.func.id if isinstance(e.func, n.Name) else "f"
            self.error(f"{what} takes keyword arguments only", e.args[0].span, f"write {callee}({first}=...)")
        given = {}
        want = dict(inputs)
        meant: set[str] = set()  # inputs a misspelled keyword was taken for: not reported missing as well
        for kw in e.kwargs:
            t = self.expr(kw.value, scope)
            given[kw.name] = kw
            if kw.name not in want:
                hint = did_you_mean(kw.name, [k for k in want if k not in given])
                meant |= {hint.split("'")[1]} if hint else set()
                self.error(f"{what} has no input '{kw.name}'", kw.name_span, hint or (one_of(want) if want else "it takes no inputs"))
                continue
            self.flow(t, want[kw.name], kw.value, f"input '{kw.name}' of {what}")
        if not e.args:
            for name, _ in inputs:
                if name not in given and name not in meant:
                    self.error(f"missing input '{name}' for {what}{extra}", e.span)

    def flow(self, t: Type, want: Type, node, what: str) -> None:
        if assignable(t, want):
            return
        ts = strip_opt(t)
        if ts.kind == "prediction" and want.kind != "prediction":
            self.error(f"{what} expects {want.name}, got a prediction", node.span, pred_hint(t, want))
            return
        if t.kind == "literal" and want.kind == "literal":
            self.error(f"{what} expects {want.name}, got {show(t)}", node.span, f"expected one of: {', '.join(want.args)}")
            return
        self.error(f"{what} expects {want.name}, got {show(t)}", node.span)

    def call_module(self, e: n.Call, d: n.ModuleDecl, scope: Scope) -> Type:
        sig = self.d.module_sigs.get(d.name)
        scope.called_module = True
        if sig is None:
            self.args_only(e, scope)
            return ANY
        inputs = [(name, t) for name, t, _ in sig.inputs]
        signame = sig.name if not sig.name.endswith(".sig") else f'"{sig_text(sig)}"'
        self.keyword_call(e, inputs, f"module '{d.name}'", f" (signature {signame})", scope)
        outs = [(x, STR) for x in extra_outputs(d.kind)] + [(name, t) for name, t, _ in sig.outputs]
        return prediction(outs)

    def call_program(self, e: n.Call, d: n.ProgramDecl, scope: Scope) -> Type:
        scope.called_module = True
        if self.current_program is not None:
            self.program_calls.setdefault(self.current_program, set()).add(d.name)
        inputs = [(p.name, resolve_type(p.type)) for p in d.params]
        self.keyword_call(e, inputs, f"program '{d.name}'", "", scope)
        return prediction([(p.name, resolve_type(p.type)) for p in d.outputs])

    def call_retriever(self, e: n.Call, d: n.RetrieverDecl, scope: Scope) -> Type:
        ts = [self.expr(a, scope) for a in e.args]
        if len(ts) != 1:
            self.error(f"retriever '{d.name}' takes 1 argument (the query), got {len(ts)}", e.span, f"write {d.name}(query, k=3)")
        elif not assignable(ts[0], STR):
            self.flow(ts[0], STR, e.args[0], f"the query of retriever '{d.name}'")
        for kw in e.kwargs:
            t = self.expr(kw.value, scope)
            if kw.name != "k":
                self.error(f"retriever '{d.name}' has no argument '{kw.name}'", kw.name_span, "expected one of: k")
            elif not assignable(t, INT):
                self.error(f"'k' of retriever '{d.name}' expects int, got {show(t)}", kw.value.span)
        return list_of(STR)

    def call_tool(self, e: n.Call, d: n.ToolDecl, scope: Scope) -> Type:
        info = self.d.tool_infos.get(d.name)
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
                self.error(f"tool '{d.name}' has no parameter '{kw.name}'", kw.name_span, hint_for(kw.name, want))
                continue
            if kw.name in given:
                self.error(f"argument '{kw.name}' given twice", kw.name_span)
            given.add(kw.name)
            self.flow(t, want[kw.name], kw.value, f"argument '{kw.name}' of tool '{d.name}'")
        for pname, _ in params:
            if pname not in given and len(ts) <= len(params):
                self.error(f"missing argument '{pname}' for tool '{d.name}'", e.span)
        return info.returns


# Node type -> the method that types it, looked up once per node instead of an isinstance chain.
_EXPRS: dict[type, Callable[[Expressions, Any, Scope], Type]] = {
    n.Const: Expressions.const,
    n.Name: Expressions.name,
    n.FString: Expressions.fstring,
    n.ListExpr: Expressions.list_expr,
    n.DictExpr: Expressions.dict_expr,
    n.Attr: Expressions.attr,
    n.Index: Expressions.index,
    n.Call: Expressions.call,
    n.BinOp: Expressions.binop_expr,
    n.UnaryOp: Expressions.unary,
    n.Compare: Expressions.compare,
    n.BoolOp: Expressions.boolop,
}
