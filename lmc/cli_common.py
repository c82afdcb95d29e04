"""Pieces every command module of the CLI shares: stderr lines, strict option values, the progress options."""

from __future__ import annotations

import sys
from typing import Annotated, Any, Callable, Iterable, Optional

import typer

from .errors import did_you_mean
from .progress import MODES


def err(text: str = "") -> None:
    sys.stderr.write(text.rstrip("\n") + "\n")
    sys.stderr.flush()


def choice(*options: str) -> Callable[[Any], Any]:
    """An option callback that accepts only `options`; anything else is a usage error with a did-you-mean."""

    def check(value: Any) -> Any:
        if value is None or value in options:
            return value
        raise typer.BadParameter(refusal(str(value), options))

    return check


def choices(*options: str) -> Callable[[Any], Any]:
    """`choice` for a repeatable option (a list of values)."""

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


ProgressOpt = Annotated[
    Optional[str],
    typer.Option(
        "--progress",
        callback=choice(*MODES),
        help="auto (a live panel on a terminal, a status line every 10 s elsewhere; "
        "$LMC_PROGRESS_INTERVAL sets the seconds), lines, json (one lmc-progress/1 object per line on stderr) or off",
        show_default=False,
    ),
]
Quiet = Annotated[bool, typer.Option("-q", "--quiet", help="no progress and no stage lines; errors, warnings and the result still print")]
Otel = Annotated[
    Optional[bool],
    typer.Option(
        "--otel/--no-otel",
        help="export OpenTelemetry spans (examples, module calls, LM requests) over OTLP/HTTP to "
        "$OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318); on by itself when that variable is set; "
        "needs pip install 'lmc[otel]'",
        show_default=False,
    ),
]
OtelContent = Annotated[bool, typer.Option("--otel-content", help="also put prompts and completions on the LM spans (they may hold personal data)")]
