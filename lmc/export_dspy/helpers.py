"""Python twins of lmc's run-time semantics, written into an exported module when its code uses them.

Each entry is fixed source text (nothing from the artifact is interpolated);
`needed` adds the helpers a helper itself calls.  They follow lmc's interpreter
and builtins: `+` on text and a value shows the value as lmc does, `bool("no")`
is False, `majority` ignores case, a `for` over a dict walks its keys.
"""

from __future__ import annotations

# name -> (helpers it calls, source)
HELPERS: dict[str, tuple[tuple[str, ...], str]] = {
    "_show": (
        (),
        '''
def _show(value):
    """A value as lmc writes it into text (f-strings, `text + value`)."""
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dspy.Prediction):
        value = {k: value[k] for k in value.keys()}
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
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
    "_calculator": (
        (),
        '''
def _calculator(expression):
    """lmc's calculator tool: + - * / // % ** and parentheses over numbers, nothing else."""
    import ast
    import operator

    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
           ast.USub: operator.neg, ast.UAdd: operator.pos}

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 100:
                raise ValueError("exponent too large")
            return ops[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in ops:
            return ops[type(node.op)](ev(node.operand))
        raise ValueError("only arithmetic on numbers is allowed")

    text = str(expression).replace("^", "**").replace(",", "")
    if len(text) > 500:
        raise ValueError("expression too long")
    return float(ev(ast.parse(text, mode="eval")))
''',
    ),
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
    "_b_str": (
        (),
        """
def _b_str(x):
    if isinstance(x, str):
        return x
    if isinstance(x, bool):
        return "true" if x else "false"
    if x is None:
        return "null"
    if isinstance(x, (list, dict)):
        return json.dumps(x, ensure_ascii=False)
    return str(x)
""",
    ),
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
    return "\n".join(HELPERS[n][1].strip("\n") + "\n\n" for n in needed(names))
