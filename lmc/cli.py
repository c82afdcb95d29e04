"""The `lmc` command line: typer commands and presentation only; logic lives in the layers."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import EXIT_FAIL, EXIT_OK, EXIT_USAGE, CompileErrors, LmcError

app = typer.Typer(
    name="lmc",
    help="lmc — a compiler for language-model programs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _err(text: str) -> None:
    sys.stderr.write(text.rstrip("\n") + "\n")
    sys.stderr.flush()


# ---------------------------------------------------------------- check / fmt


@app.command()
def check(
    paths: Annotated[list[Path], typer.Argument(help=".lmp files to check")],
    format: Annotated[str, typer.Option("--format", help="text or json")] = "text",
) -> None:
    """Parse and type-check .lmp files; report every error of every file."""
    from .check import check_path

    if format not in ("text", "json"):
        raise LmcError(f"unknown --format '{format}'; expected one of: json, text")
    diagnostics = []
    usage_errors = []
    rendered = []
    for path in paths:
        if not path.exists():
            usage_errors.append(f"{path}: no such file")
            continue
        try:
            check_path(path)
        except CompileErrors as e:
            diagnostics.extend(e.diagnostics)
            rendered.append(e.render())
        except LmcError as e:
            usage_errors.append(str(e))
    if format == "json":
        print(json.dumps({"diagnostics": [d.to_json() for d in diagnostics], "errors": usage_errors}, indent=2))
    else:
        for text in rendered:
            _err(text)
        for text in usage_errors:
            _err(f"error: {text}")
        n = len(diagnostics)
        if n:
            files = len({d.span.path for d in diagnostics})
            _err(f"{n} error{'s' if n != 1 else ''} in {files} file{'s' if files != 1 else ''}")
        elif not usage_errors:
            _err(f"ok: {len(paths)} file{'s' if len(paths) != 1 else ''} checked")
    if usage_errors:
        raise typer.Exit(EXIT_USAGE)
    raise typer.Exit(EXIT_FAIL if diagnostics else EXIT_OK)


@app.command()
def fmt(
    paths: Annotated[list[Path], typer.Argument(help=".lmp files to format in place")],
    check_only: Annotated[bool, typer.Option("--check", help="only report files that would change; exit 1 if any")] = False,
) -> None:
    """Rewrite .lmp files in the canonical style (comments are kept)."""
    from .fmt import format_source

    changed = []
    for path in paths:
        if not path.exists():
            raise LmcError(f"{path}: no such file")
        from .limits import read_bounded

        try:
            text = read_bounded(path, "program").decode("utf-8")
        except UnicodeDecodeError:
            raise LmcError(f"{path}: not UTF-8 text; expected a .lmp file") from None
        out = format_source(text, str(path))
        if out != text:
            changed.append(path)
            if not check_only:
                _atomic_write(path, out)
    for path in changed:
        _err(("would reformat " if check_only else "reformatted ") + str(path))
    if check_only and changed:
        raise typer.Exit(EXIT_FAIL)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------- other commands

# Each family of commands lives in its own presentation module; they register here.
from . import cli_compile, cli_eval, cli_run  # noqa: E402

cli_run.register(app)
cli_compile.register(app)
cli_eval.register(app)


# ---------------------------------------------------------------- entry point


def _plain_check(args: list[str]) -> Optional[tuple[list[Path], str]]:
    """`check PATH... [--format F]` as (paths, format); None for anything else (help, other options)."""
    if not args or args[0] != "check":
        return None
    paths: list[Path] = []
    fmt = "text"
    rest = iter(args[1:])
    for a in rest:
        if a == "--format":
            fmt = next(rest, "-")
            if fmt.startswith("-"):
                return None
        elif a.startswith("--format="):
            fmt = a[len("--format="):]
        elif a.startswith("-") or not a:
            return None
        else:
            paths.append(Path(a))
    return (paths, fmt) if paths else None


def main(argv: Optional[list[str]] = None) -> int:
    """Run the CLI; every LmcError becomes its message and exit code, never a traceback."""
    try:
        # typer coerces every argument through pydantic, whose import costs more than checking a
        # 5,000-line file; the plain `lmc check` call goes straight to the command instead.
        plain = _plain_check(sys.argv[1:] if argv is None else list(argv))
        if plain is not None:
            check(*plain)  # always raises typer.Exit, handled below like the typer path
        # Without standalone mode click returns the exit code of a `typer.Exit` instead of raising it.
        rv = app(args=argv, standalone_mode=False)
        if isinstance(rv, int):
            return rv
    except typer.Exit as e:
        return e.exit_code
    except SystemExit as e:  # click's own exits (e.g. --help)
        return e.code if isinstance(e.code, int) else 0
    except CompileErrors as e:
        _err(e.render())
        return e.exit_code
    except LmcError as e:
        _err(f"error: {e}")
        return e.exit_code
    except KeyboardInterrupt:
        _err("interrupted; finished work was kept (rerun the same command to resume)")
        return 130
    except Exception as e:  # a bug: still no traceback for the user, but enough to report it
        import click

        if isinstance(e, click.exceptions.ClickException):
            _err(f"error: {e.format_message()}")
            return EXIT_USAGE
        if isinstance(e, click.exceptions.Abort):  # click's form of Ctrl-C
            _err("interrupted; finished work was kept (rerun the same command to resume)")
            return 130
        _err(f"internal error: {type(e).__name__}: {e} (set LMC_DEBUG=1 for a traceback)")
        if os.environ.get("LMC_DEBUG"):
            raise
        return 70
    return EXIT_OK


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
