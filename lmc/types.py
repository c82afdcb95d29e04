"""Field types: parsing type text, assignability, value checks, and coercion of LM output.

A `Type` is plain data (`kind` plus `args`) so it travels unchanged through the
AST, the IR and the artifact.  Kinds: the primitives `str int float bool json`,
`list` (one arg), `dict` (value type; keys are str), `optional` (inner), `literal`
(the allowed strings), and two used only by the checker: `any` (unknown) and
`prediction` (a module call's result; args are `(name, Type)` pairs).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from . import strict_json
from .errors import OutputParseError
from .files import find_non_finite

PRIMITIVES = ("str", "int", "float", "bool", "json")


@dataclass(frozen=True)
class Type:
    kind: str
    # list/dict/optional: (element Type,); literal: the strings; prediction: (name, Type) pairs.
    args: tuple[Any, ...] = ()

    # -- rendering ---------------------------------------------------------
    @property
    def name(self) -> str:
        k = self.kind
        if k == "list":
            return f"list[{self.args[0].name}]"
        if k == "dict":
            return f"dict[str, {self.args[0].name}]"
        if k == "optional":
            inner = self.args[0]
            return f"({inner.name})?" if inner.kind == "literal" else f"{inner.name}?"
        if k == "literal":
            return " | ".join(json.dumps(v) for v in self.args)
        if k == "prediction":
            return "prediction(" + ", ".join(n for n, _ in self.args) + ")"
        return k

    def __str__(self) -> str:
        return self.name

    # -- structure ---------------------------------------------------------
    def field(self, name: str) -> "Type | None":
        if self.kind == "prediction":
            for n, t in self.args:
                if n == name:
                    found: Type = t
                    return found
        return None

    @property
    def elem(self) -> "Type":
        return self.args[0] if self.kind in ("list", "dict", "optional") else ANY

    def to_json(self) -> str:
        return self.name

    # -- value checks --------------------------------------------------------
    def check(self, value: Any) -> str | None:  # noqa: C901 - one branch per type kind
        """None when `value` (a plain Python/JSON value) fits this type, else why not."""
        k = self.kind
        if k in ("any", "json"):
            return None
        if k == "optional":
            return None if value is None else self.args[0].check(value)
        if value is None:
            return f"expected {self.name}, got null"
        if k == "str":
            return None if isinstance(value, str) else f"expected str, got {_jtype(value)}"
        if k == "bool":
            return None if isinstance(value, bool) else f"expected bool, got {_jtype(value)}"
        if k == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
            ok = ok or (isinstance(value, float) and value.is_integer())
            return None if ok else f"expected int, got {_jtype(value)}"
        if k == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok and not math.isfinite(value):
                return f"expected a finite float, got {value!r}"
            return None if ok else f"expected float, got {_jtype(value)}"
        if k == "literal":
            return None if value in self.args else f"expected one of {self.name}, got {json.dumps(value)}"
        if k == "list":
            if not isinstance(value, list):
                return f"expected {self.name}, got {_jtype(value)}"
            for i, item in enumerate(value):
                err = self.args[0].check(item)
                if err:
                    return f"item {i}: {err}"
            return None
        if k == "dict":
            if not isinstance(value, dict):
                return f"expected {self.name}, got {_jtype(value)}"
            for key, item in value.items():
                err = self.args[0].check(item)
                if err:
                    return f"key {key!r}: {err}"
            return None
        if k == "prediction":
            return None if isinstance(value, dict) else f"expected a prediction, got {_jtype(value)}"
        return None


# bool before int: True is an int to isinstance.
_JSON_TYPES: tuple[tuple[type, str], ...] = ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (list, "list"), (dict, "dict"))


def _jtype(value: Any) -> str:
    """The lmc type name of a JSON value, for "expected X, got Y" messages.

    >>> _jtype(True), _jtype(3), _jtype(None), _jtype({})
    ('bool', 'int', 'null', 'dict')
    """
    if value is None:
        return "null"
    return next((name for tp, name in _JSON_TYPES if isinstance(value, tp)), type(value).__name__)


STR = Type("str")
INT = Type("int")
FLOAT = Type("float")
BOOL = Type("bool")
JSON = Type("json")
ANY = Type("any")
NONE = Type("optional", (ANY,))


def list_of(t: Type) -> Type:
    return Type("list", (t,))


def dict_of(t: Type) -> Type:
    return Type("dict", (t,))


def optional(t: Type) -> Type:
    return t if t.kind == "optional" else Type("optional", (t,))


def literal(*values: str) -> Type:
    return Type("literal", tuple(values))


def prediction(fields: list[tuple[str, Type]]) -> Type:
    return Type("prediction", tuple(fields))


# ---------------------------------------------------------------- type text

_TYPE_TOKEN = re.compile(r'\s*(?:(?P<name>[A-Za-z_]\w*)|(?P<str>"(?:[^"\\]|\\.)*")|(?P<p>[\[\],|?()]))')


def parse_type(text: str) -> Type:  # noqa: C901 - a small recursive-descent parser kept in one place
    """Parse a type as rendered by `Type.name` (used when loading artifacts).

    >>> t = parse_type('list[("a" | "b")?]')
    >>> t == list_of(optional(literal("a", "b"))), parse_type(t.name) == t
    (True, True)
    """
    toks: list[str | None] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TYPE_TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"bad type text {text!r}")
        toks.append(m.group("name") or m.group("str") or m.group("p"))
        pos = m.end()
    toks.append(None)
    i = 0

    def peek() -> str | None:
        return toks[i]

    def take(expect: str | None = None) -> str | None:
        nonlocal i
        tok = toks[i]
        if expect is not None and tok != expect:
            raise ValueError(f"bad type text {text!r}")
        i += 1
        return tok

    def atom() -> Type:
        tok = take()
        if tok is None:
            raise ValueError(f"bad type text {text!r}")
        if tok == "(":
            t = union()
            take(")")
        elif tok.startswith('"'):
            vals = [json.loads(tok)]
            while peek() == "|":
                take()
                nxt = take()
                if nxt is None or not nxt.startswith('"'):
                    raise ValueError(f"bad type text {text!r}")
                vals.append(json.loads(nxt))
            t = literal(*vals)
        elif tok == "list":
            take("[")
            t = list_of(union())
            take("]")
        elif tok == "dict":
            take("[")
            take("str")
            take(",")
            t = dict_of(union())
            take("]")
        elif tok in PRIMITIVES or tok == "any":
            t = Type(tok)
        else:
            raise ValueError(f"unknown type {tok!r}")
        while peek() == "?":
            take()
            t = optional(t)
        return t

    def union() -> Type:
        return atom()

    t = union()
    if peek() is not None:
        raise ValueError(f"bad type text {text!r}")
    return t


# ---------------------------------------------------------------- assignability


def assignable(src: Type, dst: Type) -> bool:
    """Can a value of static type `src` flow where `dst` is declared?  Lenient on `any`/`json`."""
    if src.kind == "any" or dst.kind in ("any", "json") or src.kind == "json":
        return True
    if dst.kind == "optional":
        if src == NONE:
            return True
        inner = src.args[0] if src.kind == "optional" else src
        return assignable(inner, dst.args[0])
    if src.kind == "optional":
        return src == NONE or assignable(src.args[0], dst)
    if dst.kind == "str":
        return src.kind in ("str", "literal")
    if dst.kind == "float":
        return src.kind in ("float", "int")
    if dst.kind == "literal":
        return src.kind == "literal" and set(src.args) <= set(dst.args) or src.kind == "str"
    if dst.kind in ("list", "dict"):
        return src.kind == dst.kind and assignable(src.args[0], dst.args[0])
    return src.kind == dst.kind


def unify(a: Type, b: Type) -> Type:
    """The type of a value that is either `a` or `b` (for branches and list literals)."""
    if a == b:
        return a
    if a.kind == "any":
        return b
    if b.kind == "any":
        return a
    if {a.kind, b.kind} == {"int", "float"}:
        return FLOAT
    if {a.kind, b.kind} <= {"str", "literal"}:
        return STR
    if a == NONE:
        return optional(b)
    if b == NONE:
        return optional(a)
    if a.kind == b.kind == "list":
        return list_of(unify(a.args[0], b.args[0]))
    return ANY


# ---------------------------------------------------------------- coercion of LM output

_TRUE = {"true", "yes", "y", "1", "correct", "right"}
_FALSE = {"false", "no", "n", "0", "incorrect", "wrong"}
_NUM = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")


def _strip_wrapping(text: str) -> str:
    t = text.strip()
    if t.startswith("```"):
        t = re.sub(r"^```[\w-]*\n?", "", t)
        t = re.sub(r"\n?```\s*$", "", t)
    t = t.strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "\"'`*":
        t = t.strip(t[0]).strip()
    return t


def coerce(text: Any, t: Type) -> Any:  # noqa: C901 - one branch per type kind
    """Turn an LM's text for one field into a value of type `t`, or raise OutputParseError."""
    k = t.kind
    if k == "optional":
        if text is None or (isinstance(text, str) and text.strip().lower() in ("", "none", "null", "n/a")):
            return None
        return coerce(text, t.args[0])
    if not isinstance(text, str):
        err = t.check(text)
        if err is None:
            return float(text) if k == "float" else text
        text = json.dumps(text)
    raw = text
    s = _strip_wrapping(text)
    if k in ("str", "any"):
        return text.strip()
    if k == "int" or k == "float":
        m = _NUM.search(s)
        if not m:
            raise OutputParseError(f"expected a number, got {_short(raw)}", raw)
        num = float(m.group(0).replace(",", ""))
        if math.isinf(num):  # 1e999: JSON has no infinity, so the value could not be written anywhere
            raise OutputParseError(f"expected a finite number, got {_short(raw)}", raw)
        if k == "float":
            return num
        if not num.is_integer() or math.isinf(num):
            raise OutputParseError(f"expected an integer, got {_short(raw)}", raw)
        return int(num)
    if k == "bool":
        word = re.split(r"[\s.,;:!]+", s.lower(), maxsplit=1)[0] if s else ""
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise OutputParseError(f"expected true or false, got {_short(raw)}", raw)
    if k == "literal":
        return _coerce_literal(s, t, raw)
    if k in ("list", "dict", "json"):
        value = _load_json(s)
        if k == "json":
            if value is _FAIL:
                raise OutputParseError(f"expected JSON, got {_short(raw)}", raw)
            return value
        if k == "list":
            if value is _FAIL or not isinstance(value, list):
                value = _split_list(s)
            return [coerce(v, t.args[0]) for v in value]
        if value is _FAIL or not isinstance(value, dict):
            raise OutputParseError(f"expected a JSON object, got {_short(raw)}", raw)
        return {str(key): coerce(v, t.args[0]) for key, v in value.items()}
    return text


_FAIL = object()


def _load_json(s: str) -> Any:
    try:
        # NaN, Infinity and 1e999 are not JSON: an answer holding them fails to parse (and is asked again).
        return strict_json.loads(s, duplicate_keys=True)
    except ValueError:
        pass
    if not s or s[0] not in "[{":
        return _FAIL
    try:
        import json_repair

        value = json_repair.loads(s)
    except Exception:
        return _FAIL
    if not isinstance(value, (list, dict)):
        return _FAIL
    return _FAIL if find_non_finite(value) else value


def _split_list(s: str) -> list[str]:
    lines = [ln.strip() for ln in s.splitlines() if ln.strip()]
    if len(lines) > 1:
        return [re.sub(r"^(?:[-*•]|\d+[.)])\s*", "", ln) for ln in lines]
    if not s:
        return []
    return [p.strip() for p in s.split(",") if p.strip()]


def _coerce_literal(s: str, t: Type, raw: str) -> str:
    options: list[str] = list(t.args)
    low = s.lower().strip().rstrip(".!")
    for opt in options:
        if low == opt.lower():
            return opt
    # The answer may come with surrounding words ("Sentiment: positive."); accept a
    # unique option appearing as a whole word, preferring the earliest.
    found: list[tuple[int, str]] = []
    for opt in options:
        m = re.search(r"(?<!\w)" + re.escape(opt.lower()) + r"(?!\w)", low)
        if m:
            found.append((m.start(), opt))
    if found:
        found.sort()
        if len(found) == 1 or found[0][0] < found[1][0]:
            return found[0][1]
    raise OutputParseError(f"expected one of {t.name}, got {_short(raw)}", raw)


def _short(raw: str, limit: int = 80) -> str:
    text = raw.strip().replace("\n", "\\n")
    return json.dumps(text if len(text) <= limit else text[:limit] + "...")
