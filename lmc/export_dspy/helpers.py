"""Python twins of lmc's run-time semantics, written into an exported module when its code uses them.

Each entry is fixed source text (nothing from the artifact is interpolated);
`needed` adds the helpers a helper itself calls.  They follow lmc's interpreter
and builtins: `+` on text and a value shows the value as lmc does, `bool("no")`
is False, `majority` ignores case, a `for` over a dict walks its keys.  Where lmc's
own function can run outside lmc (`show_value`, `str()`, the calculator tool), the
export carries that function's source (`lmc_source`) rather than a copy of it.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Callable

from ..builtins import BUILTINS
from ..calculator import calculator
from ..prompts import show_value


class _ForExport(ast.NodeTransformer):
    """Renames what the function calls to the export's names (`limits.to_json` -> `_to_json`) and drops its
    annotations, which could name types the exported module does not have."""

    def __init__(self, names: dict[str, str]):
        self.names = names

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.name = self.names.get(node.name, node.name)
        node.returns = None
        a = node.args
        for arg in a.posonlyargs + a.args + a.kwonlyargs + [x for x in (a.vararg, a.kwarg) if x is not None]:
            arg.annotation = None
        return self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if isinstance(node.value, ast.Name) and f"{node.value.id}.{node.attr}" in self.names:
            return ast.copy_location(ast.Name(self.names[f"{node.value.id}.{node.attr}"], node.ctx), node)
        return self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self.names.get(node.id, node.id)
        return node


def lmc_source(fn: Callable, names: dict[str, str]) -> str:
    """The source of lmc's own `fn` as the export writes it: `names` renamed (the function's own among them),
    annotations dropped, comments gone.  tests/test_export_dspy.py runs it against `fn`."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    return "\n" + ast.unparse(_ForExport(names).visit(tree)) + "\n"


# lmc bounds the text a program builds (lmc/limits.py); the export leaves that to Python.
_LIMITS = {"limits.to_json": "_to_json", "to_json": "_to_json", "limits.check_chars": "_check_chars"}

# name -> (helpers it calls, source: the text, or a function that reads it from lmc's own code when exported)
HELPERS: dict[str, tuple[tuple[str, ...], str | Callable[[], str]]] = {
    "_to_json": (
        (),
        """
def _to_json(value, sort_keys=False, what=None):
    return json.dumps(value, ensure_ascii=False, sort_keys=sort_keys, default=str)
""",
    ),
    "_check_chars": (
        (),
        """
def _check_chars(n, what):
    return n
""",
    ),
    "_show_value": (("_to_json", "_check_chars"), lambda: lmc_source(show_value, {"show_value": "_show_value", **_LIMITS})),
    "_show": (
        ("_show_value",),
        '''
def _show(value):
    """A value as lmc writes it into text (f-strings, `text + value`)."""
    if isinstance(value, dspy.Prediction):
        value = {k: value[k] for k in value.keys()}
    return _show_value(value, multiline_ok=False)
''',
    ),
    "_get": (
        (),
        '''
def _get(obj, name):
    """`obj.name` in lmc: a field of a module's result or a key of a dict."""
    if isinstance(obj, dict):
        return obj[name]
    return obj[name] if isinstance(obj, dspy.Prediction) else getattr(obj, name)
''',
    ),
    "_add": (
        ("_show",),
        """
def _add(a, b):
    if isinstance(a, str) and not isinstance(b, str):
        b = _show(b)
    if isinstance(a, list) and isinstance(b, tuple):
        b = list(b)
    return a + b
""",
    ),
    "_iter": (
        (),
        """
def _iter(items):
    if isinstance(items, dict):
        return list(items)
    if not isinstance(items, (list, str)):
        raise TypeError(f"cannot loop over {type(items).__name__}")
    return list(items)
""",
    ),
    "_outputs": (
        (),
        '''
def _outputs(value, names):
    """The program's declared outputs from what it returned, as a Prediction."""
    if isinstance(value, dspy.Prediction):
        value = {k: value[k] for k in value.keys()}
    if isinstance(value, dict) and all(n in value for n in names):
        return dspy.Prediction(**{n: value[n] for n in names})
    if len(names) == 1:
        return dspy.Prediction(**{names[0]: value})
    raise ValueError("the program returned a value without its outputs " + ", ".join(names))
''',
    ),
    "_check": (
        (),
        '''
def _check(kind, ok, message):
    """lmc's assert and suggest without backtracking: an assert fails the call, a suggest is logged."""
    if ok:
        return
    if kind == "assert":
        raise AssertionError(message)
    _log.warning("suggestion not met: %s", message)
''',
    ),
    "_score": (
        (),
        """
def _score(value):
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    return float(value)
""",
    ),
    "_calculator": ((), lambda: lmc_source(calculator, {"calculator": "_calculator"})),
    # ---- lmc builtins
    "_b_len": (
        (),
        """
def _b_len(x):
    return len(x)
""",
    ),
    "_b_range": (
        (),
        """
def _b_range(a, b=None, step=1):
    return list(range(a) if b is None else range(a, b, step))
""",
    ),
    "_b_unique": (
        (),
        """
def _b_unique(xs):
    seen, out = set(), []
    for x in xs:
        key = json.dumps(x, sort_keys=True, ensure_ascii=False) if isinstance(x, (list, dict)) else x
        if key not in seen:
            seen.add(key)
            out.append(x)
    return out
""",
    ),
    "_b_str": (("_to_json",), lambda: lmc_source(BUILTINS["str"].fn, {BUILTINS["str"].fn.__name__: "_b_str", **_LIMITS})),
    "_b_join": (
        ("_b_str",),
        """
def _b_join(xs, sep=" "):
    return sep.join(_b_str(x) for x in xs)
""",
    ),
    "_b_lower": (
        ("_b_str",),
        """
def _b_lower(s):
    return _b_str(s).lower()
""",
    ),
    "_b_upper": (
        ("_b_str",),
        """
def _b_upper(s):
    return _b_str(s).upper()
""",
    ),
    "_b_strip": (
        ("_b_str",),
        """
def _b_strip(s):
    return _b_str(s).strip()
""",
    ),
    "_b_split": (
        (),
        """
def _b_split(s, sep=None):
    return s.split(sep)
""",
    ),
    "_b_int": (
        (),
        """
def _b_int(x):
    if isinstance(x, str):
        text = x.strip().replace(",", "").replace("_", "")
        try:
            return int(text)
        except ValueError:
            value = float(text)
            if not value.is_integer():
                raise ValueError(f"int() cannot convert {x!r} to a whole number") from None
            return int(value)
    return int(x)
""",
    ),
    "_b_float": (
        (),
        """
def _b_float(x):
    if isinstance(x, str):
        return float(x.strip().replace(",", "").replace("_", ""))
    return float(x)
""",
    ),
    "_b_bool": (
        (),
        """
def _b_bool(x):
    if isinstance(x, str):
        word = x.strip().lower()
        if word in ("true", "yes", "y", "1"):
            return True
        if word in ("false", "no", "n", "0", ""):
            return False
        raise ValueError(f"bool() cannot read {x!r} as true or false")
    return bool(x)
""",
    ),
    "_b_min": (
        (),
        """
def _b_min(*args):
    return min(args[0] if len(args) == 1 else list(args))
""",
    ),
    "_b_max": (
        (),
        """
def _b_max(*args):
    return max(args[0] if len(args) == 1 else list(args))
""",
    ),
    "_b_sorted": (
        (),
        """
def _b_sorted(xs):
    return sorted(xs)
""",
    ),
    "_b_sum": (
        (),
        """
def _b_sum(xs):
    return sum(xs)
""",
    ),
    "_b_abs": (
        (),
        """
def _b_abs(x):
    return abs(x)
""",
    ),
    "_b_round": (
        (),
        """
def _b_round(x, ndigits=None):
    return round(x) if ndigits is None else round(x, ndigits)
""",
    ),
    "_b_majority": (
        (),
        '''
def _b_majority(xs):
    """The most common item; text compared ignoring case and surrounding space, ties to the first seen."""
    if not xs:
        raise ValueError("majority() of an empty list")
    counts, first = {}, {}
    for x in xs:
        key = x.strip().casefold() if isinstance(x, str) else json.dumps(x, sort_keys=True, default=str)
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, x)
    best = max(counts.values())
    return next(first[k] for k, c in counts.items() if c == best)
''',
    ),
    "_b_enumerate": (
        (),
        """
def _b_enumerate(xs):
    return [[i, x] for i, x in enumerate(xs)]
""",
    ),
    "_b_zip": (
        (),
        """
def _b_zip(*lists):
    return [list(t) for t in zip(*lists)]
""",
    ),
    "_b_print": (
        ("_b_str",),
        """
def _b_print(*args):
    import sys

    print(*(_b_str(a) for a in args), file=sys.stderr)
""",
    ),
}


def needed(names: set[str]) -> list[str]:
    """`names` and every helper they call, in a stable order."""
    out: set[str] = set()
    todo = list(names)
    while todo:
        n = todo.pop()
        if n in out:
            continue
        out.add(n)
        todo += HELPERS[n][0]
    return [n for n in HELPERS if n in out]


def source(names: set[str]) -> str:
    texts = [HELPERS[n][1] for n in needed(names)]
    return "\n".join((text() if callable(text) else text).strip("\n") + "\n\n" for text in texts)
