"""The IR: plain, JSON-serializable data independent of the source text.

A program is statements and expressions whose calls are already resolved (module,
retriever, tool, builtin or program).  Every LM call site of a module lowers to one
or more `Predictor`s in the predictor table; optimizers change only predictor
parameters (instructions, demos, LM settings), so the rest of the IR is frozen.

`to_json`/`from_json` use a closed table of node classes: loading an artifact never
imports or calls anything named by the data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, fields, replace
from functools import cached_property
from typing import Any, Iterator, Union

from .errors import ArtifactError
from .types import Type, parse_type

IR_VERSION = 1


# ---------------------------------------------------------------- signatures and predictors


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: Type
    description: str | None = None

    @property
    def label(self) -> str:
        """Human label used in prompts: `context_passages` -> `Context passages`."""
        words = self.name.replace("_", " ").strip()
        return words[:1].upper() + words[1:] if words else self.name


@dataclass(frozen=True)
class SignatureIR:
    name: str
    instructions: str
    inputs: tuple[FieldSpec, ...]
    outputs: tuple[FieldSpec, ...]

    def input(self, name: str) -> FieldSpec | None:
        return next((f for f in self.inputs if f.name == name), None)

    def output(self, name: str) -> FieldSpec | None:
        return next((f for f in self.outputs if f.name == name), None)


@dataclass(frozen=True)
class Predictor:
    """One LM call site.  `demos` are dicts holding input and output field values."""

    id: str
    module: str
    role: str
    signature: SignatureIR
    instructions: str
    demos: tuple[dict[str, Any], ...] = ()
    settings: tuple[tuple[str, Any], ...] = ()  # temperature, max_tokens, lm, stop, ...

    def setting(self, key: str, default: Any = None) -> Any:
        for k, v in self.settings:
            if k == key:
                return v
        return default

    def with_settings(self, **changes: Any) -> "Predictor":
        merged = dict(self.settings)
        merged.update(changes)
        return replace(self, settings=tuple(sorted(merged.items())))


@dataclass(frozen=True)
class ModuleIR:
    """A declared module: its kind, its predictors by role, and kind settings (m, max_iters, tools, reward...)."""

    name: str
    kind: str
    predictors: tuple[tuple[str, str], ...]  # (role, predictor id)
    settings: tuple[tuple[str, Any], ...] = ()

    def predictor_id(self, role: str) -> str:
        return dict(self.predictors)[role]

    def setting(self, key: str, default: Any = None) -> Any:
        return dict(self.settings).get(key, default)


@dataclass(frozen=True)
class RetrieverIR:
    name: str
    kind: str  # bm25 | embeddings
    path: str
    text_field: str = "text"
    k: int = 3
    model: str | None = None


@dataclass(frozen=True)
class ToolIR:
    name: str
    kind: str  # python | retriever | calculator
    ref: str | None  # "pkg.mod:fn" for python, retriever name for retriever
    params: tuple[FieldSpec, ...]
    returns: Type
    description: str


@dataclass(frozen=True)
class LMAlias:
    name: str
    model: str
    settings: tuple[tuple[str, Any], ...] = ()


# ---------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Var:
    name: str


@dataclass(frozen=True)
class Const:
    value: Any


@dataclass(frozen=True)
class FStr:
    parts: tuple[Any, ...]  # str or Expr


@dataclass(frozen=True)
class ListOf:
    items: tuple[Any, ...]


@dataclass(frozen=True)
class DictOf:
    items: tuple[tuple[Any, Any], ...]


@dataclass(frozen=True)
class GetField:
    obj: Any
    name: str


@dataclass(frozen=True)
class GetIndex:
    obj: Any
    index: Any


@dataclass(frozen=True)
class Bin:
    op: str
    left: Any
    right: Any


@dataclass(frozen=True)
class Unary:
    op: str
    operand: Any


@dataclass(frozen=True)
class Cmp:
    op: str
    left: Any
    right: Any


@dataclass(frozen=True)
class Logic:
    op: str  # and | or
    left: Any
    right: Any


@dataclass(frozen=True)
class CallModule:
    module: str
    kwargs: tuple[tuple[str, Any], ...]
    line: int = 0


@dataclass(frozen=True)
class CallRetriever:
    retriever: str
    query: Any
    k: Any = None
    line: int = 0


@dataclass(frozen=True)
class CallTool:
    tool: str
    args: tuple[Any, ...]
    kwargs: tuple[tuple[str, Any], ...]
    line: int = 0


@dataclass(frozen=True)
class CallBuiltin:
    name: str
    args: tuple[Any, ...]
    kwargs: tuple[tuple[str, Any], ...] = ()
    line: int = 0


@dataclass(frozen=True)
class CallProgram:
    program: str
    kwargs: tuple[tuple[str, Any], ...]
    line: int = 0


Expr = Union[
    Var, Const, FStr, ListOf, DictOf, GetField, GetIndex, Bin, Unary, Cmp, Logic, CallModule, CallRetriever, CallTool, CallBuiltin, CallProgram
]


# ---------------------------------------------------------------- statements


@dataclass(frozen=True)
class Assign:
    target: str
    value: Any
    op: str = "="
    line: int = 0


@dataclass(frozen=True)
class Eval:
    expr: Any
    line: int = 0


@dataclass(frozen=True)
class Loop:
    var: str
    iter: Any
    body: tuple[Any, ...]
    line: int = 0


@dataclass(frozen=True)
class Branch:
    branches: tuple[tuple[Any, tuple[Any, ...]], ...]
    orelse: tuple[Any, ...] = ()
    line: int = 0


@dataclass(frozen=True)
class WhileLoop:
    cond: Any
    bound: int
    body: tuple[Any, ...]
    line: int = 0


@dataclass(frozen=True)
class Ret:
    value: Any = None
    line: int = 0
    # A metric's `return score, "why"`.  Left out of the JSON when absent, so the IR of every program
    # that does not use it (and every artifact written before it existed) stays as it was.
    feedback: Any = dataclasses.field(default=None, metadata={"omit_if_none": True})


@dataclass(frozen=True)
class Check:
    kind: str  # assert | suggest
    cond: Any
    message: Any
    target: str | None  # module name; None = the most recent module call
    line: int = 0


@dataclass(frozen=True)
class BreakLoop:
    line: int = 0


@dataclass(frozen=True)
class ContinueLoop:
    line: int = 0


# ---------------------------------------------------------------- programs, metrics, whole IR


@dataclass(frozen=True)
class ProgramIR:
    name: str
    inputs: tuple[FieldSpec, ...]
    outputs: tuple[FieldSpec, ...]
    body: tuple[Any, ...]


@dataclass(frozen=True)
class MetricIR:
    name: str
    kind: str  # builtin | python | block
    builtin: str | None = None
    field: str | None = None  # predicted output field
    gold: str | None = None  # example field holding the gold value
    ref: str | None = None  # "pkg.mod:fn"
    program: ProgramIR | None = None  # block metrics: inputs (example, pred)
    spec: str = ""  # source-like text, for reports


@dataclass(frozen=True)
class IR:
    entry: str
    programs: tuple[ProgramIR, ...]
    modules: tuple[ModuleIR, ...]
    predictors: tuple[Predictor, ...]
    retrievers: tuple[RetrieverIR, ...] = ()
    tools: tuple[ToolIR, ...] = ()
    lms: tuple[LMAlias, ...] = ()
    metrics: tuple[MetricIR, ...] = ()
    version: int = IR_VERSION
    # Run-time strategies added by optimizers (knn demo pools, ensembles); plain data.
    extras: tuple[tuple[str, Any], ...] = ()

    # lookups (cached per instance; the IR is immutable)
    @cached_property
    def _predictors(self) -> dict[str, Predictor]:
        return {p.id: p for p in self.predictors}

    @cached_property
    def _modules(self) -> dict[str, ModuleIR]:
        return {m.name: m for m in self.modules}

    @cached_property
    def _programs(self) -> dict[str, ProgramIR]:
        return {p.name: p for p in self.programs}

    def predictor(self, pid: str) -> Predictor:
        return self._predictors[pid]

    def module(self, name: str) -> ModuleIR:
        return self._modules[name]

    def program(self, name: str | None = None) -> ProgramIR:
        return self._programs[name or self.entry]

    def metric(self, name: str) -> MetricIR | None:
        return next((m for m in self.metrics if m.name == name), None)

    def retriever(self, name: str) -> RetrieverIR:
        return next(r for r in self.retrievers if r.name == name)

    def tool(self, name: str) -> ToolIR:
        return next(t for t in self.tools if t.name == name)

    def lm_alias(self, name: str) -> LMAlias | None:
        return next((a for a in self.lms if a.name == name), None)

    def extra(self, key: str, default: Any = None) -> Any:
        return dict(self.extras).get(key, default)

    def with_extra(self, key: str, value: Any) -> "IR":
        merged = dict(self.extras)
        merged[key] = value
        return replace(self, extras=tuple(sorted(merged.items())))

    def with_predictors(self, updated: "dict[str, Predictor] | list[Predictor]") -> "IR":
        """A copy with some predictors replaced (by id)."""
        if isinstance(updated, (list, tuple)):
            updated = {p.id: p for p in updated}
        unknown = set(updated) - set(self._predictors)
        if unknown:
            raise KeyError(f"unknown predictors {sorted(unknown)}")
        return replace(self, predictors=tuple(updated.get(p.id, p) for p in self.predictors))

    def predictor_ids(self) -> list[str]:
        return [p.id for p in self.predictors]


# ---------------------------------------------------------------- JSON


_NODE_CLASSES = {
    cls.__name__: cls
    for cls in (
        FieldSpec,
        SignatureIR,
        Predictor,
        ModuleIR,
        RetrieverIR,
        ToolIR,
        LMAlias,
        Var,
        Const,
        FStr,
        ListOf,
        DictOf,
        GetField,
        GetIndex,
        Bin,
        Unary,
        Cmp,
        Logic,
        CallModule,
        CallRetriever,
        CallTool,
        CallBuiltin,
        CallProgram,
        Assign,
        Eval,
        Loop,
        Branch,
        WhileLoop,
        Ret,
        Check,
        BreakLoop,
        ContinueLoop,
        ProgramIR,
        MetricIR,
        IR,
    )
}
_TAG = "$node"  # field names are identifiers, so no data dict can carry this key


def _plain(value: Any) -> Any:
    """Data values (demos, constants) as plain JSON."""
    if isinstance(value, (list, tuple)):
        return [_plain(x) for x in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        raise ValueError("IR cannot hold NaN or infinity")
    return value


def _dump(value: Any) -> Any:
    if isinstance(value, Type):
        return {_TAG: "Type", "text": value.name}
    if dataclasses.is_dataclass(value):
        out = {_TAG: type(value).__name__}
        for f in fields(value):
            v = getattr(value, f.name)
            if v is None and f.metadata.get("omit_if_none"):
                continue
            out[f.name] = _dump(v)
        return out
    if isinstance(value, tuple):
        if value and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in value):
            # (key, value) pairs stay pairs so tuples round-trip exactly.
            return {_TAG: "pairs", "items": [[k, _dump(v)] for k, v in value]}
        return [_dump(x) for x in value]
    return _plain(value)


def _load(value: Any, path: str = "ir") -> Any:
    if isinstance(value, list):
        return tuple(_load(x, path) for x in value)
    if isinstance(value, dict):
        tag = value.get(_TAG)
        if tag is None:
            return value  # plain data (a demo, a setting value)
        if tag == "Type":
            try:
                return parse_type(value["text"])
            except (KeyError, ValueError, TypeError) as e:
                raise ArtifactError(f"{path}: bad type in IR: {e}") from None
        if tag == "pairs":
            return tuple((str(k), _load(v, path)) for k, v in value["items"])
        cls = _NODE_CLASSES.get(tag) if isinstance(tag, str) else None
        if cls is None:
            raise ArtifactError(f"{path}: unknown IR node {str(tag)[:40]!r}")
        names = {f.name for f in fields(cls)}
        extra = set(value) - names - {_TAG}
        if extra:
            raise ArtifactError(f"{path}: unexpected key {sorted(extra)[0][:40]!r} in IR node {tag}")
        kwargs = {k: _load(v, f"{path}.{k}") for k, v in value.items() if k != _TAG}
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise ArtifactError(f"{path}: malformed IR node {tag}: {e}") from None
    return value


def from_json_node(data: Any, path: str = "ir") -> Any:
    """One IR node (e.g. a Predictor) from its JSON, through the same closed table."""
    if isinstance(data, dict) and data.get(_TAG) is None:
        raise ArtifactError(f"{path}: expected an IR node")
    return _load(data, path)


def to_json(ir: IR) -> dict[str, Any]:
    data: dict[str, Any] = _dump(ir)
    return data


def from_json(data: Any, path: str = "ir") -> IR:
    try:
        ir = _load(data, path)
    except RecursionError:
        raise ArtifactError(f"{path}: IR is nested too deeply") from None
    except (KeyError, TypeError, AttributeError) as e:
        raise ArtifactError(f"{path}: malformed IR ({type(e).__name__}: {e})") from None
    if not isinstance(ir, IR):
        raise ArtifactError(f"{path}: expected an IR object")
    if ir.version != IR_VERSION:
        raise ArtifactError(f"{path}: IR version {ir.version} is not supported (this lmc reads version {IR_VERSION})")
    validate(ir, path)
    return ir


def validate(ir: IR, path: str = "ir") -> None:
    """Integrity: every reference names something that exists."""
    preds = {p.id for p in ir.predictors}
    mods = {m.name for m in ir.modules}
    progs = {p.name for p in ir.programs}
    if ir.entry not in progs:
        raise ArtifactError(f"{path}: entry program '{ir.entry}' is missing")
    for m in ir.modules:
        for _role, pid in m.predictors:
            if pid not in preds:
                raise ArtifactError(f"{path}: module '{m.name}' refers to missing predictor '{pid}'")
    for p in ir.predictors:
        if p.module not in mods:
            raise ArtifactError(f"{path}: predictor '{p.id}' belongs to missing module '{p.module}'")
        if not isinstance(p.demos, tuple) or not all(isinstance(d, dict) for d in p.demos):
            raise ArtifactError(f"{path}: predictor '{p.id}' has malformed demos")
        cal = p.setting("calibration")
        if cal is not None and not (
            isinstance(cal, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in cal.values())
        ):
            raise ArtifactError(f"{path}: predictor '{p.id}' has a malformed calibration (expected label -> number)")
    names = {"module": mods, "program": progs, "retriever": {r.name for r in ir.retrievers}, "tool": {t.name for t in ir.tools}}
    bodies = [p.body for p in ir.programs] + [m.program.body for m in ir.metrics if m.program]
    for body in bodies:
        for node in _walk(body):
            for kind, attr in (("module", "module"), ("program", "program"), ("retriever", "retriever"), ("tool", "tool")):
                if type(node).__name__ == "Call" + kind.capitalize() and getattr(node, attr) not in names[kind]:
                    raise ArtifactError(f"{path}: call to missing {kind} '{getattr(node, attr)}'")


def _walk(value: Any) -> Iterator[Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, Type):
        yield value
        for f in fields(value):
            yield from _walk(getattr(value, f.name))
    elif isinstance(value, tuple):
        for x in value:
            yield from _walk(x)


def dumps(value: Any) -> str:
    """Canonical JSON: sorted keys, stable separators (used for hashing and artifacts)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def fingerprint(ir: IR) -> str:
    return hashlib.sha256(dumps(to_json(ir)).encode("utf-8")).hexdigest()
