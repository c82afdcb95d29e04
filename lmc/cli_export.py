"""The `export` command (presentation only; the translation is in lmc.export_dspy)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import ConfigError
from .export_dspy import export

TARGETS = ("dspy",)
# Notes quote names from the artifact; control characters would reach the user's terminal as escape sequences.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _err(text: str) -> None:
    sys.stderr.write(_CONTROL.sub("?", text).rstrip("\n") + "\n")
    sys.stderr.flush()


def export_cmd(
    source: Annotated[Path, typer.Argument(help="a compiled artifact (*.lmc.json), or a .lmp program", show_default=False)],
    to: Annotated[str, typer.Option("--to", help="the framework to export to: dspy", show_default=False)],
    out: Annotated[Path, typer.Option("-o", "--out", help="directory for NAME.py and NAME.json", show_default=False)],
    name: Annotated[
        Optional[str], typer.Option("--name", help="Python module name (default: from the artifact's file name)", show_default=False)
    ] = None,
) -> None:
    """Write the program for another framework: a DSPy module (signatures, modules, control flow) and its state JSON."""
    if to not in TARGETS:
        raise ConfigError(f"unknown --to '{to}'; expected one of: {', '.join(TARGETS)}")
    if not source.is_file():
        raise ConfigError(f"{source}: no such file")

    result = export(source, out, name=name)
    for note in result.notes:
        _err(f"note: {note}")
    _err(f"wrote {result.module_path} and {result.state_path}")
    _err(f"load it in DSPy: program = Program(); program.load({Path(result.state_path).name!r})")


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
