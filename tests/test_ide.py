"""The editor's questions answered without LSP (lmc.ide), and incremental reparsing (lmc.incremental) held to a whole-file parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmc import nodes as n
from lmc.completion import complete
from lmc.ide import RenameError, hover, index_source, outline, rename
from lmc.incremental import Reparser, pieces
from lmc.parser import parse_recovering

ROOT = Path(__file__).resolve().parent.parent
TEXTS = sorted(
    [
        *ROOT.glob("programs/*.lmp"),
        *ROOT.glob("tests/fixtures/check/*.lmp"),
        *ROOT.glob("tests/fixtures/diagnostics/*.lmp"),
        *ROOT.glob("tests/fixtures/parser/*.lmp"),
    ]
)


def same(a, b) -> None:
    assert n.summary(a.file) == n.summary(b.file)
    assert a.diagnostics == b.diagnostics
    assert a.skipped == b.skipped
    assert [c.span for c in a.file.comments] == [c.span for c in b.file.comments]
    assert [d.span for d in a.file.decls] == [d.span for d in b.file.decls]


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_piecewise_parse_equals_whole_file_parse(path):
    text = path.read_text(encoding="utf-8")
    same(Reparser(str(path)).parse(text), parse_recovering(text, str(path)))


def test_an_edit_reparses_only_its_declaration_and_stays_equal():
    text = (ROOT / "programs" / "multihop.lmp").read_text()
    r = Reparser("m.lmp")
    r.parse(text)
    total = len(pieces(text))
    edited = text.replace("range(2)", "range(2", 1)  # a syntax error in the program
    same(r.parse(edited), parse_recovering(edited, "m.lmp"))
    assert r.reused == total - 1
    grown = "\n" + edited  # every declaration moves down a line
    same(r.parse(grown), parse_recovering(grown, "m.lmp"))


def test_a_declaration_keyword_inside_a_long_string_does_not_cut_the_file():
    text = 'signature S {\n  """Line one\nprogram inside the text\n"""\n  a: str -> b: str\n}\nprogram p() -> (y: str) {\n  return {"y": "x"}\n}\n'
    assert [line for _, line, _ in pieces(text)] == [1, 7]
    same(Reparser("s.lmp").parse(text), parse_recovering(text, "s.lmp"))


SRC = """signature QA(question: str "what is asked" -> answer: str)
lm fast = "openai/gpt-4o-mini" (temperature=0.2)
module qa = ChainOfThought(QA, lm="fast")
metric judge = exact_match(answer)

program main(question: str) -> (answer: str) {
  r = qa(question=question)
  words = split(r.answer)
  return {"answer": join(words, " ")}
}
"""


def test_hover_definition_and_references():
    ix = index_source(SRC, "q.lmp")
    assert ix.analysis.diagnostics == []
    assert "what is asked" in hover(ix, 7, 11)  # question= of qa(...)
    assert "r: prediction(reasoning, answer)" in hover(ix, 7, 3)
    assert "words: list[str]" in hover(ix, 8, 3)
    assert "split(x, [y])" in hover(ix, 8, 11)
    assert 'lm fast = "openai/gpt-4o-mini" (temperature=0.2)' in hover(ix, 3, 37)  # the "fast" inside lm="fast"
    _, sym = ix.at(7, 8)
    assert sym.key == ("decl", "qa") and sym.span.line == 3
    assert [(s.line, s.col) for s in ix.references(sym)] == [(3, 8), (7, 7)]
    _, out = ix.at(4, 28)  # the metric's field is the program's output
    assert out.key == ("output", "main", "answer")
    assert [(s.line, s.col) for s in ix.references(out)] == [(4, 28), (6, 33), (9, 12)]


def test_rename_everywhere_and_refusals():
    ix = index_source(SRC, "q.lmp")
    assert [(s.line, s.col) for s in rename(ix, 2, 4, "quick")] == [(2, 4), (3, 36)]  # inside the quotes
    assert [(s.line, s.col) for s in rename(ix, 1, 14, "query")] == [(1, 14), (7, 10)]
    assert [(s.line, s.col) for s in rename(ix, 8, 3, "tokens")] == [(8, 3), (9, 26)]
    for new, message in (("program", "keyword"), ("2x", "not a valid name"), ("main", "already a name"), ("len", "already a name")):
        with pytest.raises(RenameError, match=message):
            rename(ix, 3, 8, new)
    with pytest.raises(RenameError, match="already a name in 'main'"):
        rename(ix, 8, 3, "r")
    with pytest.raises(RenameError, match="nothing to rename"):
        rename(ix, 5, 1, "x")


def labels(ix, line, col):
    return [c.label for c in complete(ix, line, col)]


def test_completion_by_place():
    text = SRC + "module m2 = Predict(QA, temperature=0.1, )\nmodule m3 = \nmodule m4 = Predict(QA, lm=)\n"
    ix = index_source(text, "q.lmp")
    assert "signature" in labels(ix, 11, 1) and "program" in labels(ix, 11, 1)
    assert "max_tokens" in labels(ix, 11, 42) and "temperature" not in labels(ix, 11, 42)
    assert labels(ix, 12, 13) == ["Predict", "ChainOfThought", "MultiChainComparison", "ReAct", "ProgramOfThought", "BestOfN"]
    assert labels(ix, 13, 28) == ['"fast"']
    assert labels(ix, 7, 10)[:1] == ["question"]  # inside qa( -> its inputs
    body = labels(ix, 8, 3)
    assert {"r", "words", "question", "qa", "split", "return"} <= set(body)


def test_outline_lists_declarations_with_their_fields():
    ix = index_source(SRC, "q.lmp")
    assert [(s.name, s.kind, [k.name for k in kids]) for s, kids in outline(ix)] == [
        ("QA", "signature", ["question", "answer"]),
        ("fast", "lm", []),
        ("qa", "module", []),
        ("judge", "metric", []),
        ("main", "program", ["question", "answer"]),
    ]


def test_a_broken_file_still_answers():
    text = SRC.replace("words = split(r.answer)", "words = split(r.answer")
    ix = index_source(text, "q.lmp")
    assert [d.message for d in ix.analysis.diagnostics][:1] == ["unexpected 'return'"]
    assert "ChainOfThought" in hover(ix, 7, 8)
