"""Pieces every command module of the CLI shares: stderr lines and strict option values."""

from __future__ import annotations

import sys
from typing import Any, Callable, Iterable

from .errors import did_you_mean


def err(text: str = "") -> None:
    sys.stderr.write(text.rstrip("\n") + "\n")
    sys.stderr.flush()


def choice(*options: str) -> Callable[[Any], Any]:
    """An option callback that accepts only `options`; anything else is a usage error with a did-you-mean."""
    import typer

    def check(value: Any) -> Any:
        if value is None or value in options:
            return value
        raise typer.BadParameter(refusal(str(value), options))

    return check


def choices(*options: str) -> Callable[[Any], Any]:
    """`choice` for a repeatable option (a list of values)."""
    import typer

    def check(values: Any) -> Any:
        for value in values or ():
            if value not in options:
                raise typer.BadParameter(refusal(str(value), options))
        return values

    return check


def refusal(value: str, options: Iterable[str]) -> str:
    opts = list(options)
    hint = did_you_mean(value, opts)
    return f"'{value}' is not one of: {', '.join(opts)}" + (f"; {hint}" if hint else "")
