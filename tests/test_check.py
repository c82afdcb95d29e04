"""Checker tests: golden invalid programs with expected diagnostics in headers, the Checked contract, builtins, CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lmc import builtins as B
from lmc.check import check_path, check_source, resolve_type
from lmc.errors import CompileErrors, LmcError
from lmc.parser import parse
from lmc.types import FLOAT, INT, STR, Type, list_of, literal, optional

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "check"
HEADER = re.compile(r"^# error: (\d+):(\d+): (.*)$")
UPDATE = os.environ.get("LMC_UPDATE_GOLDEN") == "1"


def _diagnostics(text: str, path: str) -> list[tuple[int, int, str]]:
    try:
        check_source(text, path)
    except CompileErrors as e:
        return [(d.span.line, d.span.col, d.message + (f"; {d.hint}" if d.hint else "")) for d in e.diagnostics]
    return []


def _update(path: Path) -> None:
    body = "\n".join(ln for ln in path.read_text().split("\n") if not HEADER.match(ln))
    count = len(_diagnostics(body, str(path)))
    text = "\n" * count + body
    diags = _diagnostics(text, str(path))
    header = "".join(f"# error: {ln}:{col}: {msg}\n" for ln, col, msg in diags)
    path.write_text(header + body)


FILES = sorted(FIXTURES.glob("*.lmp"))


def test_there_are_at_least_forty_invalid_programs():
    assert len(FILES) >= 40


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_invalid_program_reports_expected_diagnostics(path: Path):
    if UPDATE:
        _update(path)
    text = path.read_text()
    expected = [(int(m[1]), int(m[2]), m[3]) for m in map(HEADER.match, text.split("\n")) if m]
    assert expected, f"{path.name} has no '# error:' header"
    assert _diagnostics(text, str(path)) == expected


def test_all_errors_reported_at_once_and_sorted():
    text = FIXTURES.joinpath("bad_setting_values.lmp").read_text()
    with pytest.raises(CompileErrors) as e:
        check_source(text, "x.lmp")
    spans = [d.span for d in e.value.diagnostics]
    assert len(spans) >= 5 and spans == sorted(spans)


def test_render_has_path_line_col_source_and_carets():
    with pytest.raises(CompileErrors) as e:
        check_source("signature Summary(text -> summary)\nmodule s = Predict(Sumary)\n", "a.lmp")
    out = e.value.render()
    assert out.splitlines()[0] == "a.lmp:2:20: error: unknown signature 'Sumary'; did you mean 'Summary'?"
    assert "module s = Predict(Sumary)" in out
    assert out.splitlines()[2].endswith("^^^^^^")


# ---------------------------------------------------------------- the contract for lowering

MULTIHOP = ROOT / "programs" / "multihop.lmp"


def test_checked_multihop_contract():
    c = check_path(MULTIHOP)
    assert set(c.modules) == {"gen_query", "answer"}
    sig = c.module_sigs["gen_query"]
    assert sig.name == "GenerateQuery"
    assert sig.instructions.startswith("Write a simple search query")
    assert sig.inputs[0] == ("context", list_of(STR), "may contain relevant facts")
    assert [f[0] for f in sig.outputs] == ["query"]
    assert c.program().name == "multihop"
    assert c.program_inputs() == (("question", STR),)
    assert c.program_outputs() == (("answer", STR),)
    assert set(c.retrievers) == {"wiki"} and set(c.metrics) == {"em"}


def test_inline_shorthand_signature_is_registered_under_module_name():
    c = check_source(
        'module qa = Predict("question, context -> answer")\n'
        'program main(question: str) -> (answer: str) { return qa(question=question, context="") }\n',
        "a.lmp",
    )
    sig = c.signatures["qa.sig"]
    assert c.module_sigs["qa"] is sig
    assert [f[0] for f in sig.inputs] == ["question", "context"] and sig.outputs == (("answer", STR, None),)


def test_program_selection():
    src = 'program a(x: str) -> (y: str) { return {"y": x} }\nprogram b(x: str) -> (y: str) { return {"y": x} }\n'
    c = check_source(src, "two.lmp")
    with pytest.raises(LmcError, match="defines programs a, b; pick one with --program"):
        c.program()
    assert c.program("b").name == "b"
    with pytest.raises(LmcError, match="no program 'c'"):
        c.program("c")
    c2 = check_source(src + 'program main(x: str) -> (y: str) { return {"y": x} }\n', "three.lmp")
    assert c2.program().name == "main"


def test_literal_union_output_and_tool_infos():
    c = check_path(ROOT / "programs" / "sentiment.lmp")
    assert c.program_outputs() == (("sentiment", literal("positive", "negative")),)
    r = check_path(ROOT / "programs" / "react_agent.lmp")
    assert r.tool_infos["search"].kind == "retriever" and r.tool_infos["search"].target == "wiki"
    assert r.tool_infos["calc"].kind == "builtin" and r.tool_infos["calc"].returns == FLOAT


def test_resolve_type():
    p = parse('signature S(a: list[str]?, b: dict[str, int], c: "x" | "y", d -> e: float)', "t.lmp")
    types = [resolve_type(f.type) for f in p.decls[0].inputs]
    assert types == [optional(list_of(STR)), Type("dict", (INT,)), literal("x", "y"), STR]
    assert resolve_type(None) == STR


def test_check_path_accepts_bom_and_crlf(tmp_path):
    f = tmp_path / "w.lmp"
    f.write_bytes(b'\xef\xbb\xbfprogram main(q: str) -> (a: str) {\r\n  return {"a": q}\r\n}\r\n')
    assert check_path(f).program().name == "main"


def test_check_path_missing_and_bad_utf8(tmp_path):
    with pytest.raises(LmcError, match="no such file"):
        check_path(tmp_path / "nope.lmp")
    bad = tmp_path / "bad.lmp"
    bad.write_bytes(b"program \xff")
    with pytest.raises(CompileErrors, match="not valid UTF-8"):
        check_path(bad)


def test_variables_assigned_in_branches_and_loops_are_defined_after():
    src = """
signature QA = "question -> answer"
module qa = Predict(QA)
program main(question: str) -> (answer: str) {
  for i in range(2) { last = qa(question=question) }
  if len(question) > 3 { x = 1 } elif true { x = 2 } else { x = 3 }
  n = 0
  while n < x max 4 { n += 1 }
  return last
}
"""
    check_source(src, "ok.lmp")


# ---------------------------------------------------------------- builtins


def test_builtins_runtime():
    f = {k: v.fn for k, v in B.BUILTINS.items()}
    assert f["unique"](["b", "a", "b", "c", "a"]) == ["b", "a", "c"]
    assert f["majority"](["x", "y", "y", "x"]) == "x"  # tie: first seen
    assert f["majority"](["Paris", "paris ", "Rome"]) == "Paris"
    assert f["join"](["a", "b"]) == "a b" and f["join"](["a", 1], ", ") == "a, 1"
    assert f["split"]("a b  c") == ["a", "b", "c"] and f["split"]("a,b", ",") == ["a", "b"]
    assert f["range"](3) == [0, 1, 2] and f["range"](1, 3) == [1, 2]
    assert f["int"]("3.0") == 3 and f["int"](" 1,234 ") == 1234 and f["int"](2.7) == 2
    assert f["float"]("2.5") == 2.5
    assert f["bool"]("false") is False and f["bool"]("Yes") is True
    assert f["str"](True) == "true" and f["str"]([1, "a"]) == '[1, "a"]'
    assert f["min"]([3, 1, 2]) == 1 and f["max"](3, 9) == 9
    assert f["sorted"]([3, 1]) == [1, 3] and f["sum"]([1, 2.5]) == 3.5
    assert f["round"](2.6) == 3 and f["round"](2.555, 1) == 2.6
    assert f["enumerate"](["a"]) == [[0, "a"]] and f["zip"]([1, 2], ["a"]) == [[1, "a"]]
    assert f["len"]("abc") == 3 and f["lower"]("AB") == "ab" and f["strip"](" x ") == "x"


@pytest.mark.parametrize("name,arg", [("int", "three"), ("int", "3.5"), ("float", "x"), ("bool", "maybe"), ("majority", [])])
def test_builtin_conversions_raise_value_error(name, arg):
    with pytest.raises(ValueError, match=name):
        B.BUILTINS[name].fn(arg)


def test_builtin_static_types():
    r = {k: v.returns for k, v in B.BUILTINS.items()}
    assert r["unique"]([list_of(STR)]) == list_of(STR)
    assert r["majority"]([list_of(INT)]) == INT
    assert r["range"]([INT]) == list_of(INT)
    with pytest.raises(B.BuiltinTypeError):
        r["len"]([INT])
    assert B.BUILTINS["len"].arity_error(2) == "len() takes 1 argument, got 2"
    assert B.BUILTINS["print"].arity_error(5) is None


def test_print_writes_to_stderr(capsys):
    B.BUILTINS["print"].fn("a", 1)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "a 1\n"


# ---------------------------------------------------------------- CLI


def _lmc(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "lmc", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60)


def test_cli_check_exit_codes(tmp_path):
    from typer.testing import CliRunner

    from lmc.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["check", str(ROOT / "programs" / "sentiment.lmp")])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["check", str(FIXTURES / "unknown_signature.lmp")])
    assert bad.exit_code == 1
    missing = runner.invoke(app, ["check", str(tmp_path / "missing.lmp")])
    assert missing.exit_code == 2


def test_cli_check_json_and_text_output():
    r = _lmc("check", "--format", "json", str(FIXTURES / "unknown_signature.lmp"))
    data = json.loads(r.stdout)
    d = data["diagnostics"][0]
    assert (d["line"], d["column"], d["message"]) == (3, 28, "unknown signature 'Sumary'")
    assert d["hint"] == "did you mean 'Summary'?"
    t = _lmc("check", str(FIXTURES / "unknown_signature.lmp"))
    assert "unknown_signature.lmp:3:28: error: unknown signature 'Sumary'; did you mean 'Summary'?" in t.stderr
    assert "Traceback" not in t.stderr


def test_cli_fmt_check(tmp_path):
    from typer.testing import CliRunner

    from lmc.cli import app

    runner = CliRunner()
    messy = tmp_path / "m.lmp"
    messy.write_text('program main(q:str)->(a:str){return {"a":q}}\n')
    r = runner.invoke(app, ["fmt", "--check", str(messy)])
    assert r.exit_code == 1 and "would reformat" in r.output
    assert runner.invoke(app, ["fmt", str(messy)]).exit_code == 0
    assert messy.read_text() == 'program main(q: str) -> (a: str) {\n  return {"a": q}\n}\n'
    assert runner.invoke(app, ["fmt", "--check", str(messy)]).exit_code == 0


def test_example_programs_are_formatted():
    from lmc.fmt import format_source

    for p in sorted((ROOT / "programs").glob("*.lmp")):
        assert format_source(p.read_text(), str(p)) == p.read_text(), f"{p.name} is not fmt-clean"


def test_cli_process_exit_code_for_errors():
    assert _lmc("check", str(FIXTURES / "unknown_signature.lmp")).returncode == 1


def test_diagnostics_point_at_names_wherever_the_spacing_puts_them():
    src = (
        'signature QA = "question -> answer"\n'
        "module  qa = Predict(QA,   temprature=0.1)\n"
        "program   main(question: str) -> (answer: str) {\n"
        "  for    qa in [1] { x = 1 }\n"
        "  return qa(question=question)\n"
        "}\n"
        'program   main(question: str) -> (answer: str) { return {"answer": question} }\n'
    )
    with pytest.raises(CompileErrors) as e:
        check_source(src, "s.lmp")
    where = {d.message.split(";")[0]: (d.span.line, d.span.col, d.span.end_col) for d in e.value.diagnostics}
    assert where["unknown setting 'temprature' for Predict"] == (2, 28, 38)
    assert where["cannot assign to module 'qa'"] == (4, 10, 12)
    assert where["'main' is already declared"] == (7, 11, 15)


def test_every_setting_a_declaration_accepts_has_a_rule():
    from lmc.decl_rules import LM_SETTINGS, RETRIEVER_KWARGS, RULES, kind_rule
    from lmc.kinds import COMMON_SETTINGS, KINDS

    named = set(COMMON_SETTINGS) | set(LM_SETTINGS) | {s for v in RETRIEVER_KWARGS.values() for s in v}
    assert named - set(RULES) == set()
    assert set(RULES) - named == set(), "a rule no declaration accepts"
    # A kind's own settings take their rule from the kind's description, in a form the checker knows.
    own = [kind_rule(s) for k in KINDS.values() for s in k.settings]
    assert own and {r.kind for r in own} <= {"int", "number", "tools", "metric"}
    assert all(r.what and r.lo is not None for r in own if r.kind in ("int", "number"))


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("temperature", "2.5", "setting 'temperature' must be a number from 0 to 2, got 2.5"),
        ("max_tokens", "-3", "setting 'max_tokens' must be an int above 0, got -3"),
        ("max_tokens", "n", "setting 'max_tokens' must be a constant"),
        ("stop", "[1]", "setting 'stop' must be a list of strings"),
        ("truncate_inputs", '"yes"', "setting 'truncate_inputs' must be true or false, got \"yes\""),
        ("instructions", "[1, 2]", "setting 'instructions' must be a string, got a list"),
        ("lm", '"fsat"', "unknown lm 'fsat'"),
    ],
)
def test_a_setting_s_rule_decides_what_its_value_may_be(setting, value, message):
    src = (
        f'lm fast = "openai/gpt-4o-mini"\nsignature QA = "q -> a"\nmodule m = Predict(QA, {setting}={value})\n'
        "program main(q: str) -> (a: str) {\n  n = 1\n  return m(q=q)\n}\n"
    )
    with pytest.raises(CompileErrors) as e:
        check_source(src, "s.lmp")
    assert [d.message for d in e.value.diagnostics] == [message]
    assert e.value.diagnostics[0].span.line == 3
