"""The words of the .lmp language, and a Lark syntax error told in those words with a hint of what was expected."""

from __future__ import annotations

import re
from typing import Any

from .errors import Diagnostic, Span

KEYWORDS = {
    "signature", "module", "retriever", "tool", "lm", "metric", "program",
    "for", "in", "if", "elif", "else", "while", "return", "assert", "suggest",
    "and", "or", "not", "break", "continue",
}
CONSTANTS = {"true": True, "True": True, "false": False, "False": False, "none": None, "None": None, "null": None}

# Words for terminals, so parse errors never show token names.
TOKEN_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "LONG_STRING": "a string",
    "FSTRING": "an f-string", "LBRACE": "'{'", "RBRACE": "'}'", "LPAR": "'('", "RPAR": "')'",
    "LSQB": "'['", "RSQB": "']'", "COMMA": "','", "COLON": "':'", "EQUAL": "'='", "DOT": "'.'",
    "VBAR": "'|'", "OPTMARK": "'?'", "ADDOP": "an operator", "MULOP": "an operator",
    "COMPOP": "a comparison", "AUGOP": "'+='", "__ANON_0": "'->'", "MORETHAN": "'>'",
    "CHECK_TARGET": "'for <module>'", "ASSERT": "'assert'", "SUGGEST": "'suggest'",
    "$END": "the end of the file",
}


def _tok_word(lark, name: str) -> str:
    if name in TOKEN_WORDS:
        return TOKEN_WORDS[name]
    try:
        term = lark.get_terminal(name)
        pat = term.pattern
        if pat.type == "str":
            return f"'{pat.value}'"
    except KeyError:
        pass
    return name.lower()


def _describe(tok) -> str:
    if tok is None or tok.type == "$END":
        return "the end of the file"
    text = str(tok)
    if len(text) > 30:
        text = text[:27] + "..."
    return f"'{text}'"



def syntax_diagnostic(lark: Any, e: Any, text: str, path: str) -> Diagnostic:
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

    line = getattr(e, "line", 1) or 1
    col = getattr(e, "column", 1) or 1
    if isinstance(e, UnexpectedCharacters):
        pos = e.pos_in_stream
        ch = text[pos] if pos is not None and pos < len(text) else ""
        if ch in "\"'":
            return Diagnostic(Span(path, line, col, line, col + 1), "unterminated string",
                              "close it with a matching quote on the same line, or use \"\"\" for text over several lines")
        hint = None
        shown = repr(ch) if ch else "character"
        return Diagnostic(Span(path, line, col, line, col + 1), f"unexpected character {shown}", hint)
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        lines = text.splitlines() or [""]
        line = len(lines)
        col = len(lines[-1]) + 1
        expected = getattr(e, "expected", None) or getattr(e, "accepts", None) or ()
        hint = _expected(lark, expected)
        if "'}'" in {_tok_word(lark, t) for t in expected}:
            hint = "a '{' block is not closed; expected '}'"
        return Diagnostic(Span(path, line, col, line, col + 1), "unexpected end of file", hint)
    assert isinstance(e, UnexpectedToken)
    tok = e.token
    expected = e.accepts or e.expected or set()
    words = {_tok_word(lark, t) for t in expected}
    end_col = (tok.end_column or col + 1) if (tok.end_line or line) == line else col + 1
    msg = f"unexpected {_describe(tok)}"
    hint = _expected(lark, expected)
    text_tok = str(tok)
    if text_tok in KEYWORDS and "a name" in words:
        msg = f"'{text_tok}' is a keyword and cannot be used as a name"
        hint = None
    else:
        # `for = 3`: the parser only notices at '=', but the problem is the keyword before it.
        before = text.splitlines()[line - 1][: col - 1] if line - 1 < len(text.splitlines()) else ""
        m = re.search(r"(?:^|[^A-Za-z0-9_.])([A-Za-z_]+)\s*$", before)
        if m and m.group(1) in KEYWORDS and text_tok in ("=", "+=", "-=", "*=", "/="):
            kw_col = m.start(1) + 1
            return Diagnostic(Span(path, line, kw_col, line, kw_col + len(m.group(1))),
                              f"'{m.group(1)}' is a keyword and cannot be used as a name", "pick another name")
    return Diagnostic(Span(path, line, col, line, max(end_col, col + 1)), msg, hint)


_EXPR_START = {"a name", "a number", "a string"}


def _expected(lark, names) -> str | None:
    """Say what was expected in words, folding expression starters into 'an expression'."""
    words = {_tok_word(lark, t) for t in names}
    words.discard("the end of the file") if len(words) > 1 else None
    if _EXPR_START <= words:
        words -= {"a name", "a number", "a string", "an f-string", "'['", "'{'", "'('", "'not'", "an operator"}
        words.add("an expression")
    if not words:
        return None
    return "expected " + _join_or(sorted(words))


def _join_or(words: list[str]) -> str:
    if len(words) > 8:
        words = words[:8] + ["..."]
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " or " + words[-1]


_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SHORTHAND_HINT = 'write it as "inputs -> outputs", e.g. "question -> answer"'


def shorthand_fields(text: str) -> tuple[list[str], list[str], list[tuple[str, str | None]]]:
    """A signature shorthand's input and output names, and its problems as (message, hint) pairs.

    Both `signature S = "..."` and `Predict("...")` are read here, so they accept the same texts.
    A name written twice is kept twice: the checker reports it where it knows the signature's name.

    >>> shorthand_fields("question, context -> answer")
    (['question', 'context'], ['answer'], [])
    >>> shorthand_fields("q, 1x -> ")[2]
    [("'1x' is not a valid field name", "field names are letters, digits and '_'"), ('a signature needs at least one output field', None)]
    """
    if text.count("->") != 1:
        return [], [], [("a signature shorthand needs exactly one '->'", _SHORTHAND_HINT)]
    problems: list[tuple[str, str | None]] = []
    sides: list[list[str]] = []
    for side in text.split("->"):
        names = []
        for raw in side.split(","):
            name = raw.strip()
            if not name and not side.strip():
                continue
            if not _FIELD_NAME.fullmatch(name):
                problems.append((f"'{name}' is not a valid field name" if name else "empty field name in signature shorthand",
                                 "field names are letters, digits and '_'"))
                continue
            names.append(name)
        sides.append(names)
    if not sides[1]:
        problems.append(("a signature needs at least one output field", None))
    return sides[0], sides[1], problems
