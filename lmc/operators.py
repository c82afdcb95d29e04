"""The operators of .lmp expressions on run-time values: arithmetic, comparison and truth, sizes checked first."""

from __future__ import annotations

import math
import operator
from typing import Any

from . import limits, prompts
from .errors import RunError
from .limits import SizeLimitError
from .types import _jtype


def truthy(v: Any) -> bool:
    return bool(v)


def kind_of(v: Any) -> str:
    """What a value is, as an error message says it ("a list", "a number"...)."""
    return _jtype(v)


def binop(op: str, a: Any, b: Any, line: int = 0) -> Any:
    value = _binop_value(op, a, b, line)
    if isinstance(value, float) and not math.isfinite(value):
        raise RunError(f"'{op}' of {_show(a)} and {_show(b)} gives {value!r}, not a finite number", line=line)
    return value


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _binop_value(op: str, a: Any, b: Any, line: int = 0) -> Any:
    try:
        if op == "+":
            if isinstance(a, str) and not isinstance(b, str):
                b = prompts.show_value(b, multiline_ok=False)
            if isinstance(a, list) and isinstance(b, tuple):
                b = list(b)
            _check_sum(a, b)
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            _check_product(a, b)
            return a * b
        if op == "/":
            return a / b
        if op == "//":
            return a // b
        if op == "%":
            if isinstance(a, (str, bytes)):
                # Python would read this as printf-style formatting ("%0*d" % (10**9, 1) is a 1 GB string).
                raise TypeError
            return a % b
    except ZeroDivisionError:
        raise RunError("division by zero", line=line) from None
    except SizeLimitError as err:
        raise RunError(str(err), line=line) from None
    except OverflowError:
        raise RunError(f"'{op}' of {_show(a)} and {_show(b)} is too large a number", line=line) from None
    except TypeError:
        raise RunError(f"cannot apply '{op}' to {kind_of(a)} and {kind_of(b)}", line=line) from None
    raise RunError(f"unknown operator '{op}'", line=line)


def _check_sum(a: Any, b: Any) -> None:
    """`+` of texts or lists: the result's size is checked before it is built."""
    if isinstance(a, str) and isinstance(b, str):
        limits.check_chars(len(a) + len(b), "a text")
    elif isinstance(a, list) and isinstance(b, list):
        limits.check_items(len(a) + len(b), "a list")


def _check_product(a: Any, b: Any) -> None:
    """`*` repeats a text or list, or multiplies ints whose size adds up: all checked before allocating."""
    if isinstance(a, (str, list)) and isinstance(b, int):
        _check_repeat(a, b)
    elif isinstance(b, (str, list)) and isinstance(a, int):
        _check_repeat(b, a)
    elif isinstance(a, int) and isinstance(b, int):
        limits.check_int_product(a, b)


def _check_repeat(seq: str | list, n: int) -> None:
    total = len(seq) * max(n, 0)
    if isinstance(seq, str):
        limits.check_chars(total, "a repeated text")
    else:
        limits.check_items(total, "a repeated list")


COMPARE = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
