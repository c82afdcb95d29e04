"""The LALR driver (lmc.lalr) against Lark itself: same trees, same positions, same verdict, and a logged fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from lark.exceptions import UnexpectedInput

from lmc import lalr
from lmc.parser import parse

ROOT = Path(__file__).resolve().parent.parent
TEXTS = sorted([*ROOT.glob("programs/*.lmp"), *ROOT.glob("tests/fixtures/**/*.lmp"), *ROOT.glob("editors/**/*.lmp")])


def shape(t):
    if isinstance(t, lalr.Tok):
        return (t.type, t.value, t.start, t.end)
    return (t.data, t.start, t.end, [shape(c) for c in t.children])


def lark_shape(text: str):
    try:
        return shape(lalr.from_lark(lalr.lark_parser().parse(text)))
    except UnexpectedInput:
        return None


def driver_shape(text: str):
    try:
        return shape(lalr.driver().parse(text))
    except lalr.Reject:
        return None


def test_there_are_programs_and_fixtures_to_compare():
    assert len(TEXTS) > 50


# The lower fixtures hold a program, then its expected IR.
LOWER_FIXTURES = sorted(ROOT.glob("tests/fixtures/lower/*.txt"))


def program_text(path: Path) -> str:
    text = path.read_text(encoding="utf-8").removeprefix("\ufeff").replace("\r\n", "\n")
    return text.partition("# expected IR\n")[0] if path.suffix == ".txt" else text


@pytest.mark.parametrize("path", TEXTS + LOWER_FIXTURES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_driver_builds_lark_s_tree_with_lark_s_positions(path):
    text = program_text(path)
    assert driver_shape(text) == lark_shape(text)


@pytest.mark.parametrize(
    "text",
    [
        'program p(x: str) -> (y: str) { return {"y": f"{x} and {x}"} }',
        'program p(x: int) -> (y: int) { y = -(x + 2) * 3 // 4\n return {"y": y} }',
        'signature S { in: a: list[str]?, b: "x" | "y" out: c: dict[str, int] }',
        "program p() -> (y: str) {",  # unexpected end of file: both refuse
        "program p() -> (y: str) { return @ }",  # an unexpected character: both refuse
        "",
    ],
)
def test_the_driver_agrees_with_lark_on_edge_cases(text):
    assert driver_shape(text) == lark_shape(text)


@pytest.fixture
def counted():
    """FALLBACKS counted from zero for one test (other tests' syntax errors count too), restored after."""
    before = dict(lalr.FALLBACKS)
    lalr.FALLBACKS.clear()
    yield lalr.FALLBACKS
    lalr.FALLBACKS.clear()
    lalr.FALLBACKS.update(before)


def test_a_driver_failure_is_logged_counted_and_parsed_by_lark(monkeypatch, caplog, counted):
    text = (ROOT / "programs" / "sentiment.lmp").read_text(encoding="utf-8")
    expected = lark_shape(text)

    def broken(self, text, comments=None):
        raise KeyError("state 7")

    monkeypatch.setattr(lalr.Driver, "parse", broken)
    with caplog.at_level(logging.WARNING, logger="lmc.lalr"):
        tree = lalr.parse_tree(text)
    assert shape(tree) == expected
    assert counted["failed"] == 1
    assert any("LALR driver failed" in r.getMessage() and "KeyError" in r.getMessage() for r in caplog.records)


def test_a_rejection_of_valid_input_is_a_logged_bug(monkeypatch, caplog, counted):
    def refuse(self, text, comments=None):
        raise lalr.Reject("unexpected token")

    monkeypatch.setattr(lalr.Driver, "parse", refuse)
    with caplog.at_level(logging.WARNING, logger="lmc.lalr"):
        lalr.parse_tree('program p(x: str) -> (y: str) { return {"y": x} }')
    assert counted["rejected"] == 1
    assert any("Lark accepts" in r.getMessage() for r in caplog.records)


def test_a_syntax_error_is_reported_by_the_recovering_driver_without_lark(caplog, counted):
    with caplog.at_level(logging.WARNING, logger="lmc.lalr"):
        with pytest.raises(Exception, match="unexpected"):
            parse("program p() -> (y: str) { return @ }", "bad.lmp")
    assert not counted and not caplog.records


# Not tests/fixtures/diagnostics: there the recovering driver knows better than Lark on purpose
# (a declaration keyword first on its line ends an unfinished declaration).
@pytest.mark.parametrize("path", [p for p in TEXTS if "diagnostics" not in p.parts], ids=lambda p: str(p.relative_to(ROOT)))
def test_the_recovering_driver_s_first_error_is_lark_s(path):
    """Where Lark refuses a text, the recovering driver's first diagnostic is the one Lark's error gives."""
    from lmc.parser import parse_recovering
    from lmc.syntax import syntax_diagnostic

    text = program_text(path)
    try:
        lalr.lark_parser().parse(text)
        return
    except UnexpectedInput as e:
        expected = syntax_diagnostic(lalr.lark_parser(), e, text, "x.lmp")
    assert parse_recovering(text, "x.lmp").diagnostics[0] == expected
