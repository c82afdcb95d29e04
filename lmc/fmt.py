"""The canonical .lmp formatter: prints the AST in one layout and puts every comment back by line."""

from __future__ import annotations

import math

from . import nodes as n
from .parser import parse

INDENT = "  "

# Binding strength of expression forms; higher binds tighter (matches the grammar's layering).
_PREC_OR, _PREC_AND, _PREC_NOT, _PREC_CMP, _PREC_SUM, _PREC_TERM, _PREC_UNARY, _PREC_POSTFIX = 1, 2, 3, 4, 5, 6, 7, 8


def format_source(text: str, path: str = "<input>") -> str:
    """Parse `text` and print it canonically; raises CompileErrors when it does not parse."""
    if text.startswith("\ufeff"):
        text = text[1:]
    text = text.replace("\r\n", "\n")
    return format_file(parse(text, path))


def format_file(file: n.File) -> str:
    return _Printer(file.comments).file(file)


# ---------------------------------------------------------------- expressions


def string(value: str, quote: str = '"', long_ok: bool = False) -> str:
    """A string literal that the parser reads back as `value`; prose with newlines may use triple quotes."""
    if "\n" in value and quote == '"' and long_ok:
        body = value.replace("\\", "\\\\").replace('"', '\\"')
        body = "".join(c if c in "\n\t" or c >= " " else f"\\u{ord(c):04x}" for c in body)
        return '"""' + body + '"""'
    out = []
    for c in value:
        if c == "\\":
            out.append("\\\\")
        elif c == quote or c == '"':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif c < " " or c == "\x7f":
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return quote + "".join(out) + quote


def number(value) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "1e999"
        text = repr(value)
        return text
    return str(value)


def expr(e, prec: int = 0, quote: str = '"') -> str:
    """Print an expression; wraps it in parentheses when its context binds tighter than it does."""
    text, own = _expr(e, quote)
    return f"({text})" if own < prec else text


def _expr(e, q: str) -> tuple[str, int]:  # noqa: C901 - one branch per expression kind
    if isinstance(e, n.Name):
        return e.id, 9
    if isinstance(e, n.Const):
        v = e.value
        if v is True:
            return "true", 9
        if v is False:
            return "false", 9
        if v is None:
            return "none", 9
        if isinstance(v, str):
            return string(v, q) if q == '"' else string(v, "'"), 9
        return number(v), 9
    if isinstance(e, n.FString):
        return fstring(e, q), 9
    if isinstance(e, n.ListExpr):
        return "[" + ", ".join(expr(x, 0, q) for x in e.items) + "]", 9
    if isinstance(e, n.DictExpr):
        return "{" + ", ".join(f"{expr(k, 0, q)}: {expr(v, 0, q)}" for k, v in e.items) + "}", 9
    if isinstance(e, n.Attr):
        obj = expr(e.obj, _PREC_POSTFIX, q)
        if isinstance(e.obj, n.Const) and not isinstance(e.obj.value, (str, bool, type(None))):
            obj = f"({obj})"  # `0.x` would lex as the number `0.`
        return f"{obj}.{e.name}", _PREC_POSTFIX
    if isinstance(e, n.Index):
        return f"{expr(e.obj, _PREC_POSTFIX, q)}[{expr(e.index, 0, q)}]", _PREC_POSTFIX
    if isinstance(e, n.Call):
        args = [expr(a, 0, q) for a in e.args] + [f"{k.name}={expr(k.value, 0, q)}" for k in e.kwargs]
        return f"{expr(e.func, _PREC_POSTFIX, q)}({', '.join(args)})", _PREC_POSTFIX
    if isinstance(e, n.BinOp):
        p = _PREC_SUM if e.op in ("+", "-") else _PREC_TERM
        return f"{expr(e.left, p, q)} {e.op} {expr(e.right, p + 1, q)}", p
    if isinstance(e, n.UnaryOp):
        if e.op == "not":
            return f"not {expr(e.operand, _PREC_NOT, q)}", _PREC_NOT
        return f"{e.op}{expr(e.operand, _PREC_UNARY, q)}", _PREC_UNARY
    if isinstance(e, n.Compare):
        return f"{expr(e.left, _PREC_SUM, q)} {e.op} {expr(e.right, _PREC_SUM, q)}", _PREC_CMP
    if isinstance(e, n.BoolOp):
        p = _PREC_OR if e.op == "or" else _PREC_AND
        return f"{expr(e.left, p, q)} {e.op} {expr(e.right, p + 1, q)}", p
    raise TypeError(f"cannot print {type(e).__name__}")


def fstring(e: n.FString, q: str = '"') -> str:
    # Inside an f-string, nested strings take the other quote so the lexer sees one token.
    inner_q = "'" if q == '"' else '"'
    out = []
    for part in e.parts:
        if isinstance(part, str):
            body = string(part, q)[1:-1]
            out.append(body.replace("{", "{{").replace("}", "}}"))
        else:
            out.append("{" + expr(part, 0, inner_q) + "}")
    return "f" + q + "".join(out) + q


def type_ref(t: n.TypeRef) -> str:
    if t.name == "literal" and t.literals:
        text = " | ".join(string(x) for x in t.literals)
    elif t.args:
        text = f"{t.name}[{', '.join(type_ref(a) for a in t.args)}]"
    else:
        text = t.name
    return text + ("?" if t.optional else "")


def param(p: n.Param) -> str:
    return p.name + (f": {type_ref(p.type)}" if p.type is not None else "")


def sig_field(f: n.Field) -> str:
    text = f.name + (f": {type_ref(f.type)}" if f.type is not None else "")
    return text + (f" {string(f.description, long_ok=True)}" if f.description is not None else "")


def call_args(args, kwargs) -> str:
    return ", ".join([expr(a) for a in args] + [f"{k.name}={expr(k.value)}" for k in kwargs])


# ---------------------------------------------------------------- layout with comments


class _Printer:
    """Emits lines; before each node, the comments that precede it in the source; after it, its trailing one."""

    def __init__(self, comments):
        self.comments = sorted(comments, key=lambda c: (c.span.line, c.span.col))
        self.next = 0  # index of the first comment not yet printed
        self.out: list[str] = []
        self.last_line = 0  # source line of the last thing printed, for keeping blank lines
        self.opened = False  # the last line printed opens a block

    def emit(self, depth: int, text: str, opens: bool = False) -> None:
        self.out.append((INDENT * depth + text).rstrip())
        self.opened = opens

    def blank(self) -> None:
        # Never a blank line at the top, twice in a row, or right after an opening brace.
        if self.out and self.out[-1] != "" and not self.opened:
            self.out.append("")

    def pending(self, before_line: int):
        while self.next < len(self.comments) and self.comments[self.next].span.line < before_line:
            yield self.comments[self.next]
            self.next += 1

    def leading(self, depth: int, line: int, keep_blank: bool) -> None:
        for c in self.pending(line):
            if keep_blank and self.last_line and c.span.line > self.last_line + 1:
                self.blank()
            self.emit(depth, c.text, opens=self.opened and not keep_blank)
            self.last_line = c.span.line
        if keep_blank and self.last_line and line > self.last_line + 1:
            self.blank()

    def trailing(self, line: int) -> str:
        """The comment that ends source line `line`, if not yet printed."""
        if self.next < len(self.comments) and self.comments[self.next].span.line == line:
            c = self.comments[self.next]
            self.next += 1
            return "  " + c.text
        return ""

    def simple(self, depth: int, node: n.Node, text: str, keep_blank: bool = True) -> None:
        sp = node.span
        self.leading(depth, sp.line, keep_blank)
        # Comments inside a multi-line node go before it; one on its last line stays at its end.
        for c in self.pending(sp.end_line):
            self.emit(depth, c.text)
        self.emit(depth, text + self.trailing(sp.end_line))
        self.last_line = sp.end_line

    def close(self, depth: int, end_line: int, text: str = "}") -> None:
        """Comments left inside a block go before its closing brace, indented with the body."""
        for c in self.pending(end_line):
            self.emit(depth + 1, c.text)
        self.emit(depth, text + self.trailing(end_line))
        self.last_line = end_line

    # -- file and declarations -------------------------------------------------
    def file(self, f: n.File) -> str:
        for i, d in enumerate(f.decls):
            if i:
                self.blank()
            comments = list(self.pending(d.span.line))
            for c in comments:
                if self.last_line and c.span.line > self.last_line + 1:
                    self.blank()
                self.emit(0, c.text)
                self.last_line = c.span.line
            if comments and d.span.line > self.last_line + 1:
                self.blank()
            self.decl(d)
        rest = self.comments[self.next :]
        if rest:
            self.blank()
            for c in rest:
                if self.last_line and c.span.line > self.last_line + 1:
                    self.blank()
                self.emit(0, c.text)
                self.last_line = c.span.line
            self.next = len(self.comments)
        while self.out and self.out[-1] == "":
            self.out.pop()
        return "\n".join(self.out) + "\n" if self.out else ""

    def decl(self, d) -> None:
        sp = d.span
        if isinstance(d, n.Signature):
            return self.signature(d)
        if isinstance(d, n.ModuleDecl):
            args = ([expr(d.signature)] if d.signature is not None else []) + [f"{k.name}={expr(k.value)}" for k in d.settings]
            return self.simple(0, d, f"module {d.name} = {d.kind}({', '.join(args)})", keep_blank=False)
        if isinstance(d, n.RetrieverDecl):
            return self.simple(0, d, f"retriever {d.name} = {d.kind}({call_args(d.args, d.kwargs)})", keep_blank=False)
        if isinstance(d, n.ToolDecl):
            head = f"tool {d.name}"
            if d.params is not None:
                head += "(" + ", ".join(param(p) for p in d.params) + ")"
            if d.returns is not None:
                head += f" -> {type_ref(d.returns)}"
            if d.description is not None:
                head += f" {string(d.description)}"
            return self.simple(0, d, f"{head} = {expr(d.impl)}", keep_blank=False)
        if isinstance(d, n.LMDecl):
            text = f"lm {d.name} = {string(d.model)}"
            if d.settings:
                text += " (" + call_args((), d.settings) + ")"
            return self.simple(0, d, text, keep_blank=False)
        if isinstance(d, n.MetricDecl):
            if d.body is None:
                return self.simple(0, d, f"metric {d.name} = {expr(d.impl)}", keep_blank=False)
            head = f"metric {d.name}(" + ", ".join(param(p) for p in d.params) + ") {"
            return self.block_node(0, d, head, d.body, sp.end_line)
        if isinstance(d, n.ProgramDecl):
            head = f"program {d.name}(" + ", ".join(param(p) for p in d.params) + ")"
            if d.outputs:
                head += " -> (" + ", ".join(param(p) for p in d.outputs) + ")"
            return self.block_node(0, d, head + " {", d.body, sp.end_line)
        raise TypeError(f"cannot print {type(d).__name__}")

    def signature(self, d: n.Signature) -> None:
        sp = d.span
        if d.form == "shorthand":
            text = ", ".join(f.name for f in d.inputs) + " -> " + ", ".join(f.name for f in d.outputs)
            return self.simple(0, d, f"signature {d.name} = {string(text)}", keep_blank=False)
        if d.form == "inline":
            ins = ", ".join(sig_field(f) for f in d.inputs)
            outs = ", ".join(sig_field(f) for f in d.outputs)
            head = f"signature {d.name}({ins} -> {outs})".replace("( -> ", "(-> ")
            if d.instructions is None:
                return self.simple(0, d, head, keep_blank=False)
            self.leading(0, sp.line, False)
            for c in self.pending(sp.end_line):
                self.emit(0, c.text)
            self.emit(0, head)
            self.emit(1, string(d.instructions, long_ok=True) + self.trailing(sp.end_line))
            self.last_line = sp.end_line
            return None
        self.leading(0, sp.line, False)
        self.emit(0, f"signature {d.name} {{" + self.trailing(sp.line))
        self.last_line = sp.line
        if d.instructions is not None:
            first = (d.inputs + d.outputs)[0].span.line if d.inputs or d.outputs else sp.end_line
            # The instruction string has no node (and no position) of its own: comments before
            # the first field all go above it, so a second run finds them in the same place.
            for c in self.pending(first):
                self.emit(1, c.text)
            self.emit(1, string(d.instructions, long_ok=True))
            self.last_line = first - 1
        # Descriptions line up in one column, two spaces after the longest described field.
        heads = [(f, f.name + (f": {type_ref(f.type)}" if f.type is not None else "")) for f in d.inputs]
        heads += [(f, ("-> " if i == 0 else "") + f.name + (f": {type_ref(f.type)}" if f.type is not None else "")) for i, f in enumerate(d.outputs)]
        width = max((len(h) for f, h in heads if f.description is not None), default=0)
        for f, h in heads:
            text = h if f.description is None else h.ljust(width) + "  " + string(f.description, long_ok=True)
            self.simple(1, f, text, keep_blank=False)
        if not d.outputs:
            self.emit(1, "->")
        self.close(0, sp.end_line)

    # -- statements --------------------------------------------------------------
    def block_node(self, depth: int, node: n.Node, head: str, body, end_line: int) -> None:
        sp = node.span
        self.leading(depth, sp.line, depth > 0)
        self.emit(depth, head + self.trailing(sp.line), opens=True)
        self.last_line = sp.line
        self.body(depth + 1, body)
        self.close(depth, end_line)

    def body(self, depth: int, stmts) -> None:
        for s in stmts:
            self.stmt(depth, s)

    def stmt(self, depth: int, s) -> None:
        sp = s.span
        if isinstance(s, n.Assign):
            return self.simple(depth, s, f"{s.target} {s.op} {expr(s.value)}")
        if isinstance(s, n.ExprStmt):
            return self.simple(depth, s, expr(s.expr))
        if isinstance(s, n.Return):
            return self.simple(
                depth,
                s,
                "return" + (f" {expr(s.value)}" if s.value is not None else "") + (f", {expr(s.feedback)}" if s.feedback is not None else ""),
            )
        if isinstance(s, n.Check):
            text = f"{s.kind} {expr(s.cond)}"
            if s.message is not None:
                text += f", {expr(s.message)}"
            if s.target is not None:
                text += f" for {s.target}"
            return self.simple(depth, s, text)
        if isinstance(s, n.Break):
            return self.simple(depth, s, "break")
        if isinstance(s, n.Continue):
            return self.simple(depth, s, "continue")
        if isinstance(s, n.For):
            return self.block_node(depth, s, f"for {s.var} in {expr(s.iter)} {{", s.body, sp.end_line)
        if isinstance(s, n.While):
            head = f"while {expr(s.cond)}" + (f" max {expr(s.bound)}" if s.bound is not None else "") + " {"
            return self.block_node(depth, s, head, s.body, sp.end_line)
        if isinstance(s, n.If):
            return self.if_stmt(depth, s)
        raise TypeError(f"cannot print {type(s).__name__}")

    def if_stmt(self, depth: int, s: n.If) -> None:
        sp = s.span
        self.leading(depth, sp.line, True)
        for i, (cond, body) in enumerate(s.branches):
            head = ("if " if i == 0 else "} elif ") + expr(cond) + " {"
            line = sp.line if i == 0 else cond.span.line
            if i:
                for c in self.pending(line):
                    self.emit(depth + 1, c.text)
            self.emit(depth, head + self.trailing(line), opens=True)
            self.last_line = line
            self.body(depth + 1, body)
        if s.orelse is not None:
            first = s.orelse[0].span.line if s.orelse else sp.end_line
            # `else` has no node: comments before the first statement of the else block go inside it.
            self.emit(depth, "} else {", opens=True)
            for c in self.pending(first):
                self.emit(depth + 1, c.text)
                self.last_line = c.span.line
            self.last_line = max(self.last_line, first - 1)
            self.opened = True
            self.body(depth + 1, s.orelse)
        self.close(depth, sp.end_line)
