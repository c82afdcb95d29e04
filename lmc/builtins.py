"""The builtin function library of .lmp programs: run-time functions plus their static result types."""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable

from .limits import check_chars, check_items, range_length, to_json
from .types import ANY, BOOL, FLOAT, INT, NONE, STR, Type, list_of, unify


class BuiltinTypeError(Exception):
    """Raised by a builtin's `returns` when the argument types cannot work; the checker reports it."""


@dataclass(frozen=True)
class Builtin:
    name: str
    min_args: int
    max_args: int | None
    fn: Callable[..., Any]
    returns: Callable[[list[Type]], Type]
    doc: str

    def usage(self) -> str:
        """How a call looks, from the arity: `len(x)`, `range(x, [y], [z])`, `min(x, ...)`."""
        names = ["x", "y", "z"] + [f"x{i}" for i in range(3, 10)]
        args = names[: self.min_args]
        if self.max_args is None:
            args.append("...")
        else:
            args += [f"[{names[i]}]" for i in range(self.min_args, self.max_args)]
        return f"{self.name}({', '.join(args)})"

    def arity_error(self, got: int) -> str | None:
        """None when `got` positional arguments are accepted, else the message for the checker."""
        if got >= self.min_args and (self.max_args is None or got <= self.max_args):
            return None
        if self.max_args is None:
            want = f"at least {self.min_args} argument{'s' if self.min_args != 1 else ''}"
        elif self.min_args == self.max_args:
            want = f"{self.min_args} argument{'s' if self.min_args != 1 else ''}"
        else:
            want = f"{self.min_args} to {self.max_args} arguments"
        return f"{self.name}() takes {want}, got {got}"


# ---------------------------------------------------------------- static typing helpers

_NUMERIC = ("int", "float")


def _strip_opt(t: Type) -> Type:
    return t.args[0] if t.kind == "optional" and t.args and t.args[0].kind != "any" else t


def _loose(t: Type) -> bool:
    return t.kind in ("any", "json")


def _need(name: str, t: Type, kinds: tuple[str, ...], what: str) -> None:
    t = _strip_opt(t)
    if _loose(t) or t.kind in kinds:
        return
    raise BuiltinTypeError(f"{name}() needs {what}, got {t.name}")


def _elem(name: str, t: Type) -> Type:
    t = _strip_opt(t)
    if _loose(t):
        return ANY
    if t.kind == "list":
        return t.args[0]
    if t.kind in ("str", "literal"):
        return STR
    if t.kind == "dict":
        return STR
    raise BuiltinTypeError(f"{name}() needs a list, got {t.name}")


def _list_only(name: str, t: Type) -> Type:
    t = _strip_opt(t)
    if _loose(t):
        return ANY
    if t.kind != "list":
        raise BuiltinTypeError(f"{name}() needs a list, got {t.name}")
    return t.args[0]


def _num_result(ts: list[Type]) -> Type:
    kinds = {_strip_opt(t).kind for t in ts}
    if kinds <= {"int", "bool"}:
        return INT
    if kinds <= {"int", "float", "bool"}:
        return FLOAT
    return ANY


# ---------------------------------------------------------------- run-time functions


def _to_str(x: Any) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, bool):
        return "true" if x else "false"
    if x is None:
        return "null"
    if isinstance(x, (list, dict)):
        return to_json(x, what="str() of this value")
    return str(x)


def _to_int(x: Any) -> int:
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, int):
        return x
    if isinstance(x, float):
        if not math.isfinite(x):
            raise ValueError(f"int() cannot convert {x!r}")
        return int(x)
    if isinstance(x, str):
        try:
            return int(_digits(x))
        except ValueError:
            pass
        value = _number_in(x, "int")
        if not math.isfinite(value) or not value.is_integer():
            raise ValueError(f"int() cannot convert {_short(x)} to a whole number; use round(float(x))")
        return int(value)
    raise ValueError(f"int() cannot convert a {_kind(x)}")


def _to_float(x: Any) -> float:
    if isinstance(x, (bool, int, float)):
        return float(x)
    if isinstance(x, str):
        return _number_in(x, "float")
    raise ValueError(f"float() cannot convert a {_kind(x)}")


def _digits(text: str) -> str:
    """A number as people write it, "1,234" or "1_234", as Python reads it."""
    return text.strip().replace(",", "").replace("_", "")


def _number_in(text: str, fn: str) -> float:
    try:
        return float(_digits(text))
    except ValueError:
        raise ValueError(f"{fn}() cannot convert {_short(text)} to a number") from None


_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0", ""}


def _to_bool(x: Any) -> bool:
    # Python's bool("false") is True, which is never what a program reading LM text means.
    if isinstance(x, str):
        word = x.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ValueError(f"bool() cannot read {_short(x)} as true or false")
    return bool(x)


def _short(x: str) -> str:
    return json.dumps(x if len(x) <= 40 else x[:40] + "...", ensure_ascii=False)


def _kind(x: Any) -> str:
    if isinstance(x, list):
        return "list"
    if isinstance(x, dict):
        return "dict"
    return type(x).__name__


def _key(x: Any) -> Any:
    """A hashable key for any JSON-like value (lists and dicts included)."""
    if isinstance(x, (list, dict)):
        return to_json(x, sort_keys=True, what="an item compared by unique() or majority()")
    return x


def _unique(xs: list) -> list:
    seen = set()
    out = []
    for x in xs:
        k = _key(x)
        if k not in seen:
            seen.add(k)
            out.append(x)
    return out


def _majority(xs: list) -> Any:
    # Votes on text ignore case and surrounding space, as answers from several LM calls differ so.
    if not xs:
        raise ValueError("majority() of an empty list")
    counts: dict[Any, int] = {}
    first: dict[Any, Any] = {}
    for x in xs:
        k = x.strip().casefold() if isinstance(x, str) else _key(x)
        counts[k] = counts.get(k, 0) + 1
        first.setdefault(k, x)
    best = max(counts.values())
    for k, c in counts.items():  # dicts keep insertion order: the first seen wins a tie
        if c == best:
            return first[k]
    raise AssertionError("unreachable")


def _join(xs: list, sep: str = " ") -> str:
    if not isinstance(sep, str):
        raise ValueError(f"join() separator must be a str, got {_kind(sep)}")
    if not isinstance(xs, (list, str, dict)):
        raise ValueError(f"join() needs a list, got {_kind(xs)}")
    parts = []
    size = len(sep) * max(len(xs) - 1, 0)
    check_chars(size, "join() result")
    for x in xs:  # item by item: the running length is checked before the whole text exists
        part = _to_str(x)
        size += len(part)
        check_chars(size, "join() result")
        parts.append(part)
    return sep.join(parts)


def _split(s: str, sep: str | None = None) -> list[str]:
    if sep == "":
        raise ValueError("split() separator is empty")
    if isinstance(s, str):
        # Counted without building the parts, so a huge text is refused before the list exists.
        n = s.count(sep) + 1 if isinstance(sep, str) else sum(1 for _ in re.finditer(r"\S+", s))
        check_items(n, "split() result")
    return s.split(sep)


def _range(a: int, b: int | None = None, step: int = 1) -> list[int]:
    for v in (a, b, step):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise ValueError(f"range() needs int arguments, got {_kind(v)}")
    if step == 0:
        raise ValueError("range() step must not be zero")
    start, stop = (0, a) if b is None else (a, b)
    check_items(range_length(start, stop, step), "range")  # before a single item is built
    return list(range(start, stop, step))


def _minmax(fn: Callable, name: str) -> Callable:
    def run(*args: Any) -> Any:
        items = args[0] if len(args) == 1 else list(args)
        if not isinstance(items, list):
            raise ValueError(f"{name}() of one argument needs a list")
        if not items:
            raise ValueError(f"{name}() of an empty list")
        try:
            return fn(items)
        except TypeError:
            raise ValueError(f"{name}() cannot compare these values") from None

    return run


def _sorted(xs: list) -> list:
    try:
        return sorted(xs)
    except TypeError:
        raise ValueError("sorted() cannot compare these values") from None


def _sum(xs: list) -> Any:
    try:
        return sum(xs)
    except TypeError:
        raise ValueError("sum() needs a list of numbers") from None


def _round(x: float, ndigits: int | None = None) -> Any:
    return round(x) if ndigits is None else round(x, ndigits)


def _len(x: Any) -> int:
    if isinstance(x, (str, list, dict)):
        return len(x)
    raise ValueError(f"len() of a {_kind(x)}")


def _enumerate(xs: list) -> list:
    return [[i, x] for i, x in enumerate(xs)]


def _zip(*lists: list) -> list:
    return [list(t) for t in zip(*lists)]


def _print(*args: Any) -> None:
    print(*(_to_str(a) for a in args), file=sys.stderr)


def _lower(s: str) -> str:
    return _to_str(s).lower()


def _upper(s: str) -> str:
    return _to_str(s).upper()


def _strip(s: str) -> str:
    return _to_str(s).strip()


# ---------------------------------------------------------------- static result types


def _r_len(ts):
    _need("len", ts[0], ("str", "literal", "list", "dict"), "a str, list or dict")
    return INT


def _r_range(ts):
    for t in ts:
        _need("range", t, ("int", "bool"), "int arguments")
    return list_of(INT)


def _r_unique(ts):
    return list_of(_list_only("unique", ts[0]))


def _r_join(ts):
    _list_only("join", ts[0])
    if len(ts) > 1:
        _need("join", ts[1], ("str", "literal"), "a str separator")
    return STR


def _r_str_fn(name):
    def r(ts):
        _need(name, ts[0], ("str", "literal"), "a str")
        return STR

    return r


def _r_split(ts):
    _need("split", ts[0], ("str", "literal"), "a str")
    if len(ts) > 1:
        _need("split", ts[1], ("str", "literal", "optional"), "a str separator")
    return list_of(STR)


def _r_conv(result):
    def r(ts):
        t = _strip_opt(ts[0])
        if t.kind == "prediction":
            raise BuiltinTypeError(f"{result.name}() cannot convert a prediction; use .<field>")
        return result

    return r


def _r_minmax(name):
    def r(ts):
        if len(ts) == 1:
            return _list_only(name, ts[0])
        out = ts[0]
        for t in ts[1:]:
            out = unify(out, t)
        return out

    return r


def _r_sorted(ts):
    return list_of(_list_only("sorted", ts[0]))


def _r_sum(ts):
    e = _list_only("sum", ts[0])
    if not _loose(e) and e.kind not in _NUMERIC and e.kind != "bool":
        raise BuiltinTypeError(f"sum() needs a list of numbers, got list[{e.name}]")
    return _num_result([e]) if not _loose(e) else ANY


def _r_abs(ts):
    _need("abs", ts[0], ("int", "float", "bool"), "a number")
    return _num_result(ts[:1])


def _r_round(ts):
    _need("round", ts[0], ("int", "float", "bool"), "a number")
    if len(ts) > 1:
        _need("round", ts[1], ("int",), "an int number of digits")
        return FLOAT
    return INT


def _r_majority(ts):
    return _list_only("majority", ts[0])


def _r_enumerate(ts):
    _list_only("enumerate", ts[0])
    return list_of(list_of(ANY))


def _r_zip(ts):
    elems = [_list_only("zip", t) for t in ts]
    out = elems[0]
    for e in elems[1:]:
        out = unify(out, e)
    return list_of(list_of(out))


def _r_print(ts):
    return NONE


def _b(name, lo, hi, fn, returns, doc) -> Builtin:
    return Builtin(name, lo, hi, fn, returns, doc)


BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in (
        _b("len", 1, 1, _len, _r_len, "number of items in a list or dict, or characters in a str"),
        _b("range", 1, 3, _range, _r_range, "range(n) is [0, .., n-1]; range(a, b[, step]) counts from a up to b-1"),
        _b("unique", 1, 1, _unique, _r_unique, "the list without repeats, keeping first-seen order"),
        _b("join", 1, 2, _join, _r_join, "join(list, sep=' '): the items as text, separated by sep"),
        _b("lower", 1, 1, _lower, _r_str_fn("lower"), "the str in lower case"),
        _b("upper", 1, 1, _upper, _r_str_fn("upper"), "the str in upper case"),
        _b("strip", 1, 1, _strip, _r_str_fn("strip"), "the str without leading and trailing whitespace"),
        _b("split", 1, 2, _split, _r_split, "split(s, sep=none): the parts of s, on whitespace by default"),
        _b("str", 1, 1, _to_str, _r_conv(STR), "a value as text (lists and dicts as JSON)"),
        _b("int", 1, 1, _to_int, _r_conv(INT), "a value as an int; '3.0' gives 3, '3.5' is an error"),
        _b("float", 1, 1, _to_float, _r_conv(FLOAT), "a value as a float; '1,234.5' is read as 1234.5"),
        _b("bool", 1, 1, _to_bool, _r_conv(BOOL), "a value as a bool; text must be true/false/yes/no/1/0"),
        _b("min", 1, None, _minmax(min, "min"), _r_minmax("min"), "the smallest item of a list, or of the arguments"),
        _b("max", 1, None, _minmax(max, "max"), _r_minmax("max"), "the largest item of a list, or of the arguments"),
        _b("sorted", 1, 1, _sorted, _r_sorted, "the list in ascending order"),
        _b("sum", 1, 1, _sum, _r_sum, "the sum of a list of numbers"),
        _b("abs", 1, 1, abs, _r_abs, "the absolute value of a number"),
        _b("round", 1, 2, _round, _r_round, "round(x) to an int, round(x, n) to n decimals"),
        _b("majority", 1, 1, _majority, _r_majority, "the most common item (text compared ignoring case; ties: first seen)"),
        _b("enumerate", 1, 1, _enumerate, _r_enumerate, "[[0, first], [1, second], ...]"),
        _b("zip", 1, None, _zip, _r_zip, "[[a0, b0], [a1, b1], ...] up to the shortest list"),
        _b("print", 0, None, _print, _r_print, "write the values to stderr (for debugging)"),
    )
}
