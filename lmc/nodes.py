"""The AST of a .lmp file: frozen dataclasses, each carrying the span it came from."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Union

from .errors import Span


@dataclass(frozen=True)
class Node:
    span: Span = field(compare=False, repr=False)


# ---------------------------------------------------------------- types


@dataclass(frozen=True)
class TypeRef(Node):
    """A written type: `str`, `list[str]`, `dict[str, int]`, `T?`, or a literal union."""

    name: str = ""  # "str", "list", ..., or "literal"
    args: tuple["TypeRef", ...] = ()
    literals: tuple[str, ...] = ()
    optional: bool = False


# ---------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Name(Node):
    id: str = ""


@dataclass(frozen=True)
class Const(Node):
    value: Any = None  # str, int, float, bool or None


@dataclass(frozen=True)
class FString(Node):
    parts: tuple[Union[str, "Expr"], ...] = ()


@dataclass(frozen=True)
class ListExpr(Node):
    items: tuple["Expr", ...] = ()


@dataclass(frozen=True)
class DictExpr(Node):
    items: tuple[tuple["Expr", "Expr"], ...] = ()


@dataclass(frozen=True)
class Attr(Node):
    obj: "Expr" = None
    name: str = ""


@dataclass(frozen=True)
class Index(Node):
    obj: "Expr" = None
    index: "Expr" = None


@dataclass(frozen=True)
class Keyword(Node):
    name: str = ""
    value: "Expr" = None


@dataclass(frozen=True)
class Call(Node):
    func: "Expr" = None
    args: tuple["Expr", ...] = ()
    kwargs: tuple[Keyword, ...] = ()


@dataclass(frozen=True)
class BinOp(Node):
    op: str = ""  # + - * / // %
    left: "Expr" = None
    right: "Expr" = None


@dataclass(frozen=True)
class UnaryOp(Node):
    op: str = ""  # - not
    operand: "Expr" = None


@dataclass(frozen=True)
class Compare(Node):
    op: str = ""  # == != < <= > >= in "not in"
    left: "Expr" = None
    right: "Expr" = None


@dataclass(frozen=True)
class BoolOp(Node):
    op: str = ""  # and or
    left: "Expr" = None
    right: "Expr" = None


Expr = Union[Name, Const, FString, ListExpr, DictExpr, Attr, Index, Call, BinOp, UnaryOp, Compare, BoolOp]


# ---------------------------------------------------------------- statements


@dataclass(frozen=True)
class Assign(Node):
    target: str = ""
    value: Expr = None
    target_span: Span = field(default=None, compare=False, repr=False)
    op: str = "="  # "=" or "+=" etc.


@dataclass(frozen=True)
class ExprStmt(Node):
    expr: Expr = None


@dataclass(frozen=True)
class For(Node):
    var: str = ""
    iter: Expr = None
    body: tuple["Stmt", ...] = ()


@dataclass(frozen=True)
class If(Node):
    branches: tuple[tuple[Expr, tuple["Stmt", ...]], ...] = ()
    orelse: tuple["Stmt", ...] | None = None


@dataclass(frozen=True)
class While(Node):
    cond: Expr = None
    bound: Expr | None = None
    body: tuple["Stmt", ...] = ()


@dataclass(frozen=True)
class Return(Node):
    value: Expr | None = None
    feedback: Expr | None = None  # `return score, "why"`: a metric's words about its score


@dataclass(frozen=True)
class Check(Node):
    """`assert cond, "msg"` or `suggest cond, "msg"`, optionally `for <module>`."""

    kind: str = "assert"
    cond: Expr = None
    message: Expr | None = None
    target: str | None = None
    target_span: Span | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Break(Node):
    pass


@dataclass(frozen=True)
class Continue(Node):
    pass


Stmt = Union[Assign, ExprStmt, For, If, While, Return, Check, Break, Continue]


# ---------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Field(Node):
    name: str = ""
    type: TypeRef | None = None  # None means str
    description: str | None = None


@dataclass(frozen=True)
class Signature(Node):
    name: str = ""
    instructions: str | None = None
    inputs: tuple[Field, ...] = ()
    outputs: tuple[Field, ...] = ()
    form: str = "block"  # "block", "inline" or "shorthand"


@dataclass(frozen=True)
class ModuleDecl(Node):
    name: str = ""
    kind: str = ""
    kind_span: Span = field(default=None, compare=False, repr=False)
    signature: Expr = None  # Name of a signature, or Const(str) shorthand
    settings: tuple[Keyword, ...] = ()


@dataclass(frozen=True)
class RetrieverDecl(Node):
    name: str = ""
    kind: str = ""  # bm25, embeddings
    kind_span: Span = field(default=None, compare=False, repr=False)
    args: tuple[Expr, ...] = ()
    kwargs: tuple[Keyword, ...] = ()


@dataclass(frozen=True)
class Param(Node):
    name: str = ""
    type: TypeRef | None = None


@dataclass(frozen=True)
class ToolDecl(Node):
    """`tool t(a: T) -> R "doc" = python("pkg.mod:fn")`, `tool t = retriever`, `tool t = calculator()`."""

    name: str = ""
    params: tuple[Param, ...] | None = None
    returns: TypeRef | None = None
    description: str | None = None
    impl: Expr = None


@dataclass(frozen=True)
class LMDecl(Node):
    name: str = ""
    model: str = ""
    settings: tuple[Keyword, ...] = ()


@dataclass(frozen=True)
class MetricDecl(Node):
    """`metric m = builtin(fields)`, `metric m = python("pkg.mod:fn")`, or `metric m(example, pred) { ... }`."""

    name: str = ""
    impl: Expr | None = None
    params: tuple[Param, ...] = ()
    body: tuple[Stmt, ...] | None = None


@dataclass(frozen=True)
class ProgramDecl(Node):
    name: str = ""
    params: tuple[Param, ...] = ()
    outputs: tuple[Param, ...] = ()
    body: tuple[Stmt, ...] = ()


Decl = Union[Signature, ModuleDecl, RetrieverDecl, ToolDecl, LMDecl, MetricDecl, ProgramDecl]


@dataclass(frozen=True)
class Comment(Node):
    text: str = ""


@dataclass(frozen=True)
class File(Node):
    path: str = ""
    decls: tuple[Decl, ...] = ()
    comments: tuple[Comment, ...] = field(default=(), compare=False, repr=False)


# ---------------------------------------------------------------- helpers


def walk(node: Any):
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
