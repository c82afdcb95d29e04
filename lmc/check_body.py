"""Typing program and metric bodies: their parameters and statements, against the checked declarations (expressions: check_expr)."""

from __future__ import annotations

from typing import Any, Callable

from . import nodes as n
from .builtins import BUILTINS
from .check_decls import Declarations
from .check_expr import Expressions, Scope
from .checked import (
    always_returns,
    end_span,
    hint_for,
    is_num,
    kind_word,
    pred_hint,
    resolve,
    resolve_type,
    show,
    show_value,
    feedback_problem,
    strip_opt,
    widen,
)
from .errors import Span, did_you_mean, one_of
from .types import ANY, STR, Type, assignable, prediction, unify


class Bodies(Expressions):
    """Types the bodies of programs and block metrics; notes which programs call which (for recursion)."""

    def __init__(self, decls: Declarations):
        super().__init__(decls)
        self.outputs: dict[str, Type] | None = None  # the outputs of the program being typed (None in a metric)

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
            self.error(f"program '{d.name}' declares no outputs", d.name_span, f"write program {d.name}(...) -> (answer: str) {{ ... }}")
        scope = Scope(types=dict(ins), owner="program", owner_name=d.name)
        self.current_program = d.name
        self.program_calls.setdefault(d.name, set())
        self.outputs = outs
        self.block(d.body, scope)
        self.current_program = None
        if d.outputs and not always_returns(d.body):
            self.error(
                f"program '{d.name}' does not return its outputs",
                end_span(d),
                "end the program with return <module call> or return {" + ", ".join(f'"{k}": ...' for k in outs) + "}",
            )

    def metric_block(self, d: n.MetricDecl) -> None:
        if len(d.params) != 2:
            self.error(f"a metric block takes two parameters, got {len(d.params)}", d.name_span, f"write metric {d.name}(example, pred) {{ ... }}")
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
        scope = Scope(types=types, owner="metric", owner_name=d.name)
        if len(d.params) == 2:
            scope.origin[d.params[1].name] = "the prediction"
        self.outputs = None
        self.block(d.body, scope)
        if not any(isinstance(x, n.Return) for x in n.walk(d.body)):
            self.error(f"metric '{d.name}' never returns a score", end_span(d), "end it with return <number from 0 to 1 or bool>")

    # -- statements ------------------------------------------------------------
    def block(self, stmts, scope: Scope) -> None:
        for s in stmts:
            self.stmt(s, scope)

    def stmt(self, s: n.Stmt, scope: Scope) -> None:
        _STMTS[type(s)](self, s, scope)

    def expr_stmt(self, s: n.ExprStmt, scope: Scope) -> None:
        self.expr(s.expr, scope)

    def for_stmt(self, s: n.For, scope: Scope) -> None:
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

    def if_stmt(self, s: n.If, scope: Scope) -> None:
        for cond, body in s.branches:
            self.expr(cond, scope)
            self.block(body, scope)
        if s.orelse is not None:
            self.block(s.orelse, scope)

    def while_stmt(self, s: n.While, scope: Scope) -> None:
        self.expr(s.cond, scope)
        if s.bound is None:
            self.error("a while loop needs a bound", s.keyword_span, "write 'while <cond> max N { ... }'")
        else:
            v = n.constant(s.bound)
            ok = v is not n.NOT_CONSTANT
            if not ok or not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                self.error(f"the bound of a while loop must be a positive int constant, got {show_value(v) if ok else 'an expression'}", s.bound.span)
        self.loop_body(s.body, scope)

    def loop_body(self, body: tuple[n.Stmt, ...], scope: Scope) -> None:
        scope.loops += 1
        self.block(body, scope)
        scope.loops -= 1

    def jump(self, s: n.Break | n.Continue, scope: Scope) -> None:
        if scope.loops == 0:
            self.error(f"'{'break' if isinstance(s, n.Break) else 'continue'}' outside a loop", s.span)

    def bind(self, name: str, t: Type, span: Span, scope: Scope, var_span: Span | None = None) -> None:
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

    def assign(self, s: n.Assign, scope: Scope) -> None:
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

    def ret(self, s: n.Return, scope: Scope) -> None:
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
            self.error(
                "return {...} with the outputs " + ", ".join(f"'{k}'" for k in outs) + f", got {show(t)}",
                v.span,
                "a program with several outputs returns a module call or a dict literal",
            )

    def metric_return(self, s: n.Return, scope: Scope) -> None:
        if s.value is None:
            self.error("a metric returns a score", s.span, "return a number from 0 to 1 or a bool")
        elif not is_num(t := strip_opt(self.expr(s.value, scope))):
            self.error(f"a metric returns a number or bool, got {show(t)}", s.value.span)

    def return_dict(self, v: n.DictExpr, outs: dict[str, Type], scope: Scope) -> None:
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
            self.error(f"return is missing output{'s' if len(missing) > 1 else ''} " + ", ".join(f"'{m}'" for m in missing), v.span)

    def return_prediction(self, v: n.Expr, t: Type, outs: dict[str, Type], scope: Scope) -> None:
        """`return qa(...)`: the prediction must hold every output, each of its declared type."""
        ts = strip_opt(t)
        missing = [k for k in outs if ts.field(k) is None]
        if len(outs) == 1 and missing:
            src = self.origin(v, scope) or "the returned prediction"
            self.error(f"{src} has no output '{missing[0]}' to return", v.span, pred_hint(t, outs[missing[0]]) or f'return {{"{missing[0]}": ...}}')
            return
        for k in missing:
            src = self.origin(v, scope) or "the returned value"
            self.error(f"{src} has no output '{k}' to return", v.span, "return {" + ", ".join(f'"{o}": ...' for o in outs) + "} to build the outputs")
        for k, ot in outs.items():
            ft = ts.field(k)
            if ft is not None and not assignable(ft, ot):
                self.error(f"output '{k}' is declared {ot.name}, got {show(ft)}", v.span)

    def check_stmt(self, s: n.Check, scope: Scope) -> None:
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
            self.error(f"nothing to retry: '{s.kind}' follows no module call", s.keyword_span, "name one with 'for <module>'")


# Node type -> the method that types it, looked up once per node instead of an isinstance chain.
_STMTS: dict[type, Callable[[Bodies, Any, Scope], None]] = {
    n.Assign: Bodies.assign,
    n.ExprStmt: Bodies.expr_stmt,
    n.For: Bodies.for_stmt,
    n.If: Bodies.if_stmt,
    n.While: Bodies.while_stmt,
    n.Return: Bodies.ret,
    n.Check: Bodies.check_stmt,
    n.Break: Bodies.jump,
    n.Continue: Bodies.jump,
}
