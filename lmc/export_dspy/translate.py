"""lmc program IR -> the body of a DSPy module's methods (forward, sub-programs, block metrics).

A closed translation: every IR node kind has a case here, operators come from
fixed tables, names go through `Scope`, constants through `lit`; anything
outside that (an unknown operator, a malformed node) is an ExportError, never
text copied into the output.  What has no DSPy twin is recorded in `notes`.
"""

from __future__ import annotations

from typing import Any

from .. import ir as I
from .helpers import HELPERS
from .plan import Mod
from .pysrc import ExportError, Scope, is_ident, lit

_BIN = {"-": "-", "*": "*", "/": "/", "//": "//", "%": "%"}
_CMP = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">=", "in": "in", "not in": "not in"}
_UNARY = {"not": "not ", "-": "-", "+": "+"}
_ASSIGN = {"=", "+=", "-=", "*=", "/=", "//=", "%="}
MAX_BOUND = 1_000_000


class Translator:
    """Translates program and metric bodies; collects the helpers, user callables and notes they need."""

    def __init__(self, ir: I.IR, mods: list[Mod]):
        self.ir = ir
        self.mods = {m.name: m for m in mods}
        self.helpers: set[str] = set()
        self.notes: list[str] = []
        self.retrievers: set[str] = set()
        self.tools: set[str] = set()
        self.unsupported: set[str] = set()
        self._loops = 0
        self._outputs: list[str] | None = None
        self._where = ""

    def need(self, helper: str) -> str:
        self.helpers.add(helper)
        return helper

    # ------------------------------------------------------------ functions

    def function(self, name: str, params: tuple[I.FieldSpec, ...], body: tuple, *, outputs: list[str] | None, where: str) -> list[str]:
        """`def name(self, ...)` for a program body (returning `outputs`) or a metric body (outputs None: a score)."""
        scope = Scope()
        pnames = [p.name for p in params]
        clean = all(is_ident(n) and not n.startswith("_") and n not in Scope.RESERVED for n in pnames)
        if clean:
            sig = ", ".join(scope.name(n) for n in pnames)
            lines = [f"    def {name}(self{', ' + sig if sig else ''}):"]
        else:
            lines = [f"    def {name}(self, **inputs):"]
            for n in pnames:
                lines.append(f"        {scope.name(n)} = inputs[{lit(n)}]")
        self._outputs = outputs
        self._where = where
        lines += self.block(body, scope, 2)
        if not body or type(body[-1]) is not I.Ret:
            lines.append("        " + self._return("None"))
        return lines

    def _return(self, value: str) -> str:
        if self._outputs is None:
            return f"return {self.need('_score')}({value})"
        return f"return {self.need('_outputs')}({value}, {lit(self._outputs)})"

    # ------------------------------------------------------------ statements

    def block(self, body: Any, scope: Scope, depth: int) -> list[str]:
        if not isinstance(body, tuple):
            raise ExportError(f"{self._where}: malformed statement list")
        out: list[str] = []
        for s in body:
            out += self.stmt(s, scope, depth)
        return out or ["    " * depth + "pass"]

    def stmt(self, s: Any, scope: Scope, depth: int) -> list[str]:  # noqa: C901 - one branch per IR statement kind
        pad = "    " * depth
        t = type(s)
        if t is I.Assign:
            if s.op not in _ASSIGN:
                raise ExportError(f"{self._where}: unknown assignment operator {repr(s.op)[:20]}")
            target = scope.name(s.target)
            value = self.expr(s.value, scope)
            if s.op != "=":
                value = self._binop(s.op[:-1], target, value)
            return [f"{pad}{target} = {value}"]
        if t is I.Eval:
            return [f"{pad}{self.expr(s.expr, scope)}"]
        if t is I.Ret:
            return [pad + self._return(self.expr(s.value, scope) if s.value is not None else "None")]
        if t is I.Loop:
            var = scope.name(s.var)
            head = f"{pad}for {var} in {self.need('_iter')}({self.expr(s.iter, scope)}):"
            return [head] + self.block(s.body, scope, depth + 1)
        if t is I.Branch:
            lines = []
            if not isinstance(s.branches, tuple) or not s.branches:
                raise ExportError(f"{self._where}: malformed if statement")
            for i, branch in enumerate(s.branches):
                cond, body = branch
                lines.append(f"{pad}{'if' if i == 0 else 'elif'} {self.expr(cond, scope)}:")
                lines += self.block(body, scope, depth + 1)
            if s.orelse:
                lines.append(f"{pad}else:")
                lines += self.block(s.orelse, scope, depth + 1)
            return lines
        if t is I.WhileLoop:
            bound = s.bound
            if isinstance(bound, bool) or not isinstance(bound, int) or not 0 <= bound <= MAX_BOUND:
                raise ExportError(f"{self._where}: while bound {repr(bound)[:20]} is not a count")
            self._loops += 1
            counter = f"_round{self._loops}"
            # lmc's `while cond max N`: at most N rounds, the condition checked before each.
            return [f"{pad}for {counter} in range({bound}):", f"{pad}    if not ({self.expr(s.cond, scope)}):", f"{pad}        break"] + self.block(
                s.body, scope, depth + 1
            )
        if t is I.Check:
            if s.kind not in ("assert", "suggest"):
                raise ExportError(f"{self._where}: unknown check {repr(s.kind)[:20]}")
            line = s.line if isinstance(s.line, int) and not isinstance(s.line, bool) else 0
            self.notes.append(
                f"{self._where} line {line}: `{s.kind}` runs without backtracking (DSPy 3 has no "
                f"Assert/Suggest; see dspy.Refine): "
                + ("an unmet assert raises AssertionError" if s.kind == "assert" else "an unmet suggest is logged")
            )
            msg = self.expr(s.message, scope) if s.message is not None else lit("the check failed")
            return [f"{pad}if not ({self.expr(s.cond, scope)}):", f"{pad}    {self.need('_check')}({lit(s.kind)}, False, {msg})"]
        if t is I.BreakLoop:
            return [f"{pad}break"]
        if t is I.ContinueLoop:
            return [f"{pad}continue"]
        raise ExportError(f"{self._where}: unknown statement {t.__name__}")

    # ------------------------------------------------------------ expressions

    def _binop(self, op: str, left: str, right: str) -> str:
        if op == "+":
            return f"{self.need('_add')}({left}, {right})"
        if op not in _BIN:
            raise ExportError(f"{self._where}: unknown operator {repr(op)[:20]}")
        return f"({left} {_BIN[op]} {right})"

    def _kwargs(self, pairs: Any, scope: Scope) -> str:
        if not isinstance(pairs, tuple):
            raise ExportError(f"{self._where}: malformed keyword arguments")
        plain: list[tuple[str, str]] = []
        odd: list[tuple[str, str]] = []
        for k, v in pairs:
            if not isinstance(k, str):
                raise ExportError(f"{self._where}: a keyword argument name is not text")
            value = self.expr(v, scope)
            (plain if is_ident(k) else odd).append((k, value))
        parts = [f"{k}={v}" for k, v in plain]
        if odd:
            parts.append("**{" + ", ".join(f"{lit(k)}: {v}" for k, v in odd) + "}")
        return ", ".join(parts)

    def expr(self, e: Any, scope: Scope) -> str:  # noqa: C901 - one branch per IR expression kind
        t = type(e)
        if t is I.Var:
            return scope.name(e.name)
        if t is I.Const:
            return lit(e.value)
        if t is I.FStr:
            parts = [lit(p) if isinstance(p, str) else f"{self.need('_show')}({self.expr(p, scope)})" for p in e.parts]
            return '"".join([' + ", ".join(parts) + "])"
        if t is I.ListOf:
            return "[" + ", ".join(self.expr(x, scope) for x in e.items) + "]"
        if t is I.DictOf:
            return "{" + ", ".join(f"{self.expr(k, scope)}: {self.expr(v, scope)}" for k, v in e.items) + "}"
        if t is I.GetField:
            if not isinstance(e.name, str):
                raise ExportError(f"{self._where}: a field name is not text")
            return f"{self.need('_get')}({self.expr(e.obj, scope)}, {lit(e.name)})"
        if t is I.GetIndex:
            return f"({self.expr(e.obj, scope)})[{self.expr(e.index, scope)}]"
        if t is I.Bin:
            return self._binop(e.op, self.expr(e.left, scope), self.expr(e.right, scope))
        if t is I.Unary:
            if e.op not in _UNARY:
                raise ExportError(f"{self._where}: unknown operator {repr(e.op)[:20]}")
            return f"({_UNARY[e.op]}{self.expr(e.operand, scope)})"
        if t is I.Cmp:
            if e.op not in _CMP:
                raise ExportError(f"{self._where}: unknown comparison {repr(e.op)[:20]}")
            return f"({self.expr(e.left, scope)} {_CMP[e.op]} {self.expr(e.right, scope)})"
        if t is I.Logic:
            if e.op not in ("and", "or"):
                raise ExportError(f"{self._where}: unknown operator {repr(e.op)[:20]}")
            return f"({self.expr(e.left, scope)} {e.op} {self.expr(e.right, scope)})"
        if t is I.CallModule:
            mod = self.mods.get(e.module)
            if mod is None:
                raise ExportError(f"{self._where}: call to unknown module {repr(e.module)[:40]}")
            target = f"self._run_{mod.attr}" if mod.kind == "MultiChainComparison" else f"self.{mod.attr}"
            return f"{target}({self._kwargs(e.kwargs, scope)})"
        if t is I.CallRetriever:
            if e.retriever not in {r.name for r in self.ir.retrievers}:
                raise ExportError(f"{self._where}: call to unknown retriever {repr(e.retriever)[:40]}")
            self.retrievers.add(e.retriever)
            k = self.expr(e.k, scope) if e.k is not None else "None"
            return f"self._retrieve({lit(e.retriever)}, {self.expr(e.query, scope)}, {k})"
        if t is I.CallTool:
            if e.tool not in {x.name for x in self.ir.tools}:
                raise ExportError(f"{self._where}: call to unknown tool {repr(e.tool)[:40]}")
            self.tools.add(e.tool)
            args = [self.expr(a, scope) for a in e.args]
            kw = self._kwargs(e.kwargs, scope)
            return f"self._tool({lit(e.tool)})({', '.join(args + ([kw] if kw else []))})"
        if t is I.CallBuiltin:
            args = [self.expr(a, scope) for a in e.args]
            kw = self._kwargs(e.kwargs, scope)
            helper = f"_b_{e.name}" if isinstance(e.name, str) else ""
            if helper not in HELPERS:
                self.unsupported.add(str(e.name)[:40])
                return f"self._unsupported({lit(str(e.name))})({', '.join(args + ([kw] if kw else []))})"
            return f"{self.need(helper)}({', '.join(args + ([kw] if kw else []))})"
        if t is I.CallProgram:
            if not isinstance(e.program, str) or e.program not in {p.name for p in self.ir.programs}:
                raise ExportError(f"{self._where}: call to unknown program {repr(e.program)[:40]}")
            return f"self.{program_method(e.program)}(**{{{', '.join(f'{lit(k)}: {self.expr(v, scope)}' for k, v in e.kwargs)}}})"
        raise ExportError(f"{self._where}: unknown expression {t.__name__}")


def program_method(name: str) -> str:
    """The method a sub-program becomes; names that are not identifiers are numbered by a stable digest."""
    if is_ident(name):
        return f"_program_{name}"
    import hashlib

    return "_program_" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]


def metric_method(name: str) -> str:
    if is_ident(name):
        return f"_metric_{name}"
    import hashlib

    return "_metric_" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]
