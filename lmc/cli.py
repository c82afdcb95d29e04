"""The `lmc` command line: typer commands and presentation only; logic lives in the layers."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from . import __version__, cli_compile, cli_dataset, cli_eval, cli_export, cli_report, cli_run
from .check import check_path
from .cli_common import TextOrJson, refusal
from .cli_common import err as _err
from .errors import EXIT_FAIL, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, EXIT_USAGE, CompileErrors, LmcError, did_you_mean
from .files import atomic_write_text
from .fmt import format_source
from .limits import read_bounded
from .reference import ALIASES, topics
from .reference import topic as reference_topic

app = typer.Typer(
    name="lmc",
    help="lmc — a compiler for language-model programs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        print(f"lmc {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", help="print lmc's version and exit", is_eager=True, callback=_show_version)] = False,
) -> None:
    """lmc — a compiler for language-model programs."""


# ---------------------------------------------------------------- check / fmt


@app.command()
def check(paths: Annotated[list[Path], typer.Argument(help=".lmp files to check")], format: TextOrJson = "text") -> None:
    """Parse and type-check .lmp files; report every error of every file."""
    if format not in ("text", "json"):  # the fast path in main() skips the option callback
        raise LmcError(f"--format: {refusal(format, ('text', 'json'))}")
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
    changed = []
    for path in paths:
        if not path.exists():
            raise LmcError(f"{path}: no such file")
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
    atomic_write_text(path, text)


@app.command(name="help")
def help_(
    topic: Annotated[Optional[str], typer.Argument(help="a topic of the language reference; none lists them")] = None,
    plain: Annotated[bool, typer.Option("--plain", help="print the Markdown as it is, also on a terminal")] = False,
) -> None:
    """The language reference in the terminal (the same text as docs/language.md): `lmc help builtins`, `lmc help kinds`, ..."""
    found = topics()
    if topic is None:
        print("lmc help TOPIC — the .lmp language reference (also docs/language.md). Topics:\n")
        for name, body in found.items():
            first = body.strip().split("\n\n")[0].replace("\n", " ")
            print(f"  {name:<14} {first[:100] + ('...' if len(first) > 100 else '')}")
        return
    text = reference_topic(topic)
    if text is None:
        hint = did_you_mean(topic.lower(), list(found) + list(ALIASES))
        raise LmcError(f"no help topic '{topic}'", hint=(hint + " " if hint else "") + "topics: " + ", ".join(found))
    if sys.stdout.isatty() and not plain:
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(text))
    else:
        print(text, end="")


@app.command()
def lsp(
    stdio: Annotated[
        bool, typer.Option("--stdio", help="talk over stdin/stdout (the default and only transport; accepted for editors that pass it)")
    ] = True,
) -> None:
    """Run the language server (LSP over stdio) for editors: diagnostics, hover, go to definition, rename, completion, outline, formatting."""
    try:
        from .lsp import serve
    except ImportError as e:  # pragma: no cover - pygls is a dependency; a broken install says so
        raise LmcError(f"the language server needs pygls and lsprotocol ({e})", hint="reinstall lmc: pip install -e .") from None
    serve()


# ---------------------------------------------------------------- other commands

# Each family of commands lives in its own presentation module; they register here.
cli_run.register(app)
cli_compile.register(app)
cli_eval.register(app)
cli_report.register(app)
cli_export.register(app)
cli_dataset.register(app)


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
            fmt = a[len("--format=") :]
        elif a.startswith("-") or not a:
            return None
        else:
            paths.append(Path(a))
    return (paths, fmt) if paths else None


_terminated = False  # set when SIGTERM asked us to stop: the exit code is then 143, not 130


def _on_sigterm(signum, frame) -> None:
    """SIGTERM (what `timeout`, CI runners and `kill` send) stops lmc exactly as Ctrl-C does: whatever
    handles SIGINT now (asyncio's runner cancels its task; otherwise KeyboardInterrupt) handles it."""
    import signal

    global _terminated
    _terminated = True
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:  # SIGINT ignored (a background job of a shell): still stop
        raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    """Run the CLI; every LmcError becomes its message and exit code, never a traceback."""
    import signal
    import threading

    global _terminated
    _terminated = False
    # Only where SIGTERM still kills outright (an embedding program's own handler is left alone), and
    # only for this call: main() also runs inside test processes.
    install = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    if install:
        signal.signal(signal.SIGTERM, _on_sigterm)
    # The event loop gives up the GIL on every socket call; a helper thread holding it (a cache write, the
    # live panel) then keeps the loop waiting for up to the switch interval, 5 ms by default.  At 0.5 ms
    # lmc's throughput with 10% faults went from 0.75-0.86 of its fault-free run to 0.83-0.90 (the
    # cache's own fix measured apart: 0.76-0.92; bench/bench_reliability.py at N=20000 on a busy 2-core
    # machine), where connection churn multiplies those socket calls.
    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    try:
        code = _main(argv)
    finally:
        sys.setswitchinterval(switch)
        if install:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # 128 + the signal's number, as a shell reports a process stopped by it.
    return EXIT_TERMINATED if code == EXIT_INTERRUPTED and _terminated else code


def _main(argv: Optional[list[str]] = None) -> int:
    try:
        # typer coerces every argument through pydantic, whose import costs more than checking a
        # 5,000-line file; the plain `lmc check` call goes straight to the command instead.
        plain = _plain_check(sys.argv[1:] if argv is None else list(argv))
        if plain is not None:
            check(*plain)  # always raises typer.Exit, handled below like the typer path
        # Without standalone mode click returns the exit code of a `typer.Exit` instead of raising it.
        rv = app(args=argv, standalone_mode=False, prog_name="lmc")
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
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug: still no traceback for the user, but enough to report it
        if _is_click_error(e):
            return _usage_error(e)
        if type(e).__name__ == "Abort":  # click's form of Ctrl-C
            _err("interrupted; finished work was kept (rerun the same command to resume)")
            return EXIT_INTERRUPTED
        _err(f"internal error: {type(e).__name__}: {e} (set LMC_DEBUG=1 for a traceback)")
        if os.environ.get("LMC_DEBUG"):
            raise
        return EXIT_INTERNAL
    return EXIT_OK


# ---------------------------------------------------------------- usage errors


def _is_click_error(e: BaseException) -> bool:
    """click's exceptions, or the copies typer (>= 0.29) vendors: recognised by shape, not by class."""
    return callable(getattr(e, "format_message", None)) and isinstance(getattr(e, "exit_code", None), int)


def _usage_error(e: Any) -> int:  # a click error, recognised by shape
    """The command's usage line, then one `error:` line with a did-you-mean; exit 2."""
    ctx = getattr(e, "ctx", None)
    if type(e).__name__ == "NoArgsIsHelpError":  # `lmc` or `lmc report` alone: typer printed the help
        return EXIT_USAGE
    if ctx is None or getattr(e, "exit_code", 1) != EXIT_USAGE:
        message = e.format_message()
        _err(f"error: {message[:1].lower() + message[1:]}")
        return EXIT_USAGE
    _err(ctx.get_usage())
    _err(f"error: {_usage_message(e, ctx)} (see '{ctx.command_path} --help')")
    return EXIT_USAGE


def _usage_message(e: Any, ctx: Any) -> str:
    import difflib
    import re

    kind = type(e).__name__
    command = ctx.command
    if kind == "NoSuchOption":
        name = getattr(e, "option_name", "") or ""
        known = [o for p in command.get_params(ctx) for o in (*p.opts, *p.secondary_opts) if o.startswith("-")]
        # Compared without the dashes, which every option shares and which would make anything look close.
        bare = {o.lstrip("-"): o for o in known}
        close = difflib.get_close_matches(name.split("=")[0].lstrip("-"), sorted(bare), n=1, cutoff=0.6)
        hint = f"did you mean '{bare[close[0]]}'?" if close else None
        return f"no such option '{name}'" + (f"; {hint}" if hint else "")
    if kind in ("MissingParameter", "BadParameter"):
        param = getattr(e, "param", None)
        if param is not None:
            label = (
                f"argument {(param.name or '?').upper()}"
                if param.param_type_name == "argument"
                else "option " + " / ".join(f"'{o}'" for o in param.opts)
            )
        else:
            label = "a parameter"
        if kind == "MissingParameter":
            return f"missing {label}"
        message = getattr(e, "message", "") or str(e)
        return f"invalid value for {label}: {message.removeprefix('Value error, ')}"
    message = e.format_message()
    unknown = re.match(r"No such command '(.+?)'", message)
    if unknown and hasattr(command, "list_commands"):
        names = [n for n in command.list_commands(ctx) if not getattr(command.get_command(ctx, n), "hidden", False)]
        hint = did_you_mean(unknown.group(1), names)
        return f"unknown command '{unknown.group(1)}'" + (f"; {hint}" if hint else "") + f" (commands: {', '.join(names)})"
    return message[:1].lower() + message[1:]


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
