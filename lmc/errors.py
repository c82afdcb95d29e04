"""Source spans, the exception families, the diagnostic collector and its renderer.

Every failure a user can see is an `LmcError`: it carries a one-line message and
the process exit code the CLI uses.  Compile-time problems are `Diagnostic`s
collected per file and raised together as `CompileErrors`; run-time families
(`DatasetError`, `ArtifactError`, `LMError`, `OutputParseError`, ...) are kept
apart so callers can tell a bad program from a bad dataset from a dead server.
"""

from __future__ import annotations

import difflib
import enum
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, NoReturn

# Exit codes shared by every command.
EXIT_OK = 0
EXIT_FAIL = 1  # errors found, quality regression, some examples failed
EXIT_USAGE = 2  # bad input or setup
EXIT_INFRA = 3  # LM unreachable, auth, too many infrastructure errors
EXIT_INTERNAL = 70  # a bug in lmc (reported without a traceback unless LMC_DEBUG=1)
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT)
EXIT_TERMINATED = 143  # SIGTERM
# What each means, for `lmc help exit-codes` and docs/language.md.
EXIT_CODES = {
    EXIT_OK: "success; `lmc eval`: the gate passed",
    EXIT_FAIL: (
        "errors in the program (`lmc check`, and any command given a program that does not check), files to reformat "
        "(`lmc fmt --check`), a quality regression (`lmc eval`), or examples that failed (`lmc run`)"
    ),
    EXIT_USAGE: "bad input or setup: a bad option, a missing or unreadable file, a bad dataset, artifact or configuration",
    EXIT_INFRA: "the LM could not be used: unreachable, refused the key, or too many infrastructure errors",
    EXIT_INTERNAL: "a bug in lmc (set LMC_DEBUG=1 for a traceback and report it)",
    EXIT_INTERRUPTED: "stopped by Ctrl-C; finished work was kept and the same command resumes",
    EXIT_TERMINATED: "stopped by SIGTERM (timeout, CI, kill); finished work was kept and the same command resumes",
}


@dataclass(frozen=True, order=True)
class Span:
    """Where a node sits in its source: 1-based lines and columns, end inclusive-exclusive."""

    path: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"

    def to_json(self) -> list[int]:
        return [self.line, self.col, self.end_line, self.end_col]


NO_SPAN = Span("<builtin>", 0, 0, 0, 0)


class LmcError(Exception):
    """Base of every user-facing failure: a one-line message and an exit code."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


# ---------------------------------------------------------------- compile time


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One problem in a source file; sorts by position."""

    span: Span
    message: str
    hint: str | None = None
    severity: str = "error"

    def headline(self) -> str:
        text = self.message + (f"; {self.hint}" if self.hint else "")
        return f"{self.span}: {self.severity}: {text}"

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.span.path,
            "line": self.span.line,
            "column": self.span.col,
            "end_line": self.span.end_line,
            "end_column": self.span.end_col,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
        }


class CompileError(LmcError):
    """A single diagnosis tied to a source span (raised inside the front end)."""

    exit_code = EXIT_FAIL

    def __init__(self, message: str, span: Span, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.span = span

    def diagnostic(self) -> Diagnostic:
        return Diagnostic(self.span, self.message, self.hint)


class CompileErrors(LmcError):
    """All diagnostics of one or more files, sorted by position."""

    exit_code = EXIT_FAIL

    def __init__(self, diagnostics: Iterable[Diagnostic], sources: dict[str, str] | None = None):
        self.diagnostics = sorted(set(diagnostics))
        self.sources = sources or {}
        first = self.diagnostics[0].headline() if self.diagnostics else "no diagnostics"
        more = len(self.diagnostics) - 1
        super().__init__(first + (f" (and {more} more)" if more > 0 else ""))

    def render(self) -> str:
        return "\n".join(render(d, self.sources.get(d.span.path)) for d in self.diagnostics)


class Diagnostics:
    """Collects diagnostics for a file; `raise_if_any` raises them all at once."""

    def __init__(self, path: str, source: str):
        self.path = path
        self.source = source
        self.items: list[Diagnostic] = []

    def error(self, message: str, span: Span, hint: str | None = None) -> None:
        self.items.append(Diagnostic(span, message, hint))

    def add(self, err: CompileError) -> None:
        self.items.append(err.diagnostic())

    def raise_if_any(self) -> None:
        if self.items:
            raise CompileErrors(self.items, {self.path: self.source})


def fail(message: str, span: Span, hint: str | None = None) -> NoReturn:
    raise CompileError(message, span, hint)


def render(diag: Diagnostic, source: str | None) -> str:
    """`path:line:col: error: message`, then the source line and carets under the span."""
    out = [diag.headline()]
    if source is not None and diag.span.line >= 1:
        lines = source.splitlines()
        if diag.span.line <= len(lines):
            text = lines[diag.span.line - 1].expandtabs(1)
            start = max(diag.span.col, 1)
            if diag.span.end_line == diag.span.line and diag.span.end_col > start:
                width = diag.span.end_col - start
            else:
                width = max(len(text) - start + 1, 1)
            width = max(1, min(width, max(len(text) - start + 1, 1)))
            gutter = f"{diag.span.line:>5} | "
            out.append(gutter + text)
            out.append(" " * (len(gutter) - 2) + "| " + " " * (start - 1) + "^" * width)
    return "\n".join(out)


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest candidate, or None when nothing is close."""
    match = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean '{match[0]}'?" if match else None


def one_of(options: Iterable[str]) -> str:
    opts = sorted(set(options))
    return "expected one of: " + ", ".join(opts) if opts else "nothing is defined"


# ---------------------------------------------------------------- run time


class DatasetError(LmcError):
    """A dataset file or one of its lines is unusable."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None, hint: str | None = None):
        where = f"{path}:{line}: " if path and line else (f"{path}: " if path else "")
        super().__init__(where + message, hint=hint)
        self.path = path
        self.line = line


class ArtifactError(LmcError):
    """An artifact or report that cannot be trusted or read."""


class ReportError(LmcError):
    """An evaluation report that cannot be compared or merged."""


class ConfigError(LmcError):
    """Bad options, configuration file or LM alias."""


class LMError(LmcError):
    """An LM call that failed after retries; names the provider and model, never the key."""

    exit_code = EXIT_INFRA

    def __init__(self, message: str, *, model: str | None = None, retryable: bool = False, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.model = model
        self.retryable = retryable


class LMAuthError(LMError):
    """The provider refused the credentials."""


class LMUnreachableError(LMError):
    """The provider could not be reached (connection refused, DNS, persistent timeouts)."""


class LMFailure(LMError):
    """Too many of a run's LM calls failed (or all of them): the run stops rather than ship a result built on gaps."""


class LMRedirectError(LMUnreachableError):
    """The LM server answered with a redirect; lmc never follows one (the request or key would go elsewhere)."""

    exit_code = EXIT_USAGE


class OutputParseError(LmcError):
    """An LM reply that could not be parsed into the declared output fields."""

    exit_code = EXIT_FAIL

    def __init__(self, message: str, raw: str = "", field: str | None = None):
        super().__init__(message)
        self.raw = raw
        self.field = field


class ExampleError(LmcError):
    """One example failed at run time (assert failed, tool raised, bad value); others go on."""

    exit_code = EXIT_FAIL

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


class BudgetExceeded(LmcError):
    """A --max-calls / --max-cost budget ran out."""

    exit_code = EXIT_FAIL


class RunError(ExampleError):
    """A run-time failure inside one example (bad value, failed assert, tool error); `kind` says which."""

    def __init__(self, message: str, kind: str = "runtime", line: int | None = None):
        super().__init__(message + (f" (line {line})" if line else ""), line)
        self.kind = kind
        self.text = message


# ---------------------------------------------------------------- what a failure means for a run


class ErrorKind(enum.StrEnum):
    """Why one example failed; the value is what `--out` lines and traces record as `error_kind`."""

    LM = "lm"  # its LM call failed after the retries
    PARSE = "parse"  # the LM's answer (or the program's output) does not fit the declared type
    ASSERT = "assert"
    RUNTIME = "runtime"  # a bad value, a failed builtin, a limit
    TIMEOUT = "timeout"  # --example-timeout
    INPUT = "input"  # an input too long for the LM's context
    TOOL = "tool"  # a user's python tool raised
    TOOL_ARGS = "tool_args"  # a tool called with arguments it cannot take
    METRIC = "metric"  # the metric failed on a finished prediction
    INTERNAL = "internal"  # a bug in lmc: the example fails, the others go on

    @property
    def report_kind(self) -> str:
        """The kind an evaluation report (`gate.ERROR_KINDS`) records: LM trouble, parse, assert, or runtime."""
        return self.value if self.value in ("lm", "parse", "assert") else "runtime"


# Failures that stop a whole run rather than fail one example: every later call would meet them too.
RUN_STOPPING = (LMAuthError, LMUnreachableError, LMFailure, BudgetExceeded, ConfigError)


def classify(exc: BaseException) -> ErrorKind | None:
    """What `exc`, raised while running one example, means: the example's ErrorKind, or None when it
    stops the run (auth refused, server unreachable, too many LM failures, budget spent, bad configuration)."""
    if isinstance(exc, RUN_STOPPING) or not isinstance(exc, Exception):
        return None
    if isinstance(exc, LMError):
        return ErrorKind.LM
    if isinstance(exc, OutputParseError):
        return ErrorKind.PARSE
    if isinstance(exc, RunError):
        return ErrorKind(exc.kind)
    if isinstance(exc, (LmcError, RecursionError)):
        return ErrorKind.RUNTIME
    return ErrorKind.INTERNAL


def failure_text(exc: BaseException, kind: ErrorKind) -> str:
    """The one-line error an example that failed with `exc` records."""
    if isinstance(exc, RecursionError):
        return "program recursion too deep"
    if kind is ErrorKind.INTERNAL:
        return f"internal error: {type(exc).__name__}: {exc}"
    return str(exc)


def json_line(err: LmcError) -> str:
    return json.dumps({"error": type(err).__name__, "message": str(err)})


@dataclass
class Warnings:
    """Non-fatal notes gathered while running (e.g. demos truncated to fit a context)."""

    items: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        if text not in self.items:
            self.items.append(text)
