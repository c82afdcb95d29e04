"""Inputs too long for the context fail their example (or are cut only when asked); errors in user code surface.

The context logic of the embedded model is exercised without loading it: a FakeLM that
reports a small `n_ctx` and counts tokens stands in for the llama.cpp backend.
"""

from __future__ import annotations

import asyncio
import re
import sys
import textwrap
from pathlib import Path

import pytest

from lmc.check import check_source
from lmc.datasets import Example
from lmc.errors import CompileErrors, ConfigError
from lmc.scoring import evaluate
from lmc.python_metrics import check_metric
from lmc.interpreter import run_example
from lmc.runtime import Runtime
from lmc.lm import LMClient, parse_lm
from lmc.lower import lower
from lmc.pyrefs import PythonPolicy
from tests.fakelm import FakeLM

ROOT = Path(__file__).resolve().parent.parent

SUMMARIZE = """
signature Summarize(document: str -> label: "short" | "long")
module s = Predict(Summarize{settings})
program main(document: str) -> (label: "short" | "long") {{ return s(document=document) }}
"""


class SmallLocal(FakeLM):
    """Stands in for the embedded backend: a 256-token window, one token per word."""

    n_ctx = 256

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def local_runtime(source: str, script="short", **kw) -> tuple[Runtime, SmallLocal]:
    fake = SmallLocal(script)
    ir = lower(check_source(source, "t.lmp"))
    rt = Runtime(ir, LMClient(cache_dir=None, backend=fake), lm=parse_lm("local/gemma-3-270m"), base_dir=str(ROOT), **kw)
    return rt, fake


def run(rt: Runtime, **inputs):
    return asyncio.run(run_example(rt, inputs))


def doc(words: int) -> str:
    return "HEAD " + " ".join(f"w{i}" for i in range(words)) + " TAIL"


# ---------------------------------------------------------------- oversized inputs


def test_an_input_over_the_local_context_fails_the_example_and_calls_nothing():
    rt, fake = local_runtime(SUMMARIZE.format(settings=""))
    r = run(rt, document=doc(1000))
    assert not r.ok and r.error_kind == "input"
    assert re.search(r"input of 1,0\d\d tokens", r.error) and "does not fit the 256-token context of local/gemma-3-270m" in r.error
    assert "shorten 'document'" in r.error and "--truncate-inputs" in r.error
    assert fake.calls == []
    assert run(rt, document=doc(10)).ok  # a short one still runs


def test_demos_are_dropped_first_with_a_note():
    rt, fake = local_runtime(SUMMARIZE.format(settings=""))
    from dataclasses import replace

    p = rt.ir.predictors[0]
    demos = tuple({"document": doc(60), "label": "long", "_id": f"d{i}"} for i in range(4))
    rt.ir = rt.ir.with_predictors([replace(p, demos=demos)])
    r = run(rt, document=doc(20))
    assert r.ok, r.error
    assert any("dropped demos to fit the 256-token context" in w for w in rt.warnings.items)
    assert fake.calls[0].text.count("HEAD") < 5  # some demos went, the input stayed whole
    assert "w19 TAIL" in fake.calls[0].text


@pytest.mark.parametrize("how", ["flag", "setting"])
def test_truncation_cuts_the_middle_of_the_longest_input_only_when_asked(how):
    settings = ", truncate_inputs=true" if how == "setting" else ""
    rt, fake = local_runtime(SUMMARIZE.format(settings=settings), truncate_inputs=(how == "flag"))
    r = run(rt, document=doc(1000))
    assert r.ok, r.error
    sent = fake.calls[0].text
    assert "HEAD w0" in sent and "w999 TAIL" in sent and "[...]" in sent and "w500 " not in sent
    assert fake.count_tokens(sent) <= 256 - 16 - 8  # room left for the (label-sized) answer
    assert any("cut inputs from their middle" in w for w in rt.warnings.items)
    assert r.trace[0].inputs["document"] == doc(1000)  # the trace keeps what the example held


def test_truncation_picks_the_longest_string_in_a_list_input():
    src = """
signature Answer(context: list[str], question: str -> answer: str)
module a = Predict(Answer)
program main(context: list[str], question: str) -> (answer: str) { return a(context=context, question=question) }
"""
    rt, fake = local_runtime(src, script="fine", truncate_inputs=True)
    r = run(rt, context=["first passage", doc(900), "last passage"], question="what is it?")
    assert r.ok, r.error
    sent = fake.calls[0].text
    assert "first passage" in sent and "last passage" in sent and "what is it?" in sent and "[...]" in sent


def test_a_prompt_that_cannot_fit_even_cut_is_an_error():
    rt, fake = local_runtime(SUMMARIZE.format(settings=""), truncate_inputs=True)
    from dataclasses import replace

    p = rt.ir.predictors[0]
    rt.ir = rt.ir.with_predictors([replace(p, instructions=doc(400))])  # the instructions alone overflow
    r = run(rt, document="tiny")
    assert not r.ok and r.error_kind == "input" and "even with every input cut" in r.error
    assert fake.calls == []


def test_truncate_inputs_setting_is_checked():
    with pytest.raises(CompileErrors, match="setting 'truncate_inputs' must be true or false"):
        check_source(SUMMARIZE.format(settings=", truncate_inputs=3"), "t.lmp")


# ---------------------------------------------------------------- user code: metrics


@pytest.fixture
def usercode(tmp_path, monkeypatch):
    """Write a module of user code into a fresh folder on sys.path; returns its importable name."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    names = []

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


METRIC_PROGRAM = """
signature Classify(review: str -> sentiment: "positive" | "negative")
module c = Predict(Classify)
program main(review: str) -> (sentiment: "positive" | "negative") {{ return c(review=review) }}
metric m = python("{ref}")
"""


def here() -> PythonPolicy:
    """What a program in the working directory may import: its own folder's modules."""
    return PythonPolicy(str(Path.cwd() / "t.lmp"), "program", str(Path.cwd()), True, ())


def evaluate_with(ref: str, n: int = 3):
    ir = lower(check_source(METRIC_PROGRAM.format(ref=ref), "t.lmp"))
    rt = Runtime(ir, LMClient(cache_dir=None, backend=FakeLM("<sentiment>positive</sentiment>")), lm=parse_lm("openai/test"), python=here())
    examples = [Example(f"e{i}", i + 1, {"review": f"r{i}", "sentiment": "positive"}, "d.jsonl") for i in range(n)]
    check_metric(ir.metrics[0], here())
    return asyncio.run(evaluate(rt, examples, ir.metrics[0]))


def test_a_type_error_inside_a_metric_is_that_examples_error_and_it_is_called_once(usercode):
    mod = usercode(
        "m_typeerror",
        """
        def score(example, pred, trace):
            with open("calls.txt", "a") as f:
                f.write(f"{len(trace)}\\n")
            return example["sentiment"] + 1   # a bug: str + int
    """,
    )
    outcomes = evaluate_with(f"{mod}:score")
    assert [o.result.error_kind for o in outcomes] == ["metric"] * 3
    assert outcomes[0].error == ("metric 'm' (m_typeerror:score) raised TypeError: can only concatenate str (not \"int\") to str")
    # Once per example, with the trace, never again with two arguments.
    assert Path("calls.txt").read_text().split() == ["1", "1", "1"]


def test_two_and_three_argument_metrics_are_told_apart_by_their_signature(usercode):
    mod = usercode(
        "m_forms",
        """
        def two(example, pred):
            return pred["sentiment"] == example["sentiment"]
        def three(example, pred, trace):
            return float(len(trace) == 1)
        def star(*args):
            return float(len(args) == 3)
        def optional_trace(example, pred, trace=None):
            return trace is not None
        def one(example):
            return 1.0
        def kwonly(example, pred, *, weight):
            return weight
    """,
    )
    for fn in ("two", "three", "star", "optional_trace"):
        assert [o.score for o in evaluate_with(f"{mod}:{fn}", n=2)] == [1.0, 1.0], fn
    for fn, shown in (("one", "(example)"), ("kwonly", "(example, pred, weight)")):
        with pytest.raises(
            ConfigError,
            match=rf"metric 'm' \({mod}:{fn}\) takes {re.escape(shown)}; "
            r"expected \(example, pred\) or \(example, pred, trace\)",
        ):
            evaluate_with(f"{mod}:{fn}")


def test_a_metric_that_raises_anything_names_itself(usercode):
    mod = usercode(
        "m_raises",
        """
        def score(example, pred):
            raise KeyError("gold_answer")
    """,
    )
    outcomes = evaluate_with(f"{mod}:score", n=1)
    assert outcomes[0].error == "metric 'm' (m_raises:score) raised KeyError: 'gold_answer'"


# ---------------------------------------------------------------- user code: tools


REACT = """
signature Ask(question: str -> answer: str)
tool lookup(city: str) -> str = python("{ref}")
module agent = ReAct(Ask, tools=[lookup], max_iters=3)
program main(question: str) -> (answer: str) {{ return agent(question=question) }}
"""


def react_runtime(ref: str, steps: list[str]):
    it = iter(steps)

    def script(spec, req):
        if "tool_args" in req.messages[0]["content"]:
            return next(it)
        return "<reasoning>r</reasoning><answer>done</answer>"

    fake = FakeLM(script)
    ir = lower(check_source(REACT.format(ref=ref), "t.lmp"))
    return Runtime(ir, LMClient(cache_dir=None, backend=fake), lm=parse_lm("openai/test"), python=here()), fake


def test_an_exception_inside_a_users_tool_fails_the_example_even_in_react(usercode):
    mod = usercode(
        "t_buggy",
        """
        def lookup(city):
            return {"paris": "France"}[city.lower()] + 1
    """,
    )
    rt, _ = react_runtime(f"{mod}:lookup", ['<thought>t</thought><tool>lookup</tool><tool_args>{"city": "Paris"}</tool_args>'])
    r = run(rt, question="where is Paris?")
    assert not r.ok and r.error_kind == "tool"
    assert r.error.startswith("tool 'lookup' raised TypeError: can only concatenate str (not \"int\") to str")


def test_arguments_that_do_not_fit_a_tool_are_an_observation_the_agent_can_fix(usercode):
    mod = usercode(
        "t_fine",
        """
        def lookup(city):
            with open("calls.txt", "a") as f:
                f.write(city + "\\n")
            return "France"
    """,
    )
    rt, _ = react_runtime(
        f"{mod}:lookup",
        [
            '<thought>t</thought><tool>lookup</tool><tool_args>{"town": "Paris"}</tool_args>',
            '<thought>t</thought><tool>lookup</tool><tool_args>{"city": "Paris"}</tool_args>',
            "<thought>ok</thought><tool>finish</tool><tool_args>{}</tool_args>",
        ],
    )
    r = run(rt, question="where is Paris?")
    assert r.ok, r.error
    trajectory = r.trace[-1].inputs["trajectory"]
    assert "Observation 1: error: tool 'lookup' cannot take these arguments: missing a required argument: 'city'" in trajectory
    assert "Observation 2: France" in trajectory
    assert Path("calls.txt").read_text().split() == ["Paris"]  # called once, with the arguments that fit
