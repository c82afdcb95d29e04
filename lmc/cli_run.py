"""The `run` command family of the CLI (presentation only)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import cli_common as common, strict_json
from .cli_common import err as _err
from .datasets import Example, load_dataset, validate
from .errors import ConfigError
from .files import Output, check_outputs
from .inputs import bind_inputs
from .interpreter import run_example
from .progress import Progress, resolve_mode
from .outfile import Plan, ResultsFile, run_stamp
from .runner import LineWriter, StdoutLines, Summary, run_batch, trace_line
from .session import RunOptions, open_runtime
from .targets import load_target


def parse_inputs(raw_json: str | None, pairs: list[str] | None, types: dict) -> dict:
    """`--input '{...}'` and `-i field=value` as one dict, checked against the program's inputs."""
    values: dict = {}
    if raw_json is not None:
        try:
            obj = strict_json.loads(raw_json)  # a key given twice is refused, as in a --data line
        except strict_json.NotJson as e:
            raise ConfigError(f"--input: {e}", hint=e.hint) from None
        except RecursionError:
            raise ConfigError("--input: JSON nested too deeply") from None
        except json.JSONDecodeError as e:
            raise ConfigError(
                f'--input is not valid JSON: {e.msg} at column {e.colno}; expected an object such as \'{{"question": "..."}}\''
            ) from None
        if not isinstance(obj, dict):
            raise ConfigError('--input must be a JSON object such as \'{"question": "..."}\'')
        values.update(obj)
    for pair in pairs or ():
        name, eq, text = pair.partition("=")
        name = name.strip()
        if not eq or not name:
            raise ConfigError(f"-i '{pair}': expected field=value")
        tp = types.get(name)
        if tp is not None and tp.kind == "str":
            values[name] = text  # a str field keeps exactly what was typed, even "42"
            continue
        try:
            values[name] = strict_json.loads(text, duplicate_keys=True)
        except (ValueError, RecursionError):  # not JSON (or NaN/Infinity): the text itself, checked against the field's type below
            values[name] = text
    bind_inputs(types, values)
    return values


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        target: Annotated[Path, typer.Argument(help="a .lmp program (zero-shot) or a compiled *.lmc.json artifact")],
        program: common.Program = None,
        input: Annotated[Optional[str], typer.Option("--input", help="one input as a JSON object")] = None,
        field: Annotated[Optional[list[str]], typer.Option("-i", help="one input field as name=value (repeatable)")] = None,
        data: Annotated[Optional[Path], typer.Option("--data", help="JSONL inputs, one example per line")] = None,
        out: Annotated[
            Optional[Path], typer.Option("--out", help="JSONL results (resumes when it exists); without it --data streams them to stdout")
        ] = None,
        lm: common.Lm = None,
        api_base: common.ApiBase = None,
        cache_dir: common.CacheDir = None,
        no_cache: common.NoCache = False,
        jobs: common.Jobs = None,
        rpm: common.Rpm = None,
        trace: Annotated[Optional[Path], typer.Option("--trace", help="write per-example traces (JSONL) here")] = None,
        max_backtracks: Annotated[
            Optional[int], typer.Option("--max-backtracks", min=0, help="retries of a call after a failed assert/suggest (default 2)")
        ] = None,
        example_timeout: common.ExampleTimeout = None,
        max_steps: common.MaxSteps = None,
        allow_python: common.AllowPython = None,
        max_calls: Annotated[Optional[int], common.max_calls_option("run")] = None,
        max_cost: common.MaxCost = None,
        price_per_mtok_in: common.PricePerMtokIn = None,
        price_per_mtok_out: common.PricePerMtokOut = None,
        truncate_inputs: common.TruncateInputs = None,
        max_lm_errors: Annotated[Optional[str], common.max_lm_errors_option("run")] = None,
        transport: common.Transport = None,
        progress: common.ProgressOpt = None,
        quiet: common.Quiet = False,
        otel: common.Otel = None,
        otel_content: common.OtelContent = False,
    ) -> None:
        """Run a program or artifact on one input (prints JSON) or on a JSONL file (streams JSONL)."""
        flags = dict(locals())
        try:
            options = common.run_options(flags, trace_prompts=trace is not None)
            mode = resolve_mode(progress, quiet)
            code = _run(target, program, input, field, data, out, trace, options, mode)
        except KeyboardInterrupt:
            _err("interrupted; rerun to resume")
            code = 130
        # SystemExit, not typer.Exit: under standalone_mode=False click turns Exit(n) into a return
        # value that cli.main drops, while SystemExit reaches main's handler with its code.
        raise SystemExit(code)


def _run(target, program, input, field, data, out, trace, options: RunOptions, mode: str = "off") -> int:

    single = input is not None or bool(field)
    if single and data is not None:
        raise ConfigError("give either --input/-i or --data, not both")
    if not single and data is None:
        raise ConfigError("nothing to run; give --input '{...}', -i field=value or --data in.jsonl")
    if single and out is not None:
        raise ConfigError("--out is for --data; a single input prints its outputs as JSON (use --trace to keep its trace)")
    session = open_runtime(load_target(target, program), options)
    # Nothing is written (and no LM call made) until every output is known not to clobber an input.
    inputs = session.input_files() + ([("--data file", str(data))] if data is not None else [])
    outputs = [Output("--out", str(out)) if out is not None else None, Output("--trace", str(trace)) if trace is not None else None]
    if session.client.cache is not None:
        outputs.append(Output("--cache-dir", str(session.client.cache.root), directory=True))
    check_outputs(outputs, inputs)
    if single:
        types = {f.name: f.type for f in session.runtime.ir.program().inputs}
        return _single(session, parse_inputs(input, field, types), trace)
    return _batch(session, data, out, trace, mode)


def _single(session, values: dict, trace: Path | None) -> int:

    session.preflight()

    async def go():
        try:
            return await run_example(session.runtime, values)
        finally:
            await session.aclose()

    result = asyncio.run(go())
    if trace is not None:
        w = LineWriter(trace)
        try:
            w.write(trace_line(Example("input", 0, values, "--input"), result, values, program=session.runtime.ir.entry))
        finally:
            w.close()
    if not result.ok:
        _err(f"error: {result.error}")
        return 1
    sys.stdout.write(json.dumps(result.outputs, ensure_ascii=False, indent=2, allow_nan=False) + "\n")
    sys.stdout.flush()
    return 0


def _batch(session, data: Path, out: Path | None, trace: Path | None, mode: str = "off") -> int:
    """--data: each result a line of --out (resumed when it exists, locked while running), or of stdout."""
    from contextlib import nullcontext

    rt = session.runtime
    prog = rt.ir.program()
    dataset = load_dataset(data)
    validate(dataset, {f.name: f.type for f in prog.inputs})
    names = [f.name for f in prog.inputs]
    # Locked from here to the end of the run: a second run on the same --out fails at once.
    with ResultsFile(out) if out is not None else nullcontext() as results:
        if results is not None:
            prev = results.read(run_stamp(rt))
            if prev.dropped:
                _err(f"{out}: dropped {prev.dropped} torn line{'s' if prev.dropped != 1 else ''} left by an interrupted run")
            plan = results.plan(dataset.examples, names, prev)
            if plan.changed:
                n = len(plan.changed)
                _err(
                    f"{out}: re-running {n} example{'s' if n != 1 else ''} whose input changed since "
                    f"{'its line was' if n == 1 else 'their lines were'} written"
                )
        else:
            plan = Plan(list(dataset.examples))
        summary = Summary(total=len(dataset), skipped=plan.skipped, previously_failed=plan.previously_failed, changed=len(plan.changed))
        todo = plan.todo
        if todo:
            session.preflight()
        writer = LineWriter(fd=results.fd) if results is not None else StdoutLines()
        tracer = LineWriter(trace) if trace is not None else None
        bar = _Bar(len(todo), summary) if mode == "panel" and todo else None
        status = Progress("run", mode if todo else "off")
        status.watch(session.client)
        status.begin(len(todo), stage="running")

        def on_result(ex, result) -> None:
            status.advance(failed=not result.ok)
            if bar is not None:
                bar.update(ex, result)

        async def go():
            try:
                return await run_batch(
                    rt, todo, names, out=writer, trace=tracer, concurrency=session.settings.concurrency, summary=summary, on_result=on_result
                )
            finally:
                await session.aclose()

        try:
            if bar:
                bar.start()
            status.start()
            asyncio.run(go())
        finally:
            summary.add_client(session.client.usage)
            status.close()
            if bar:
                bar.stop()
            writer.close()
            if tracer is not None:
                tracer.close()
    where = out if out is not None else "stdout"
    if summary.stopped_by is not None:
        err = summary.stopped_by
        _err(f"error: {err}")
        _err(f"stopped: {summary.line()}")
        _err(
            f"stopped after {summary.done} of {len(todo)} examples; finished lines are in {where}" + ("; rerun to resume" if out is not None else "")
        )
        return err.exit_code
    _err(f"{'done' if not (summary.failed or summary.previously_failed) else 'done with failures'}: {summary.line()}")
    for w in session.warnings.items + session.client.warnings.items:
        _err(f"warning: {w}")
    return summary.exit_code()


class _Bar:
    """A rich progress bar on stderr: examples, throughput, LM calls and cost."""

    def __init__(self, total: int, summary):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.summary = summary
        self.bar = Progress(
            TextColumn("running"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self.task = self.bar.add_task("run", total=total, info="")
        self.start_time = 0.0

    def start(self) -> None:
        import time

        self.start_time = time.perf_counter()
        self.bar.start()

    def update(self, ex, result) -> None:
        import time

        s = self.summary
        elapsed = max(time.perf_counter() - self.start_time, 1e-9)
        info = f"{s.done / elapsed:.1f} ex/s · {s.calls} calls ({s.cached_calls} cached) · ${s.cost:.4f}" + (
            f" · {s.failed} failed" if s.failed else ""
        )
        self.bar.update(self.task, advance=1, info=info)

    def stop(self) -> None:
        self.bar.stop()
