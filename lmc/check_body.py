"""Typing program and metric bodies: statements, expressions and calls, against the checked declarations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from . import nodes as n
from .builtins import BUILTINS, BuiltinTypeError
from .check_decls import Declarations
from .checked import (
    always_returns, arith_hint, arith_type, end_span, hint_for, is_num, kind_word, pred_hint, resolve, resolve_type, show, show_value,
    feedback_problem, sig_text, strip_opt, widen,
)
from .errors import Span, did_you_mean, one_of
from .kinds import extra_outputs
from .types import ANY, BOOL, FLOAT, INT, NONE, STR, Type, assignable, dict_of, list_of, literal, prediction, unify


@dataclass
class _Scope:
    """Variables of one program or metric body, in the order they are assigned."""

    types: dict[str, Type] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)  # var -> "module 'x'" for predictions
    loops: int = 0
    called_module: bool = False
    owner: str = "program"
    owner_name: str = ""


class Bodies:
    """Types the bodies of programs and block metrics; notes which programs call which (for recursion)."""

    def __init__(self, decls: Declarations):
        self.d = decls
        self.program_calls: dict[str, set[str]] = {}
        self.current_program: str | None = None
        self.outputs: dict[str, Type] | None = None

    def error(self, msg: str, span: Span, hint: str | None = None) -> None:
        self.d.diags.error(msg, span, hint)

    # -- programs --------------------------------------------------------------
    def params(self, params: tuple[n.Param, ...], what: str) -> dict[str, Type]:
        out: dict[str, Type] = {}
        for p in params:
            if p.name in out:
                self.error(f"{what} '{p.name}' appears twice", p.span)
                continue
            if what == "input" and p.name in self.d.decls:
                self.error(f"{what} '{p.name}' has the name of {kind_word(self.d.decls[p.name])} '{p.name}'", p.span, "rename it")
            out[p.name] = resolve(p.type, self.d.diags)
        return out

    def program(self, d: n.ProgramDecl) -> None:
        ins = self.params(d.params, "input")
        outs = self.params(d.outputs, "output")
        for name in set(ins) & set(outs):
            self.error(f"'{name}' is both an input and an output", next(p for p in d.outputs if p.name == name).span)
        if not d.outputs:
            self.error(f"program '{d.name}' declares no outputs", d.name_span,
                       f"write program {d.name}(...) -> (answer: str) {{ ... }}")
        scope = _Scope(types=dict(ins), owner="program", owner_name=d.name)
        self.current_program = d.name
        self.program_calls.setdefault(d.name, set())
        self.outputs = outs
        self.block(d.body, scope)
        self.current_program = None
        if d.outputs and not always_returns(d.body):
            self.error(f"program '{d.name}' does not return its outputs", end_span(d),
                       "end the program with return <module call> or return {" + ", ".join(f'"{k}": ...' for k in outs) + "}")

    def metric_block(self, d: n.MetricDecl) -> None:
        if len(d.params) != 2:
            self.error(f"a metric block takes two parameters, got {len(d.params)}", d.name_span,
                       f"write metric {d.name}(example, pred) {{ ... }}")
        types: dict[str, Type] = {}
        if len(self.d.programs) == 1:
            prog = next(iter(self.d.programs.values()))
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
            self.error(f"metric '{d.name}' never returns a score", end_span(d), "end it with return <number from 0 to 1 or bool>")

    # -- statements ------------------------------------------------------------
    def block(self, stmts, scope: _Scope) -> None:
        for s in stmts:
            self.stmt(s, scope)

    def stmt(self, s: n.Stmt, scope: _Scope) -> None:
        _STMTS[type(s)](self, s, scope)

    def expr_stmt(self, s: n.ExprStmt, scope: _Scope) -> None:
        self.expr(s.expr, scope)

    def for_stmt(self, s: n.For, scope: _Scope) -> None:
        t = strip_opt(self.expr(s.iter, scope))
        if t.kind == "list":
            elem = t.args[0]
        elif t.kind in ("str", "literal", "dict"):
            elem = STR
        elif t.kind in ("any", "json"):
            elem = ANY
        else:
            self.error(f"cannot loop over {show(t)}", s.iter.span, "loop over a list, e.g. for i in range(3)")
            elem = ANY
        self.bind(s.var, elem, s.keyword_span, scope, var_span=s.var_span)
        self.loop_body(s.body, scope)

    def if_stmt(self, s: n.If, scope: _Scope) -> None:
        for cond, body in s.branches:
            self.expr(cond, scope)
            self.block(body, scope)
        if s.orelse is not None:
            self.block(s.orelse, scope)

    def while_stmt(self, s: n.While, scope: _Scope) -> None:
        self.expr(s.cond, scope)
        if s.bound is None:
            self.error("a while loop needs a bound", s.keyword_span, "write 'while <cond> max N { ... }'")
        else:
            v = n.constant(s.bound)
            ok = v is not n.NOT_CONSTANT
            if not ok or not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                self.error(f"the bound of a while loop must be a positive int constant, got {show_value(v) if ok else 'an expression'}",
                           s.bound.span)
        self.loop_body(s.body, scope)

    def loop_body(self, body: tuple[n.Stmt, ...], scope: _Scope) -> None:
        scope.loops += 1
        self.block(body, scope)
        scope.loops -= 1

    def jump(self, s: n.Break | n.Continue, scope: _Scope) -> None:
        if scope.loops == 0:
            self.error(f"'{'break' if isinstance(s, n.Break) else 'continue'}' outside a loop", s.span)

    def bind(self, name: str, t: Type, span: Span, scope: _Scope, var_span: Span | None = None) -> None:
        target = self.d.decls.get(name)
        sp = var_span or span
        if target is not None:
            self.error(f"cannot assign to {kind_word(target)} '{name}'", sp, "pick another variable name")
            return
        if name in BUILTINS:
            self.error(f"cannot assign to builtin '{name}'", sp, "pick another variable name")
            return
        t = widen(t)
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
        if s.feedback is not None and (why := feedback_problem(scope.owner, strip_opt(self.expr(s.feedback, scope)))):
            self.error(why, s.feedback.span)
        if scope.owner == "metric":
            self.metric_return(s, scope)
            return
        outs: dict[str, Type] = self.outputs or {}
        v = s.value
        if v is None:
            if outs:
                self.error("return needs the program's outputs", s.span, "return {" + ", ".join(f'"{k}": ...' for k in outs) + "}")
            return
        if isinstance(v, n.DictExpr) and all(isinstance(k, n.Const) and isinstance(k.value, str) for k, _ in v.items):
            self.return_dict(v, outs, scope)
            return
        t = self.expr(v, scope)
        ts = strip_opt(t)
        if ts.kind == "prediction":
            self.return_prediction(v, t, outs, scope)
        elif ts.kind in ("any", "json") or (ts.kind == "dict" and len(outs) != 1):
            return
        elif len(outs) == 1:
            k, ot = next(iter(outs.items()))
            if not assignable(t, ot):
                self.error(f"output '{k}' is declared {ot.name}, got {show(t)}", v.span)
        else:
            self.error("return {...} with the outputs " + ", ".join(f"'{k}'" for k in outs) + f", got {show(t)}", v.span,
                       "a program with several outputs returns a module call or a dict literal")

    def metric_return(self, s: n.Return, scope: _Scope) -> None:
        if s.value is None:
            self.error("a metric returns a score", s.span, "return a number from 0 to 1 or a bool")
        elif not is_num(t := strip_opt(self.expr(s.value, scope))):
            self.error(f"a metric returns a number or bool, got {show(t)}", s.value.span)

    def return_dict(self, v: n.DictExpr, outs: dict[str, Type], scope: _Scope) -> None:
        """`return {"answer": ..., ...}`: every key an output, every output given, each of its declared type."""
        keys: dict[str, Type] = {}
        for k, val in v.items:
            assert isinstance(k, n.Const) and isinstance(k.value, str)
            name = k.value
            vt = self.expr(val, scope)
            if name in keys:
                self.error(f"output '{name}' is returned twice", k.span)
            keys[name] = vt
            if name not in outs:
                self.error(f"'{name}' is not an output of program '{scope.owner_name}'", k.span, hint_for(name, outs))
            elif not assignable(vt, outs[name]):
                self.error(f"output '{name}' is declared {outs[name].name}, got {show(vt)}", val.span, pred_hint(vt))
        missing = [k for k in outs if k not in keys]
        if missing:
            self.error(f"return is missing output{'s' if len(missing) > 1 else ''} " + ", ".join(f"'{m}'" for m in missing),
                       v.span)

    def return_prediction(self, v: n.Expr, t: Type, outs: dict[str, Type], scope: _Scope) -> None:
        """`return qa(...)`: the prediction must hold every output, each of its declared type."""
        ts = strip_opt(t)
        missing = [k for k in outs if ts.field(k) is None]
        if len(outs) == 1 and missing:
            src = self.origin(v, scope) or "the returned prediction"
            self.error(f"{src} has no output '{missing[0]}' to return", v.span,
                       pred_hint(t, outs[missing[0]]) or f'return {{"{missing[0]}": ...}}')
            return
        for k in missing:
            src = self.origin(v, scope) or "the returned value"
            self.error(f"{src} has no output '{k}' to return", v.span,
                       "return {" + ", ".join(f'"{o}": ...' for o in outs) + "} to build the outputs")
        for k, ot in outs.items():
            ft = ts.field(k)
            if ft is not None and not assignable(ft, ot):
                self.error(f"output '{k}' is declared {ot.name}, got {show(ft)}", v.span)

    def check_stmt(self, s: n.Check, scope: _Scope) -> None:
        self.expr(s.cond, scope)
        if s.message is not None:
            mt = self.expr(s.message, scope)
            if not assignable(mt, STR):
                self.error(f"the message of '{s.kind}' must be a str, got {show(mt)}", s.message.span)
        if s.target is not None:
            tsp = s.target_span or s.span
            target = self.d.decls.get(s.target)
            if target is None:
                self.error(f"unknown module '{s.target}'", tsp, did_you_mean(s.target, self.d.modules) or one_of(self.d.modules))
            elif not isinstance(target, n.ModuleDecl):
                self.error(f"'{s.target}' is a {kind_word(target)}, not a module", tsp, "a check retries a module call")
        elif not scope.called_module:
            self.error(f"nothing to retry: '{s.kind}' follows no module call", s.keyword_span,
                       "name one with 'for <module>'")

    # -- expressions -------------------------------------------------------------
    def undefined(self, name: str, span: Span, scope: _Scope) -> None:
        cands = list(scope.types) + [k for k, v in self.d.decls.items() if not isinstance(v, n.Signature)] + list(BUILTINS)
        few = "defined here: " + ", ".join(sorted(scope.types)) if 0 < len(scope.types) <= 8 else None
        self.error(f"'{name}' is not defined", span, did_you_mean(name, cands) or few)

    def origin(self, e, scope: _Scope) -> str | None:
        if isinstance(e, n.Call) and isinstance(e.func, n.Name):
            d = self.d.decls.get(e.func.id)
            if isinstance(d, (n.ModuleDecl, n.ProgramDecl)):
                return f"{kind_word(d)} '{d.name}'"
        if isinstance(e, n.Name):
            return scope.origin.get(e.id)
        return None

    def expr(self, e: n.Expr, scope: _Scope) -> Type:
        return _EXPRS[type(e)](self, e, scope)

    def const(self, e: n.Const, scope: _Scope) -> Type:
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

    def name(self, e: n.Name, scope: _Scope) -> Type:
        if e.id in scope.types:
            return scope.types[e.id]
        d = self.d.decls.get(e.id)
        if d is not None:
            if isinstance(d, (n.ModuleDecl, n.ProgramDecl, n.ToolDecl, n.RetrieverDecl)):
                self.error(f"{kind_word(d)} '{e.id}' must be called", e.span,
                           f"write {e.id}(...)" if not isinstance(d, n.ModuleDecl) else f"write {e.id}(field=value, ...)")
            else:
                self.error(f"{kind_word(d)} '{e.id}' is not a value", e.span)
        elif e.id in BUILTINS:
            self.error(f"builtin '{e.id}' must be called", e.span, f"write {e.id}(...)")
        else:
            self.undefined(e.id, e.span, scope)
        return ANY

    def fstring(self, e: n.FString, scope: _Scope) -> Type:
        for part in e.parts:
            if not isinstance(part, str):
                t = self.expr(part, scope)
                if strip_opt(t).kind == "prediction":
                    self.error("cannot put a prediction in an f-string", part.span, pred_hint(t))
        return STR

    def list_expr(self, e: n.ListExpr, scope: _Scope) -> Type:
        t: Type | None = None
        for item in e.items:
            it = self.expr(item, scope)
            t = it if t is None else unify(t, it)
        return list_of(t if t is not None else ANY)

    def dict_expr(self, e: n.DictExpr, scope: _Scope) -> Type:
        t: Type | None = None
        for k, v in e.items:
            kt = self.expr(k, scope)
            if not assignable(kt, STR) or strip_opt(kt).kind == "optional":
                self.error(f"dict keys must be str, got {show(kt)}", k.span)
            vt = self.expr(v, scope)
            t = vt if t is None else unify(t, vt)
        return dict_of(widen(t) if t is not None else ANY)

    def binop_expr(self, e: n.BinOp, scope: _Scope) -> Type:
        return self.binop(e.op, self.expr(e.left, scope), self.expr(e.right, scope), e.span)

    def unary(self, e: n.UnaryOp, scope: _Scope) -> Type:
        t = self.expr(e.operand, scope)
        if e.op == "not":
            return BOOL
        if not is_num(strip_opt(t)):
            self.error(f"cannot apply unary '{e.op}' to {show(t)}", e.span)
            return ANY
        return INT if t.kind == "bool" else strip_opt(t)

    def compare(self, e: n.Compare, scope: _Scope) -> Type:
        lt = strip_opt(self.expr(e.left, scope))
        rt = strip_opt(self.expr(e.right, scope))
        if e.op in ("in", "not in"):
            if rt.kind not in ("list", "dict", "str", "literal", "any", "json"):
                self.error(f"'{e.op}' needs a list, dict or str on the right, got {show(rt)}", e.right.span)
            elif rt.kind in ("str", "literal") and not assignable(lt, STR):
                self.error(f"'{e.op}' on a str needs a str on the left, got {show(lt)}", e.left.span)
        elif e.op in ("<", "<=", ">", ">="):
            ok = (is_num(lt) and is_num(rt)) or (lt.kind in ("str", "literal") and rt.kind in ("str", "literal")) \
                or "any" in (lt.kind, rt.kind) or "json" in (lt.kind, rt.kind)
            if not ok:
                self.error(f"cannot compare {show(lt)} and {show(rt)} with '{e.op}'", e.span)
        else:
            self.literal_compare(e, lt, rt)
        return BOOL

    def boolop(self, e: n.BoolOp, scope: _Scope) -> Type:
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

    def attr(self, e: n.Attr, scope: _Scope) -> Type:
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

    def index(self, e: n.Index, scope: _Scope) -> Type:
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
    def call(self, e: n.Call, scope: _Scope) -> Type:
        if not isinstance(e.func, n.Name):
            self.args_only(e, scope)
            if isinstance(e.func, n.Attr):
                self.expr(e.func.obj, scope)
                self.error(f"there are no methods; call '{e.func.name}' as a function", e.func.name_span,
                           f"write {e.func.name}(x, ...)" if e.func.name in BUILTINS else None)
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
                n.LMDecl: "use it in a module: lm=\"" + name + "\"",
            }.get(type(d))
            self.error(f"{kind_word(d)} '{name}' cannot be called{' inside a program' if isinstance(d, n.MetricDecl) else ''}",
                       e.func.span, hint)
            return ANY
        return self.call_builtin(e, name, scope)

    def call_builtin(self, e: n.Call, name: str, scope: _Scope) -> Type:
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

    def call_module(self, e: n.Call, d: n.ModuleDecl, scope: _Scope) -> Type:
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
                self.error(f"retriever '{d.name}' has no argument '{kw.name}'", kw.name_span, "expected one of: k")
            elif not assignable(t, INT):
                self.error(f"'k' of retriever '{d.name}' expects int, got {show(t)}", kw.value.span)
        return list_of(STR)

    def call_tool(self, e: n.Call, d: n.ToolDecl, scope: _Scope) -> Type:
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
_STMTS: dict[type, Callable[[Bodies, Any, _Scope], None]] = {
    n.Assign: Bodies.assign, n.ExprStmt: Bodies.expr_stmt, n.For: Bodies.for_stmt, n.If: Bodies.if_stmt,
    n.While: Bodies.while_stmt, n.Return: Bodies.ret, n.Check: Bodies.check_stmt, n.Break: Bodies.jump, n.Continue: Bodies.jump,
}
_EXPRS: dict[type, Callable[[Bodies, Any, _Scope], Type]] = {
    n.Const: Bodies.const, n.Name: Bodies.name, n.FString: Bodies.fstring, n.ListExpr: Bodies.list_expr,
    n.DictExpr: Bodies.dict_expr, n.Attr: Bodies.attr, n.Index: Bodies.index, n.Call: Bodies.call,
    n.BinOp: Bodies.binop_expr, n.UnaryOp: Bodies.unary, n.Compare: Bodies.compare, n.BoolOp: Bodies.boolop}
