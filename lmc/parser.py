"""Parse .lmp text into the AST: loads grammars/lmp.lark once, turns trees into nodes."""

from __future__ import annotations

import functools
import gc
import re
from bisect import bisect_right
from pathlib import Path

from . import nodes as n
from .errors import CompileError, CompileErrors, Diagnostic, Span

GRAMMAR = Path(__file__).parent / "grammars" / "lmp.lark"

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


def _cache_file(grammar: str) -> str | bool:
    """Where the built LALR tables are kept between runs (building them costs ~0.2 s); False if nowhere."""
    import hashlib
    import os

    import lark

    if os.environ.get("LMC_NO_GRAMMAR_CACHE"):
        return False
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lmc"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    digest = hashlib.sha256(f"{grammar}|{lark.__version__}".encode()).hexdigest()[:16]
    return str(base / f"lmp-grammar-{digest}.lark")


@functools.lru_cache(maxsize=1)
def _lark():
    from lark import Lark

    grammar = GRAMMAR.read_text(encoding="utf-8")
    return Lark(
        grammar,
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=False,
        cache=_cache_file(grammar),
    )


# ---------------------------------------------------------------- fast LALR driver
#
# Lark's own parse loop (with propagate_positions) costs about half a second on a
# 5,000-line file, and importing Lark costs ~60 ms more.  The driver below runs the
# same LALR tables and the same per-state (contextual) lexers, but builds a small
# tree directly, with positions taken from every token a rule consumed — exactly
# the positions Lark's propagate_positions would give.  The tables are plain data
# cached next to Lark's, so a warm run never imports Lark.  Any input the driver
# rejects is handed to Lark itself, which produces the same tree or the syntax
# error we report, so error messages are unchanged.

_TABLES_FORMAT = 2


class _Tok:
    """A terminal: its type, text and [start, end) offsets in the source."""

    __slots__ = ("type", "value", "start", "end", "cs", "ce")

    def __init__(self, type_: str, value: str, start: int, end: int):
        self.type = type_
        self.value = value
        self.start = self.cs = start
        self.end = self.ce = end

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"Tok({self.type}, {self.value!r})"


class _Tree:
    """A rule's result.  start/end are its own span (-1: empty); cs/ce the span of the
    outermost rule that was inlined into it (`?atom: "(" expr ")"`), which a parent uses."""

    __slots__ = ("data", "children", "start", "end", "cs", "ce")

    def __init__(self, data: str, children: list, start: int = -1, end: int = -1):
        self.data = data
        self.children = children
        self.start = self.cs = start
        self.end = self.ce = end

    def __repr__(self) -> str:
        return f"Tree({self.data}, {self.children!r})"


class _Reject(Exception):
    """The fast driver cannot take this input; Lark decides."""


def _build_tables() -> dict | None:
    """Plain-data copy of Lark's LALR tables and contextual lexers; None if the grammar uses a feature the driver lacks."""
    from lark.lexer import UnlessCallback
    from lark.parsers.lalr_analysis import Shift

    lk = _lark()
    if lk.options.postlex is not None or lk.options.lexer_callbacks or lk.options.maybe_placeholders:
        return None
    frontend = lk.parser
    table = frontend.parser.parser.parse_table
    rule_ids: dict = {}
    rules: list = []

    def rule_id(rule) -> int:
        if rule not in rule_ids:
            opts = rule.options
            if opts.template_source:
                raise _Reject("templates")
            syms = rule.expansion
            include = [(i, (not s.is_term) and s.name.startswith("_")) for i, s in enumerate(syms)
                       if opts.keep_all_tokens or not (s.is_term and s.filter_out)]
            plain = len(include) == len(syms) and not any(e for _, e in include)
            rule_ids[rule] = len(rules)
            rules.append((rule.origin.name, len(syms), rule.alias or rule.origin.name,
                          bool(opts.expand1 and not rule.alias), None if plain else tuple(include)))
        return rule_ids[rule]

    if sorted(table.states) != list(range(len(table.states))):
        return None
    try:
        actions = []
        for state in range(len(table.states)):
            row = {}
            for sym, (action, arg) in table.states[state].items():
                row[sym] = arg if action is Shift else ~rule_id(arg)
            actions.append(row)
        lexers: list = []
        lexer_ids: dict = {}
        state_lexer = []
        for state in range(len(table.states)):
            basic = frontend.lexer.lexers[state]
            if id(basic) not in lexer_ids:
                scanner = basic.scanner  # built lazily by Lark; building it also fills basic.callback
                unless = {}
                for typ, cb in basic.callback.items():
                    if not isinstance(cb, UnlessCallback):
                        return None
                    words = {}
                    for t in cb.scanner.terminals:
                        if t.pattern.type != "str" or t.pattern.flags:
                            return None
                        words[t.pattern.value] = t.name
                    unless[typ] = words
                lexer_ids[id(basic)] = len(lexers)
                lexers.append(([(m.pattern, m.flags) for m in scanner._mres], tuple(sorted(basic.ignore_types)), unless))
            state_lexer.append(lexer_ids[id(basic)])
    except _Reject:
        return None
    start = table.start_states["start"]
    return _plain({"start": start, "end": table.end_states["start"], "actions": actions, "rules": rules,
                   "lexers": lexers, "state_lexer": state_lexer})


def _plain(value):
    """Plain str/int/tuple/list/dict copies: a freshly built Lark names rules with Token (a str
    subclass), which marshal refuses, while one loaded from Lark's cache uses plain str."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    raise TypeError(f"unexpected {type(value).__name__} in parser tables")


def _lark_stamp() -> str:
    """Where the installed Lark lives and when it was written, found without importing it."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("lark")
    if spec is None or not spec.origin:
        return ""
    try:
        st = os.stat(spec.origin)
    except OSError:
        return spec.origin
    return f"{spec.origin}|{st.st_mtime_ns}|{st.st_size}"


@functools.lru_cache(maxsize=1)
def _tables() -> dict | None:
    """The driver's tables: from the cache when it holds this exact grammar, else built with Lark and cached."""
    import marshal
    import os
    import zlib

    grammar = GRAMMAR.read_text(encoding="utf-8")
    # The tables also depend on how Lark shapes trees; a reinstalled Lark (seen without importing it,
    # which is what the cache saves) rebuilds them.
    stamp = _lark_stamp()
    where = None
    if not os.environ.get("LMC_NO_GRAMMAR_CACHE"):
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lmc"
        where = base / f"lmp-tables-{_TABLES_FORMAT}-{zlib.crc32(grammar.encode()):08x}.marshal"
        try:
            fmt, cached_stamp, cached_grammar, tables = marshal.loads(where.read_bytes())
            if fmt == _TABLES_FORMAT and cached_stamp == stamp and cached_grammar == grammar:
                return tables
        except (OSError, ValueError, EOFError, TypeError):
            pass
    tables = _build_tables()
    if where is not None:
        try:
            from .files import atomic_write_bytes

            atomic_write_bytes(where, marshal.dumps((_TABLES_FORMAT, stamp, grammar, tables)), fsync=False)
        except (OSError, ValueError):
            pass
    return tables


class _Driver:
    """Runs the cached tables over a text; lexers are compiled the first time their state is reached."""

    def __init__(self, tables: dict):
        self.start = tables["start"]
        self.end = tables["end"]
        self.actions = tables["actions"]
        self.rules = tables["rules"]
        self.specs = tables["lexers"]
        self.state_lexer = tables["state_lexer"]
        self.compiled: list = [None] * len(self.specs)
        self.state_lexers: list = [None] * len(self.state_lexer)
        self.chains: dict = {}

    def unit_chain(self, key: tuple) -> int:
        """The top state after every unit reduction that (state below, top state, lookahead) leads to."""
        below, top, typ = key
        while True:
            act = self.actions[top].get(typ)
            if act is None or act >= 0:
                return top
            origin, n_kids, _, expand1, include = self.rules[~act]
            if not (expand1 and n_kids == 1 and include is None):
                return top
            top = self.actions[below][origin]
            if typ == "$END" and top == self.end:
                return top

    def lexer(self, state: int):
        """Compile a state's lexer on first use: compiling all of them would cost ~35 ms."""
        index = self.state_lexer[state]
        lex = self.compiled[index]
        if lex is None:
            pats, ignore, unless = self.specs[index]
            lex = self.compiled[index] = ([re.compile(p, f).match for p, f in pats], frozenset(ignore), unless)
        self.state_lexers[state] = lex
        return lex

    def parse(self, text: str, comments: list | None = None) -> _Tree:
        """The tree Lark would build (same shape, same positions); raises _Reject where Lark would have to decide."""
        actions = self.actions
        rules = self.rules
        lexers = self.state_lexers
        chains = self.chains
        end_state = self.end
        stack = [self.start]
        values: list = []
        pos = 0
        size = len(text)
        while True:
            # -- next token, lexed with the lexer of the current state
            typ = "$END"
            while pos < size:
                matchers, ignore, unless = lexers[stack[-1]] or self.lexer(stack[-1])
                for match in matchers:
                    m = match(text, pos)
                    if m is not None:
                        break
                else:
                    raise _Reject("no token")
                typ = m.lastgroup
                end = m.end()
                if typ in ignore:
                    if comments is not None and typ == "COMMENT":
                        comments.append((pos, end))
                    pos = end
                    typ = "$END"
                    continue
                value = m.group()
                if typ in unless:
                    typ = unless[typ].get(value, typ)
                tok = _Tok(typ, value, pos, end)
                pos = end
                break
            # -- feed it: reduce as long as the table says so, then shift
            while True:
                act = actions[stack[-1]].get(typ)
                if act is None:
                    raise _Reject("unexpected token")
                if act >= 0:
                    if typ == "$END":  # pragma: no cover - Lark's tables never shift $END
                        raise _Reject("shift at end")
                    stack.append(act)
                    values.append(tok)
                    break
                origin, n_kids, data, expand1, include = rules[~act]
                if expand1 and n_kids == 1 and include is None:
                    # `?expr: or_expr` and the like: the child is the result, and its container
                    # is its own, so only the top state changes.  Most reductions are these, in
                    # chains (atom -> postfix -> ... -> expr) that depend only on the two top
                    # states and the lookahead, so each chain is walked once and remembered.
                    key = (stack[-2], stack[-1], typ)
                    top = chains.get(key)
                    if top is None:
                        top = chains[key] = self.unit_chain(key)
                    stack[-1] = top
                    if typ == "$END" and top == end_state:
                        return values[-1]
                    continue
                if n_kids:
                    kids = values[-n_kids:]
                    del values[-n_kids:]
                    del stack[-n_kids:]
                else:
                    kids = []
                cs = ce = -1
                for c in kids:
                    if c.cs >= 0:
                        cs = c.cs
                        break
                for c in reversed(kids):
                    if c.ce >= 0:
                        ce = c.ce
                        break
                if include is None:
                    children = kids
                else:
                    children = None
                    for i, expand in include:
                        if expand:
                            if children is None:
                                # `decl*` is left-recursive (`_star: _star decl`): taking over the
                                # inlined list instead of copying it keeps a file of n declarations
                                # linear, not n²/2 copies.  The inlined tree is dropped right here.
                                children = kids[i].children
                            else:
                                children += kids[i].children
                        elif children is None:
                            children = [kids[i]]
                        else:
                            children.append(kids[i])
                    if children is None:
                        children = []
                if expand1 and len(children) == 1:
                    res = children[0]
                    if cs >= 0 and type(res) is _Tree:
                        if res.start < 0:
                            res.start, res.end = cs, ce
                        res.cs, res.ce = cs, ce
                else:
                    res = _Tree(data, children, cs, ce)
                stack.append(actions[stack[-1]][origin])
                values.append(res)
                if typ == "$END" and stack[-1] == end_state:
                    return values[-1]
            if typ == "$END":  # pragma: no cover - the loop above returns or rejects
                raise _Reject("end")


@functools.lru_cache(maxsize=1)
def _driver() -> _Driver | None:
    tables = _tables()
    return _Driver(tables) if tables is not None else None


def _from_lark(item):
    """Lark's own tree in the driver's shape (used when Lark accepts what the driver rejected)."""
    from lark import Token

    if isinstance(item, Token):
        return _Tok(item.type, str(item), item.start_pos, item.end_pos)
    meta = item.meta
    empty = getattr(meta, "empty", True)
    return _Tree(item.data, [_from_lark(c) for c in item.children],
                 -1 if empty else meta.start_pos, -1 if empty else meta.end_pos)


def _parse_tree(text: str, comments: list | None = None) -> _Tree:
    """The parse tree of `text`; a syntax error is raised as Lark's UnexpectedInput.

    When `comments` is a list, the [start, end) offsets of the comments the lexer skipped are
    appended to it, or None if Lark had to parse (its lexer does not report them)."""
    driver = _driver()
    if driver is not None:
        try:
            return driver.parse(text, comments)
        except Exception:  # _Reject, or a driver bug: either way Lark's answer is the right one
            pass
    if comments is not None:
        comments[:] = [None]
    return _from_lark(_lark().parse(text))


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


def parse(text: str, path: str = "<input>") -> n.File:
    """Parse one file; raises CompileErrors (with every syntax problem found) on failure."""
    if text.startswith("\ufeff"):
        text = text[1:]
    # The trees and nodes built here hold no cycles, so the cycle collector would only
    # rescan them again and again (a third of the parse time on a large file).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse(text, path)
    finally:
        if gc_was_enabled:
            gc.enable()


def _parse(text: str, path: str) -> n.File:
    found: list = []
    try:
        tree = _parse_tree(text, found)
    except RecursionError:
        raise CompileErrors([Diagnostic(Span(path, 1, 1, 1, 2), "program is nested too deeply to parse")], {path: text}) from None
    except Exception as e:
        from lark.exceptions import UnexpectedInput

        if not isinstance(e, UnexpectedInput):
            raise
        raise CompileErrors([_syntax_diagnostic(_lark(), e, text, path)], {path: text}) from None
    builder = _Builder(path, text)
    try:
        decls = tuple(builder.decl(d) for d in tree.children)
    except CompileError as e:
        builder.errors.append(e.diagnostic())
        decls = ()
    except RecursionError:
        raise CompileErrors([Diagnostic(Span(path, 1, 1, 1, 2), "program is nested too deeply to parse")], {path: text}) from None
    if builder.errors:
        raise CompileErrors(builder.errors, {path: text})
    if found == [None]:
        comments = tuple(_comments(text, path))
    else:
        span = builder.span
        comments = tuple(n.Comment(span(_Tok("COMMENT", "", start, end)), text=text[start:end].rstrip()) for start, end in found)
    end = text.count("\n") + 1
    return n.File(Span(path, 1, 1, end, 1), path=path, decls=decls, comments=comments)


def _comments(text: str, path: str):
    """Comments with positions, found by a small scanner that skips strings."""
    i, line, col = 0, 1, 1
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


def _syntax_diagnostic(lark, e, text: str, path: str) -> Diagnostic:
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

    line = getattr(e, "line", 1) or 1
    col = getattr(e, "column", 1) or 1
    if isinstance(e, UnexpectedCharacters):
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else ""
        if ch in "\"'":
            return Diagnostic(Span(path, line, col, line, col + 1), "unterminated string", "close it with a matching quote on the same line, or use \"\"\" for text over several lines")
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


# ---------------------------------------------------------------- tree -> AST


class _Builder:
    """Turns a Lark parse tree into nodes; collects problems that the grammar lets through."""

    def __init__(self, path: str, text: str, at: tuple[int, int] | None = None):
        self.path = path
        self.text = text
        self.errors: list[Diagnostic] = []
        self.line_starts = [0]
        self.line_starts += [m.end() for m in re.finditer("\n", text)]
        # (line, column shift) when `text` is one synthetic line standing for a piece of an f-string.
        self.at = at

    # -- spans -------------------------------------------------------------
    def span(self, item) -> Span:
        start = item.start
        if self.at is not None:
            line, dcol = self.at
            if start < 0:
                return Span(self.path, line, 1 + dcol, line, 1 + dcol)
            return Span(self.path, line, start + 1 + dcol, line, item.end + 1 + dcol)
        if start < 0:
            return Span(self.path, 1, 1, 1, 1)
        starts = self.line_starts
        line = bisect_right(starts, start)
        end = item.end
        end_line = bisect_right(starts, end, line - 1)
        return Span(self.path, line, start - starts[line - 1] + 1, end_line, end - starts[end_line - 1] + 1)

    def err(self, message: str, span: Span, hint: str | None = None) -> None:
        self.errors.append(Diagnostic(span, message, hint))

    def name(self, tok) -> str:
        """A declared name: keywords and constants are refused here, where the grammar cannot."""
        text = str(tok)
        if text in KEYWORDS or text in CONSTANTS:
            self.err(f"'{text}' is a keyword and cannot be used as a name", self.span(tok))
        return text

    # -- declarations ---------------------------------------------------------
    def decl(self, t) -> n.Node:
        return _DECLS[t.data](self, t)

    def d_sig_block(self, t):
        name, *rest = t.children
        instructions = None
        if rest and getattr(rest[0], "data", None) == "string":
            instructions = self.string(rest.pop(0))
        ins, outs = rest
        return n.Signature(self.span(t), name=self.name(name), instructions=instructions,
                           inputs=self.fields(ins), outputs=self.fields(outs), form="block")

    def d_sig_inline(self, t):
        name, ins, outs, *rest = t.children
        instructions = self.string(rest[0]) if rest else None
        return n.Signature(self.span(t), name=self.name(name), instructions=instructions,
                           inputs=self.fields(ins), outputs=self.fields(outs), form="inline")

    def d_sig_shorthand(self, t):
        name, s = t.children
        ins, outs = self.shorthand(s)
        return n.Signature(self.span(t), name=self.name(name), inputs=ins, outputs=outs, form="shorthand")

    def shorthand(self, s) -> tuple[tuple[n.Field, ...], tuple[n.Field, ...]]:
        """`"question, context -> answer"`: all-str fields; positions point into the string."""
        text = self.string(s)
        sp = self.span(s)
        if text.count("->") != 1:
            self.err("a signature shorthand needs exactly one '->'", sp, 'write it as "inputs -> outputs", e.g. "question -> answer"')
            return (), ()
        left, right = text.split("->")
        result = []
        for part in (left, right):
            fields = []
            for raw in part.split(","):
                name = raw.strip()
                if not name:
                    if part.strip():
                        self.err("empty field name in signature shorthand", sp)
                    continue
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                    self.err(f"'{name}' is not a valid field name", sp, "field names are letters, digits and '_'")
                    continue
                fields.append(n.Field(sp, name=name, type=None))
            result.append(tuple(fields))
        if not result[1]:
            self.err("a signature needs at least one output field", sp)
        return result[0], result[1]

    def fields(self, t) -> tuple[n.Field, ...]:
        out = []
        for f in t.children:
            name, *rest = f.children
            typ = desc = None
            for r in rest:
                if getattr(r, "data", None) == "string":
                    desc = self.string(r)
                else:
                    typ = self.type(r)
            out.append(n.Field(self.span(f), name=self.name(name), type=typ, description=desc))
        return tuple(out)

    def type(self, t) -> n.TypeRef:
        if isinstance(t, _Tok):
            return n.TypeRef(self.span(t), name=str(t))
        if t.data == "type_union":
            return self.type(t.children[0])
        if t.data == "literal_union":
            opt = bool(t.children and isinstance(t.children[-1], _Tok) and t.children[-1].type == "OPTMARK")
            lits = tuple(self.string(c) for c in t.children if getattr(c, "data", None) == "string")
            return n.TypeRef(self.span(t), name="literal", literals=lits, optional=opt)
        if t.data == "type_paren":
            inner = self.type(t.children[0])
            opt = inner.optional or any(isinstance(c, _Tok) and c.type == "OPTMARK" for c in t.children[1:])
            return n.TypeRef(self.span(t), name="literal", literals=inner.literals, optional=opt)
        # type_atom
        name = t.children[0]
        opt = any(isinstance(c, _Tok) and c.type == "OPTMARK" for c in t.children[1:])
        args = tuple(self.type(c) for c in t.children[1:] if not (isinstance(c, _Tok) and c.type == "OPTMARK"))
        return n.TypeRef(self.span(t), name=self.name(name), args=args, optional=opt)

    def d_module_decl(self, t):
        name, kind, *rest = t.children
        args, kwargs = self.call_args(rest[0]) if rest else ((), ())
        sig = None
        if args:
            sig = args[0]
            for extra in args[1:]:
                self.err("a module takes one signature and then keyword settings", extra.span, "write settings as name=value")
        return n.ModuleDecl(self.span(t), name=self.name(name), kind=str(kind), kind_span=self.span(kind),
                            signature=sig, settings=kwargs)

    def d_retriever_decl(self, t):
        name, kind, *rest = t.children
        args, kwargs = self.call_args(rest[0]) if rest else ((), ())
        return n.RetrieverDecl(self.span(t), name=self.name(name), kind=str(kind), kind_span=self.span(kind),
                               args=args, kwargs=kwargs)

    def d_tool_decl(self, t):
        name, *kids = t.children
        impl_tree = kids.pop()
        params = returns = desc = None
        for k in kids:
            d = getattr(k, "data", None)
            if d == "tool_params":
                params = self.params(k.children[0]) if k.children else ()
            elif d == "string":
                desc = self.string(k)
            else:
                returns = self.type(k)
        return n.ToolDecl(self.span(t), name=self.name(name), params=params, returns=returns, description=desc,
                          impl=self.expr(impl_tree))

    def d_lm_decl(self, t):
        name, model, *rest = t.children
        kwargs: tuple = ()
        if rest:
            args, kwargs = self.call_args(rest[0])
            for a in args:
                self.err("LM settings are keyword arguments", a.span, "write them as name=value, e.g. temperature=0.2")
        return n.LMDecl(self.span(t), name=self.name(name), model=self.string(model), settings=kwargs)

    def d_metric_expr(self, t):
        name, value = t.children
        return n.MetricDecl(self.span(t), name=self.name(name), impl=self.expr(value))

    def d_metric_block(self, t):
        name, *rest = t.children
        params = self.params(rest[0]) if len(rest) == 2 else ()
        return n.MetricDecl(self.span(t), name=self.name(name), params=params, body=self.block(rest[-1]))

    def d_program_decl(self, t):
        name, *rest = t.children
        body = rest.pop()
        params: tuple = ()
        outputs: tuple = ()
        for r in rest:
            if r.data == "params":
                params = self.params(r)
            elif r.children:
                outputs = self.params(r.children[0])
        return n.ProgramDecl(self.span(t), name=self.name(name), params=params, outputs=outputs, body=self.block(body))

    def params(self, t) -> tuple[n.Param, ...]:
        out = []
        for p in t.children:
            name, *rest = p.children
            out.append(n.Param(self.span(p), name=self.name(name), type=self.type(rest[0]) if rest else None))
        return tuple(out)

    # -- statements ------------------------------------------------------------
    def block(self, t) -> tuple:
        return tuple(self.stmt(s) for s in t.children)

    def stmt(self, t):
        return _STMTS[t.data](self, t)

    def s_assign(self, t):
        name, value = t.children
        return n.Assign(self.span(t), target=self.name(name), value=self.expr(value), target_span=self.span(name))

    def s_aug_assign(self, t):
        name, op, value = t.children
        return n.Assign(self.span(t), target=self.name(name), value=self.expr(value), target_span=self.span(name), op=str(op))

    def s_expr_stmt(self, t):
        return n.ExprStmt(self.span(t), expr=self.expr(t.children[0]))

    def s_return_stmt(self, t):
        kids = t.children
        return n.Return(self.span(t), value=self.expr(kids[0]) if kids else None,
                        feedback=self.expr(kids[1]) if len(kids) > 1 else None)

    def s_check_stmt(self, t):
        kw, cond, *rest = t.children
        message = target = target_span = None
        for r in rest:
            if getattr(r, "type", None) == "CHECK_TARGET":
                target = str(r).split()[-1]
                target_span = self.span(r)
            else:
                message = self.expr(r)
        return n.Check(self.span(t), kind=str(kw), cond=self.expr(cond), message=message,
                       target=target, target_span=target_span)

    def s_break_stmt(self, t):
        return n.Break(self.span(t))

    def s_continue_stmt(self, t):
        return n.Continue(self.span(t))

    def s_for_stmt(self, t):
        var, it, body = t.children
        return n.For(self.span(t), var=self.name(var), iter=self.expr(it), body=self.block(body))

    def s_if_stmt(self, t):
        cond, body, *rest = t.children
        branches = [(self.expr(cond), self.block(body))]
        orelse = None
        for r in rest:
            if r.data == "elif_clause":
                branches.append((self.expr(r.children[0]), self.block(r.children[1])))
            else:
                orelse = self.block(r.children[0])
        return n.If(self.span(t), branches=tuple(branches), orelse=orelse)

    def s_while_stmt(self, t):
        cond, *rest = t.children
        body = rest.pop()
        bound = self.expr(rest[0]) if rest else None
        return n.While(self.span(t), cond=self.expr(cond), bound=bound, body=self.block(body))

    # -- expressions -----------------------------------------------------------
    def expr(self, t):
        if isinstance(t, _Tok):  # a bare terminal reaching here is a name
            return n.Name(self.span(t), id=str(t))
        return _EXPRS[t.data](self, t)

    def e_name(self, t):
        tok = t.children[0]
        if str(tok) in CONSTANTS:
            return n.Const(self.span(t), value=CONSTANTS[str(tok)])
        return n.Name(self.span(t), id=str(tok))

    def e_number(self, t):
        text = str(t.children[0])
        value = float(text) if any(c in text for c in ".eE") else int(text)
        return n.Const(self.span(t), value=value)

    def e_const_str(self, t):
        return n.Const(self.span(t), value=self.string(t.children[0]))

    def e_string(self, t):
        return n.Const(self.span(t), value=self.string(t))

    def e_fstring(self, t):
        tok = t.children[0]
        return self.fstring(tok)

    def e_list_expr(self, t):
        return n.ListExpr(self.span(t), items=tuple(self.expr(c) for c in t.children))

    def e_dict_expr(self, t):
        items = tuple((self.expr(c.children[0]), self.expr(c.children[1])) for c in t.children)
        return n.DictExpr(self.span(t), items=items)

    def e_attr(self, t):
        obj, name = t.children
        return n.Attr(self.span(t), obj=self.expr(obj), name=self.name(name))

    def e_index(self, t):
        obj, idx = t.children
        return n.Index(self.span(t), obj=self.expr(obj), index=self.expr(idx))

    def e_call(self, t):
        func, *rest = t.children
        args, kwargs = self.call_args(rest[0]) if rest else ((), ())
        return n.Call(self.span(t), func=self.expr(func), args=args, kwargs=kwargs)

    def call_args(self, t):
        args, kwargs = [], []
        seen = set()
        for a in t.children:
            if getattr(a, "data", None) == "kwarg":
                key, value = a.children
                if str(key) in seen:
                    self.err(f"keyword argument '{key}' given twice", self.span(key))
                seen.add(str(key))
                kwargs.append(n.Keyword(self.span(a), name=str(key), value=self.expr(value)))
            else:
                if kwargs:
                    self.err("positional argument after keyword arguments", self.span(a))
                args.append(self.expr(a))
        return tuple(args), tuple(kwargs)

    def e_binop(self, t):
        left, op, right = t.children
        return n.BinOp(self.span(t), op=str(op), left=self.expr(left), right=self.expr(right))

    def e_unary(self, t):
        op, operand = t.children
        return n.UnaryOp(self.span(t), op=str(op), operand=self.expr(operand))

    def e_not_op(self, t):
        return n.UnaryOp(self.span(t), op="not", operand=self.expr(t.children[0]))

    def e_compare(self, t):
        left, op, right = t.children
        return n.Compare(self.span(t), op=str(op), left=self.expr(left), right=self.expr(right))

    def e_in_op(self, t):
        left, right = t.children
        return n.Compare(self.span(t), op="in", left=self.expr(left), right=self.expr(right))

    def e_not_in_op(self, t):
        left, right = t.children
        return n.Compare(self.span(t), op="not in", left=self.expr(left), right=self.expr(right))

    def e_and_op(self, t):
        left, right = t.children
        return n.BoolOp(self.span(t), op="and", left=self.expr(left), right=self.expr(right))

    def e_or_op(self, t):
        left, right = t.children
        return n.BoolOp(self.span(t), op="or", left=self.expr(left), right=self.expr(right))

    def e_kwarg(self, t):  # pragma: no cover - handled in call_args
        raise CompileError("keyword argument outside a call", self.span(t))

    # -- strings ---------------------------------------------------------------
    def string(self, t) -> str:
        tok = t.children[0] if hasattr(t, "children") else t
        raw = str(tok)
        try:
            if raw.startswith('"""'):
                body = raw[3:-3]
                return _unescape(body, self.span(tok))
            return _unescape(raw[1:-1], self.span(tok))
        except CompileError as e:
            self.errors.append(e.diagnostic())
            return raw[1:-1]

    def fstring(self, tok) -> n.FString:
        raw = str(tok)[2:-1]
        sp = self.span(tok)
        parts: list = []
        i = 0
        buf = ""
        while i < len(raw):
            c = raw[i]
            if c == "{" and raw.startswith("{{", i):
                buf += "{"
                i += 2
                continue
            if c == "}" and raw.startswith("}}", i):
                buf += "}"
                i += 2
                continue
            if c == "}":
                self.err("single '}' in f-string", Span(sp.path, sp.line, sp.col + 2 + i, sp.line, sp.col + 3 + i), "write '}}' for a literal brace")
                i += 1
                continue
            if c == "{":
                j = raw.find("}", i)
                if j < 0:
                    self.err("unclosed '{' in f-string", Span(sp.path, sp.line, sp.col + 2 + i, sp.line, sp.col + 3 + i), "expected '}'")
                    break
                if buf:
                    parts.append(_unescape(buf, sp))
                    buf = ""
                inner = raw[i + 1:j]
                parts.append(self.fstring_expr(inner, sp, sp.col + 3 + i))
                i = j + 1
                continue
            buf += c
            i += 1
        if buf:
            parts.append(_unescape(buf, sp))
        return n.FString(sp, parts=tuple(parts))

    def fstring_expr(self, inner: str, sp: Span, col: int):
        if not inner.strip():
            self.err("empty expression in f-string", Span(sp.path, sp.line, col - 1, sp.line, col + 1))
            return n.Const(sp, value="")
        # Parse `x = <inner>` inside a throwaway program to reuse the expression grammar.
        prefix = "program _f() { _ = "
        try:
            tree = _parse_tree(prefix + inner + " }")
        except Exception as e:
            from lark.exceptions import UnexpectedInput

            if not isinstance(e, UnexpectedInput):
                raise
            tree = None
        block = tree.children[0].children[-1] if tree is not None else None
        if block is None or len(block.children) != 1:  # `{a b}` would parse as `_ = a` then `b`
            self.err(f"invalid expression in f-string: {inner.strip()!r}", Span(sp.path, sp.line, col, sp.line, col + len(inner)))
            return n.Const(sp, value="")
        assign = block.children[0]
        # Positions in the throwaway line map straight to the f-string's line and columns.
        sub = _Builder(sp.path, prefix + inner, at=(sp.line, col - len(prefix) - 1))
        return sub.expr(assign.children[1])


# Tree label -> builder method, looked up once here instead of by name for every node.
_DECLS = {k[2:]: f for k, f in vars(_Builder).items() if k.startswith("d_")}
_STMTS = {k[2:]: f for k, f in vars(_Builder).items() if k.startswith("s_")}
_EXPRS = {k[2:]: f for k, f in vars(_Builder).items() if k.startswith("e_")}

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0", "{": "\\{", "}": "\\}"}


def _unescape(body: str, span: Span) -> str:
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
            if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[i + 2:i + 6] or ""):
                out.append(chr(int(body[i + 2:i + 6], 16)))
                i += 6
                continue
            if nxt == "\n":
                i += 2
                continue
            raise CompileError(f"unknown escape '\\{nxt}' in string", span, "known escapes: \\n \\t \\r \\\\ \\\" \\' \\uXXXX")
        out.append(c)
        i += 1
    return "".join(out)


def read_source(path: str | Path) -> str:
    """A .lmp file's text (UTF-8, BOM and CRLF accepted); unreadable files are one-line errors."""
    from .limits import FileRefused, read_bounded

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
        raise CompileErrors([Diagnostic(Span(str(path), line, 1, line, 2), "file is not valid UTF-8",
                                        f"byte 0x{data[e.start]:02x} at offset {e.start}")]) from None
    return text.replace("\r\n", "\n")


def parse_file(path: str | Path) -> n.File:
    """Read and parse a file; a missing or unreadable file is a one-line LmcError."""
    return parse(read_source(path), str(path))
