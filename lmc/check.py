"""Name resolution and type checking of a parsed .lmp file; every error of the file is collected.

Declarations are checked first (check_decls, with settings read from the tables in decl_rules),
then program and metric bodies are typed against them (check_body); what comes out is `Checked`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import nodes as n
from .check_body import Bodies
from .check_decls import Declarations
from .checked import Checked, SigInfo, ToolInfo, resolve_type, show
from .errors import CompileErrors, Diagnostic
from .parser import Parsed, parse_recovering, read_source

__all__ = ["Analysis", "Checked", "analyze", "SigInfo", "ToolInfo", "check", "check_path", "check_source", "resolve_type", "show"]


def check_source(text: str, path: str) -> Checked:
    """Parse and check one file's text; raises CompileErrors with every syntax and type error of the file."""
    a = analyze(text, path)
    if a.diagnostics:
        raise CompileErrors(a.diagnostics, {path: a.source})
    return a.checked()


def check_path(path) -> Checked:
    """Read (UTF-8, BOM and CRLF accepted), parse and check one file."""
    return check_source(read_source(path), str(path))


def check(file: n.File, source: str) -> Checked:
    """Resolve names and check types; raises CompileErrors with all diagnostics, sorted."""
    with n.cycle_collector_paused():
        decls, _ = _run(file, source, Bodies)
    decls.diags.raise_if_any()
    return _checked(decls, source)


@dataclass(frozen=True)
class Analysis:
    """One file parsed past its syntax errors and checked as far as it parsed: what the CLI and the language server read."""

    parsed: Parsed
    source: str
    decls: Declarations
    bodies: Bodies
    diagnostics: list[Diagnostic]  # syntax and type errors, sorted, consequences of skipped text left out

    def checked(self) -> Checked:
        return _checked(self.decls, self.source)


def analyze(text: str, path: str, bodies: type[Bodies] = Bodies, parsed: Parsed | None = None) -> Analysis:
    """Parse with recovery and check what parsed; never raises CompileErrors.  `bodies` may be a Bodies
    subclass that records what it types (the language server's hover); `parsed` is the text already
    parsed (by lmc.incremental), normalised as here."""
    if parsed is None:
        if text.startswith("\ufeff"):
            text = text[1:]
        text = text.replace("\r\n", "\n")
        parsed = parse_recovering(text, path)
    text = parsed.text
    with n.cycle_collector_paused():
        decls, typed = _run(parsed.file, text, bodies)
    found = decls.diags.items
    if parsed.diagnostics:
        at = {(d.span.line, d.span.col) for d in parsed.diagnostics}
        found = [d for d in found if (d.span.line, d.span.col) not in at and not _consequence(d, parsed.skipped)]
    return Analysis(parsed, text, decls, typed, sorted(set(parsed.diagnostics + found)))


def _consequence(d: Diagnostic, skipped: frozenset[str]) -> bool:
    """A type error caused by text the parser skipped: it names something declared or assigned there."""
    if any(name in skipped for name in _QUOTED.findall(d.message)):
        return True
    return "return" in skipped and ("does not return" in d.message or "never returns" in d.message)


_QUOTED = re.compile(r"'([^']*)'")


def _run(file: n.File, source: str, bodies: type[Bodies]) -> tuple[Declarations, Bodies]:
    decls = Declarations(file, source)
    decls.run()
    typed = bodies(decls)
    for d in file.decls:
        if isinstance(d, n.ProgramDecl):
            typed.program(d)
    for d in file.decls:
        if isinstance(d, n.MetricDecl):
            if d.body is not None:
                typed.metric_block(d)
            else:
                decls.metric(d)
    decls.recursion(typed.program_calls)
    return decls, typed


def _checked(decls: Declarations, source: str) -> Checked:
    return Checked(
        file=decls.file,
        source=source,
        signatures=decls.signatures,
        modules=decls.modules,
        module_sigs=decls.module_sigs,
        retrievers=decls.retrievers,
        tools=decls.tools,
        lms=decls.lms,
        metrics=decls.metrics,
        programs=decls.programs,
        tool_infos=decls.tool_infos,
    )
