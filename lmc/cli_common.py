"""Pieces every command module of the CLI shares: stderr lines, strict option values, and each option that several commands declare."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Mapping, Optional

import typer

from .errors import did_you_mean
from .progress import MODES
from .session import RUN_FLAGS, RunOptions


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


# ---------------------------------------------------------------- the options of the commands that run a program
# (`run`, `eval`, `compile`): one declaration each, so a flag reads and behaves the same in every command.

Lm = Annotated[
    Optional[str],
    typer.Option(
        "--lm",
        help="LM for predictors that name none: a litellm model (openai/gpt-4o-mini) or local/gemma-3-270m; "
        "default: an artifact's own, else local/gemma-3-270m",
    ),
]
ApiBase = Annotated[Optional[str], typer.Option("--api-base", help="base URL of an OpenAI-compatible server")]
Program = Annotated[Optional[str], typer.Option("--program", help="which program of the .lmp file (default: its only one, else the one named main)")]
Jobs = Annotated[
    Optional[int],
    typer.Option("-j", "--jobs", "--concurrency", min=1, help="examples (and LM calls) at once (default 8); --concurrency is the old spelling"),
]
CacheDir = Annotated[Optional[str], typer.Option("--cache-dir", help="directory of the LM call cache (default .lmc/cache)")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="neither read nor write the LM call cache")]
Rpm = Annotated[Optional[float], typer.Option("--rpm", min=0.001, help="at most this many LM requests per minute")]
ExampleTimeout = Annotated[
    Optional[float], typer.Option("--example-timeout", min=0.001, help="fail an example that runs longer than this many seconds")
]
MaxSteps = Annotated[
    Optional[int], typer.Option("--max-steps", min=1, help="fail an example after this many statements and loop iterations (default 10,000,000)")
]
AllowPython = Annotated[
    Optional[list[str]],
    typer.Option(
        "--allow-python",
        help="let tools/metrics import this module (pkg, pkg.mod or pkg.mod:fn; repeatable); a .lmp's own directory is allowed, an artifact's is not",
    ),
]
MaxCost = Annotated[
    Optional[float], typer.Option("--max-cost", min=0.0, help="spend at most this much (USD); each request reserves its worst case before it is sent")
]
PricePerMtokIn = Annotated[
    Optional[float],
    typer.Option("--price-per-mtok-in", min=0.0, help="USD per million prompt tokens of an LM litellm's price table does not list (0 = free)"),
]
PricePerMtokOut = Annotated[Optional[float], typer.Option("--price-per-mtok-out", min=0.0, help="USD per million completion tokens of such an LM")]
# None when not given, so $LMC_TRUNCATE_INPUTS and lmc.yaml still decide.
TruncateInputs = Annotated[
    Optional[bool],
    typer.Option("--truncate-inputs", help="cut an input too long for the LM's context from its middle instead of failing its example"),
]
Transport = Annotated[
    Optional[str],
    typer.Option("--transport", help="send LM requests through 'direct' (lmc's HTTP client) or 'litellm'; default: each LM by its protocol"),
]
HtmlOut = Annotated[Optional[Path], typer.Option("--html", help="also write a self-contained HTML report here", show_default=False)]
TextOrJson = Annotated[str, typer.Option("--format", callback=choice("text", "json"), help="text or json")]


# What running out of a cap or of --max-lm-errors means for each command (README, "Caps and failures").
_WHEN_CAPS_RUN_OUT = {
    "run": "no new example starts and the run exits 1",
    "eval": "the eval exits 3 (no verdict)",
    "compile": "the compile keeps the best program found so far",
}
_DEFAULT_LM_ERRORS = {"run": "none, a failed call fails only its example", "eval": "20%", "compile": "20%"}


def max_calls_option(command: str) -> Any:
    """--max-calls of `run`, `eval` or `compile`, saying what running out means for that command."""
    return typer.Option(
        "--max-calls",
        min=1,
        help=f"send at most this many LM requests (retries and failures count; cache hits are free); when they run out {_WHEN_CAPS_RUN_OUT[command]}",
    )


def max_lm_errors_option(command: str) -> Any:
    """--max-lm-errors of `run`, `eval` or `compile`, with that command's default."""
    return typer.Option(
        "--max-lm-errors",
        help=f"LM calls that may fail after their retries before the {command} stops with exit 3: "
        f"a share (20%, 0.2) of at least 10 calls, or a count (5); default: {_DEFAULT_LM_ERRORS[command]}",
    )


# `eval` of an artifact scores it as it was compiled; `compile` of an artifact chooses afresh.
_DEFAULT_METRIC = {"compile": "the program's only metric", "eval": "the one an artifact was compiled with, else the program's only metric"}
_DEFAULT_THRESHOLD = {"compile": "1.0", "eval": "the one an artifact was compiled with, else 1.0"}


def metric_option(command: str) -> Any:
    """--metric of `compile` or `eval`, with where that command's default comes from."""
    return typer.Option(
        "--metric", help=f"the metric to score with: one the program defines, or a built-in on its only output; default: {_DEFAULT_METRIC[command]}"
    )


def threshold_option(command: str) -> Any:
    """--threshold of `compile` or `eval`, with where that command's default comes from."""
    return typer.Option(
        "--threshold", min=0.0, max=1.0, help=f"an example passes when its score is at least this; default: {_DEFAULT_THRESHOLD[command]}"
    )


def run_options(flags: Mapping[str, Any], **fixed: Any) -> RunOptions:
    """The RunOptions of a command: its run flags picked by name out of `flags` (its parameters), and `fixed`."""
    return RunOptions.from_flags(**{name: value for name, value in flags.items() if name in RUN_FLAGS}, **fixed)
