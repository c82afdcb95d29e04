"""Parser tests: golden AST summaries of valid programs, spans, and syntax errors said in words."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lmc import nodes as n
from lmc.errors import CompileErrors
from lmc.parser import parse, parse_file

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "parser"
UPDATE = os.environ.get("LMC_UPDATE_GOLDEN") == "1"
FILES = sorted(FIXTURES.glob("*.lmp"))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_golden_ast_summary(path: Path):
    # Parse with the path relative to the repository, so the golden files hold no checkout location.
    rel = path.relative_to(Path(__file__).resolve().parent.parent)
    got = n.summary(parse(path.read_text(encoding="utf-8"), rel.as_posix()))
    golden = path.with_suffix(".json")
    if UPDATE or not golden.exists():
        golden.write_text(json.dumps(got, indent=1, ensure_ascii=False) + "\n")
    assert got == json.loads(golden.read_text())


def test_every_node_has_a_span_inside_the_file():
    f = parse_file(FIXTURES / "kitchen_sink.lmp")
    lines = (FIXTURES / "kitchen_sink.lmp").read_text().count("\n") + 1
    count = 0
    for node in n.walk(f):
        sp = node.span
        assert sp is not None and 1 <= sp.line <= sp.end_line <= lines, node
        count += 1
    assert count > 200


def test_spans_point_at_the_source():
    f = parse('program p(q: str) -> (a: str) {\n  x = f"a {q} b"\n  return {"a": x}\n}\n', "s.lmp")
    assign = f.decls[0].body[0]
    assert (assign.span.line, assign.span.col) == (2, 3)
    assert (assign.target_span.col, assign.target_span.end_col) == (3, 4)
    fs = assign.value
    inner = fs.parts[1]
    assert isinstance(inner, n.Name) and (inner.span.line, inner.span.col, inner.span.end_col) == (2, 12, 13)


def test_comments_are_collected_but_not_inside_strings():
    f = parse('# top\nsignature S(a -> b) "not # a comment"  # trailing\n', "c.lmp")
    assert [(c.span.line, c.text) for c in f.comments] == [(1, "# top"), (2, "# trailing")]


def test_constants_and_numbers():
    f = parse("program p() -> (a: str) { x = [true, False, none, null, 3, 2.5, 1e2] }", "k.lmp")
    values = [c.value for c in f.decls[0].body[0].value.items]
    assert values == [True, False, None, None, 3, 2.5, 100.0]


def test_string_escapes():
    f = parse(r'signature S(a -> b) "tab\tquote\"nl\nu\u00e9"', "e.lmp")
    assert f.decls[0].instructions == 'tab\tquote"nl\nu\u00e9'


SYNTAX_ERRORS = [
    ("program p( {", "1:12", "unexpected '{'"),
    ('signature S(a -> b) "x', "1:21", "unterminated string"),
    ("program p() -> (a: str) {\n  x = 1\n", "2:8", "unexpected end of file"),
    ("module m = Predict(S, 3)", "1:23", "a module takes one signature and then keyword settings"),
    ("program p() -> (a: str) { if = 2 }", "1:27", "'if' is a keyword and cannot be used as a name"),
    ("program p() -> (a: str) { x = f(a=1, a=2) }", "1:38", "keyword argument 'a' given twice"),
    ('program p() -> (a: str) { x = f"{}" }', "1:33", "empty expression in f-string"),
    ("program p() -> (a: str) { x = 'a\\q' }", "1:31", "unknown escape '\\q' in string"),
    ('signature S = "a b"', "1:15", "a signature shorthand needs exactly one '->'"),
    ("program p() -> (a: str) { x = $ }", "1:31", "unexpected character '$'"),
]


@pytest.mark.parametrize("src,where,message", SYNTAX_ERRORS)
def test_syntax_errors_in_words(src, where, message):
    with pytest.raises(CompileErrors) as e:
        parse(src, "bad.lmp")
    d = e.value.diagnostics[0]
    assert f"{d.span.line}:{d.span.col}" == where
    assert d.message == message
    text = e.value.render()
    for token_name in ("NAME", "LBRACE", "RPAR", "__ANON", "$END", "STRING"):
        assert token_name not in text


def test_deep_nesting_is_a_diagnostic_not_a_crash():
    src = "program p() -> (a: str) { x = " + "[" * 3000 + "]" * 3000 + " }"
    with pytest.raises(CompileErrors):
        parse(src, "deep.lmp")


def test_textmate_grammar_is_valid_and_knows_every_keyword():
    import re

    grammar = json.loads((ROOT / "editors" / "vscode" / "syntaxes" / "lmp.tmLanguage.json").read_text())
    assert grammar["scopeName"] == "source.lmp"
    patterns = []

    def collect(x):
        if isinstance(x, dict):
            for k, v in x.items():
                if k in ("match", "begin", "end"):
                    patterns.append(re.compile(v))
                collect(v)
        elif isinstance(x, list):
            for v in x:
                collect(v)

    collect(grammar)
    from lmc.parser import KEYWORDS

    for kw in KEYWORDS:
        assert any(p.search(f" {kw} ") for p in patterns), kw


# ---------------------------------------------------------------- name spans


def _text_at(source: str, sp) -> str:
    lines = source.split("\n")
    if sp.line == sp.end_line:
        return lines[sp.line - 1][sp.col - 1 : sp.end_col - 1]
    return "\n".join([lines[sp.line - 1][sp.col - 1 :], *lines[sp.line : sp.end_line - 1], lines[sp.end_line - 1][: sp.end_col - 1]])


SPANS_PROGRAM = """lm   fast = "openai/gpt-4o-mini"(temperature=0.2)
signature  QA {
  question: str
  context: list[str]
  -> answer: str
}
retriever docs = bm25("c.jsonl", k=3)
tool search = docs
module  qa = Predict(QA, temperature=0.1,   lm="fast")
metric em = exact_match(answer, gold=answer)
program main(question: str) -> (answer: str) {
  for   p in docs(question) { x = p }
  while  false max 2 { break }
  out = qa(question=question, context=docs(question))
  assert out.answer != "", "empty"  for   qa
  return out
}
"""


def test_every_name_span_covers_exactly_the_name():
    f = parse(SPANS_PROGRAM, "s.lmp")
    seen = 0
    for node in n.walk(f.decls):
        if isinstance(
            node, (n.Signature, n.ModuleDecl, n.RetrieverDecl, n.ToolDecl, n.LMDecl, n.MetricDecl, n.ProgramDecl, n.Param, n.Field, n.Keyword, n.Attr)
        ):
            assert _text_at(SPANS_PROGRAM, node.name_span) == node.name, node
            seen += 1
        if isinstance(node, n.For):
            assert _text_at(SPANS_PROGRAM, node.var_span) == node.var
            assert _text_at(SPANS_PROGRAM, node.keyword_span) == "for"
        if isinstance(node, n.While):
            assert _text_at(SPANS_PROGRAM, node.keyword_span) == "while"
        if isinstance(node, n.Check):
            assert _text_at(SPANS_PROGRAM, node.keyword_span) == "assert"
            assert _text_at(SPANS_PROGRAM, node.target_span) == node.target == "qa"
        if isinstance(node, n.LMDecl):
            assert _text_at(SPANS_PROGRAM, node.model_span) == '"openai/gpt-4o-mini"'
        if isinstance(node, (n.ModuleDecl, n.RetrieverDecl)):
            assert _text_at(SPANS_PROGRAM, node.kind_span) == node.kind
    assert seen >= 20


def test_a_name_span_inside_an_f_string_points_into_the_string():
    src = 'program p(x: str) -> (y: str) {\n  return {"y": f"{x}: {out.answer}"}\n}\n'
    f = parse(src, "f.lmp")
    attr = next(x for x in n.walk(f.decls) if isinstance(x, n.Attr))
    assert _text_at(src, attr.name_span) == "answer"


def test_shorthand_fields_are_named_at_their_place_in_the_string():
    src = 'signature S = "question,  context -> answer"\n'
    sig = parse(src, "s.lmp").decls[0]
    assert [_text_at(src, f.name_span) for f in sig.inputs + sig.outputs] == ["question", "context", "answer"]
