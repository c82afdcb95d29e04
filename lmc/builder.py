"""The parse tree (lmc.lalr) turned into AST nodes, with the problems the grammar lets through (keywords as names, bad escapes, f-strings)."""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import Callable

from . import nodes as n
from .errors import CompileError, Diagnostic, Span
from .lalr import Tok, parse_tree
from .syntax import CONSTANTS, KEYWORDS, shorthand_fields, unescape


class Builder:
    """Turns a Lark parse tree into nodes; collects problems that the grammar lets through."""

    def __init__(self, path: str, text: str, at: tuple[int, int] | None = None, line0: int = 0):
        self.path = path
        self.line0 = line0  # lines of the file before `text`
        self.text = text
        self.errors: list[Diagnostic] = []
        self.line_starts = [0]
        self.line_starts += [m.end() for m in re.finditer("\n", text)]
        # (line, column shift) when `text` is one synthetic line standing for a piece of an f-string.
        self.at = at

    # -- spans -------------------------------------------------------------
    def span(self, item) -> Span:
        start = item.start
        if self.at is not None:
            line, dcol = self.at
            if start < 0:
                return Span(self.path, line, 1 + dcol, line, 1 + dcol)
            return Span(self.path, line, start + 1 + dcol, line, item.end + 1 + dcol)
        if start < 0:
            return Span(self.path, 1, 1, 1, 1)
        starts = self.line_starts
        line = bisect_right(starts, start)
        end = item.end
        end_line = bisect_right(starts, end, line - 1)
        return Span(self.path, line + self.line0, start - starts[line - 1] + 1, end_line + self.line0, end - starts[end_line - 1] + 1)

    def head(self, t, word: str) -> Span:
        """The span of the keyword `word` that starts the statement `t` (the grammar drops it from the tree)."""
        return self.span(Tok("KEYWORD", word, t.start, t.start + len(word)))

    def err(self, message: str, span: Span, hint: str | None = None) -> None:
        self.errors.append(Diagnostic(span, message, hint))

    def name(self, tok) -> str:
        """A declared name: keywords and constants are refused here, where the grammar cannot."""
        text = str(tok)
        if text in KEYWORDS or text in CONSTANTS:
            self.err(f"'{text}' is a keyword and cannot be used as a name", self.span(tok))
        return text

    # -- declarations ---------------------------------------------------------
    def decl(self, t) -> n.Decl:
        return _DECLS[t.data](self, t)

    def d_sig_block(self, t):
        name, *rest = t.children
        instructions = None
        if rest and getattr(rest[0], "data", None) == "string":
            instructions = self.string(rest.pop(0))
        ins, outs = rest
        return self.signature(t, name, ins, outs, instructions, "block")

    def d_sig_inline(self, t):
        name, ins, outs, *rest = t.children
        return self.signature(t, name, ins, outs, self.string(rest[0]) if rest else None, "inline")

    def signature(self, t, name, ins, outs, instructions: str | None, form: str) -> n.Signature:
        """A signature that declares its fields (as a block or on one line); `instructions` are read by the caller first."""
        return n.Signature(
            self.span(t),
            name=self.name(name),
            name_span=self.span(name),
            instructions=instructions,
            inputs=self.fields(ins),
            outputs=self.fields(outs),
            form=form,
        )

    def d_sig_shorthand(self, t):
        name, s = t.children
        ins, outs = self.shorthand(s)
        return n.Signature(self.span(t), name=self.name(name), name_span=self.span(name), inputs=ins, outputs=outs, form="shorthand")

    def shorthand(self, s) -> tuple[tuple[n.Field, ...], tuple[n.Field, ...]]:
        """`"question, context -> answer"`: all-str fields, each named at its place in the string."""
        sp = self.span(s)
        ins, outs, problems = shorthand_fields(self.string(s))
        for message, hint in problems:
            self.err(message, sp, hint)
        spans = iter(self.shorthand_spans(s, ins + outs))
        return (
            tuple(n.Field(sp, name=x, name_span=next(spans), type=None) for x in ins),
            tuple(n.Field(sp, name=x, name_span=next(spans), type=None) for x in outs),
        )

    def shorthand_spans(self, s, names: list[str]) -> list[Span]:
        """Where each name stands in the string token; the whole string where escapes or newlines make offsets unsure."""
        tok = s.children[0] if hasattr(s, "children") else s
        raw = str(tok)
        whole = self.span(s)
        if "\\" in raw or "\n" in raw or raw.startswith('"""'):
            return [whole] * len(names)
        out, pos = [], 1
        for name in names:
            m = re.compile(r"(?<![A-Za-z0-9_])" + re.escape(name) + r"(?![A-Za-z0-9_])").search(raw, pos)
            if m is None:  # pragma: no cover - every name came from this text
                return [whole] * len(names)
            out.append(self.span(Tok("NAME", name, tok.start + m.start(), tok.start + m.end())))
            pos = m.end()
        return out

    def fields(self, t) -> tuple[n.Field, ...]:
        out = []
        for f in t.children:
            name, *rest = f.children
            typ = desc = None
            for r in rest:
                if getattr(r, "data", None) == "string":
                    desc = self.string(r)
                else:
                    typ = self.type(r)
            out.append(n.Field(self.span(f), name=self.name(name), name_span=self.span(name), type=typ, description=desc))
        return tuple(out)

    def type(self, t) -> n.TypeRef:
        if isinstance(t, Tok):
            return n.TypeRef(self.span(t), name=str(t))
        if t.data == "type_union":
            return self.type(t.children[0])
        if t.data == "literal_union":
            opt = bool(t.children and isinstance(t.children[-1], Tok) and t.children[-1].type == "OPTMARK")
            lits = tuple(self.string(c) for c in t.children if getattr(c, "data", None) == "string")
            return n.TypeRef(self.span(t), name="literal", literals=lits, optional=opt)
        if t.data == "type_paren":
            inner = self.type(t.children[0])
            opt = inner.optional or any(isinstance(c, Tok) and c.type == "OPTMARK" for c in t.children[1:])
            return n.TypeRef(self.span(t), name="literal", literals=inner.literals, optional=opt)
        # type_atom
        name = t.children[0]
        opt = any(isinstance(c, Tok) and c.type == "OPTMARK" for c in t.children[1:])
        args = tuple(self.type(c) for c in t.children[1:] if not (isinstance(c, Tok) and c.type == "OPTMARK"))
        return n.TypeRef(self.span(t), name=self.name(name), args=args, optional=opt)

    def d_module_decl(self, t):
        name, kind, *rest = t.children
        args, kwargs = self.call_args(rest[0]) if rest else ((), ())
        sig = None
        if args:
            sig = args[0]
            for extra in args[1:]:
                self.err("a module takes one signature and then keyword settings", extra.span, "write settings as name=value")
        return n.ModuleDecl(
            self.span(t), name=self.name(name), name_span=self.span(name), kind=str(kind), kind_span=self.span(kind), signature=sig, settings=kwargs
        )

    def d_retriever_decl(self, t):
        name, kind, *rest = t.children
        args, kwargs = self.call_args(rest[0]) if rest else ((), ())
        return n.RetrieverDecl(
            self.span(t), name=self.name(name), name_span=self.span(name), kind=str(kind), kind_span=self.span(kind), args=args, kwargs=kwargs
        )

    def d_tool_decl(self, t):
        name, *kids = t.children
        impl_tree = kids.pop()
        params = returns = desc = None
        for k in kids:
            d = getattr(k, "data", None)
            if d == "tool_params":
                params = self.params(k.children[0]) if k.children else ()
            elif d == "string":
                desc = self.string(k)
            else:
                returns = self.type(k)
        return n.ToolDecl(
            self.span(t), name=self.name(name), name_span=self.span(name), params=params, returns=returns, description=desc, impl=self.expr(impl_tree)
        )

    def d_lm_decl(self, t):
        name, model, *rest = t.children
        kwargs: tuple = ()
        if rest:
            args, kwargs = self.call_args(rest[0])
            for a in args:
                self.err("LM settings are keyword arguments", a.span, "write them as name=value, e.g. temperature=0.2")
        return n.LMDecl(
            self.span(t), name=self.name(name), name_span=self.span(name), model=self.string(model), model_span=self.span(model), settings=kwargs
        )

    def d_metric_expr(self, t):
        name, value = t.children
        return n.MetricDecl(self.span(t), name=self.name(name), name_span=self.span(name), impl=self.expr(value))

    def d_metric_block(self, t):
        name, *rest = t.children
        params = self.params(rest[0]) if len(rest) == 2 else ()
        return n.MetricDecl(self.span(t), name=self.name(name), name_span=self.span(name), params=params, body=self.block(rest[-1]))

    def d_program_decl(self, t):
        name, *rest = t.children
        body = rest.pop()
        params: tuple = ()
        outputs: tuple = ()
        for r in rest:
            if r.data == "params":
                params = self.params(r)
            elif r.children:
                outputs = self.params(r.children[0])
        return n.ProgramDecl(self.span(t), name=self.name(name), name_span=self.span(name), params=params, outputs=outputs, body=self.block(body))

    def params(self, t) -> tuple[n.Param, ...]:
        out = []
        for p in t.children:
            name, *rest = p.children
            out.append(n.Param(self.span(p), name=self.name(name), name_span=self.span(name), type=self.type(rest[0]) if rest else None))
        return tuple(out)

    # -- statements ------------------------------------------------------------
    def block(self, t) -> tuple:
        return tuple(self.stmt(s) for s in t.children)

    def stmt(self, t):
        return _STMTS[t.data](self, t)

    def s_assign(self, t):
        name, value = t.children
        return n.Assign(self.span(t), target=self.name(name), value=self.expr(value), target_span=self.span(name))

    def s_aug_assign(self, t):
        name, op, value = t.children
        return n.Assign(self.span(t), target=self.name(name), value=self.expr(value), target_span=self.span(name), op=str(op))

    def s_expr_stmt(self, t):
        return n.ExprStmt(self.span(t), expr=self.expr(t.children[0]))

    def s_return_stmt(self, t):
        kids = t.children
        return n.Return(self.span(t), value=self.expr(kids[0]) if kids else None, feedback=self.expr(kids[1]) if len(kids) > 1 else None)

    def s_check_stmt(self, t):
        kw, cond, *rest = t.children
        message = target = target_span = None
        for r in rest:
            if getattr(r, "type", None) == "CHECK_TARGET":  # `for <module>`: the span is the module's name
                target = str(r).split()[-1]
                target_span = self.span(Tok("NAME", target, r.end - len(target), r.end))
            else:
                message = self.expr(r)
        return n.Check(
            self.span(t), kind=str(kw), cond=self.expr(cond), message=message, target=target, target_span=target_span, keyword_span=self.span(kw)
        )

    def s_break_stmt(self, t):
        return n.Break(self.span(t))

    def s_continue_stmt(self, t):
        return n.Continue(self.span(t))

    def s_for_stmt(self, t):
        var, it, body = t.children
        return n.For(
            self.span(t), var=self.name(var), iter=self.expr(it), body=self.block(body), var_span=self.span(var), keyword_span=self.head(t, "for")
        )

    def s_if_stmt(self, t):
        cond, body, *rest = t.children
        branches = [(self.expr(cond), self.block(body))]
        orelse = None
        for r in rest:
            if r.data == "elif_clause":
                branches.append((self.expr(r.children[0]), self.block(r.children[1])))
            else:
                orelse = self.block(r.children[0])
        return n.If(self.span(t), branches=tuple(branches), orelse=orelse)

    def s_while_stmt(self, t):
        cond, *rest = t.children
        body = rest.pop()
        bound = self.expr(rest[0]) if rest else None
        return n.While(self.span(t), cond=self.expr(cond), bound=bound, body=self.block(body), keyword_span=self.head(t, "while"))

    # -- expressions -----------------------------------------------------------
    def expr(self, t):
        if isinstance(t, Tok):  # a bare terminal reaching here is a name
            return n.Name(self.span(t), id=str(t))
        return _EXPRS[t.data](self, t)

    def e_name(self, t):
        tok = t.children[0]
        if str(tok) in CONSTANTS:
            return n.Const(self.span(t), value=CONSTANTS[str(tok)])
        return n.Name(self.span(t), id=str(tok))

    def e_number(self, t):
        text = str(t.children[0])
        value = float(text) if any(c in text for c in ".eE") else int(text)
        return n.Const(self.span(t), value=value)

    def e_const_str(self, t):
        return n.Const(self.span(t), value=self.string(t.children[0]))

    def e_string(self, t):
        return n.Const(self.span(t), value=self.string(t))

    def e_fstring(self, t):
        tok = t.children[0]
        return self.fstring(tok)

    def e_list_expr(self, t):
        return n.ListExpr(self.span(t), items=tuple(self.expr(c) for c in t.children))

    def e_dict_expr(self, t):
        items = tuple((self.expr(c.children[0]), self.expr(c.children[1])) for c in t.children)
        return n.DictExpr(self.span(t), items=items)

    def e_attr(self, t):
        obj, name = t.children
        return n.Attr(self.span(t), obj=self.expr(obj), name=self.name(name), name_span=self.span(name))

    def e_index(self, t):
        obj, idx = t.children
        return n.Index(self.span(t), obj=self.expr(obj), index=self.expr(idx))

    def e_call(self, t):
        func, *rest = t.children
        args, kwargs = self.call_args(rest[0]) if rest else ((), ())
        return n.Call(self.span(t), func=self.expr(func), args=args, kwargs=kwargs)

    def call_args(self, t):
        args, kwargs = [], []
        seen = set()
        for a in t.children:
            if getattr(a, "data", None) == "kwarg":
                key, value = a.children
                if str(key) in seen:
                    self.err(f"keyword argument '{key}' given twice", self.span(key))
                seen.add(str(key))
                kwargs.append(n.Keyword(self.span(a), name=str(key), name_span=self.span(key), value=self.expr(value)))
            else:
                if kwargs:
                    self.err("positional argument after keyword arguments", self.span(a))
                args.append(self.expr(a))
        return tuple(args), tuple(kwargs)

    def e_binop(self, t):
        left, op, right = t.children
        return n.BinOp(self.span(t), op=str(op), left=self.expr(left), right=self.expr(right))

    def e_unary(self, t):
        op, operand = t.children
        return n.UnaryOp(self.span(t), op=str(op), operand=self.expr(operand))

    def e_not_op(self, t):
        return n.UnaryOp(self.span(t), op="not", operand=self.expr(t.children[0]))

    def e_compare(self, t):
        left, op, right = t.children
        return n.Compare(self.span(t), op=str(op), left=self.expr(left), right=self.expr(right))

    def binary(self, t, node: Callable[..., n.Expr], op: str):
        """`a in b`, `a not in b`, `a and b`, `a or b`: the grammar names the operator by the rule, not a token."""
        left, right = t.children
        return node(self.span(t), op=op, left=self.expr(left), right=self.expr(right))

    def e_in_op(self, t):
        return self.binary(t, n.Compare, "in")

    def e_not_in_op(self, t):
        return self.binary(t, n.Compare, "not in")

    def e_and_op(self, t):
        return self.binary(t, n.BoolOp, "and")

    def e_or_op(self, t):
        return self.binary(t, n.BoolOp, "or")

    def e_kwarg(self, t):  # pragma: no cover - handled in call_args
        raise CompileError("keyword argument outside a call", self.span(t))

    # -- strings ---------------------------------------------------------------
    def string(self, t) -> str:
        tok = t.children[0] if hasattr(t, "children") else t
        raw = str(tok)
        try:
            if raw.startswith('"""'):
                body = raw[3:-3]
                return unescape(body, self.span(tok))
            return unescape(raw[1:-1], self.span(tok))
        except CompileError as e:
            self.errors.append(e.diagnostic())
            return raw[1:-1]

    def fstring(self, tok) -> n.FString:
        raw = str(tok)[2:-1]
        sp = self.span(tok)
        parts: list = []
        i = 0
        buf = ""
        while i < len(raw):
            c = raw[i]
            if c == "{" and raw.startswith("{{", i):
                buf += "{"
                i += 2
                continue
            if c == "}" and raw.startswith("}}", i):
                buf += "}"
                i += 2
                continue
            if c == "}":
                self.err("single '}' in f-string", Span(sp.path, sp.line, sp.col + 2 + i, sp.line, sp.col + 3 + i), "write '}}' for a literal brace")
                i += 1
                continue
            if c == "{":
                j = raw.find("}", i)
                if j < 0:
                    self.err("unclosed '{' in f-string", Span(sp.path, sp.line, sp.col + 2 + i, sp.line, sp.col + 3 + i), "expected '}'")
                    break
                if buf:
                    parts.append(unescape(buf, sp))
                    buf = ""
                inner = raw[i + 1 : j]
                parts.append(self.fstring_expr(inner, sp, sp.col + 3 + i))
                i = j + 1
                continue
            buf += c
            i += 1
        if buf:
            parts.append(unescape(buf, sp))
        return n.FString(sp, parts=tuple(parts))

    def fstring_expr(self, inner: str, sp: Span, col: int):
        if not inner.strip():
            self.err("empty expression in f-string", Span(sp.path, sp.line, col - 1, sp.line, col + 1))
            return n.Const(sp, value="")
        # Parse `x = <inner>` inside a throwaway program to reuse the expression grammar.
        prefix = "program _f() { _ = "
        try:
            tree = parse_tree(prefix + inner + " }")
        except Exception as e:
            from lark.exceptions import UnexpectedInput

            if not isinstance(e, UnexpectedInput):
                raise
            tree = None
        block = tree.children[0].children[-1] if tree is not None else None
        if block is None or len(block.children) != 1:  # `{a b}` would parse as `_ = a` then `b`
            self.err(f"invalid expression in f-string: {inner.strip()!r}", Span(sp.path, sp.line, col, sp.line, col + len(inner)))
            return n.Const(sp, value="")
        assign = block.children[0]
        # Positions in the throwaway line map straight to the f-string's line and columns.
        sub = Builder(sp.path, prefix + inner, at=(sp.line, col - len(prefix) - 1))
        return sub.expr(assign.children[1])


# Tree label -> builder method, looked up once here instead of by name for every node.
_DECLS = {k[2:]: f for k, f in vars(Builder).items() if k.startswith("d_")}
_STMTS = {k[2:]: f for k, f in vars(Builder).items() if k.startswith("s_")}
_EXPRS = {k[2:]: f for k, f in vars(Builder).items() if k.startswith("e_")}
