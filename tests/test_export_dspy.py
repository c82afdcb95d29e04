"""`lmc export --to dspy`: the generated module is safe Python, and DSPy loads it and sends lmc's prompts' content.

The checks on the generated source run everywhere.  The DSPy checks need a
Python where `import dspy` works: $LMC_DSPY_PYTHON, this interpreter, or the
bench venv (`make bench-venv`); they run each export in that Python, against the
loopback LM server, and skip with the reason where none is found.
"""

from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
import tokenize
from dataclasses import replace
from pathlib import Path

import pytest

from lmc import ir as I
from lmc.artifact import Artifact, read, write
from lmc.cli import main
from lmc.export_dspy import export
from lmc.targets import load_target
from tests.lmserver import LoopbackServer

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = sorted((ROOT / "programs").glob("*.lmp"))

# Strings an attacker would put in an artifact to get code run when the export is imported.
EVIL_INSTR = 'Classify the review.\n"""\nimport os; os.system("touch PWNED1")\n"""\n\'\'\'+__import__("os").system("touch PWNED2")#'
EVIL_DEMO = "'); __import__('os').system('touch PWNED3') #\n\\\" \x00 \u2028 end"
EVIL_DESC = "the review\nimport os\nos.system('touch PWNED4')"
EVIL_MODEL = "openai/x\nimport os; os.system('touch PWNED5')"
EVIL_CONST = '"""; __import__("os").system("touch PWNED6"); """'
EVIL_NAME = "main\nimport os; os.system('touch PWNED7')"
EVIL_SPEC = "acc\r\nimport os; os.system('touch PWNED8')\u2028"


def _artifact(lmp: Path | str, out: Path, change=None) -> Path:
    """An artifact of `lmp`; `change(ir) -> ir` sets compiled instructions and demos."""
    t = load_target(lmp)
    ir = change(t.ir) if change else t.ir
    write(Artifact(ir=ir, program=t.program_json(), compile={}, lm=None), out)
    return out


def _set(ir: I.IR, pid: str, **changes) -> I.IR:
    return ir.with_predictors([replace(ir.predictor(pid), **changes)])


def _hostile_sentiment(ir: I.IR) -> I.IR:
    p = ir.predictor("classify")
    sig = p.signature
    review = replace(sig.inputs[0], description=EVIL_DESC)
    ir = _set(
        ir,
        "classify",
        instructions=EVIL_INSTR,
        signature=replace(sig, name="Classify:\n  import os", inputs=(review,)),
        demos=(
            {"review": EVIL_DEMO, "sentiment": "negative", "_id": "d1"},
            {"review": "A delight from start to end.", "sentiment": "positive", "_id": "d2"},
        ),
        settings=(("lm", "evil"), ("temperature", 0.0)),
    )
    prog = ir.program()
    body = (I.Assign("note", I.Const(EVIL_CONST), "=", 1),) + prog.body
    # Names and specs that reach the header comment as they are (not through repr).
    prog = replace(prog, body=body, name=EVIL_NAME)
    metric = replace(ir.metrics[0], spec=EVIL_SPEC)
    return replace(ir, programs=(prog,), entry=EVIL_NAME, metrics=(metric,), lms=(I.LMAlias("evil", EVIL_MODEL),))


# ---------------------------------------------------------------- the generated source (no DSPy needed)


@pytest.mark.parametrize("lmp", PROGRAMS, ids=lambda p: p.stem)
def test_every_example_program_exports_to_valid_python(tmp_path, lmp):
    art = _artifact(lmp, tmp_path / f"{lmp.stem}.lmc.json")
    result = export(art, tmp_path / "out")
    tree = ast.parse(Path(result.module_path).read_text())
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert classes[-1] == "Program"
    state = json.loads(Path(result.state_path).read_text())
    assert state["metadata"]["dependency_versions"] == {}
    ir = read(art).ir
    with_prompt = {p for m in ir.modules for p in m.predictors}
    # One state entry per lmc predictor DSPy has a Predict for (ProgramOfThought's code step keeps DSPy's).
    kinds = {m.name: m.kind for m in ir.modules}
    expected = len(with_prompt) - sum(1 for k in kinds.values() if k == "ProgramOfThought")
    assert len(state) - 1 == expected


def test_notes_list_what_does_not_map(tmp_path, capsys):
    art = _artifact(ROOT / "programs/multihop.lmp", tmp_path / "multihop.lmc.json")
    code = main(["export", str(art), "--to", "dspy", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert any("suggest" in n and "line 23" in n for n in notes)
    assert any("retriever 'wiki'" in n and "retrievers={'wiki': fn}" in n for n in notes)
    assert any(n.startswith("note: metrics are not exported") and "em = exact_match(answer)" in n for n in notes)
    source = (tmp_path / "out" / "multihop.py").read_text()
    header = source.split('"DSPy version')[0]
    for n in notes:
        assert n[len("note: ") :] in header  # the same list heads the module


def test_hostile_strings_stay_data(tmp_path):
    art = _artifact(ROOT / "programs/sentiment.lmp", tmp_path / "evil.lmc.json", _hostile_sentiment)
    result = export(art, tmp_path / "out")
    source = Path(result.module_path).read_text()
    tree = ast.parse(source)
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    for evil in (EVIL_INSTR, EVIL_DESC, EVIL_CONST):
        assert evil in strings
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not names & {"os", "system", "__import__", "exec", "eval", "open", "subprocess"}
    imports = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imports <= {"json", "logging", "dspy", "Any", "Literal", "Optional", "ast", "operator", "sys"} and modules <= {"typing"}
    # The header stays comments: the model name's newline did not start a line of code.
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    first_code = next(t for t in tokens if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE))
    assert first_code.type == tokenize.STRING and first_code.string[1:].startswith("DSPy version")
    comments = [t.string for t in tokens if t.type == tokenize.COMMENT]
    assert any("acc\\r\\nimport os; os.system('touch PWNED8')\\u2028" in c for c in comments), comments
    assert any("(program main\\nimport os; os.system('touch PWNED7'))" in c for c in comments), comments
    assert all(c.isascii() for c in comments)
    # The signature name was no identifier: the class is named after the module instead.
    assert "class ClassifySignature(dspy.Signature):" in source
    state = json.loads(Path(result.state_path).read_text())
    assert state["classify"]["signature"]["instructions"] == EVIL_INSTR
    assert state["classify"]["demos"][0] == {"review": EVIL_DEMO, "sentiment": "negative"}
    assert state["classify"]["signature"]["fields"][0] == {"prefix": "Review:", "description": EVIL_DESC}


@pytest.mark.parametrize(
    "where, fragment",
    [
        ("module", "module name 'bad name' is not a Python identifier"),
        ("field", "field of signature Classify 'class' is not a Python identifier"),
        ("var", "variable 'x; import os' is not an identifier"),
        ("op", "unknown operator '+ __import__'"),
    ],
)
def test_names_and_operators_that_are_not_python_are_refused(tmp_path, capsys, where, fragment):
    def change(ir: I.IR) -> I.IR:
        prog = ir.program()
        if where == "module":
            m = replace(ir.modules[0], name="bad name")
            p = replace(ir.predictors[0], module="bad name")
            body = (I.Ret(I.CallModule("bad name", (("review", I.Var("review")),))),)
            return replace(ir, modules=(m,), predictors=(p,), programs=(replace(prog, body=body),))
        if where == "field":
            p = ir.predictors[0]
            sig = replace(p.signature, inputs=(replace(p.signature.inputs[0], name="class"),))
            return _set(ir, p.id, signature=sig)
        if where == "var":
            return replace(ir, programs=(replace(prog, body=(I.Assign("x; import os", I.Const(1)),) + prog.body),))
        body = (I.Assign("x", I.Bin("+ __import__", I.Const(1), I.Const(2))),) + prog.body
        return replace(ir, programs=(replace(prog, body=body),))

    art = _artifact(ROOT / "programs/sentiment.lmp", tmp_path / "bad.lmc.json", change)
    code = main(["export", str(art), "--to", "dspy", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and fragment in err[-1], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--to", "langchain"], "unknown --to 'langchain'; expected one of: dspy"),
        (["--to", "dspy", "--name", "class"], "--name 'class' is not a Python module name"),
        (["--to", "dspy", "--name", "x"], "exists and is not a directory"),
    ],
)
def test_export_refuses_bad_options(tmp_path, capsys, args, fragment):
    art = _artifact(ROOT / "programs/sentiment.lmp", tmp_path / "s.lmc.json")
    (tmp_path / "afile").write_text("")
    out = tmp_path / ("afile" if "x" in args else "out")
    code = main(["export", str(art), *args, "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and fragment in err[-1], err


def test_helpers_behave_as_lmc_does():
    """The helpers the export writes are lmc's own functions where those can run outside lmc; every helper
    compiles in the exported module's namespace, and the twins agree with lmc on the same values."""
    import logging
    import types

    from lmc.builtins import BUILTINS
    from lmc.export_dspy import helpers
    from lmc.prompts import show_value
    from lmc.runtime import calculator

    class Prediction(dict):
        pass

    ns: dict = {"json": json, "dspy": types.SimpleNamespace(Prediction=Prediction), "_log": logging.getLogger("export")}
    exec(compile(helpers.source(set(helpers.HELPERS)), "<exported helpers>", "exec"), ns)
    values = [None, "x", "ünï", True, False, 3, -2, 2.0, 2.5, 1e20, [], ["a", "b"], [1, "a"], {"b": 1, "a": [1, 2]}, [[]]]
    for v in values:
        assert ns["_show"](v) == show_value(v, multiline_ok=False), v
        assert ns["_b_str"](v) == BUILTINS["str"].fn(v), v
        assert ns["_b_join"]([v, v]) == " ".join([BUILTINS["str"].fn(v)] * 2)
    assert ns["_show"](Prediction(answer="4")) == show_value({"answer": "4"}, multiline_ok=False)

    def outcome(fn, expression):
        try:
            return fn(expression)
        except ValueError as e:
            return f"ValueError: {e}"

    for expression in ["(3 + 4) * 2", "2^10", "sqrt(16)", "7/2", "1,000 + 1", "-3 // 2", "2**1000", "1/0", "__import__('os')", "x", "(", 12]:
        assert outcome(ns["_calculator"], expression) == outcome(calculator, expression), expression


def test_export_never_runs_what_the_artifact_names(tmp_path, monkeypatch):
    """A python() tool and metric are named, not imported: exporting works without the module existing."""
    src = tmp_path / "tools.lmp"
    src.write_text(
        (ROOT / "programs/sentiment.lmp").read_text()
        + '\ntool lookup(q: str) -> str = python("no_such_pkg_lmc.evil:run")\n'
        + 'metric custom = python("no_such_pkg_lmc.evil:score")\n'
    )
    monkeypatch.chdir(tmp_path)
    art = _artifact(src, tmp_path / "tools.lmc.json")
    result = export(art, tmp_path / "out")
    assert "no_such_pkg_lmc" not in sys.modules
    assert "import no_such_pkg_lmc" not in Path(result.module_path).read_text()


# ---------------------------------------------------------------- in DSPy


def _dspy_python() -> str | None:
    for p in (os.environ.get("LMC_DSPY_PYTHON"), sys.executable, str(ROOT / ".venv-bench/bin/python")):
        if p and Path(p).is_file():
            try:
                ok = subprocess.run([p, "-c", "import dspy"], capture_output=True, timeout=120).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                ok = False
            if ok:
                return p
    return None


ANSWERS = {
    "sentiment": "positive",
    "reasoning": "Step by step.",
    "query": "capital of France",
    "answer": "42",
    "next_thought": "I know it.",
    "next_tool_name": "finish",
    "next_tool_args": "{}",
    "verdict": "yes",
    "confidence": "0.9",
    "rationale": "They agree.",
}


def chat_adapter_reply(request: dict) -> str:
    """What DSPy's ChatAdapter expects: each requested output as `[[ ## name ## ]]` then the value, then `completed`."""
    import re

    ask = str(request["messages"][-1]["content"]).split("Respond with", 1)[-1]
    names = [n for n in re.findall(r"\[\[ ## (\w+) ## \]\]", ask) if n != "completed"]
    return "\n\n".join(f"[[ ## {n} ## ]]\n{ANSWERS.get(n, 'ok')}" for n in names) + "\n\n[[ ## completed ## ]]"


@pytest.fixture(scope="module")
def in_dspy(tmp_path_factory):
    """Export the cases, run them all in one DSPy process against the loopback server; return its report and the requests."""
    python = _dspy_python()
    if python is None:
        pytest.skip("no Python with dspy: run `make bench-venv` (or set LMC_DSPY_PYTHON); the export was not loaded in DSPy")
    work = tmp_path_factory.mktemp("dspy")
    cases = {}

    def add(name, lmp, change=None, inputs=None, retrievers=()):
        art = _artifact(lmp, work / f"{name}.lmc.json", change)
        result = export(art, work / "out", name=name)
        cases[name] = {
            "module": result.module_path,
            "module_name": name,
            "state": result.state_path,
            "inputs": inputs,
            "retrievers": list(retrievers),
            "exported": json.loads(Path(result.state_path).read_text()),
        }

    add("sentiment", ROOT / "programs/sentiment.lmp", _hostile_sentiment, {"review": "Great value, works as described."})
    add("multihop", ROOT / "programs/multihop.lmp", _multihop_demos, {"question": "Where is the Louvre?"}, ["wiki"])
    add("judged_qa", ROOT / "programs/judged_qa.lmp", _mcc_demo, {"question": "What is six times seven?"})
    add("react_agent", ROOT / "programs/react_agent.lmp", _react_demo, {"question": "How old is the tower?"}, ["wiki"])
    add("pot_arith", ROOT / "programs/pot_arith.lmp", None, None)
    requests: list = []

    def responder(req):
        requests.append(req)
        return chat_adapter_reply(req)

    config = work / "config.json"
    with LoopbackServer(responder) as srv:
        config.write_text(json.dumps({"api_base": srv.url, "cases": cases}))
        env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", DSPY_CACHEDIR=str(work / "dspy-cache"))
        proc = subprocess.run(
            [python, str(ROOT / "tests/dspy_runner.py"), str(config)], capture_output=True, text=True, cwd=work, env=env, timeout=600
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"report": report, "cases": cases, "requests": requests}


def _multihop_demos(ir: I.IR) -> I.IR:
    ir = _set(
        ir,
        "gen_query",
        instructions="Write ONE search query, lmc-compiled.",
        demos=(
            {
                "context": [],
                "question": "Who built the Eiffel Tower?",
                "reasoning": "Need the builder.",
                "query": "Eiffel Tower builder",
                "_id": "t1",
            },
        ),
    )
    return _set(ir, "answer", demos=({"context": ["Paris is in France."], "question": "Where is Paris?", "answer": "France", "_id": "t2"},))


def _mcc_demo(ir: I.IR) -> I.IR:
    return _set(
        ir,
        "compare.compare",
        demos=({"question": "2+2?", "attempts": ["Answer: 4", "Answer: 5", "Answer: 4"], "rationale": "Two say 4.", "answer": "4", "_id": "m1"},),
    )


def _react_demo(ir: I.IR) -> I.IR:
    return _set(
        ir,
        "agent.step",
        demos=(
            {
                "question": "When was X built?",
                "trajectory": "(nothing yet)",
                "thought": "Search it.",
                "tool": "search",
                "tool_args": {"query": "X built"},
                "_id": "r1",
            },
        ),
    )


def _case(in_dspy, name: str) -> dict:
    got = in_dspy["report"]["cases"][name]
    assert "error" not in got, got["error"]
    return got


def _squash(text: str) -> str:
    return "\n".join(line.strip() for line in text.splitlines())


def _prompts(in_dspy, text: str) -> list[str]:
    """The requests (all messages joined) that contain `text`."""
    joined = ["\n".join(str(m["content"]) for m in r["messages"]) for r in in_dspy["requests"]]
    return [j for j in joined if text in j]


@pytest.mark.parametrize("name", ["sentiment", "multihop", "judged_qa", "react_agent", "pot_arith"])
def test_dspy_loads_the_exported_state_unchanged(in_dspy, name):
    got = _case(in_dspy, name)
    exported = {k: v for k, v in in_dspy["cases"][name]["exported"].items() if k != "metadata"}
    assert set(exported) <= set(got["params"])
    for path, st in exported.items():
        assert got["state"][path]["signature"] == st["signature"], path
        assert got["state"][path]["demos"] == st["demos"], path


def test_dspy_prompt_carries_lmc_instructions_and_demos(in_dspy):
    got = _case(in_dspy, "sentiment")
    assert got["prediction"] == {"sentiment": "positive"}
    hits = _prompts(in_dspy, "Great value, works as described.")
    assert len(hits) == 1
    # DSPy indents the instructions' lines; the text itself arrives unchanged.
    assert _squash(EVIL_INSTR) in _squash(hits[0]) and EVIL_DEMO in hits[0]
    assert "A delight from start to end." in hits[0] and EVIL_DESC in hits[0]
    # Importing and running the module ran none of the strings planted in the artifact.
    assert not [f for f in in_dspy["report"]["files"] if f.startswith("PWNED")]


def test_dspy_runs_the_control_flow(in_dspy):
    got = _case(in_dspy, "multihop")
    assert got["prediction"] == {"answer": "42"}
    assert got["searches"] == [["capital of France", 3], ["capital of France", 3]]
    queries = _prompts(in_dspy, "Where is the Louvre?")
    assert len(queries) == 3  # two hops of gen_query, then answer
    assert "Write ONE search query, lmc-compiled." in queries[0] and "Eiffel Tower builder" in queries[0]
    assert "passage 0 about capital of France" in queries[1]  # the second hop sees the first hop's passages
    assert "Paris is in France." in queries[2]


def test_dspy_runs_multi_chain_comparison_and_react(in_dspy):
    got = _case(in_dspy, "judged_qa")
    assert got["prediction"] == {"answer": "42"}
    compare = [p for p in _prompts(in_dspy, "What is six times seven?") if "reasoning_attempt_1" in p]
    assert compare and "Two say 4." in compare[0] and "Answer: 5" in compare[0]
    got = _case(in_dspy, "react_agent")
    assert got["prediction"] == {"answer": 42.0}
    steps = [p for p in _prompts(in_dspy, "How old is the tower?") if "next_tool_name" in p]
    assert steps and "Work step by step: think, then call one tool" in steps[0] and "X built" in steps[0]


def test_program_of_thought_keeps_dspy_code_prompts(in_dspy):
    got = _case(in_dspy, "pot_arith")
    gen = got["state"]["compute.code_generate.predict"]["signature"]["instructions"]
    assert gen.startswith("You will be given") and "SUBMIT" in gen
    answer = got["state"]["compute.generate_output.predict"]["signature"]["instructions"]
    assert answer == in_dspy["cases"]["pot_arith"]["exported"]["compute.generate_output.predict"]["signature"]["instructions"]


def test_run_time_strategies_are_noted_not_exported(tmp_path):
    def change(ir: I.IR) -> I.IR:
        demo = {"review": "Fine.", "sentiment": "positive", "_id": "k1"}
        best = _set(ir, "classify", demos=(demo,))
        return best.with_extra("knn", {"k": 2, "method": "bm25", "pools": {"classify": [demo, demo]}}).with_extra(
            "ensemble", {"members": [], "names": ["random-search:bootstrap-2", "random-search:zero-shot"]}
        )

    art = _artifact(ROOT / "programs/sentiment.lmp", tmp_path / "s.lmc.json", change)
    result = export(art, tmp_path / "out")
    notes = "\n".join(result.notes)
    assert "knn: lmc picks 2 demos per input from pools (classify: 2)" in notes
    assert "the export is the best single one (random-search:bootstrap-2)" in notes
    state = json.loads(Path(result.state_path).read_text())
    assert state["classify"]["demos"] == [{"review": "Fine.", "sentiment": "positive"}]


def test_export_never_overwrites_its_artifact(tmp_path, capsys):
    art = _artifact(ROOT / "programs/sentiment.lmp", tmp_path / "prog.json")
    before = art.read_bytes()
    code = main(["export", str(art), "--to", "dspy", "-o", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "writing it would destroy an input" in err[-1], err
    assert art.read_bytes() == before
