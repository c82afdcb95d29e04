"""Lowering: the predictor table each module kind expands to, settings, and resolved calls."""

from __future__ import annotations

import pytest

from lmc import ir as I
from lmc.check import check_source
from lmc.lower import lower

SOURCE = """
signature QA(question: str -> answer: str "a few words")
  "Answer the question."

signature Sum {
  question: str
  -> total: int
}

retriever wiki = bm25("datasets/corpus.jsonl", text="text", k=2)
tool search = wiki
tool calc "Evaluate arithmetic." = calculator()
tool shout(text: str) -> str = python("pkg.mod:shout")

module plain = Predict(QA, temperature=0.3, max_tokens=50)
module cot = ChainOfThought(QA)
module mcc = MultiChainComparison(QA, m=4)
module agent = ReAct(QA, tools=[search, calc], max_iters=3)
module pot = ProgramOfThought(Sum, max_iters=2)
module best = BestOfN(QA, n=5, reward=em)

program main(question: str) -> (answer: str) {
  docs = wiki(question)
  loud = shout(question)
  a = plain(question=question)
  suggest len(a.answer) < 10, "short" for plain
  return cot(question=question)
}

metric em = exact_match(answer)
"""


@pytest.fixture(scope="module")
def ir() -> I.IR:
    return lower(check_source(SOURCE, "kinds.lmp"))


def names(fields) -> list[str]:
    return [f.name for f in fields]


def test_predictor_table_ids_and_roles(ir):
    table = {(p.id, p.module, p.role) for p in ir.predictors}
    assert table == {
        ("plain", "plain", "main"),
        ("cot", "cot", "main"),
        ("mcc.attempt", "mcc", "attempt"),
        ("mcc.compare", "mcc", "compare"),
        ("agent.step", "agent", "step"),
        ("agent.extract", "agent", "extract"),
        ("pot.code", "pot", "code"),
        ("pot.answer", "pot", "answer"),
        ("best", "best", "main"),
    }
    for m in ir.modules:
        for role, pid in m.predictors:
            assert ir.predictor(pid).role == role and ir.predictor(pid).module == m.name


def test_predict_keeps_signature_and_call_settings(ir):
    p = ir.predictor("plain")
    assert names(p.signature.inputs) == ["question"] and names(p.signature.outputs) == ["answer"]
    assert p.instructions == "Answer the question."
    assert p.setting("temperature") == 0.3 and p.setting("max_tokens") == 50
    assert p.signature.output("answer").description == "a few words"


def test_chain_of_thought_adds_reasoning_first(ir):
    assert names(ir.predictor("cot").signature.outputs) == ["reasoning", "answer"]


def test_multi_chain_comparison_attempt_and_compare(ir):
    m = ir.module("mcc")
    assert m.kind == "MultiChainComparison" and m.setting("m") == 4
    assert names(ir.predictor("mcc.attempt").signature.outputs) == ["reasoning", "answer"]
    compare = ir.predictor("mcc.compare").signature
    assert names(compare.inputs) == ["question", "attempts"]
    assert compare.input("attempts").type.name == "list[str]"
    assert names(compare.outputs) == ["rationale", "answer"]


def test_react_step_and_extract(ir):
    m = ir.module("agent")
    assert m.setting("max_iters") == 3 and tuple(m.setting("tools")) == ("search", "calc")
    step = ir.predictor("agent.step")
    assert names(step.signature.inputs) == ["question", "trajectory"]
    assert names(step.signature.outputs) == ["thought", "tool", "tool_args"]
    tool = step.signature.output("tool").type
    assert tool.kind == "literal" and tool.args == ("search", "calc", "finish")
    assert step.signature.output("tool_args").type.name == "json"
    assert "- search(query: str): search the corpus" in step.instructions
    assert "- calc(expression: str): Evaluate arithmetic." in step.instructions
    assert "- finish()" in step.instructions
    extract = ir.predictor("agent.extract")
    assert names(extract.signature.inputs) == ["question", "trajectory"]
    assert names(extract.signature.outputs) == ["reasoning", "answer"]


def test_program_of_thought_code_and_answer(ir):
    code = ir.predictor("pot.code").signature
    assert names(code.inputs) == ["question", "previous_code", "error"]
    assert code.input("previous_code").type.kind == "optional"
    assert names(code.outputs) == ["code"]
    assert "`result`" in ir.predictor("pot.code").instructions
    answer = ir.predictor("pot.answer").signature
    assert names(answer.inputs) == ["question", "code", "code_output"]
    assert names(answer.outputs) == ["total"] and answer.output("total").type.name == "int"
    assert ir.module("pot").setting("max_iters") == 2


def test_best_of_n_is_one_predictor_with_reward(ir):
    m = ir.module("best")
    assert m.kind == "BestOfN" and m.setting("n") == 5 and m.setting("reward") == "em"
    assert [pid for _, pid in m.predictors] == ["best"]
    assert ir.metric("em").builtin == "exact_match" and ir.metric("em").field == "answer"


def test_tools_retrievers_and_calls_are_resolved(ir):
    assert {t.name: t.kind for t in ir.tools} == {"search": "retriever", "calc": "calculator", "shout": "python"}
    assert ir.tool("shout").ref == "pkg.mod:shout"
    r = ir.retriever("wiki")
    assert (r.kind, r.path, r.text_field, r.k) == ("bm25", "datasets/corpus.jsonl", "text", 2)
    body = ir.program().body
    assert isinstance(body[0].value, I.CallRetriever) and body[0].value.retriever == "wiki"
    assert isinstance(body[1].value, I.CallTool) and body[1].value.tool == "shout"
    assert isinstance(body[2].value, I.CallModule) and body[2].value.module == "plain"
    check = body[3]
    assert isinstance(check, I.Check) and (check.kind, check.target) == ("suggest", "plain")
    assert check.line == SOURCE.splitlines().index('  suggest len(a.answer) < 10, "short" for plain') + 1


def test_default_instructions_name_the_fields():
    ir = lower(
        check_source('signature S = "a, b -> c"\nmodule m = Predict(S)\nprogram main(a: str, b: str) -> (c: str) { return m(a=a, b=b) }\n', "s.lmp")
    )
    assert ir.predictor("m").instructions == "Given the fields `a`, `b`, produce the fields `c`."
