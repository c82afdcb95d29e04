"""Formatter tests: layout, comments kept, idempotence and AST round-trip (hypothesis over generated programs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmc import nodes as n
from lmc.errors import CompileErrors, Span
from lmc.fmt import format_file, format_source
from lmc.parser import KEYWORDS, CONSTANTS, parse

ROOT = Path(__file__).resolve().parents[1]
S = Span("<gen>", 1, 1, 1, 1)


def roundtrip(text: str) -> str:
    out = format_source(text, "t.lmp")
    assert format_source(out, "t.lmp") == out, "fmt is not idempotent"
    assert n.summary(parse(out, "t.lmp")) == n.summary(parse(text, "t.lmp")), "fmt changed the program"
    assert out.endswith("\n") and not out.endswith("\n\n")
    assert all(line == line.rstrip() for line in out.split("\n"))
    return out


def test_canonical_layout():
    src = (
        'signature QA   {"Be brief." question:str ->answer:str "short"}\nmodule qa=Predict(QA,temperature=0.5)\n'
        'program main(question:str)->(answer:str){ x=1+2*3;if x>2{return qa(question=question)}else{return {"answer":"n"}}}'
    )
    assert roundtrip(src) == (
        "signature QA {\n"
        '  "Be brief."\n'
        "  question: str\n"
        '  -> answer: str  "short"\n'
        "}\n"
        "\n"
        "module qa = Predict(QA, temperature=0.5)\n"
        "\n"
        "program main(question: str) -> (answer: str) {\n"
        "  x = 1 + 2 * 3\n"
        "  if x > 2 {\n"
        "    return qa(question=question)\n"
        "  } else {\n"
        '    return {"answer": "n"}\n'
        "  }\n"
        "}\n"
    )


def test_comments_are_kept_in_place():
    src = """# header

# about QA
signature QA = "question -> answer"  # shorthand
program main(question: str) -> (answer: str) {  # entry
  # first
  x = [
    1,  # inside a list
    2
  ]

  for i in x {  # loop
    y = i  # trailing
    # end of loop body
  }
  if true {
    z = 1
    # before elif
  } elif false {  # elif line
    z = 2
  } else {
    # in else
    z = 3
  }
  return {"answer": question}
  # last in body
}  # after program
# at the end
"""
    out = roundtrip(src)
    for line in src.split("\n"):
        if "#" in line:
            assert line[line.index("#") :] in out
    assert 'signature QA = "question -> answer"  # shorthand' in out
    assert "  for i in x {  # loop" in out
    assert "    y = i  # trailing" in out
    assert "}  # after program" in out
    assert out.rstrip().endswith("# at the end")


def test_parenthesization_keeps_meaning():
    src = "program p(a: int, b: int) -> (c: int) { return (a - (b - 1)) * -(a + b) - (a - b) }"
    out = roundtrip(src)
    assert "(a - (b - 1)) * -(a + b) - (a - b)" in out


def test_strings_with_quotes_newlines_and_braces():
    src = r"""signature S(a -> b) "line one\nline \"two\" \\ end"
program p(q: str) -> (a: str) { return {"a": f"{q} {{x}} \"{join(['a', 'b\"'], ', ')}\" \n"} }"""
    roundtrip(src)


def test_unparsable_input_raises_compile_errors():
    with pytest.raises(CompileErrors):
        format_source("program {", "bad.lmp")


@pytest.mark.parametrize(
    "path", sorted((ROOT / "programs").glob("*.lmp")) + sorted((ROOT / "tests/fixtures/parser").glob("*.lmp")), ids=lambda p: p.stem
)
def test_examples_roundtrip(path):
    roundtrip(path.read_text())


# ---------------------------------------------------------------- generated programs

RESERVED = KEYWORDS | set(CONSTANTS) | {"max"}
names = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True).filter(lambda s: s not in RESERVED)
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


def _const():
    return st.one_of(
        st.integers(0, 10**6).map(lambda v: n.Const(S, value=v)),
        st.floats(0, 1e6, allow_nan=False, allow_infinity=False).map(lambda v: n.Const(S, value=v)),
        st.sampled_from([True, False, None]).map(lambda v: n.Const(S, value=v)),
        text.map(lambda v: n.Const(S, value=v)),
    )


def _fstring(expr):
    part = st.one_of(text.filter(bool), expr)

    def merge(parts):
        out = []
        for p in parts:
            if isinstance(p, str) and out and isinstance(out[-1], str):
                out[-1] += p
            else:
                out.append(p)
        return n.FString(S, parts=tuple(out))

    return st.lists(part, max_size=3).map(merge)


def _no_braces(e) -> bool:
    # The f-string scanner ends an embedded expression at the first '}', so dicts and nested f-strings cannot appear.
    return not any(
        isinstance(x, (n.DictExpr, n.FString)) or (isinstance(x, n.Const) and isinstance(x.value, str) and "}" in x.value) for x in n.walk(e)
    )


def _extend(expr):
    ops = st.sampled_from(["+", "-", "*", "/", "//", "%"])
    return st.one_of(
        st.builds(lambda o, a, b: n.BinOp(S, op=o, left=a, right=b), ops, expr, expr),
        st.builds(lambda o, a: n.UnaryOp(S, op=o, operand=a), st.sampled_from(["-", "+", "not"]), expr),
        st.builds(
            lambda o, a, b: n.Compare(S, op=o, left=a, right=b), st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in"]), expr, expr
        ),
        st.builds(lambda o, a, b: n.BoolOp(S, op=o, left=a, right=b), st.sampled_from(["and", "or"]), expr, expr),
        st.builds(lambda a, k: n.Attr(S, obj=a, name=k, name_span=S), expr, names),
        st.builds(lambda a, i: n.Index(S, obj=a, index=i), expr, expr),
        st.builds(
            lambda f, a, kw: n.Call(
                S, func=n.Name(S, id=f), args=tuple(a), kwargs=tuple(n.Keyword(S, name=k, name_span=S, value=v) for k, v in dict(kw).items())
            ),
            names,
            st.lists(expr, max_size=2),
            st.lists(st.tuples(names, expr), max_size=2),
        ),
        st.lists(expr, max_size=3).map(lambda xs: n.ListExpr(S, items=tuple(xs))),
        st.lists(st.tuples(expr, expr), max_size=2).map(lambda xs: n.DictExpr(S, items=tuple(xs))),
        _fstring(expr.filter(_no_braces)),
    )


exprs = st.recursive(st.one_of(_const(), names.map(lambda v: n.Name(S, id=v))), _extend, max_leaves=8)


def _safe_stmt_expr(e) -> bool:
    # A statement starting with '(' '[' '-' '+' or '{' would glue onto the previous line, as in the source itself.
    first = e
    while isinstance(first, (n.BinOp, n.Compare, n.BoolOp, n.Attr, n.Index, n.Call)):
        first = first.left if isinstance(first, (n.BinOp, n.Compare, n.BoolOp)) else first.obj if isinstance(first, (n.Attr, n.Index)) else first.func
    return isinstance(first, (n.Name, n.Const, n.FString)) and not (
        isinstance(first, n.Const) and not isinstance(first.value, (str, bool, type(None))) and False
    )


def _stmts(depth: int):
    simple = st.one_of(
        st.builds(lambda t, v, op: n.Assign(S, target=t, target_span=S, value=v, op=op), names, exprs, st.sampled_from(["=", "+=", "-="])),
        st.builds(lambda v: n.ExprStmt(S, expr=v), exprs.filter(_safe_stmt_expr).filter(lambda e: isinstance(e, n.Call))),
        # A bare `return` would swallow an expression starting the next line, so generated ones carry a value.
        st.builds(lambda v: n.Return(S, value=v), exprs),
        st.builds(
            lambda k, c, m, t: n.Check(S, kind=k, cond=c, message=m, target=t, keyword_span=S),
            st.sampled_from(["assert", "suggest"]),
            exprs,
            st.one_of(st.none(), exprs),
            st.one_of(st.none(), names),
        ),
        st.just(n.Break(S)),
        st.just(n.Continue(S)),
    )
    if depth == 0:
        return simple
    body = st.lists(_stmts(depth - 1), max_size=3).map(tuple)
    return st.one_of(
        simple,
        st.builds(lambda v, it, b: n.For(S, var=v, iter=it, body=b, var_span=S, keyword_span=S), names, exprs, body),
        st.builds(
            lambda c, bound, b: n.While(S, cond=c, bound=bound, body=b, keyword_span=S),
            exprs,
            st.integers(1, 9).map(lambda v: n.Const(S, value=v)),
            body,
        ),
        st.builds(
            lambda br, o: n.If(S, branches=tuple(br), orelse=o), st.lists(st.tuples(exprs, body), min_size=1, max_size=3), st.one_of(st.none(), body)
        ),
    )


types = st.recursive(
    st.one_of(
        st.sampled_from(["str", "int", "float", "bool", "json"]).map(lambda v: n.TypeRef(S, name=v)),
        st.lists(text, min_size=1, max_size=3).map(lambda ls: n.TypeRef(S, name="literal", literals=tuple(ls))),
    ),
    lambda t: st.one_of(
        st.builds(lambda a: n.TypeRef(S, name="list", args=(a,)), t),
        st.builds(lambda a, b: n.TypeRef(S, name="dict", args=(a, b)), t, t),
        st.builds(lambda a: n.TypeRef(S, name=a.name, args=a.args, literals=a.literals, optional=True), t.filter(lambda x: not x.optional)),
    ),
    max_leaves=3,
)
params = st.lists(st.builds(lambda k, t: n.Param(S, name=k, name_span=S, type=t), names, st.one_of(st.none(), types)), max_size=3).map(tuple)
fields = st.lists(
    st.builds(lambda k, t, d: n.Field(S, name=k, name_span=S, type=t, description=d), names, st.one_of(st.none(), types), st.one_of(st.none(), text)),
    max_size=3,
).map(tuple)
kwargs = st.lists(st.tuples(names, _const()), max_size=2).map(
    lambda kv: tuple(n.Keyword(S, name=k, name_span=S, value=v) for k, v in dict(kv).items())
)

decls = st.one_of(
    st.builds(
        lambda k, i, a, b, form: n.Signature(S, name=k, name_span=S, instructions=i, inputs=a, outputs=b, form=form),
        names,
        st.one_of(st.none(), text),
        fields,
        fields.filter(bool),
        st.sampled_from(["block", "inline"]),
    ),
    st.builds(
        lambda k, a, b: n.Signature(
            S,
            name=k,
            name_span=S,
            inputs=tuple(n.Field(S, name=f.name, name_span=S) for f in a),
            outputs=tuple(n.Field(S, name=f.name, name_span=S) for f in b),
            form="shorthand",
        ),
        names,
        fields,
        fields.filter(bool),
    ),
    st.builds(
        lambda k, kind, sig, kw: n.ModuleDecl(S, name=k, name_span=S, kind=kind, kind_span=S, signature=sig, settings=kw),
        names,
        st.sampled_from(["Predict", "ChainOfThought"]),
        st.one_of(st.none(), names.map(lambda v: n.Name(S, id=v))),
        kwargs,
    ),
    st.builds(lambda k, model, kw: n.LMDecl(S, name=k, name_span=S, model=model, model_span=S, settings=kw), names, text, kwargs),
    st.builds(
        lambda k, p, r, d, impl: n.ToolDecl(S, name=k, name_span=S, params=p, returns=r, description=d, impl=impl),
        names,
        st.one_of(st.none(), params),
        st.one_of(st.none(), types),
        st.one_of(st.none(), text),
        exprs,
    ),
    st.builds(lambda k, impl: n.MetricDecl(S, name=k, name_span=S, impl=impl), names, exprs),
    st.builds(
        lambda k, p, body: n.MetricDecl(S, name=k, name_span=S, params=p, body=body), names, params, st.lists(_stmts(2), max_size=3).map(tuple)
    ),
    st.builds(
        lambda k, p, o, body: n.ProgramDecl(S, name=k, name_span=S, params=p, outputs=o, body=body),
        names,
        params,
        params,
        st.lists(_stmts(2), max_size=4).map(tuple),
    ),
)

files = st.lists(decls, min_size=1, max_size=4).map(lambda ds: n.File(S, path="<gen>", decls=tuple(ds)))


def _strip_dup_kwargs(f: n.File) -> bool:
    return True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(files)
def test_generated_programs_roundtrip(file):
    text = format_file(file)
    try:
        reparsed = parse(text, "<gen>")
    except CompileErrors as e:  # pragma: no cover - a failure here is a formatter bug
        raise AssertionError(f"formatted program does not parse:\n{text}\n{e.render()}") from None
    assert n.summary(reparsed) == n.summary(file)
    assert format_source(text, "<gen>") == text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files, st.data())
def test_generated_programs_keep_comments(file, data):
    lines = format_file(file).split("\n")
    # Put comment lines at random places and trailing comments at random line ends (outside strings).
    out = []
    added = []
    for i, line in enumerate(lines):
        if data.draw(st.booleans(), label=f"leading{i}"):
            c = f"# c{len(added)}"
            added.append(c)
            out.append(c)
        if line and '"' not in line and "'" not in line and "#" not in line and data.draw(st.booleans(), label=f"trail{i}"):
            c = f"# t{len(added)}"
            added.append(c)
            line = line + "  " + c
        out.append(line)
    src = "\n".join(out)
    formatted = roundtrip(src)
    for c in added:
        assert c in formatted
