"""Every example program in programs/ parses, checks and is fmt-clean; field names match the datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmc.check import check_path
from lmc.fmt import format_source

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = sorted((ROOT / "programs").glob("*.lmp"))

# program file -> (input names, output names) that the JSONL datasets use
EXPECTED_FIELDS = {
    "sentiment": (("review",), ("sentiment",)),
    "math_cot": (("question",), ("answer",)),
    "rag": (("question",), ("answer",)),
    "multihop": (("question",), ("answer",)),
    "react_agent": (("question",), ("answer",)),
    "pot_arith": (("question",), ("answer",)),
    "judged_qa": (("question",), ("answer",)),
}


def test_the_seven_example_programs_exist():
    assert {p.stem for p in PROGRAMS} >= set(EXPECTED_FIELDS)


@pytest.mark.parametrize("path", PROGRAMS, ids=lambda p: p.stem)
def test_program_checks_and_is_formatted(path: Path):
    checked = check_path(path)
    prog = checked.program()
    if path.stem in EXPECTED_FIELDS:
        ins, outs = EXPECTED_FIELDS[path.stem]
        assert tuple(name for name, _ in checked.program_inputs()) == ins
        assert tuple(name for name, _ in checked.program_outputs()) == outs
    assert prog.body and checked.metrics
    assert format_source(path.read_text(), str(path)) == path.read_text()


def test_examples_together_use_every_construct():
    from lmc import nodes as n

    seen = set()
    kinds = set()
    for path in PROGRAMS:
        c = check_path(path)
        for node in n.walk(c.file):
            seen.add(type(node).__name__)
            if isinstance(node, n.Check):
                seen.add(node.kind + (" for" if node.target else ""))
            if isinstance(node, n.MetricDecl):
                seen.add("metric block" if node.body is not None else "metric expr")
        kinds |= {m.kind for m in c.modules.values()}
        for r in c.retrievers.values():
            assert (ROOT / r.args[0].value).exists(), f"{path.name}: corpus {r.args[0].value} is missing"
    assert kinds == {"Predict", "ChainOfThought", "MultiChainComparison", "ReAct", "ProgramOfThought", "BestOfN"}
    for construct in (
        "Signature",
        "ModuleDecl",
        "RetrieverDecl",
        "ToolDecl",
        "LMDecl",
        "ProgramDecl",
        "For",
        "If",
        "While",
        "Return",
        "assert",
        "suggest",
        "suggest for",
        "FString",
        "DictExpr",
        "ListExpr",
        "Attr",
        "Call",
        "BinOp",
        "Compare",
        "BoolOp",
        "metric block",
        "metric expr",
    ):
        assert construct in seen, construct


def test_sentiment_demo_names_no_lm():
    c = check_path(ROOT / "programs" / "sentiment.lmp")
    assert not c.lms and all(not m.settings for m in c.modules.values())
    assert [m.kind for m in c.modules.values()] == ["Predict"]
