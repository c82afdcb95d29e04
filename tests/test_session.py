"""The pieces every command shares: open_runtime, the batch executor, classify(), the input validator and
the metric chooser."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lmc.check import check_source
from lmc.errors import (
    BudgetExceeded,
    ConfigError,
    ErrorKind,
    LMAuthError,
    LMError,
    LMFailure,
    LmcError,
    LMUnreachableError,
    OutputParseError,
    RunError,
    classify,
    failure_text,
)
from lmc.executor import run_each
from lmc.inputs import InputError, bind_inputs
from lmc.lower import lower
from lmc.metrics import MetricChoiceError, choose_metric
from lmc.session import RunOptions, open_runtime, prepare
from lmc.targets import load_target
from lmc.types import INT, STR, optional

ROOT = Path(__file__).resolve().parent.parent
TWO = """
signature S {
  q: str
  -> a: str
}
module m = Predict(S)
program main(q: str) -> (a: str) { return m(q=q).a }
metric em = exact_match(a)
metric f = f1(a)
"""


# ---------------------------------------------------------------- classify


@pytest.mark.parametrize(
    "exc, kind",
    [
        (LMError("down", model="m"), ErrorKind.LM),
        (OutputParseError("bad answer"), ErrorKind.PARSE),
        (RunError("assertion failed: x", "assert"), ErrorKind.ASSERT),
        (RunError("tool 't' raised", "tool"), ErrorKind.TOOL),
        (RunError("too long", "input"), ErrorKind.INPUT),
        (LmcError("a metric returned 2"), ErrorKind.RUNTIME),
        (RecursionError(), ErrorKind.RUNTIME),
        (ValueError("a bug"), ErrorKind.INTERNAL),
    ],
)
def test_classify_fails_one_example(exc, kind):
    assert classify(exc) is kind


@pytest.mark.parametrize(
    "exc",
    [
        LMAuthError("no", model="m"),
        LMUnreachableError("gone", model="m"),
        LMFailure("too many"),
        BudgetExceeded("spent"),
        ConfigError("bad flag"),
        KeyboardInterrupt(),
        asyncio.CancelledError(),
    ],
)
def test_classify_stops_the_run(exc):
    assert classify(exc) is None


def test_failure_texts_and_report_kinds():
    assert failure_text(RecursionError(), ErrorKind.RUNTIME) == "program recursion too deep"
    assert failure_text(ValueError("x"), ErrorKind.INTERNAL) == "internal error: ValueError: x"
    assert [k.report_kind for k in (ErrorKind.LM, ErrorKind.PARSE, ErrorKind.ASSERT, ErrorKind.TIMEOUT, ErrorKind.METRIC, ErrorKind.TOOL)] == [
        "lm",
        "parse",
        "assert",
        "runtime",
        "runtime",
        "runtime",
    ]
    assert ErrorKind.TOOL_ARGS == "tool_args" and f"{ErrorKind.LM}" == "lm"  # what --out lines record


# ---------------------------------------------------------------- the executor


def test_run_each_keeps_item_order_and_limits_workers():
    running, peak = [0], [0]

    async def work(i):
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await asyncio.sleep(0.001 * (10 - i))
        running[0] -= 1
        return i * i

    seen = []
    batch = asyncio.run(run_each(range(10), work, workers=3, on_result=lambda i, r: seen.append(i)))
    assert batch.results == [i * i for i in range(10)] and batch.stopped_by is None
    assert peak[0] == 3 and sorted(seen) == list(range(10))


def test_a_spent_budget_lets_calls_in_flight_finish_and_starts_nothing_new():
    started = []

    async def work(i):
        started.append(i)
        if i == 2:
            await asyncio.sleep(0.005)  # while 0, 1 and 3 are in flight
            raise BudgetExceeded("spent")
        await asyncio.sleep(0.02)
        return i

    batch = asyncio.run(run_each(list(range(20)), work, workers=4))
    assert isinstance(batch.stopped_by, BudgetExceeded)
    assert batch.results[:4] == [0, 1, None, 3] and set(started) == {0, 1, 2, 3}
    assert batch.done() == [0, 1, 3]


def test_another_error_cancels_the_rest_and_a_cancellation_propagates():
    async def work(i):
        if i == 1:
            raise LMAuthError("refused", model="m")
        await asyncio.sleep(10)

    batch = asyncio.run(asyncio.wait_for(run_each(list(range(4)), work, workers=4), 5))
    assert isinstance(batch.stopped_by, LMAuthError) and batch.done() == []

    async def cancelled():
        task = asyncio.ensure_future(run_each(list(range(4)), lambda i: asyncio.sleep(10), workers=2))
        await asyncio.sleep(0.01)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(cancelled())


# ---------------------------------------------------------------- inputs


def test_the_input_validator():
    types = {"q": STR, "n": optional(INT)}
    assert bind_inputs(types, {"q": "x"}) == {"q": "x", "n": None}
    with pytest.raises(InputError, match=r"missing input field 'q'; did you mean 'qq'\? \(expected fields: q, n\)"):
        bind_inputs(types, {"qq": "x"})
    with pytest.raises(InputError, match="input field 'q' does not fit str: expected str, got int"):
        bind_inputs(types, {"q": 3})
    with pytest.raises(InputError, match="unknown input field 'm'"):
        bind_inputs(types, {"q": "x", "m": 1})
    assert bind_inputs(types, {"q": "x", "m": 1}, ignore_unknown=True) == {"q": "x", "n": None}
    assert bind_inputs({"n": INT}, {"n": "3"}, coerce_values=True) == {"n": 3}  # a value passed between programs
    assert issubclass(InputError, ConfigError)


# ---------------------------------------------------------------- the metric chooser


def test_one_metric_chooser_for_compile_and_eval():
    ir = lower(check_source(TWO, "t.lmp"))
    assert choose_metric(ir, "f", "t.lmp").name == "f"
    builtin = choose_metric(ir, "contains", "t.lmp")  # a built-in on the program's only output
    assert (builtin.builtin, builtin.field, builtin.spec) == ("contains", "a", "contains(a)")
    with pytest.raises(MetricChoiceError, match=r"t.lmp: the program defines several metrics \(em, f\); choose one"):
        choose_metric(ir, None, "t.lmp")
    with pytest.raises(MetricChoiceError, match=r"unknown metric 'emm'; did you mean 'em'\? defined: em, f; built-ins: "):
        choose_metric(ir, "emm", "t.lmp")
    one = lower(check_source(TWO.replace("metric f = f1(a)\n", ""), "t.lmp"))
    assert choose_metric(one, None, "t.lmp").name == "em"
    none = lower(check_source(TWO.replace("metric f = f1(a)\n", "").replace("metric em = exact_match(a)\n", ""), "t.lmp"))
    with pytest.raises(MetricChoiceError, match="the program defines no metric"):
        choose_metric(none, None, "t.lmp")


# ---------------------------------------------------------------- open_runtime


def test_open_runtime_assembles_settings_client_and_a_vetted_runtime(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LMC_CONCURRENCY", "3")
    monkeypatch.delenv("LMC_LM", raising=False)
    (tmp_path / "lmc.yaml").write_text("rpm: 120\nmax_steps: 500\n", encoding="utf-8")
    (tmp_path / "p.lmp").write_text(TWO, encoding="utf-8")
    session = open_runtime(load_target(tmp_path / "p.lmp"), RunOptions(lm="openai/test", max_backtracks=1, use_cache=False))
    st = session.settings
    assert (st.concurrency, st.rpm, st.max_steps) == (3, 120, 500)
    assert st.sources["concurrency"] == "$LMC_CONCURRENCY" and st.sources["rpm"].endswith("lmc.yaml")
    rt = session.runtime
    assert rt.client is session.client and rt.max_backtracks == 1 and rt.max_steps == 500
    assert rt.default_lm().model == "openai/test" and session.client.cache is None
    other = session.runtime_for(rt.ir)
    assert other.client is session.client and other is not rt and other.warnings is rt.warnings
    assert prepare(RunOptions(use_cache=False)).cache_dir is None
    with pytest.raises(ConfigError, match="--max-backtracks must be 0 or more"):
        prepare(RunOptions(max_backtracks=-1))
    with pytest.raises(ConfigError, match=r"\$LMC_CONCURRENCY: 'x' is not a valid concurrency"):
        monkeypatch.setenv("LMC_CONCURRENCY", "x")
        prepare(RunOptions())


def test_run_options_from_flags_is_the_one_mapping_from_flags_to_options():
    from lmc.cli_common import run_options

    opts = RunOptions.from_flags(jobs=3, no_cache=True, allow_python="mod", max_calls=5, truncate_inputs=None)
    assert (opts.concurrency, opts.use_cache, opts.allow_python, opts.max_calls, opts.truncate_inputs) == (3, False, ("mod",), 5, None)
    assert RunOptions.from_flags(concurrency=2).concurrency == 2  # the old spelling
    assert RunOptions.from_flags(allow_python=None).allow_python == ()
    with pytest.raises(TypeError):
        RunOptions.from_flags(max_call=5)  # a misspelt keyword of the API is refused, not dropped
    # A command hands over all its parameters; only the run flags are taken.
    command = {"target": "p.lmp", "trace": "t.jsonl", "jobs": 4, "no_cache": False, "allow_python": ["a", "b"], "lm": "openai/x"}
    opts = run_options(command, trace_prompts=True)
    assert (opts.concurrency, opts.use_cache, opts.allow_python, opts.lm, opts.trace_prompts) == (4, True, ("a", "b"), "openai/x", True)
