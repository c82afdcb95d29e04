"""Reading JSON that lmc wrote: NaN/Infinity and (where asked) duplicate keys are refused, not guessed at."""

from __future__ import annotations

import json
from typing import Any


def refuse_constant(name: str) -> Any:
    """`parse_constant` hook: Python's json reads NaN/Infinity, which no other JSON reader accepts.

    >>> json.loads("[NaN]", parse_constant=refuse_constant)
    Traceback (most recent call last):
    ...
    ValueError: NaN is not valid JSON
    """
    raise ValueError(f"{name} is not valid JSON")


def refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    """`object_pairs_hook`: Python's json keeps the last of two equal keys silently."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def loads(text: str, *, duplicate_keys: bool = False) -> Any:
    """`json.loads` without NaN/Infinity, and without duplicate keys unless `duplicate_keys`.

    >>> loads('{"a": 1}')
    {'a': 1}
    >>> loads('{"a": 1, "a": 2}')
    Traceback (most recent call last):
    ...
    ValueError: duplicate key 'a'
    """
    hook = None if duplicate_keys else refuse_duplicate_keys
    return json.loads(text, parse_constant=refuse_constant, object_pairs_hook=hook)
