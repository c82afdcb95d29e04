"""The words of the .lmp language (keywords, escapes, comments), and syntax errors told in those words with a hint of what was expected."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator

from . import nodes as n
from .errors import CompileError, Diagnostic, Span

KEYWORDS = {
    "signature",
    "module",
    "retriever",
    "tool",
    "lm",
    "metric",
    "program",
    "for",
    "in",
    "if",
    "elif",
    "else",
    "while",
    "return",
    "assert",
    "suggest",
    "and",
    "or",
    "not",
    "break",
    "continue",
}
CONSTANTS = {"true": True, "True": True, "false": False, "False": False, "none": None, "None": None, "null": None}

# Words for terminals, so parse errors never show token names.
TOKEN_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "LONG_STRING": "a string",
    "FSTRING": "an f-string",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
    "COLON": "':'",
    "EQUAL": "'='",
    "DOT": "'.'",
    "VBAR": "'|'",
    "OPTMARK": "'?'",
    "ADDOP": "an operator",
    "MULOP": "an operator",
    "COMPOP": "a comparison",
    "AUGOP": "'+='",
    "__ANON_0": "'->'",
    "MORETHAN": "'>'",
    "CHECK_TARGET": "'for <module>'",
    "ASSERT": "'assert'",
    "SUGGEST": "'suggest'",
    "$END": "the end of the file",
}


DECL_KEYWORDS = ("signature", "module", "retriever", "tool", "lm", "metric", "program")


@dataclass(frozen=True)
class SyntaxProblem:
    """A syntax error in plain terms: an unlexable character (`char`), an unexpected token or the end of the file (`eof`)."""

    kind: str
    pos: int
    line: int
    col: int
    token_type: str = ""
    token_text: str = ""
    end_line: int = 0
    end_col: int = 0
    expected: frozenset[str] = frozenset()


def problem_from_lark(e: Any) -> SyntaxProblem:
    """Lark's UnexpectedInput as a SyntaxProblem."""
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

    line = getattr(e, "line", 1) or 1
    col = getattr(e, "column", 1) or 1
    if isinstance(e, UnexpectedCharacters):
        return SyntaxProblem("char", e.pos_in_stream or 0, line, col)
    expected = frozenset(getattr(e, "accepts", None) or getattr(e, "expected", None) or ())
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        return SyntaxProblem("eof", 0, line, col, expected=expected)
    assert isinstance(e, UnexpectedToken)
    tok = e.token
    return SyntaxProblem("token", tok.start_pos or 0, line, col, tok.type, str(tok), tok.end_line or line, tok.end_column or col + 1, expected)


def _tok_word(words: dict[str, str], name: str) -> str:
    if name in TOKEN_WORDS:
        return TOKEN_WORDS[name]
    if name in words:
        return f"'{words[name]}'"
    return name.lower()


def _describe(text: str) -> str:
    if len(text) > 30:
        text = text[:27] + "..."
    return f"'{text}'"


def syntax_diagnostic(lark: Any, e: Any, text: str, path: str) -> Diagnostic:
    """Lark's syntax error told in the language's words."""
    words = {t.name: t.pattern.value for t in lark.terminals if t.pattern.type == "str"}
    return diagnose(problem_from_lark(e), text, path, words)


def diagnose(p: SyntaxProblem, text: str, path: str, words: dict[str, str]) -> Diagnostic:
    """One syntax problem as a diagnostic with a hint of what was expected; `words` spells the keyword terminals."""
    line, col = p.line, p.col
    if p.kind == "char":
        ch = text[p.pos] if p.pos < len(text) else ""
        if ch in "\"'":
            return Diagnostic(
                Span(path, line, col, line, col + 1),
                "unterminated string",
                'close it with a matching quote on the same line, or use """ for text over several lines',
            )
        shown = repr(ch) if ch else "character"
        return Diagnostic(Span(path, line, col, line, col + 1), f"unexpected character {shown}")
    found = {_tok_word(words, t) for t in p.expected}
    if p.kind == "eof":
        lines = text.splitlines() or [""]
        line = len(lines)
        col = len(lines[-1]) + 1
        hint = _expected(words, p.expected)
        if "'}'" in found:
            hint = "a '{' block is not closed; expected '}'"
        return Diagnostic(Span(path, line, col, line, col + 1), "unexpected end of file", hint)
    end_col = p.end_col if p.end_line == line else col + 1
    msg = f"unexpected {_describe(p.token_text)}"
    hint = _expected(words, p.expected)
    text_tok = p.token_text
    if text_tok in DECL_KEYWORDS and p.token_type != "NAME" and not text[text.rfind("\n", 0, p.pos) + 1 : p.pos].strip():
        # A declaration keyword first on its line where the declaration above is unfinished.
        if "'}'" in found:
            hint = "a '{' block above is not closed; expected '}' before the next declaration"
    elif text_tok in KEYWORDS and "a name" in found:
        msg = f"'{text_tok}' is a keyword and cannot be used as a name"
        hint = None
    else:
        # `for = 3`: the parser only notices at '=', but the problem is the keyword before it.
        lines = text.splitlines()
        before = lines[line - 1][: col - 1] if line - 1 < len(lines) else ""
        m = re.search(r"(?:^|[^A-Za-z0-9_.])([A-Za-z_]+)\s*$", before)
        if m and m.group(1) in KEYWORDS and text_tok in ("=", "+=", "-=", "*=", "/="):
            kw_col = m.start(1) + 1
            return Diagnostic(
                Span(path, line, kw_col, line, kw_col + len(m.group(1))),
                f"'{m.group(1)}' is a keyword and cannot be used as a name",
                "pick another name",
            )
    return Diagnostic(Span(path, line, col, line, max(end_col, col + 1)), msg, hint)


_EXPR_START = {"a name", "a number", "a string"}


def _expected(words: dict[str, str], names) -> str | None:
    """Say what was expected in words, folding expression starters into 'an expression'."""
    found = {_tok_word(words, t) for t in names}
    found.discard("the end of the file") if len(found) > 1 else None
    if _EXPR_START <= found:
        found -= {"a name", "a number", "a string", "an f-string", "'['", "'{'", "'('", "'not'", "an operator"}
        found.add("an expression")
    if not found:
        return None
    return "expected " + _join_or(sorted(found))


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
                problems.append(
                    (
                        f"'{name}' is not a valid field name" if name else "empty field name in signature shorthand",
                        "field names are letters, digits and '_'",
                    )
                )
                continue
            names.append(name)
        sides.append(names)
    if not sides[1]:
        problems.append(("a signature needs at least one output field", None))
    return sides[0], sides[1], problems


def comments_in(text: str, path: str, first_line: int = 1) -> Iterator[n.Comment]:
    """Comments with positions, found by a small scanner that skips strings."""
    i, line, col = 0, first_line, 1
    size = len(text)
    while i < size:
        c = text[i]
        if c == "\n":
            line += 1
            col = 1
            i += 1
            continue
        if text.startswith('"""', i):
            j = text.find('"""', i + 3)
            j = size if j < 0 else j + 3
            chunk = text[i:j]
            nl = chunk.count("\n")
            if nl:
                line += nl
                col = len(chunk) - chunk.rfind("\n")
            else:
                col += len(chunk)
            i = j
            continue
        if c in "\"'":
            j = i + 1
            while j < size and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, size)
            col += j - i
            i = j
            continue
        if c == "#":
            j = text.find("\n", i)
            j = size if j < 0 else j
            yield n.Comment(Span(path, line, col, line, col + (j - i)), text=text[i:j].rstrip())
            col += j - i
            i = j
            continue
        col += 1
        i += 1


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0", "{": "\\{", "}": "\\}"}


def unescape(body: str, span: Span) -> str:
    """A string literal's body with its escapes read; an unknown escape is a CompileError."""
    if "\\" not in body:
        return body
    out = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in _ESCAPES and nxt not in "{}":
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[i + 2 : i + 6] or ""):
                out.append(chr(int(body[i + 2 : i + 6], 16)))
                i += 6
                continue
            if nxt == "\n":
                i += 2
                continue
            raise CompileError(f"unknown escape '\\{nxt}' in string", span, "known escapes: \\n \\t \\r \\\\ \\\" \\' \\uXXXX")
        out.append(c)
        i += 1
    return "".join(out)
