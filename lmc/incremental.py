"""Reparsing a file declaration by declaration, so an edit costs the declaration it touched, not the whole file.

A file is cut before every line that starts (at column 1, outside a triple-quoted string) with a
declaration keyword; each piece is parsed on its own (the grammar's top level is a plain list of
declarations, so the pieces' declarations are the file's) and kept, keyed by its text, its first
line and the keyword after it.  An edit inside a line reparses one piece; one that adds or
removes lines reparses the pieces below it, whose lines moved.  The result is the same `Parsed`
as `parser.parse_recovering` gives for the whole text (tests/test_ide.py holds them equal).
"""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

from . import nodes as n
from .errors import Diagnostic, Span
from .parser import Parsed, Piece, parse_piece
from .syntax import DECL_KEYWORDS

_DECL_START = re.compile(r"^(?:" + "|".join(DECL_KEYWORDS) + r")(?![A-Za-z0-9_])", re.M)
_LONG_QUOTE = re.compile('"""')


def pieces(text: str) -> list[tuple[int, int, str | None]]:
    """(start offset, first line, keyword of the next piece) for each piece of `text`.

    >>> pieces('lm a = "x/y"\\nprogram p() -> (y: str) {\\n  return {"y": "a"}\\n}\\n')
    [(0, 1, 'program'), (13, 2, None)]
    """
    quotes = [m.start() for m in _LONG_QUOTE.finditer(text)] if '"""' in text else []
    cuts = [0]
    for m in _DECL_START.finditer(text):
        at = m.start()
        if at and not _inside_long_string(quotes, at):
            cuts.append(at)
    out = []
    line = 1
    for i, at in enumerate(cuts):
        if i:
            line += text.count("\n", cuts[i - 1], at)
        nxt = None
        if i + 1 < len(cuts):
            following = _DECL_START.match(text, cuts[i + 1])
            nxt = following.group() if following else None
        out.append((at, line, nxt))
    return out


def _inside_long_string(quotes: list[int], at: int) -> bool:
    from bisect import bisect_left

    return bisect_left(quotes, at) % 2 == 1


def _shifted(x: Any, lines: int) -> Any:
    """`x` (a node, a diagnostic, a tuple of them) with every span moved down `lines` lines."""
    if isinstance(x, Span):
        return Span(x.path, x.line + lines, x.col, x.end_line + lines, x.end_col)
    if isinstance(x, tuple):
        return tuple([_shifted(i, lines) for i in x])
    names = _FIELDS.get(type(x))
    if names is None:
        if not isinstance(x, (n.Node, Diagnostic)):
            return x
        names = _FIELDS[type(x)] = tuple(f.name for f in fields(x))
    out = object.__new__(type(x))
    for name in names:
        object.__setattr__(out, name, _shifted(getattr(x, name), lines))
    return out


_FIELDS: dict[type, tuple[str, ...]] = {}


class Reparser:
    """Parses successive versions of one file, reusing the pieces that did not change (moved, when lines above
    them were added or removed: shifting a piece's spans costs a fraction of parsing it again)."""

    def __init__(self, path: str):
        self.path = path
        self.cache: dict[tuple[str, str | None], tuple[int, Piece]] = {}
        self.reused = 0  # pieces taken from the last version (for tests and the benchmark)

    def parse(self, text: str) -> Parsed:
        if text.startswith("\ufeff"):
            text = text[1:]
        cuts = pieces(text)
        cache: dict[tuple[str, str | None], tuple[int, Piece]] = {}
        decls: list[n.Decl] = []
        comments: list[n.Comment] = []
        diagnostics = []
        skipped: set[str] = set()
        self.reused = 0
        with n.cycle_collector_paused():
            for i, (start, line, nxt) in enumerate(cuts):
                end = cuts[i + 1][0] if i + 1 < len(cuts) else len(text)
                key = (text[start:end], nxt)
                hit = self.cache.get(key)
                if hit is None:
                    piece = parse_piece(key[0], self.path, line, nxt)
                else:
                    self.reused += 1
                    at, piece = hit
                    if at != line:
                        d = line - at
                        piece = Piece(
                            _shifted(piece.decls, d), _shifted(piece.comments, d), list(_shifted(tuple(piece.diagnostics), d)), piece.skipped
                        )
                cache[key] = (line, piece)
                decls += piece.decls
                comments += piece.comments
                diagnostics += piece.diagnostics
                skipped |= piece.skipped
        self.cache = cache
        end_line = text.count("\n") + 1
        file = n.File(Span(self.path, 1, 1, end_line, 1), path=self.path, decls=tuple(decls), comments=tuple(comments))
        return Parsed(file, text, diagnostics, frozenset(skipped))
