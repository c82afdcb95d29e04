"""Name resolution and type checking of a parsed .lmp file; every error of the file is collected.

Declarations are checked first (check_decls, with settings read from the tables in decl_rules),
then program and metric bodies are typed against them (check_body); what comes out is `Checked`.
"""

from __future__ import annotations

from . import nodes as n
from .check_body import Bodies
from .check_decls import Declarations
from .checked import Checked, SigInfo, ToolInfo, resolve_type, show
from .parser import parse, read_source

__all__ = [
    "Checked", "SigInfo", "ToolInfo", "check", "check_path", "check_source",
    "resolve_type", "show",
]


def check_source(text: str, path: str) -> Checked:
    if text.startswith("\ufeff"):
        text = text[1:]
    text = text.replace("\r\n", "\n")
    return check(parse(text, path), text)


def check_path(path) -> Checked:
    """Read (UTF-8, BOM and CRLF accepted), parse and check one file."""
    return check_source(read_source(path), str(path))


def check(file: n.File, source: str) -> Checked:
    """Resolve names and check types; raises CompileErrors with all diagnostics, sorted."""
    with n.cycle_collector_paused():
        return _check(file, source)


def _check(file: n.File, source: str) -> Checked:
    decls = Declarations(file, source)
    decls.run()
    bodies = Bodies(decls)
    for d in file.decls:
        if isinstance(d, n.ProgramDecl):
            bodies.program(d)
    for d in file.decls:
        if isinstance(d, n.MetricDecl):
            if d.body is not None:
                bodies.metric_block(d)
            else:
                decls.metric(d)
    decls.recursion(bodies.program_calls)
    decls.diags.raise_if_any()
    return Checked(
        file=file, source=source, signatures=decls.signatures, modules=decls.modules, module_sigs=decls.module_sigs,
        retrievers=decls.retrievers, tools=decls.tools, lms=decls.lms, metrics=decls.metrics, programs=decls.programs,
        tool_infos=decls.tool_infos,
    )
