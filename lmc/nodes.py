"""The AST of a .lmp file: frozen dataclasses, each carrying the span it came from."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Iterator, Union

from .errors import Span


@dataclass(frozen=True)
class Node:  # span is positional: Node(span, field=...)
    span: Span = field(compare=False, repr=False)


# ---------------------------------------------------------------- types


@dataclass(frozen=True, kw_only=True)
class TypeRef(Node):
    """A written type: `str`, `list[str]`, `dict[str, int]`, `T?`, or a literal union."""

    name: str = ""  # "str", "list", ..., or "literal"
    args: tuple[TypeRef, ...] = ()
    literals: tuple[str, ...] = ()
    optional: bool = False


# ---------------------------------------------------------------- expressions


@dataclass(frozen=True, kw_only=True)
class Name(Node):
    id: str


@dataclass(frozen=True, kw_only=True)
class Const(Node):
    value: Any = None  # str, int, float, bool or None


@dataclass(frozen=True, kw_only=True)
class FString(Node):
    parts: tuple[Union[str, Expr], ...] = ()


@dataclass(frozen=True, kw_only=True)
class ListExpr(Node):
    items: tuple[Expr, ...] = ()


@dataclass(frozen=True, kw_only=True)
class DictExpr(Node):
    items: tuple[tuple[Expr, Expr], ...] = ()


@dataclass(frozen=True, kw_only=True)
class Attr(Node):
    obj: Expr
    name: str
    name_span: Span = field(compare=False, repr=False)  # the name after the dot


@dataclass(frozen=True, kw_only=True)
class Index(Node):
    obj: Expr
    index: Expr


@dataclass(frozen=True, kw_only=True)
class Keyword(Node):
    name: str
    value: Expr
    name_span: Span = field(compare=False, repr=False)  # the key before '='


@dataclass(frozen=True, kw_only=True)
class Call(Node):
    func: Expr  # the callee: its span is the callee's
    args: tuple[Expr, ...] = ()
    kwargs: tuple[Keyword, ...] = ()


@dataclass(frozen=True, kw_only=True)
class BinOp(Node):
    op: str  # + - * / // %
    left: Expr
    right: Expr


@dataclass(frozen=True, kw_only=True)
class UnaryOp(Node):
    op: str  # - not
    operand: Expr


@dataclass(frozen=True, kw_only=True)
class Compare(Node):
    op: str  # == != < <= > >= in "not in"
    left: Expr
    right: Expr


@dataclass(frozen=True, kw_only=True)
class BoolOp(Node):
    op: str  # and or
    left: Expr
    right: Expr


Expr = Union[Name, Const, FString, ListExpr, DictExpr, Attr, Index, Call, BinOp, UnaryOp, Compare, BoolOp]


# ---------------------------------------------------------------- statements


@dataclass(frozen=True, kw_only=True)
class Assign(Node):
    target: str
    value: Expr
    target_span: Span = field(compare=False, repr=False)
    op: str = "="  # "=" or "+=" etc.


@dataclass(frozen=True, kw_only=True)
class ExprStmt(Node):
    expr: Expr


@dataclass(frozen=True, kw_only=True)
class For(Node):
    var: str
    iter: Expr
    body: tuple[Stmt, ...] = ()
    var_span: Span = field(compare=False, repr=False)
    keyword_span: Span = field(compare=False, repr=False)  # the word `for`


@dataclass(frozen=True, kw_only=True)
class If(Node):
    branches: tuple[tuple[Expr, tuple[Stmt, ...]], ...] = ()
    orelse: tuple[Stmt, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class While(Node):
    cond: Expr
    bound: Expr | None = None
    body: tuple[Stmt, ...] = ()
    keyword_span: Span = field(compare=False, repr=False)  # the word `while`


@dataclass(frozen=True, kw_only=True)
class Return(Node):
    value: Expr | None = None


@dataclass(frozen=True, kw_only=True)
class Check(Node):
    """`assert cond, "msg"` or `suggest cond, "msg"`, optionally `for <module>`."""

    kind: str = "assert"
    cond: Expr
    message: Expr | None = None
    target: str | None = None
    target_span: Span | None = field(default=None, compare=False, repr=False)  # the module's name
    keyword_span: Span = field(compare=False, repr=False)  # the word `assert` or `suggest`


@dataclass(frozen=True, kw_only=True)
class Break(Node):
    pass


@dataclass(frozen=True, kw_only=True)
class Continue(Node):
    pass


Stmt = Union[Assign, ExprStmt, For, If, While, Return, Check, Break, Continue]


# ---------------------------------------------------------------- declarations


@dataclass(frozen=True, kw_only=True)
class Field(Node):
    name: str
    name_span: Span = field(compare=False, repr=False)
    type: TypeRef | None = None  # None means str
    description: str | None = None


@dataclass(frozen=True, kw_only=True)
class Signature(Node):
    name: str
    name_span: Span = field(compare=False, repr=False)
    instructions: str | None = None
    inputs: tuple[Field, ...] = ()
    outputs: tuple[Field, ...] = ()
    form: str = "block"  # "block", "inline" or "shorthand"


@dataclass(frozen=True, kw_only=True)
class ModuleDecl(Node):
    name: str
    name_span: Span = field(compare=False, repr=False)
    kind: str
    kind_span: Span = field(compare=False, repr=False)
    signature: Expr | None = None  # Name of a signature, or Const(str) shorthand
    settings: tuple[Keyword, ...] = ()


@dataclass(frozen=True, kw_only=True)
class RetrieverDecl(Node):
    name: str
    name_span: Span = field(compare=False, repr=False)
    kind: str  # bm25, embeddings
    kind_span: Span = field(compare=False, repr=False)
    args: tuple[Expr, ...] = ()
    kwargs: tuple[Keyword, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Param(Node):
    name: str
    name_span: Span = field(compare=False, repr=False)
    type: TypeRef | None = None


@dataclass(frozen=True, kw_only=True)
class ToolDecl(Node):
    """`tool t(a: T) -> R "doc" = python("pkg.mod:fn")`, `tool t = retriever`, `tool t = calculator()`."""

    name: str
    name_span: Span = field(compare=False, repr=False)
    params: tuple[Param, ...] | None = None
    returns: TypeRef | None = None
    description: str | None = None
    impl: Expr


@dataclass(frozen=True, kw_only=True)
class LMDecl(Node):
    name: str
    name_span: Span = field(compare=False, repr=False)
    model: str
    model_span: Span = field(compare=False, repr=False)  # the model string, quotes included
    settings: tuple[Keyword, ...] = ()


@dataclass(frozen=True, kw_only=True)
class MetricDecl(Node):
    """`metric m = builtin(fields)`, `metric m = python("pkg.mod:fn")`, or `metric m(example, pred) { ... }`."""

    name: str
    name_span: Span = field(compare=False, repr=False)
    impl: Expr | None = None
    params: tuple[Param, ...] = ()
    body: tuple[Stmt, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class ProgramDecl(Node):
    name: str
    name_span: Span = field(compare=False, repr=False)
    params: tuple[Param, ...] = ()
    outputs: tuple[Param, ...] = ()
    body: tuple[Stmt, ...] = ()


Decl = Union[Signature, ModuleDecl, RetrieverDecl, ToolDecl, LMDecl, MetricDecl, ProgramDecl]


@dataclass(frozen=True, kw_only=True)
class Comment(Node):
    text: str


@dataclass(frozen=True, kw_only=True)
class File(Node):
    path: str
    decls: tuple[Decl, ...] = ()
    comments: tuple[Comment, ...] = field(default=(), compare=False, repr=False)


# ---------------------------------------------------------------- helpers


def walk(node: Any) -> Iterator[Node]:
    """Yield every Node under `node` (pre-order), through tuples and pairs."""
    if isinstance(node, Node):
        yield node
        for f in fields(node):
            if f.name == "span" or not f.compare:
                continue
            yield from walk(getattr(node, f.name))
    elif isinstance(node, (tuple, list)):
        for item in node:
            yield from walk(item)


def summary(node: Any) -> Any:
    """A span-free, JSON-able rendering of an AST (for golden fixtures and equality checks)."""
    if isinstance(node, Node):
        out: dict[str, Any] = {"_": type(node).__name__}
        for f in fields(node):
            if f.name == "span" or not f.compare:
                continue
            out[f.name] = summary(getattr(node, f.name))
        return out
    if isinstance(node, (tuple, list)):
        return [summary(x) for x in node]
    if is_dataclass(node):
        return str(node)
    return node


class _NotConstant:
    def __repr__(self) -> str:
        return "NOT_CONSTANT"


NOT_CONSTANT: Any = _NotConstant()


def constant(e: Any, *, names: bool = False) -> Any:
    """The value of a constant expression, else NOT_CONSTANT: a literal, a negated number, a list of
    constants (as a tuple) and, with `names`, a bare name as its text (`tools=[search]`, `reward=judge`).

    Settings are fixed when a program is compiled, so the checker and the lowering read them with this.

    >>> from lmc.errors import Span
    >>> s = Span("<doc>", 1, 1, 1, 2)
    >>> constant(ListExpr(s, items=(Const(s, value=1), UnaryOp(s, op="-", operand=Const(s, value=2.5)))))
    (1, -2.5)
    >>> constant(Name(s, id="judge")), constant(Name(s, id="judge"), names=True)
    (NOT_CONSTANT, 'judge')
    """
    if isinstance(e, Const):
        return e.value
    if isinstance(e, UnaryOp) and e.op == "-" and isinstance(e.operand, Const):
        v = e.operand.value
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v
        return NOT_CONSTANT
    if isinstance(e, ListExpr):
        items = tuple(constant(x, names=names) for x in e.items)
        return NOT_CONSTANT if any(x is NOT_CONSTANT for x in items) else items
    if names and isinstance(e, Name):
        return e.id
    return NOT_CONSTANT


@contextmanager
def cycle_collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector while an AST is built or walked.

    Trees and nodes hold no cycles, so the collector would only rescan them again and again: a
    third of the parse time and seven times the check time on a large file (bench/bench_parse_scaling.py).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
