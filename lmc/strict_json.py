"""Strict JSON reading: what Python's json reads but JSON cannot hold is refused, not guessed at."""

from __future__ import annotations

import json
from typing import Any


class NotJson(ValueError):
    """A value `json.loads` would take that JSON does not hold; `hint` (None: nothing to add) says how to
    write it instead, for the files and flags a person writes."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


def refuse_constant(name: str) -> Any:
    """`parse_constant` hook: Python's json reads NaN/Infinity, which no other JSON reader accepts.

    >>> json.loads("[NaN]", parse_constant=refuse_constant)
    Traceback (most recent call last):
    ...
    lmc.strict_json.NotJson: NaN is not valid JSON
    """
    raise NotJson(f"{name} is not valid JSON", "write null or a string instead")


def finite_float(text: str) -> float:
    """`parse_float` hook: 1e999 is valid JSON syntax that Python reads as infinity, the same bad value as Infinity."""
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise NotJson(f"{text[:40]} overflows to infinity", "write a smaller number or a string")
    return value


def bounded_int(text: str) -> int:
    """`parse_int` hook: an integer with more digits than Python converts (sys.get_int_max_str_digits)."""
    try:
        return int(text)
    except ValueError:
        raise NotJson(f"a number with {len(text)} digits is too long", "write it as a string") from None


def refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    """`object_pairs_hook`: Python's json keeps the last of two equal keys silently."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise NotJson(f"duplicate key {key!r} in one object")
        out[key] = value
    return out


def loads(text: str, *, duplicate_keys: bool = False) -> Any:
    """`json.loads` refusing NaN/Infinity, 1e999 and overlong integers, and duplicate keys unless
    `duplicate_keys`; raises json.JSONDecodeError for bad syntax and NotJson for a refused value.

    >>> loads('{"a": 1}')
    {'a': 1}
    >>> loads('{"a": 1, "a": 2}')
    Traceback (most recent call last):
    ...
    lmc.strict_json.NotJson: duplicate key 'a' in one object
    >>> loads('{"a": 1, "a": 2}', duplicate_keys=True)
    {'a': 2}
    >>> loads('[1e999]')
    Traceback (most recent call last):
    ...
    lmc.strict_json.NotJson: 1e999 overflows to infinity
    """
    hook = None if duplicate_keys else refuse_duplicate_keys
    return json.loads(text, parse_constant=refuse_constant, parse_float=finite_float, parse_int=bounded_int, object_pairs_hook=hook)
