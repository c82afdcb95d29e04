"""Safe pieces of Python source: identifiers checked, literals through repr, comments on one escaped line.

An artifact is untrusted input and the exported module is imported by the user,
so no text from the artifact is ever pasted into source as it is: names must be
plain ASCII identifiers (`ident`), values become literals (`lit`), types are
rebuilt from their parts (`py_type`) and prose in comments is escaped to a
single line (`comment`).
"""

from __future__ import annotations

import keyword
import math
import re
from typing import Any

from ..errors import LmcError

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MAX_DEPTH = 60


class ExportError(LmcError):
    """The artifact cannot be exported (a name that is not a Python identifier, a malformed module)."""


def is_ident(name: Any) -> bool:
    return isinstance(name, str) and bool(_IDENT.match(name)) and not keyword.iskeyword(name)


def ident(name: Any, what: str) -> str:
    """`name` unchanged when it is a plain ASCII, non-keyword identifier; otherwise an ExportError."""
    if is_ident(name):
        return name
    shown = repr(name)[:60] if isinstance(name, str) else type(name).__name__
    raise ExportError(f"{what} {shown} is not a Python identifier, so it cannot name a DSPy field or attribute")


def lit(value: Any, _depth: int = 0) -> str:
    """A Python literal for a JSON value (what IR constants and demos hold); anything else is refused."""
    if _depth > _MAX_DEPTH:
        raise ExportError("a constant is nested too deeply to export")
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ExportError("a constant is not a finite number")
        return repr(value)
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(lit(v, _depth + 1) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{lit(str(k))}: {lit(v, _depth + 1)}" for k, v in value.items()) + "}"
    raise ExportError(f"cannot export a constant of type {type(value).__name__}")


def comment(text: Any) -> str:
    """Text for a `#` comment: one physical line, ASCII only, every control character escaped."""
    out = []
    for ch in str(text):
        code = ord(ch)
        if code < 0x20 or code == 0x7F:
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch, f"\\x{code:02x}"))
        elif code > 0x7E:
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def py_type(t: Any, _depth: int = 0) -> str:
    """The Python annotation for an lmc type; literal unions become typing.Literal of repr'd strings."""
    if _depth > _MAX_DEPTH:
        raise ExportError("a type is nested too deeply to export")
    kind = getattr(t, "kind", None)
    args = getattr(t, "args", ())
    if kind in ("str", "int", "float", "bool"):
        return kind
    if kind in ("json", "any", "prediction"):
        return "Any"
    if kind == "list" and args:
        return f"list[{py_type(args[0], _depth + 1)}]"
    if kind == "dict" and args:
        return f"dict[str, {py_type(args[0], _depth + 1)}]"
    if kind == "optional" and args:
        return f"Optional[{py_type(args[0], _depth + 1)}]"
    if kind == "literal" and args and all(isinstance(a, str) for a in args):
        return "Literal[" + ", ".join(repr(a) for a in args) + "]"
    raise ExportError(f"cannot export the type {getattr(t, 'name', t)!r}")


def json_schema_type(t: Any) -> str:
    """The JSON-schema type name DSPy's Tool wants for an argument."""
    kind = getattr(t, "kind", None)
    if kind == "optional":
        return json_schema_type(t.args[0])
    return {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "list": "array", "dict": "object", "literal": "string"}.get(
        str(kind), "string"
    )


def prefix_for(name: str) -> str:
    """A field's display prefix the way DSPy derives it from the name ("next_tool_args" -> "Next Tool Args:")."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name))
    spaced = re.sub(r"(\d)([A-Za-z])", r"\1_\2", re.sub(r"([A-Za-z])(\d)", r"\1_\2", spaced))
    words = [w if w.isupper() else w.capitalize() for w in spaced.split("_")]
    return " ".join(words) + ":"


class Scope:
    """Python names for the lmc variables of one function: keywords and reserved names get a `v_` prefix."""

    RESERVED = frozenset({"self", "dspy", "inputs", "Any", "Literal", "Optional", "logging"})

    def __init__(self, taken: set[str] | None = None):
        self.names: dict[str, str] = {}
        self.used: set[str] = set(taken or ())

    def name(self, lmc_name: Any) -> str:
        if not isinstance(lmc_name, str) or not _IDENT.match(lmc_name):
            raise ExportError(f"variable {repr(lmc_name)[:60]} is not an identifier")
        if lmc_name in self.names:
            return self.names[lmc_name]
        py = lmc_name
        if keyword.iskeyword(py) or py in self.RESERVED or py.startswith("_"):
            py = "v_" + py.lstrip("_")
        while py in self.used:
            py += "_"
        self.names[lmc_name] = py
        self.used.add(py)
        return py
