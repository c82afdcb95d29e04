"""Artifacts run only the Python the user allowed: inspect/diff list every reference, run/eval/compile refuse the rest.

Every hostile module here writes a marker file when imported, so "never imported" is
checked on the file system, not inferred from an exit code.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from tests.lmserver import LoopbackServer
from tests.reliability.helpers import labeled_reviews, sentiment_responder, write_jsonl

MARK = "IMPORTED_MARKER"

TOOLY = """\
signature S(review: str -> sentiment: "positive" | "negative")
  "Classify the sentiment of the review."
module classify = Predict(S)
tool shout(text: str) -> str = python("{tool}")
metric ok = python("{metric}")
program main(review: str) -> (sentiment: str, loud: str) {{
  r = classify(review=review)
  return {{"sentiment": r.sentiment, "loud": shout(review)}}
}}
"""


def _marker_module(path: Path, body: str = "def shout(text):\n    return text.upper()\n") -> Path:
    path.write_text(f"open({MARK!r}, 'a').write(__name__ + '\\n')\n" + body, encoding="utf-8")
    return path


def _project(root: Path, tool: str = "mytools:shout", metric: str = "mymetrics:score") -> Path:
    """programs/tooly.lmp with mytools.py and mymetrics.py beside it (both leave a marker when imported)."""
    d = root / "programs"
    d.mkdir(parents=True, exist_ok=True)
    (d / "tooly.lmp").write_text(TOOLY.format(tool=tool, metric=metric), encoding="utf-8")
    _marker_module(d / "mytools.py")
    _marker_module(d / "mymetrics.py", "def score(example, pred):\n    return float(pred['sentiment'] == example['sentiment'])\n")
    return d / "tooly.lmp"


def _compiled(root: Path, prog: Path, out: str = "tooly.lmc.json", ref: dict | None = None) -> Path:
    """An artifact of `prog` as `lmc compile --optimizer none` writes it (no LM needed); `ref` rewrites references."""
    from lmc import artifact
    from lmc import ir as I
    from lmc.targets import load_target

    t = load_target(prog)
    path = root / out
    artifact.write(artifact.Artifact(ir=t.ir, program=t.program_json(), compile={}, lm=None), path)
    if ref:
        data = json.loads(path.read_text())

        def walk(node):
            if isinstance(node, dict):
                if node.get("$node") in ("ToolIR", "MetricIR") and node.get("ref") in ref:
                    node["ref"] = ref[node["ref"]]
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(data["ir"])
        data["ir_sha256"] = hashlib.sha256(I.dumps(data["ir"]).encode("utf-8")).hexdigest()
        path.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    return path


@pytest.fixture
def server():
    with LoopbackServer(sentiment_responder) as srv:
        yield srv


@pytest.fixture
def lm(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET")
    return ["--lm", "openai/test", "--api-base", server.url, "--no-cache"]


@pytest.fixture(autouse=True)
def clean_modules():
    """Modules imported by one test must not satisfy the next one's import."""
    before = set(sys.modules)
    path = list(sys.path)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("_lmc_program_", "mytools", "mymetrics", "evilmod", "pkgtools")):
            del sys.modules[name]
    sys.path[:] = path


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ---------------------------------------------------------------- inspect, diff and loading import nothing


def test_inspect_lists_every_reference_and_imports_nothing(cli, tmp_path):
    prog = _project(tmp_path)
    art = _compiled(tmp_path, prog, ref={"mytools:shout": "os:system"})
    _marker_module(tmp_path / "evilmod.py")
    code, out, err = cli("inspect", art, "--format", "json", "--lm", "openai/test")
    assert code == 0, err
    refs = {r["name"]: r for r in json.loads(out)["python"]}
    assert set(refs) == {"shout", "ok"}
    assert refs["shout"]["kind"] == "tool" and refs["shout"]["ref"] == "os:system" and refs["shout"]["found"] == "stdlib"
    assert refs["ok"]["kind"] == "metric" and refs["ok"]["file"] == "programs/mymetrics.py"
    assert not refs["shout"]["allowed"] and not refs["ok"]["allowed"]  # an artifact: nothing unless listed
    code, out, err = cli("inspect", art, "--lm", "openai/test")
    assert code == 0, err
    assert "tool shout: os:system" in out and "REFUSED" in out and "--allow-python os" in out
    assert "metric ok: mymetrics:score" in out and "programs/mymetrics.py" in out
    assert not (tmp_path / MARK).exists()


def test_a_program_shows_what_it_may_import(cli, tmp_path):
    prog = _project(tmp_path, tool="evilmod:shout")
    _marker_module(tmp_path / "evilmod.py")  # in the working directory, not the program's
    code, out, err = cli("inspect", prog, "--format", "json", "--lm", "openai/test")
    assert code == 0, err
    refs = {r["name"]: r for r in json.loads(out)["python"]}
    assert refs["ok"]["allowed"] and refs["ok"]["why"] == "in the program's directory"
    assert not refs["shout"]["allowed"] and refs["shout"]["found"] == "missing"  # cwd is not on sys.path
    assert not (tmp_path / MARK).exists()


def test_diff_lists_the_new_artifacts_references_and_what_changed(cli, tmp_path):
    prog = _project(tmp_path)
    a = _compiled(tmp_path, prog, "a.lmc.json")
    b = _compiled(tmp_path, prog, "b.lmc.json", ref={"mytools:shout": "evilmod:run"})
    _marker_module(tmp_path / "evilmod.py")
    code, out, err = cli("diff", a, b)
    assert code == 0, err
    assert "python references of the new artifact" in out
    assert "~ tool shout: evilmod:run (was mytools:shout)" in out and "metric ok: mymetrics:score" in out
    code, out, err = cli("diff", a, b, "--format", "json")
    py = json.loads(out)["python"]
    assert py["changed"] == [{"what": "tool shout", "old": "mytools:shout", "new": "evilmod:run"}]
    assert sorted(r["ref"] for r in py["new"]) == ["evilmod:run", "mymetrics:score"]
    code, out, err = cli("diff", a, a, "--format", "markdown")
    assert "tool shout: mytools:shout" in out  # listed even when unchanged
    assert not (tmp_path / MARK).exists()


def test_loading_an_artifact_or_program_imports_nothing(tmp_path, monkeypatch):
    from lmc.artifact import read
    from lmc.targets import load_target

    monkeypatch.chdir(tmp_path)
    prog = _project(tmp_path)
    art = _compiled(tmp_path, prog, ref={"mytools:shout": "evilmod:shout"})
    _marker_module(tmp_path / "evilmod.py")
    read(art)
    load_target(art)
    load_target(prog)
    assert not (tmp_path / MARK).exists()
    assert not any(m.startswith(("evilmod", "mytools", "_lmc_program_")) for m in sys.modules)


# ---------------------------------------------------------------- run / eval / compile / lmc.load refuse


@pytest.mark.parametrize(
    "hostile", ["os:system", "subprocess:run", "builtins:exec", "evilmod:shout", "mytools.sub:shout", "_lmc_program_0123456789ab.mytools:shout"]
)
def test_run_refuses_an_artifacts_reference_before_any_lm_call(cli, lm, server, tmp_path, hostile):
    prog = _project(tmp_path)
    art = _compiled(tmp_path, prog, ref={"mytools:shout": hostile})
    _marker_module(tmp_path / "evilmod.py")
    code, out, err = cli("run", art, *lm, "-i", "review=review number 2")
    assert code == 2
    line = _one_error_line(err)
    assert f"would import '{hostile}'" in line and "--allow-python" in line and "lmc inspect" in line
    assert server.requests == 0
    assert not (tmp_path / MARK).exists()


def test_an_artifact_runs_what_the_user_allowed_from_its_programs_directory(cli, lm, server, tmp_path):
    prog = _project(tmp_path)
    art = _compiled(tmp_path, prog)
    code, out, err = cli("run", art, *lm, "-i", "review=review number 2")
    assert code == 2 and "would import 'mytools:shout'" in err  # even its own program's modules need listing
    assert server.requests == 0
    code, out, err = cli("run", art, *lm, "-i", "review=review number 2", "--allow-python", "mytools", "--allow-python", "mymetrics:score")
    assert code == 0, err
    assert json.loads(out) == {"sentiment": "positive", "loud": "REVIEW NUMBER 2"}
    # imported from programs/mytools.py under a private name; `run` never calls the metric
    assert (tmp_path / MARK).read_text().splitlines() == [next(m for m in sys.modules if m.endswith(".mytools"))]


def test_allow_python_in_lmc_yaml(cli, lm, tmp_path):
    prog = _project(tmp_path)
    art = _compiled(tmp_path, prog)
    (tmp_path / "lmc.yaml").write_text("allow_python: [mytools, mymetrics]\n")
    code, out, err = cli("run", art, *lm, "-i", "review=review number 2")
    assert code == 0, err
    (tmp_path / "lmc.yaml").write_text("allow_python: [mytools]\n")
    code, out, err = cli("run", art, *lm, "-i", "review=review number 2")
    assert code == 2 and "mymetrics:score" in err
    (tmp_path / "lmc.yaml").write_text("allow_python: ['os; rm -rf /']\n")
    code, out, err = cli("run", art, *lm, "-i", "review=review number 2")
    assert code == 2 and "is not a module name" in err


def test_allow_entries_match_modules_and_functions_exactly(cli, lm, tmp_path):
    prog = _project(tmp_path)
    art = _compiled(tmp_path, prog)
    for allow, ok in (
        (["mytool"], False),
        (["mytools.x"], False),
        (["mytools:other", "mymetrics"], False),
        (["mytools:shout", "mymetrics"], True),
        (["mytools", "mymetrics"], True),
    ):
        args = [a for entry in allow for a in ("--allow-python", entry)]
        code, out, err = cli("run", art, *lm, "-i", "review=review number 2", *args)
        assert (code == 0) is ok, (allow, err)


def test_eval_refuses_before_any_lm_call_and_runs_when_allowed(cli, lm, server, tmp_path):
    prog = _project(tmp_path)
    art = _compiled(tmp_path, prog)
    data = write_jsonl(tmp_path / "d.jsonl", labeled_reviews(4))
    code, out, err = cli("eval", art, "--data", data, *lm)
    assert code == 2 and "would import 'mytools:shout'" in err
    assert server.requests == 0 and not (tmp_path / MARK).exists()
    code, out, err = cli("eval", art, "--data", data, *lm, "--allow-python", "mytools", "--allow-python", "mymetrics")
    assert code == 0, err
    assert sorted(set((tmp_path / MARK).read_text().split())) == sorted(m for m in sys.modules if m.endswith((".mytools", ".mymetrics")))


def test_eval_refuses_a_baseline_artifact_before_evaluating_the_candidate(cli, lm, server, tmp_path):
    prog = _project(tmp_path)
    base = _compiled(tmp_path, prog, "base.lmc.json", ref={"mytools:shout": "os:system"})
    data = write_jsonl(tmp_path / "d.jsonl", labeled_reviews(4))
    code, out, err = cli("eval", prog, "--data", data, *lm, "--baseline", base, "--allow-python", "mymetrics")
    assert code == 2 and "would import 'os:system'" in err
    assert server.requests == 0


def test_compile_refuses_an_artifact_input_before_any_lm_call(cli, lm, server, tmp_path):
    prog = _project(tmp_path)
    art = _compiled(tmp_path, prog, ref={"mymetrics:score": "os:getcwd"})
    data = write_jsonl(tmp_path / "d.jsonl", labeled_reviews(8))
    code, out, err = cli("compile", art, "--train", data, "-o", "out.lmc.json", "--optimizer", "none", *lm, "--allow-python", "mytools")
    assert code == 2 and "metric 'ok' would import 'os:getcwd'" in err
    assert server.requests == 0 and not (tmp_path / "out.lmc.json").exists()


def test_the_python_api_refuses_until_allowed(tmp_path, monkeypatch, server):
    import lmc
    from lmc.pyrefs import PythonNotAllowed

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    prog = _project(tmp_path)
    art = _compiled(tmp_path, prog)
    with pytest.raises(PythonNotAllowed, match="mytools:shout"):
        lmc.load(art, lm="openai/test", api_base=server.url, cache_dir=None)
    p = lmc.load(art, lm="openai/test", api_base=server.url, cache_dir=None, allow_python=["mytools", "mymetrics"])
    assert p(review="review number 3") == {"sentiment": "negative", "loud": "REVIEW NUMBER 3"}
    p.close()


# ---------------------------------------------------------------- a .lmp source and its own directory


def test_a_program_imports_its_own_directory_and_not_the_working_directory(cli, lm, tmp_path):
    prog = _project(tmp_path)
    # A same-named module in the working directory must not be what runs.
    (tmp_path / "mytools.py").write_text("def shout(text):\n    return 'WRONG FILE'\n")
    path_before = list(sys.path)
    code, out, err = cli("run", prog, *lm, "-i", "review=review number 2")
    assert code == 0, err
    assert json.loads(out)["loud"] == "REVIEW NUMBER 2"
    assert sys.path == path_before and "mytools" not in sys.modules  # no sys.path or plain-name pollution


@pytest.mark.parametrize("ref", ["os:system", "subprocess:getoutput", "evilmod:shout"])
def test_a_program_naming_the_stdlib_or_the_working_directory_is_refused(cli, lm, server, tmp_path, ref):
    prog = _project(tmp_path, tool=ref)
    _marker_module(tmp_path / "evilmod.py")
    code, out, err = cli("run", prog, *lm, "-i", "review=review number 2")
    assert code == 2
    line = _one_error_line(err)
    assert f"imports '{ref}', which is not in the program's directory" in line
    assert f"--allow-python {ref.split(':')[0]}" in line
    assert server.requests == 0 and not (tmp_path / MARK).exists()


def test_an_allowed_stdlib_function_runs(cli, lm, tmp_path):
    prog = _project(tmp_path, tool="html:escape")
    code, out, err = cli("run", prog, *lm, "-i", "review=review number 2 <b>", "--allow-python", "html:escape")
    assert code == 0, err
    assert json.loads(out)["loud"] == "review number 2 &lt;b&gt;"


def test_a_package_in_the_program_directory_with_relative_imports(cli, lm, tmp_path):
    prog = _project(tmp_path, tool="pkgtools.loud:shout")
    pkg = tmp_path / "programs" / "pkgtools"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helpers.py").write_text("def up(t):\n    return t.upper() + '!'\n")
    (pkg / "loud.py").write_text("from .helpers import up\n\ndef shout(text):\n    return up(text)\n")
    code, out, err = cli("run", prog, *lm, "-i", "review=review number 2")
    assert code == 0, err
    assert json.loads(out)["loud"] == "REVIEW NUMBER 2!"


def test_an_allowed_module_that_cannot_be_found_is_refused_before_any_lm_call(cli, lm, server, tmp_path):
    prog = _project(tmp_path, tool="nosuchmodule_xyz:f")
    code, out, err = cli("run", prog, *lm, "-i", "review=x", "--allow-python", "nosuchmodule_xyz")
    assert code == 2 and "cannot find module 'nosuchmodule_xyz'" in err
    assert server.requests == 0


def test_an_artifacts_recorded_program_path_cannot_point_outside_the_project(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from lmc.pyrefs import policy_for

    monkeypatch.chdir(tmp_path)
    (tmp_path / "programs").mkdir()
    for recorded, expect in (
        ("programs/x.lmp", str(tmp_path / "programs")),
        ("../x.lmp", None),
        ("/etc/x.lmp", None),
        ("~/x.lmp", None),
        ("programs/../../x.lmp", None),
        ("nodir/x.lmp", None),
        (None, None),
    ):
        art = SimpleNamespace(program={"path": recorded})
        policy = policy_for(SimpleNamespace(kind="artifact", path="a.lmc.json", artifact=art, ir=None))
        assert policy.base_dir == expect, recorded
        assert not policy.base_allowed


def test_malformed_references_in_an_artifact_are_refused(cli, lm, tmp_path):
    prog = _project(tmp_path)
    for bad in ("os.system", "a b:c", "../x:y", "x:y.z", ":f", "m:"):
        art = _compiled(tmp_path, prog, ref={"mytools:shout": bad})
        code, out, err = cli("run", art, *lm, "-i", "review=x", "--allow-python", "mytools", "--allow-python", "mymetrics")
        assert code == 2 and "package.module:function" in err, (bad, err)
