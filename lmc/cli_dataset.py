"""The `dataset` command family (presentation only; the conversion is in lmc.traces)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli_common import choice
from .cli_common import err as _err
from .errors import DatasetError
from .files import Output, atomic_write_text, check_outputs
from .targets import load_target
from .traces import ERROR_MODES, dataset_text, parse_where, to_examples


def from_traces(
    traces: Annotated[list[Path], typer.Argument(help="`lmc run --trace` JSONL files or LangSmith run exports (JSON or JSONL)", show_default=False)],
    program: Annotated[
        Path, typer.Option("--program", help="the .lmp program (or artifact) whose inputs and outputs the examples hold", show_default=False)
    ],
    out: Annotated[Path, typer.Option("-o", "--out", help="the dataset to write (JSONL, ready for `lmc compile --train`)", show_default=False)],
    program_name: Annotated[
        Optional[str],
        typer.Option("--program-name", help="which program of the .lmp file (default: its only one, else the one named main)", show_default=False),
    ] = None,
    where: Annotated[
        Optional[str],
        typer.Option(
            "--where", help="keep traces where this holds, e.g. 'score >= 1' or 'feedback.thumbs == 1 and duration_s < 5'", show_default=False
        ),
    ] = None,
    module: Annotated[
        Optional[str],
        typer.Option("--module", help="take the calls of this module (LangSmith: the runs of this name) instead of whole traces", show_default=False),
    ] = None,
    errors: Annotated[
        str,
        typer.Option(
            "--errors",
            callback=choice(*ERROR_MODES),
            help="exclude failed traces (default), include them, or keep only them (inputs without labels, to label by hand)",
        ),
    ] = "exclude",
) -> None:
    """Turn traces into training examples for `lmc compile`: filtered, checked against the program, deduplicated."""
    check_outputs([Output("-o", str(out))], [("traces file", str(t)) for t in traces] + [("--program", str(program))])
    condition = parse_where(where)  # a bad --where is refused before any file is read
    ir = load_target(program, program_name).ir
    prog = ir.program()
    inputs = {f.name: f.type for f in prog.inputs}
    outputs = {f.name: f.type for f in prog.outputs}
    conv = to_examples([str(t) for t in traces], inputs, outputs, where=condition, module=module, errors=errors)
    if not conv.examples:
        raise DatasetError(
            f"no trace gave an example ({conv.summary()}); nothing written", hint="check --where, --module and --errors against the traces"
        )
    atomic_write_text(out, dataset_text(conv.examples))
    _err(f"wrote {out}: {conv.summary()}")


def register(app: typer.Typer) -> None:
    dataset_app = typer.Typer(help="Build datasets for `lmc compile` and `lmc eval`.", no_args_is_help=True)
    app.add_typer(dataset_app, name="dataset")
    dataset_app.command("from-traces")(from_traces)
