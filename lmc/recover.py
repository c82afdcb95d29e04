"""Syntax error recovery: the LALR driver runs on past an error, which is noted, and resumes at the next statement or declaration.

The strategy is panic mode on the driver's own stack.  At an unexpected token the tokens after
it are skipped (balancing brackets) up to one that starts a line, closes the current block,
opens a declaration or ends the file; the stack is cut back to the innermost block (or the top
level) that can take that token, closing open blocks with implied '}' where a declaration or
the end of the file comes first.  What was dropped is lost to the checker, so the names it held
are kept (`skipped`) for the caller to silence the "not defined" errors they would cause.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

from .lalr import Driver, Tok, Tree
from .syntax import DECL_KEYWORDS, SyntaxProblem

_DECL_TYPES = {w.upper(): w for w in DECL_KEYWORDS}
_OPEN = {"LPAR", "LSQB", "LBRACE"}
_CLOSE = {"RPAR", "RSQB", "RBRACE"}
# More problems than this in one file are noise: the rest of the file is parsed without reporting.
MAX_PROBLEMS = 100


@dataclass
class Recovery:
    """One recovering parse of `text`: the problems found and the names inside what was skipped."""

    driver: Driver
    text: str
    problems: list[SyntaxProblem] = field(default_factory=list)
    skipped: set[str] = field(default_factory=set)
    line_starts: list[int] = field(default_factory=list)
    _root: tuple | None = None
    _errors_at: set[int] = field(default_factory=set)
    _skipped_to: int = -1  # where the last run of unlexable characters ended

    def __post_init__(self) -> None:
        self.line_starts = [0] + [i + 1 for i, c in enumerate(self.text) if c == "\n"]

    # -- what the driver calls --------------------------------------------------
    def keyword_at_line_start(self, value: str, pos: int) -> str:
        """A declaration keyword first on its line is that keyword, not a name: a missing '}' above is then caught at it."""
        if value in DECL_KEYWORDS and self.first_on_line(pos):
            return value.upper()
        return "NAME"

    def unlexable(self, pos: int, stack: list[int]) -> Tok | int:
        """The state's lexer found nothing at `pos`: a token of another state (an unexpected token), else skip the characters."""
        tok = self.root_token(pos)
        if tok is not None:
            return tok
        text = self.text
        line, col = self.where(pos)
        self.note(SyntaxProblem("char", pos, line, col, token_text=text[pos]))
        if text[pos] in "\"'":
            # An unterminated string is read as a string to the end of its line, so what follows parses as meant.
            end = text.find("\n", pos)
            end = len(text) if end < 0 else end
            self._errors_at.add(pos)
            return Tok("STRING", text[pos:end] + text[pos], pos, end)
        else:
            end = pos + 1
            while end < len(text) and not text[end].isspace() and self.root_token(end) is None:
                end += 1
        self._skipped_to = end
        return end

    def unexpected(self, tok: Tok, stack: list[int], values: list) -> tuple[int, list[Tok]]:
        """Note the error at `tok`, cut the stack back and return (where to lex on, tokens to feed first)."""
        # A second error at the same token (after resuming at it) skips it, so parsing always moves on.
        again = tok.start in self._errors_at
        self._errors_at.add(tok.start)
        # The token right after skipped characters is refused because of them: one mistake, one error.
        echo = self._skipped_to >= 0 and self.next_token(self._skipped_to).start == tok.start
        if not (again or echo):
            self.note(self.problem(tok, stack))
        base = self.innermost_block(stack)
        depth = 0
        for v in values[base:]:
            if type(v) is Tok:
                depth += (v.type in _OPEN) - (v.type in _CLOSE)
        # A line indented no deeper than the broken statement's first line starts the next statement,
        # whatever brackets the broken one left open (`x = f(a,` with its ')' forgotten).
        first = next((v for v in values[base:] if v.start >= 0), tok)
        indent = self.indent(first.start)
        cand = tok
        skipped: list[Tok] = []
        while True:
            found = None if (again and cand is tok) else self.sync(cand, stack, max(depth, 0), indent)
            if found is not None:
                index, closes, relexed = found
                for v in values[index:]:
                    self.names(v)
                for t in skipped:
                    self.names(t)
                del stack[index + 1 :]
                del values[index:]
                implied = [Tok("RBRACE", "}", relexed.start, relexed.start) for _ in range(closes)]
                if closes:  # a body cut short: its missing return is no news
                    self.skipped.add("return")
                return relexed.end, implied + [relexed]
            skipped.append(cand)
            if cand.type in _OPEN:
                depth += 1
            elif cand.type in _CLOSE:
                depth -= 1
            if cand.type == "$END":  # pragma: no cover - the end of the file always resynchronises
                raise AssertionError("no place to resume parsing")
            cand = self.next_token(cand.end)

    # -- finding where to resume ---------------------------------------------------
    def sync(self, cand: Tok, stack: list[int], depth: int, indent: int) -> tuple[int, int, Tok] | None:
        """(stack index to cut back to, implied '}' to feed, the token as lexed there) if parsing can resume at `cand`."""
        if cand.type == "$END":
            return self.resume(stack, cand, closes=True)
        line_start = self.first_on_line(cand.start)
        if cand.type in _DECL_TYPES and line_start:
            return self.resume(stack, cand, closes=True)
        if line_start and self.indent(cand.start) <= indent:
            return self.resume(stack, cand, closes=False, innermost=True)
        if depth > 0:
            return None
        if cand.type == "RBRACE" or line_start:
            return self.resume(stack, cand, closes=False, innermost=True)
        return None

    def resume(self, stack: list[int], cand: Tok, closes: bool, innermost: bool = False) -> tuple[int, int, Tok] | None:
        actions = self.driver.actions
        # A finished declaration waiting for the next one (or the end) simply goes on with it.
        tok = self.relex(cand, stack[-1])
        if closes and self.feeds(list(stack), tok.type):
            return len(stack) - 1, 0, tok
        for i in range(len(stack) - 1, -1, -1):
            row = actions[stack[i]]
            if "stmt" not in row and "decl" not in row:
                continue
            tok = self.relex(cand, stack[i])
            for k in range((len(stack) if closes else 0) + 1):
                st = stack[: i + 1]
                if all(self.feeds(st, "RBRACE") for _ in range(k)) and self.feeds(st, tok.type):
                    return i, k, tok
            if innermost:
                return None
        return None

    def feeds(self, st: list[int], typ: str) -> bool:
        """Feed `typ` to a stack of states (changed in place); False if the tables refuse it."""
        actions, rules, end = self.driver.actions, self.driver.rules, self.driver.end
        while True:
            act = actions[st[-1]].get(typ)
            if act is None:
                return False
            if act >= 0:
                st.append(act)
                return True
            origin, n_kids = rules[~act][:2]
            if n_kids:
                del st[-n_kids:]
            goto = actions[st[-1]].get(origin)
            if goto is None:  # pragma: no cover - a reduction always has its goto
                return False
            st.append(goto)
            if typ == "$END" and goto == end:
                return True

    def innermost_block(self, stack: list[int]) -> int:
        actions = self.driver.actions
        for i in range(len(stack) - 1, -1, -1):
            row = actions[stack[i]]
            if "stmt" in row or "decl" in row:
                return i
        return 0

    # -- tokens --------------------------------------------------------------------
    def root_token(self, pos: int) -> Tok | None:
        """The token any state's lexer would find at `pos`, or None."""
        if self._root is None:
            import re

            pats, ignore, unless = self.driver.root_spec
            self._root = ([re.compile(p, f).match for p, f in pats], frozenset(ignore), unless)
        matchers, ignore, unless = self._root
        for match in matchers:
            m = match(self.text, pos)
            if m is not None:
                typ = m.lastgroup
                if typ in ignore:
                    return None
                value = m.group()
                typ = unless.get(typ, {}).get(value, typ)
                return Tok(typ, value, pos, m.end())
        return None

    def next_token(self, pos: int) -> Tok:
        """The next token from `pos`, skipping blanks and comments; an unlexable character counts as one; $END at the end."""
        text = self.text
        size = len(text)
        while pos < size:
            c = text[pos]
            if c.isspace() or c == ";":
                pos += 1
            elif c == "#":
                end = text.find("\n", pos)
                pos = size if end < 0 else end
            else:
                tok = self.root_token(pos)
                if tok is None:
                    end = text.find("\n", pos) if c in "\"'" else pos + 1
                    return Tok("CHAR", text[pos], pos, size if end < 0 else end)
                return tok
        return Tok("$END", "", size, size)

    def relex(self, tok: Tok, state: int) -> Tok:
        """`tok` as the lexer of `state` reads it (a keyword there may be a name here, `for x` a check target)."""
        if tok.type == "$END":
            return tok
        matchers, ignore, unless = self.driver.state_lexers[state] or self.driver.lexer(state)
        for match in matchers:
            m = match(self.text, tok.start)
            if m is not None and m.lastgroup not in ignore:
                typ = m.lastgroup
                value = m.group()
                typ = unless.get(typ, {}).get(value, typ)
                if typ == "NAME":
                    typ = self.keyword_at_line_start(value, tok.start)
                return Tok(typ, value, tok.start, m.end())
        return tok

    def names(self, v) -> None:
        """Note the names `v` declares or assigns (`x = ...`, `for x`, `module m`); names it only uses are not news."""
        if type(v) is Tok:
            if v.type == "NAME" and self.binds(v):
                self.skipped.add(v.value)
            elif v.type in ("RETURN", "CHECK_TARGET"):
                self.skipped.add(v.value.split()[-1])
        elif type(v) is Tree:
            for c in v.children:
                self.names(c)

    def binds(self, v: Tok) -> bool:
        after = self.text[v.end : v.end + 40].lstrip()
        if after[:1] == "=" and after[:2] != "==" or after[:2] in ("+=", "-=", "*=", "/="):
            return True
        before = self.text[max(0, v.start - 20) : v.start].rstrip().split()
        return bool(before) and (before[-1] in DECL_KEYWORDS or before[-1] == "for")

    # -- problems ------------------------------------------------------------------
    def problem(self, tok: Tok, stack: list[int]) -> SyntaxProblem:
        row = self.driver.actions[stack[-1]]
        accepts = frozenset(t for t in row if (t.isupper() or t == "$END") and self.feeds(list(stack), t))
        line, col = self.where(tok.start)
        if tok.type == "$END":
            return SyntaxProblem("eof", tok.start, line, col, expected=accepts)
        end_line, end_col = self.where(tok.end)
        return SyntaxProblem("token", tok.start, line, col, tok.type, tok.value, end_line, end_col, accepts)

    def note(self, p: SyntaxProblem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(p)

    def where(self, pos: int) -> tuple[int, int]:
        line = bisect_right(self.line_starts, pos)
        return line, pos - self.line_starts[line - 1] + 1

    def indent(self, pos: int) -> int:
        start = self.text.rfind("\n", 0, pos) + 1
        line = self.text[start : pos + 1]
        return len(line) - len(line.lstrip(" \t"))

    def first_on_line(self, pos: int) -> bool:
        start = self.text.rfind("\n", 0, pos) + 1
        return not self.text[start:pos].strip(" \t\r\f;")


def parse_recovering(driver: Driver, text: str, comments: list | None = None) -> tuple[Tree, Recovery]:
    """The tree of what parsed, and the Recovery holding every syntax problem met on the way."""
    rec = Recovery(driver, text)
    tree = driver.parse(text, comments, recover=rec)
    return tree, rec
