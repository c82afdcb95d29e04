"""The LALR driver: runs Lark's parse tables for grammars/lmp.lark without Lark's parse loop.

Lark's own loop (with propagate_positions) costs about half a second on a 5,000-line file and
importing Lark ~60 ms more.  The driver runs the same LALR tables and the same per-state
(contextual) lexers but builds a small tree directly, with the positions Lark's
propagate_positions would give.  The tables are plain data cached next to Lark's, so a warm run
never imports Lark.  Input the driver rejects goes to Lark, which gives the same tree or the
syntax error we report: a rejection of input Lark then accepts, or any other driver failure, is
a driver bug, logged as a warning and counted in `FALLBACKS` instead of passing unseen.
tests/test_lalr.py holds the driver to Lark's answer on every program and fixture.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter
from pathlib import Path

from .files import atomic_write_bytes

GRAMMAR = Path(__file__).parent / "grammars" / "lmp.lark"

log = logging.getLogger(__name__)

# Why Lark parsed instead of the driver: "syntax error" (expected: Lark reports it), "rejected"
# (the driver refused input Lark accepts) or "failed" (the driver raised).  The last two are bugs.
FALLBACKS: Counter[str] = Counter()


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
def lark_parser():
    from lark import Lark

    grammar = GRAMMAR.read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=False, cache=_cache_file(grammar))


_TABLES_FORMAT = 3


class Tok:
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


class Tree:
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


class Reject(Exception):
    """The fast driver cannot take this input; Lark decides."""


def build_tables() -> dict | None:
    """Plain-data copy of Lark's LALR tables and contextual lexers; None if the grammar uses a feature the driver lacks."""
    from lark.lexer import UnlessCallback
    from lark.parsers.lalr_analysis import Shift

    lk = lark_parser()
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
                raise Reject("templates")
            syms = rule.expansion
            include = [
                (i, (not s.is_term) and s.name.startswith("_"))
                for i, s in enumerate(syms)
                if opts.keep_all_tokens or not (s.is_term and s.filter_out)
            ]
            plain = len(include) == len(syms) and not any(e for _, e in include)
            rule_ids[rule] = len(rules)
            rules.append(
                (
                    rule.origin.name,
                    len(syms),
                    rule.alias or rule.origin.name,
                    bool(opts.expand1 and not rule.alias),
                    None if plain else tuple(include),
                )
            )
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
        # Every terminal at once: error recovery lexes what it skips with it, as Lark's contextual lexer does on a miss.
        root = frontend.lexer.root_lexer
        scanner = root.scanner
        root_unless = {
            typ: {t.pattern.value: t.name for t in cb.scanner.terminals} for typ, cb in root.callback.items() if isinstance(cb, UnlessCallback)
        }
        root_spec = ([(m.pattern, m.flags) for m in scanner._mres], tuple(sorted(root.ignore_types)), root_unless)
    except Reject:
        return None
    start = table.start_states["start"]
    # The words of keyword and punctuation terminals, for messages that say what was expected.
    words = {t.name: t.pattern.value for t in lk.terminals if t.pattern.type == "str"}
    return _plain(
        {
            "start": start,
            "end": table.end_states["start"],
            "actions": actions,
            "rules": rules,
            "lexers": lexers,
            "state_lexer": state_lexer,
            "root": root_spec,
            "words": words,
        }
    )


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
def load_tables() -> dict | None:
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
    tables = build_tables()
    if where is not None:
        try:
            atomic_write_bytes(where, marshal.dumps((_TABLES_FORMAT, stamp, grammar, tables)), fsync=False)
        except (OSError, ValueError):
            pass
    return tables


class Driver:
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
        self.root_spec = tables["root"]
        self.words: dict[str, str] = tables["words"]

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

    def parse(self, text: str, comments: list | None = None, recover=None) -> Tree:  # noqa: C901 - the LALR loop, inlined because it is the parse time (bench_check)
        """The tree Lark would build (same shape, same positions); raises Reject where Lark would have to decide.

        With `recover` (an lmc.recover.Recovery), a syntax error is handed to it instead: it notes the
        problem, trims the stack to where parsing can resume and names the tokens to go on with."""
        actions = self.actions
        rules = self.rules
        lexers = self.state_lexers
        chains = self.chains
        end_state = self.end
        stack = [self.start]
        values: list = []
        pos = 0
        size = len(text)
        pending: list = []  # tokens error recovery asks to feed before lexing on
        while True:
            # -- next token, lexed with the lexer of the current state
            typ = "$END"
            if pending:
                tok = pending.pop(0)
                typ = tok.type
            else:
                tok = None
            while tok is None and pos < size:
                matchers, ignore, unless = lexers[stack[-1]] or self.lexer(stack[-1])
                for match in matchers:
                    m = match(text, pos)
                    if m is not None:
                        break
                else:
                    if recover is None:
                        raise Reject("no token")
                    got = recover.unlexable(pos, stack)
                    if isinstance(got, int):  # characters nothing matches were skipped
                        pos = got
                        continue
                    tok = got
                    typ = tok.type
                    pos = tok.end
                    break
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
                if recover is not None and typ == "NAME":
                    typ = recover.keyword_at_line_start(value, pos)
                tok = Tok(typ, value, pos, end)
                pos = end
                break
            if tok is None:
                tok = Tok("$END", "", size, size)
            # -- feed it: reduce as long as the table says so, then shift
            while True:
                act = actions[stack[-1]].get(typ)
                if act is None:
                    if recover is None:
                        raise Reject("unexpected token")
                    pos, pending[:0] = recover.unexpected(tok, stack, values)
                    break
                if act >= 0:
                    if typ == "$END":  # pragma: no cover - Lark's tables never shift $END
                        raise Reject("shift at end")
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
                children: list | None
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
                assert children is not None
                if expand1 and len(children) == 1:
                    res = children[0]
                    if cs >= 0 and type(res) is Tree:
                        if res.start < 0:
                            res.start, res.end = cs, ce
                        res.cs, res.ce = cs, ce
                else:
                    res = Tree(data, children, cs, ce)
                stack.append(actions[stack[-1]][origin])
                values.append(res)
                if typ == "$END" and stack[-1] == end_state:
                    return values[-1]
            if typ == "$END" and not pending:  # pragma: no cover - the loop above returns or rejects
                raise Reject("end")


@functools.lru_cache(maxsize=1)
def driver() -> Driver | None:
    tables = load_tables()
    return Driver(tables) if tables is not None else None


def from_lark(item):
    """Lark's own tree in the driver's shape (used when Lark accepts what the driver rejected)."""
    from lark import Token

    if isinstance(item, Token):
        return Tok(item.type, str(item), item.start_pos, item.end_pos)
    meta = item.meta
    empty = getattr(meta, "empty", True)
    return Tree(item.data, [from_lark(c) for c in item.children], -1 if empty else meta.start_pos, -1 if empty else meta.end_pos)


def parse_tree(text: str, comments: list | None = None) -> Tree:
    """The parse tree of `text`; a syntax error is raised as Lark's UnexpectedInput.

    When `comments` is a list, the [start, end) offsets of the comments the lexer skipped are
    appended to it, or None if Lark had to parse (its lexer does not report them)."""
    drv = driver()
    failure = None
    if drv is not None:
        try:
            return drv.parse(text, comments)
        except Reject as e:
            failure = f"rejected ({e})"
        except Exception as e:  # a driver bug: Lark's answer is still the right one, but say so
            failure = f"failed ({type(e).__name__}: {e})"
            FALLBACKS["failed"] += 1
            log.warning("the LALR driver failed on a %d-character text (%s: %s); Lark parsed it instead", len(text), type(e).__name__, e)
    if comments is not None:
        comments[:] = [None]
    from lark.exceptions import UnexpectedInput

    try:
        tree = lark_parser().parse(text)
    except UnexpectedInput:
        if failure is not None and failure.startswith("rejected"):
            FALLBACKS["syntax error"] += 1
        raise
    if failure is not None and failure.startswith("rejected"):
        FALLBACKS["rejected"] += 1
        log.warning("the LALR driver %s a %d-character text that Lark accepts; Lark parsed it instead", failure, len(text))
    return from_lark(tree)
