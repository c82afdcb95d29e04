"""`lmc export --to dspy`: an artifact becomes a Python module building the same DSPy program, plus its DSPy state JSON.

The module holds the signatures (typed; literal unions as typing.Literal), the
modules (Predict, ChainOfThought, ReAct, ProgramOfThought, MultiChainComparison,
BestOfN) and the program's control flow as `forward`; the JSON holds the
compiled instructions and demos in the format `dspy.Module.load` reads.

Exporting reads and verifies the artifact and writes two files; it imports and
runs nothing the artifact names.  Every string from the artifact reaches the
Python source only as a `repr` literal or an escaped comment (see `pysrc`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..artifact import portable_path, sha256_file
from ..files import Output, atomic_write_text, check_outputs
from ..targets import load_target
from .assemble import Module
from .plan import plan
from .pysrc import ExportError, is_ident
from .state import state

__all__ = ["ExportError", "ExportResult", "export", "default_name"]


@dataclass
class ExportResult:
    module_path: str
    state_path: str
    notes: list[str] = field(default_factory=list)


def default_name(path: str | os.PathLike) -> str:
    """A Python module name from the artifact's file name: `build/sentiment.lmc.json` -> `sentiment`."""
    base = Path(path).name
    for suffix in (".lmc.json", ".json", ".lmp"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    name = re.sub(r"[^A-Za-z0-9_]", "_", base) or "program"
    if name[0].isdigit():
        name = "program_" + name
    return name if is_ident(name) else name + "_"


def export(source: str | os.PathLike, out_dir: str | os.PathLike, *, name: str | None = None) -> ExportResult:
    """Write `<out_dir>/<name>.py` and `<out_dir>/<name>.json`; the notes list what did not carry over."""
    stem = name or default_name(source)
    if not is_ident(stem):
        raise ExportError(f"--name {stem!r} is not a Python module name (letters, digits and _; not a keyword)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a directory (-o expects a directory)")
    py_path, json_path = out / f"{stem}.py", out / f"{stem}.json"
    # `x.json` exported next to itself would otherwise be overwritten by its own state file.
    check_outputs([Output("the module", str(py_path)), Output("the state file", str(json_path))], [("artifact", source)])
    target = load_target(source)  # verifies an artifact; parses a .lmp; never runs code
    ir = target.ir
    try:
        sigs, mods = plan(ir)
        module = Module(ir, sigs, mods, state_file=f"{stem}.json", origin=portable_path(source))
        text = module.source()
        doc = state(ir, mods, artifact_sha256=sha256_file(source))
    except RecursionError:
        raise ExportError(f"{source}: the program is nested too deeply to export") from None
    try:
        compile(text, f"{stem}.py", "exec")  # a syntax check only: nothing runs
    except SyntaxError as e:  # a bug in the exporter, not in the user's artifact
        raise ExportError(f"internal error: the generated module does not parse ({e.msg} at line {e.lineno})") from None
    atomic_write_text(py_path, text)
    atomic_write_text(json_path, json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    return ExportResult(str(py_path), str(json_path), module.notes)
