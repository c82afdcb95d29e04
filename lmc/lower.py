"""Lower a checked program to the IR: resolve calls, expand modules into predictors."""

from __future__ import annotations

from typing import Any

from . import ir as I
from . import nodes as n
from .check import Checked, SigInfo, resolve_type
from .errors import LmcError
from .kinds import KINDS, PREDICTOR_SETTINGS
from .types import JSON, STR, Type, list_of


def lower(checked: Checked, program: str | None = None) -> I.IR:
    entry = checked.program(program).name
    lw = _Lowerer(checked)
    modules, predictors = [], []
    for name, decl in checked.modules.items():
        m, ps = lw.module(name, decl)
        modules.append(m)
        predictors.extend(ps)
    programs = tuple(lw.program(p) for p in checked.programs.values())
    return I.IR(
        entry=entry,
        programs=programs,
        modules=tuple(modules),
        predictors=tuple(predictors),
        retrievers=tuple(lw.retriever(r) for r in checked.retrievers.values()),
        tools=tuple(lw.tool(t) for t in checked.tools.values()),
        lms=tuple(lw.lm(a) for a in checked.lms.values()),
        metrics=tuple(lw.metric(m) for m in checked.metrics.values()),
    )


def _const(e: Any) -> Any:
    value = n.constant(e, names=True)
    if value is n.NOT_CONSTANT:  # the checker refuses these; reaching here is a bug, said as an error
        raise LmcError(f"{e.span}: expected a constant")
    return value


def _fields(items) -> tuple[I.FieldSpec, ...]:
    return tuple(I.FieldSpec(name, typ, desc) for name, typ, desc in items)


def default_instructions(sig: I.SignatureIR) -> str:
    ins = ", ".join(f"`{f.name}`" for f in sig.inputs)
    outs = ", ".join(f"`{f.name}`" for f in sig.outputs)
    return f"Given the fields {ins}, produce the fields {outs}." if ins else f"Produce the fields {outs}."


class _Lowerer:
    def __init__(self, checked: Checked):
        self.c = checked

    # -- modules ---------------------------------------------------------------
    def module(self, name: str, decl: n.ModuleDecl) -> tuple[I.ModuleIR, list[I.Predictor]]:
        info: SigInfo = self.c.module_sigs[name]
        settings = {kw.name: _const(kw.value) for kw in decl.settings}
        pred_settings = tuple(sorted((k, v) for k, v in settings.items() if k in PREDICTOR_SETTINGS))
        kind_settings = tuple(sorted((k, v) for k, v in settings.items() if k not in PREDICTOR_SETTINGS and k != "instructions"))
        base = I.SignatureIR(info.name, info.instructions or "", _fields(info.inputs), _fields(info.outputs))
        instructions = settings.get("instructions") or info.instructions or default_instructions(base)

        kind = KINDS.get(decl.kind)
        if kind is None:  # the checker refuses unknown kinds
            raise LmcError(f"unknown module kind '{decl.kind}'")
        preds = [
            I.Predictor(pid, name, role, sig, instr, (), pred_settings)
            for pid, role, sig, instr in kind.lower(name, base, instructions, settings, self.tool_named)
        ]
        module = I.ModuleIR(name, kind.name, tuple((p.role, p.id) for p in preds), kind_settings)
        return module, preds

    def tool_named(self, name: str) -> I.ToolIR:
        """A tool declaration, or a retriever used as a tool, lowered."""
        return self.tool(self.c.tools[name]) if name in self.c.tools else self._retriever_tool(name)

    def _retriever_tool(self, name: str) -> I.ToolIR:
        return I.ToolIR(name, "retriever", name, (I.FieldSpec("query", STR),), list_of(STR), "search the corpus; returns the most relevant passages")

    # -- other declarations --------------------------------------------------------
    def retriever(self, r: n.RetrieverDecl) -> I.RetrieverIR:
        kw = {k.name: _const(k.value) for k in r.kwargs}
        path = _const(r.args[0]) if r.args else kw.get("path", "")
        return I.RetrieverIR(r.name, r.kind, str(path), str(kw.get("text", "text")), int(kw.get("k", 3)), kw.get("model"))

    def tool(self, t: n.ToolDecl) -> I.ToolIR:
        impl = t.impl
        params = tuple(I.FieldSpec(p.name, resolve_type(p.type)) for p in (t.params or ()))
        returns = resolve_type(t.returns) if t.returns else JSON
        if isinstance(impl, n.Name):
            desc = t.description or "search the corpus; returns the most relevant passages"
            return I.ToolIR(t.name, "retriever", impl.id, params or (I.FieldSpec("query", STR),), list_of(STR), desc)
        assert isinstance(impl, n.Call) and isinstance(impl.func, n.Name)
        if impl.func.id == "python":
            ref = str(_const(impl.args[0]))
            return I.ToolIR(t.name, "python", ref, params, returns, t.description or f"calls {ref}")
        # builtin tools
        desc = t.description or "evaluate an arithmetic expression such as (3 + 4) * 2"
        return I.ToolIR(t.name, "calculator", None, params or (I.FieldSpec("expression", STR),), Type("float"), desc)

    def lm(self, a: n.LMDecl) -> I.LMAlias:
        return I.LMAlias(a.name, a.model, tuple(sorted((k.name, _const(k.value)) for k in a.settings)))

    def metric(self, m: n.MetricDecl) -> I.MetricIR:
        if m.body is not None:
            params = [p.name for p in m.params]
            prog = I.ProgramIR(f"metric:{m.name}", tuple(I.FieldSpec(p, JSON) for p in params), (I.FieldSpec("score", JSON),), self.block(m.body))
            return I.MetricIR(m.name, "block", program=prog, spec=f"metric {m.name}({', '.join(params)}) {{...}}")
        call = m.impl
        assert isinstance(call, n.Call) and isinstance(call.func, n.Name)
        fname = call.func.id
        if fname == "python":
            ref = str(_const(call.args[0]))
            return I.MetricIR(m.name, "python", ref=ref, spec=f'python("{ref}")')
        args = [_const(a) for a in call.args]
        kw = {k.name: _const(k.value) for k in call.kwargs}
        field = str(args[0]) if args else None
        gold = str(kw.get("gold", args[1] if len(args) > 1 else field))
        spec = f"{fname}({field}" + (f", gold={gold}" if gold != field else "") + ")"
        return I.MetricIR(m.name, "builtin", builtin=fname, field=field, gold=gold, spec=spec)

    # -- programs ------------------------------------------------------------------
    def program(self, p: n.ProgramDecl) -> I.ProgramIR:
        ins = tuple(I.FieldSpec(x.name, resolve_type(x.type)) for x in p.params)
        outs = tuple(I.FieldSpec(x.name, resolve_type(x.type)) for x in p.outputs)
        return I.ProgramIR(p.name, ins, outs, self.block(p.body))

    def block(self, body) -> tuple:
        return tuple(self.stmt(s) for s in body)

    def stmt(self, s) -> Any:
        line = s.span.line
        if isinstance(s, n.Assign):
            return I.Assign(s.target, self.expr(s.value), s.op, line)
        if isinstance(s, n.ExprStmt):
            return I.Eval(self.expr(s.expr), line)
        if isinstance(s, n.For):
            return I.Loop(s.var, self.expr(s.iter), self.block(s.body), line)
        if isinstance(s, n.If):
            branches = tuple((self.expr(c), self.block(b)) for c, b in s.branches)
            return I.Branch(branches, self.block(s.orelse or ()), line)
        if isinstance(s, n.While):
            return I.WhileLoop(self.expr(s.cond), int(_const(s.bound)) if s.bound is not None else 1, self.block(s.body), line)
        if isinstance(s, n.Return):
            return I.Ret(self.expr(s.value) if s.value is not None else None, line, self.expr(s.feedback) if s.feedback is not None else None)
        if isinstance(s, n.Check):
            return I.Check(s.kind, self.expr(s.cond), self.expr(s.message) if s.message is not None else None, s.target, line)
        if isinstance(s, n.Break):
            return I.BreakLoop(line)
        if isinstance(s, n.Continue):
            return I.ContinueLoop(line)
        raise LmcError(f"{s.span}: cannot lower {type(s).__name__}")

    def expr(self, e) -> Any:
        if isinstance(e, n.Const):
            return I.Const(e.value)
        if isinstance(e, n.Name):
            return I.Var(e.id)
        if isinstance(e, n.FString):
            return I.FStr(tuple(p if isinstance(p, str) else self.expr(p) for p in e.parts))
        if isinstance(e, n.ListExpr):
            return I.ListOf(tuple(self.expr(x) for x in e.items))
        if isinstance(e, n.DictExpr):
            return I.DictOf(tuple((self.expr(k), self.expr(v)) for k, v in e.items))
        if isinstance(e, n.Attr):
            return I.GetField(self.expr(e.obj), e.name)
        if isinstance(e, n.Index):
            return I.GetIndex(self.expr(e.obj), self.expr(e.index))
        if isinstance(e, n.BinOp):
            return I.Bin(e.op, self.expr(e.left), self.expr(e.right))
        if isinstance(e, n.UnaryOp):
            return I.Unary(e.op, self.expr(e.operand))
        if isinstance(e, n.Compare):
            return I.Cmp(e.op, self.expr(e.left), self.expr(e.right))
        if isinstance(e, n.BoolOp):
            return I.Logic(e.op, self.expr(e.left), self.expr(e.right))
        if isinstance(e, n.Call):
            return self.call(e)
        raise LmcError(f"{e.span}: cannot lower {type(e).__name__}")

    def call(self, e: n.Call) -> Any:
        line = e.span.line
        kwargs = tuple((k.name, self.expr(k.value)) for k in e.kwargs)
        args = tuple(self.expr(a) for a in e.args)
        name = e.func.id if isinstance(e.func, n.Name) else None
        if name in self.c.modules:
            return I.CallModule(name, kwargs, line)
        if name in self.c.retrievers:
            k = dict(kwargs).get("k")
            return I.CallRetriever(name, args[0] if args else dict(kwargs).get("query"), k, line)
        if name in self.c.tools:
            return I.CallTool(name, args, kwargs, line)
        if name in self.c.programs:
            return I.CallProgram(name, kwargs, line)
        if name is not None:
            return I.CallBuiltin(name, args, kwargs, line)
        raise LmcError(f"{e.span}: only named functions can be called")
