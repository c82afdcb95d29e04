"""Parse .lmp text into the AST: the parse tree (lmc.lalr) turned into nodes (lmc.builder), syntax errors into diagnostics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import nodes as n
from .builder import Builder
from .errors import CompileError, CompileErrors, Diagnostic, Span
from .lalr import Reject, Tok, driver, lark_parser, parse_tree
from .limits import FileRefused, read_bounded
from .recover import parse_recovering as parse_recovering_tree
from .syntax import CONSTANTS, KEYWORDS, SyntaxProblem, comments_in, diagnose, syntax_diagnostic

__all__ = ["CONSTANTS", "KEYWORDS", "Parsed", "parse", "parse_file", "parse_recovering", "read_source"]


def parse(text: str, path: str = "<input>") -> n.File:
    """Parse one file; raises CompileErrors (with every syntax problem found) on failure."""
    result = parse_recovering(text, path)
    if result.diagnostics:
        raise CompileErrors(result.diagnostics, {path: result.text})
    return result.file


@dataclass(frozen=True)
class Parsed:
    """A file parsed as far as it goes: its AST (what did not parse left out), the syntax diagnostics, and
    the names inside the skipped text, whose later "not defined" errors are consequences, not news."""

    file: n.File
    text: str
    diagnostics: list[Diagnostic]
    skipped: frozenset[str] = frozenset()


def parse_recovering(text: str, path: str = "<input>") -> Parsed:
    """Parse one file, going on past syntax errors: never raises CompileErrors."""
    if text.startswith("\ufeff"):
        text = text[1:]
    with n.cycle_collector_paused():
        piece = parse_piece(text, path)
    file = n.File(Span(path, 1, 1, text.count("\n") + 1, 1), path=path, decls=piece.decls, comments=piece.comments)
    return Parsed(file, text, piece.diagnostics, piece.skipped)


@dataclass(frozen=True)
class Piece:
    """Declarations parsed from one stretch of a file (all of it, or one declaration's lines: lmc.incremental)."""

    decls: tuple[n.Decl, ...]
    comments: tuple[n.Comment, ...]
    diagnostics: list[Diagnostic]
    skipped: frozenset[str]


def parse_piece(text: str, path: str, first_line: int = 1, next_decl: str | None = None) -> Piece:
    """Parse `text`, which starts at column 1 of line `first_line` of the file; `next_decl` is the
    declaration keyword that follows it in the file, if any, so that an unfinished declaration is
    reported at that keyword exactly as a parse of the whole file would report it."""
    found: list = []
    skipped: frozenset[str] = frozenset()
    diagnostics: list[Diagnostic] = []
    shift = first_line - 1
    try:
        tree, problems, skipped = _tree(text, found)
        if problems:
            words = driver().words  # type: ignore[union-attr]  # problems come from the driver only
            if next_decl is not None:
                problems = [_at_next_decl(p, text, next_decl) for p in problems]
            diagnostics = [_shifted(diagnose(p, text, path, words), shift) for p in problems]
    except RecursionError:
        return Piece((), (), [Diagnostic(Span(path, first_line, 1, first_line, 2), "program is nested too deeply to parse")], frozenset())
    except Exception as e:
        from lark.exceptions import UnexpectedInput

        if not isinstance(e, UnexpectedInput):
            raise
        return Piece((), (), [_shifted(syntax_diagnostic(lark_parser(), e, text, path), shift)], frozenset())
    builder = Builder(path, text, line0=shift)
    decls: list[n.Decl] = []
    for d in tree.children:
        try:
            decls.append(builder.decl(d))
        except CompileError as e:
            builder.errors.append(e.diagnostic())
        except RecursionError:
            builder.errors.append(Diagnostic(Span(path, first_line, 1, first_line, 2), "program is nested too deeply to parse"))
            break
    if found == [None]:
        comments = tuple(comments_in(text, path, first_line))
    else:
        span = builder.span
        comments = tuple(n.Comment(span(Tok("COMMENT", "", start, end)), text=text[start:end].rstrip()) for start, end in found)
    return Piece(tuple(decls), comments, diagnostics + builder.errors, skipped)


def _shifted(d: Diagnostic, lines: int) -> Diagnostic:
    if not lines:
        return d
    sp = d.span
    return Diagnostic(Span(sp.path, sp.line + lines, sp.col, sp.end_line + lines, sp.end_col), d.message, d.hint, d.severity)


def _at_next_decl(p: SyntaxProblem, text: str, keyword: str) -> SyntaxProblem:
    """The end of a piece is where the next declaration's keyword stands in the file."""
    if p.kind != "eof":
        return p
    line = text.count("\n") + 1
    return SyntaxProblem("token", len(text), line, 1, keyword.upper(), keyword, line, 1 + len(keyword), p.expected)


def _tree(text: str, comments: list):
    """(tree, syntax problems, skipped names): the fast driver first, then the recovering one, Lark where there is no driver."""
    drv = driver()
    if drv is not None:
        try:
            return drv.parse(text, comments), [], frozenset()
        except Reject:
            pass
        except RecursionError:
            raise
        except Exception:  # a driver bug: parse_tree logs it and lets Lark answer
            return parse_tree(text, comments), [], frozenset()
        del comments[:]
        tree, rec = parse_recovering_tree(drv, text, comments)
        if rec.problems:
            return tree, rec.problems, frozenset(rec.skipped)
        del comments[:]
    return parse_tree(text, comments), [], frozenset()


def read_source(path: str | Path) -> str:
    """A .lmp file's text (UTF-8, BOM and CRLF accepted); unreadable files are one-line errors."""

    def fail(message: str) -> FileRefused:
        if message == "is a directory":
            message = "is a directory, expected a .lmp file"
        return FileRefused(f"{path}: {message}")

    # Bounded and regular files only: `lmc check /dev/zero` or a FIFO is refused before reading.
    data = read_bounded(path, "program", fail)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise CompileErrors(
            [Diagnostic(Span(str(path), line, 1, line, 2), "file is not valid UTF-8", f"byte 0x{data[e.start]:02x} at offset {e.start}")]
        ) from None
    return text.replace("\r\n", "\n")


def parse_file(path: str | Path) -> n.File:
    """Read and parse a file; a missing or unreadable file is a one-line LmcError."""
    return parse(read_source(path), str(path))
