"""Module kinds (lmc/kinds.py): each kind's settings, defaults, extra outputs, lowering and run-time behaviour
come from its one description, which check, lower, the interpreter and the optimizers all read."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lmc import kinds
from lmc.check import check_source
from lmc.errors import CompileErrors
from lmc.interpreter import run_example
from lmc.lm import LMClient, parse_lm
from lmc.lower import lower
from lmc.optimize.demos import demo_from
from lmc.runtime import Runtime
from tests.fakelm import FakeLM

ROOT = Path(__file__).resolve().parent.parent

QA = """
signature QA {
  question: str
  -> answer: str
}
"""
MAIN = """
program main(question: str) -> (answer: str) {
  return m(question=question).answer
}
"""


def runtime(module: str, script, extra: str = "") -> tuple[Runtime, FakeLM]:
    fake = script if isinstance(script, FakeLM) else FakeLM(script)
    ir = lower(check_source(QA + extra + module + MAIN, "t.lmp"))
    return Runtime(ir, LMClient(cache_dir=None, backend=fake), lm=parse_lm("openai/test"), base_dir=str(ROOT)), fake


def check_errors(source: str) -> list[str]:
    with pytest.raises(CompileErrors) as info:
        check_source(source, "t.lmp")
    return [d.message + (f"; {d.hint}" if d.hint else "") for d in info.value.diagnostics]


def test_the_table_describes_every_kind_once():
    assert list(kinds.KINDS) == ["Predict", "ChainOfThought", "MultiChainComparison", "ReAct", "ProgramOfThought", "BestOfN"]
    for kind in kinds.KINDS.values():
        names = [s.name for s in kind.settings]
        assert len(names) == len(set(names)) and not set(names) & set(kinds.COMMON_SETTINGS), kind.name
    assert kinds.extra_output_names() == ("reasoning", "trajectory", "code")
    assert kinds.extra_outputs("NoSuchKind") == ()


def test_defaults_are_the_kinds_own():
    assert kinds.KINDS["ReAct"].default("max_iters") == 5
    assert kinds.KINDS["ProgramOfThought"].default("max_iters") == 3
    assert kinds.KINDS["ProgramOfThought"].default("timeout") == 5.0
    assert kinds.KINDS["MultiChainComparison"].default("m") == 3
    assert kinds.KINDS["BestOfN"].default("n") == 3


def test_react_runs_max_iters_steps_by_default_then_extracts():
    script = {
        "Tools:": '<thought>look</thought><tool>calc</tool><tool_args>{"expression": "1+1"}</tool_args>',
        "": "<reasoning>done</reasoning><answer>2</answer>",
    }
    rt, fake = runtime("module m = ReAct(QA, tools=[calc])\n", script, "tool calc = calculator()\n")
    r = asyncio.run(run_example(rt, {"question": "q"}))
    assert r.ok, r.error
    steps = [c for c in r.trace if c.predictor == "m.step"]
    assert len(steps) == kinds.KINDS["ReAct"].default("max_iters")
    assert r.trace[-1].predictor == "m.extract"


def test_multi_chain_attempts_m_times_by_default():
    rt, fake = runtime("module m = MultiChainComparison(QA)\n", "<reasoning>r</reasoning><rationale>r</rationale><answer>a</answer>")
    r = asyncio.run(run_example(rt, {"question": "q"}))
    assert r.ok, r.error
    assert [c.predictor for c in r.trace].count("m.attempt") == kinds.KINDS["MultiChainComparison"].default("m")


def test_best_of_n_samples_n_times_by_default():
    rt, fake = runtime("module m = BestOfN(QA, reward=judge)\n", "<answer>a</answer>", "metric judge(example, pred) {\n  return 0.5\n}\n")
    r = asyncio.run(run_example(rt, {"question": "q"}))
    assert r.ok, r.error
    assert len(r.trace) == kinds.KINDS["BestOfN"].default("n")


@pytest.mark.parametrize(
    "module, expected",
    [
        ("MultiChainComparison(QA, m=1)", "setting 'm' must be an int of 2 or more, got 1"),
        ("ReAct(QA, tools=[], max_iters=0)", "setting 'max_iters' must be an int of 1 or more, got 0"),
        ("ProgramOfThought(QA, timeout=-1)", "setting 'timeout' must be a number of 0 or more, got -1"),
        ("Predict(QA, m=3)", "unknown setting 'm' for Predict; 'm' is a setting of MultiChainComparison"),
        ("ReAct(QA)", "ReAct needs tools; add tools=[search, calc]"),
        ("BestOfN(QA)", "BestOfN needs a reward metric; add reward=<metric name>"),
    ],
)
def test_the_checker_reads_settings_from_the_kind(module, expected):
    assert expected in check_errors(QA + f"module m = {module}\n" + MAIN)


def test_extra_outputs_are_in_the_prediction_type_and_never_demo_labels():
    src = QA + "module m = ChainOfThought(QA)\n" + 'program main(question: str) -> (answer: str) {\n  return f"{m(question=question)}"\n}\n'
    errors = check_errors(src)
    assert any("use .answer" in e for e in errors), errors  # the hint skips the kind's own `reasoning`
    ir = lower(check_source(QA + "module m = ChainOfThought(QA)\n" + MAIN, "t.lmp"))
    p = ir.predictors[0]
    assert [f.name for f in p.signature.outputs] == ["reasoning", "answer"]
    from lmc.datasets import from_records

    [ex] = from_records([{"id": "a", "question": "q", "answer": "x"}])
    assert demo_from(ex, p) == {"question": "q", "answer": "x", "_id": "a"}


def test_a_new_kind_is_one_entry_in_the_table(monkeypatch):
    """A kind written in one place is checked, lowered and run: nothing else has to know about it."""

    async def run_twice(step, inputs, feedback):
        first = await step.predict("draft", inputs, feedback=feedback)
        return await step.predict("polish", {**inputs, "draft": first["answer"]})

    def lower_twice(name, base, instructions, settings, tool):
        from lmc import ir as I
        from lmc.types import STR

        draft = I.FieldSpec("draft", STR, "a first answer to improve")
        return [
            (f"{name}.draft", "draft", base, instructions),
            (
                f"{name}.polish",
                "polish",
                I.SignatureIR(base.name + "Polish", "", base.inputs + (draft,), base.outputs),
                instructions + " Improve the draft.",
            ),
        ]

    kind = kinds.Kind("Refine", lower_twice, run_twice, (kinds.Setting("rounds", "int", 1, low=1),))
    monkeypatch.setitem(kinds.KINDS, "Refine", kind)
    assert "setting 'rounds' must be an int of 1 or more, got 0" in check_errors(QA + "module m = Refine(QA, rounds=0)\n" + MAIN)
    rt, fake = runtime("module m = Refine(QA, rounds=2)\n", {"<draft>": "<answer>good</answer>", "": "<answer>ok</answer>"})
    assert [p.id for p in rt.ir.predictors] == ["m.draft", "m.polish"]
    r = asyncio.run(run_example(rt, {"question": "q"}))
    assert r.outputs == {"answer": "good"} and [c.predictor for c in r.trace] == ["m.draft", "m.polish"]
