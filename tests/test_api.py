"""The Python API mirrors the CLI: lmc.check, lmc.compile, lmc.evaluate, lmc.load (and acompile, aevaluate),
typed results, the LmcError family, and the same answers as the commands on the same inputs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

import lmc
from lmc.errors import CompileErrors, ConfigError, LmcError
from lmc.metrics import MetricChoiceError
from tests.lmserver import LoopbackServer
from tests.test_compile_cli import SENTIMENT, responder, rows, write_jsonl

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server():
    with LoopbackServer(responder) as srv:
        yield srv


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    for var in ("LMC_LM", "LMC_CONCURRENCY", "LMC_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "s.lmp").write_text(SENTIMENT, encoding="utf-8")
    write_jsonl(tmp_path / "train.jsonl", rows(12, "t"))
    write_jsonl(tmp_path / "dev.jsonl", rows(6, "d"))
    return tmp_path


def lm(server) -> dict:
    return {"lm": "openai/test", "api_base": server.url}


def cli(*args: str) -> tuple[int, str]:
    from lmc.cli import main

    return main([str(a) for a in args]), ""


# ---------------------------------------------------------------- the package


def test_the_api_names_survive_their_submodules():
    """Importing lmc/check.py (or any module) never replaces the function lmc.check; lmc.load works twice."""
    import lmc.api  # noqa: F401
    from lmc.check import check_path  # noqa: F401 - imports the submodule lmc/check.py

    for name in ("load", "check", "compile", "evaluate", "acompile", "aevaluate"):
        assert callable(getattr(lmc, name)) and not isinstance(getattr(lmc, name), type(sys)), name


def test_load_twice_in_a_fresh_process(ws):
    code = (
        "import lmc\n"
        "a = lmc.load('s.lmp', lm='openai/test', cache_dir=None)\n"
        "b = lmc.load('s.lmp', lm='openai/test', cache_dir=None)\n"
        "import lmc.check\n"
        "lmc.check('s.lmp')\n"
        "print(a.input_names, b.output_names, lmc.check('s.lmp').ok)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ws,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['review'] ['sentiment'] True"


# ---------------------------------------------------------------- check


def test_check_returns_the_diagnostics_the_cli_prints(ws):
    assert lmc.check("s.lmp").ok
    (ws / "bad.lmp").write_text(SENTIMENT.replace("Predict(Classify)", "Predict(Clasify)"), encoding="utf-8")
    result = lmc.check("s.lmp", "bad.lmp")
    assert not result.ok and len(result.diagnostics) == 1
    d = result.diagnostics[0]
    assert d.span.path.endswith("bad.lmp") and "unknown signature 'Clasify'" in d.message
    assert "^" in result.rendered
    with pytest.raises(LmcError, match="nope.lmp: no such file"):
        lmc.check("nope.lmp")


# ---------------------------------------------------------------- compile


def test_compile_gives_the_artifact_the_cli_writes(ws, server):
    compiled = lmc.compile(
        "s.lmp",
        train="train.jsonl",
        dev="dev.jsonl",
        out="api.lmc.json",
        passes=["bootstrap"],
        options={"max_demos": 2, "max_labeled": 0},
        cache_dir="cache",
        **lm(server),
    )
    assert isinstance(compiled, lmc.Compiled) and compiled.path == "api.lmc.json"
    assert compiled.final is not None and compiled.final >= compiled.baseline
    assert [c["name"] for c in compiled.candidates] == ["as-written"]
    # The train reviews repeat the dev ones, so scoring dev first left the teacher's answers in the cache.
    assert compiled.passes == [{"name": "bootstrap", "requests": 0, "cost": 0.0, "candidates": 0}]
    assert compiled.artifact.compile["passes"][0]["options"]["max_demos"] == 2
    code, _ = cli(
        "compile",
        "s.lmp",
        "--train",
        "train.jsonl",
        "--dev",
        "dev.jsonl",
        "-o",
        "cli.lmc.json",
        "--optimizer",
        "bootstrap",
        "--max-demos",
        "2",
        "--max-labeled",
        "0",
        "--cache-dir",
        "cache",
        "--lm",
        "openai/test",
        "--api-base",
        server.url,
    )
    assert code == 0
    assert (ws / "api.lmc.json").read_bytes() == (ws / "cli.lmc.json").read_bytes()
    prog = compiled.load(cache_dir=None, **lm(server))
    assert prog(review="a good thing") == {"sentiment": "positive"}


def test_acompile_in_a_running_loop_and_its_errors(ws, server):
    async def go():
        return await lmc.acompile("s.lmp", train="train.jsonl", dev="dev.jsonl", out="a.lmc.json", passes=["labeled"], cache_dir=None, **lm(server))

    assert asyncio.run(go()).artifact.compile["optimizer"] == ["labeled"]
    with pytest.raises(ConfigError, match="unknown optimizer 'bootstrapp'; did you mean 'bootstrap'"):
        lmc.compile("s.lmp", train="train.jsonl", out="b.lmc.json", passes=["bootstrapp"], **lm(server))
    with pytest.raises(ConfigError, match="'max_demos' must be at least 0, got -1"):
        lmc.compile("s.lmp", train="train.jsonl", out="b.lmc.json", options={"max_demos": -1}, **lm(server))
    (ws / "bad.lmp").write_text("signature {", encoding="utf-8")
    with pytest.raises(CompileErrors):
        lmc.compile("bad.lmp", train="train.jsonl", out="b.lmc.json", **lm(server))
    assert not (ws / "b.lmc.json").exists()


# ---------------------------------------------------------------- evaluate


def test_evaluate_gives_the_report_and_verdict_the_cli_gives(ws, server):
    result = lmc.evaluate("s.lmp", data="dev.jsonl", min_score=0.9, report="api.json", cache_dir=None, **lm(server))
    assert isinstance(result, lmc.Evaluation)
    assert result.candidate.summary.n == 6 and result.baseline is None
    assert not result.passed and result.exit_code == 1  # MISLEAD examples are wrong zero-shot
    assert any("below" in r for r in result.verdict.reasons)
    code, _ = cli(
        "eval",
        "s.lmp",
        "--data",
        "dev.jsonl",
        "--min-score",
        "0.9",
        "--report",
        "cli.json",
        "--no-cache",
        "--lm",
        "openai/test",
        "--api-base",
        server.url,
    )
    assert code == result.exit_code
    api, cli_report = (json.loads((ws / n).read_text()) for n in ("api.json", "cli.json"))
    for doc in (api, cli_report):
        doc["summary"].pop("duration_s")
        doc["target"].pop("sha256", None)
    assert api["examples"] == cli_report["examples"] and api["summary"] == cli_report["summary"]


def test_evaluate_an_artifact_with_its_compile_metric_and_threshold(ws, server):
    (ws / "two.lmp").write_text(SENTIMENT + "metric em = exact_match(sentiment)\n", encoding="utf-8")
    lmc.compile(
        "two.lmp", train="train.jsonl", dev="dev.jsonl", out="two.lmc.json", passes=["none"], metric="em", threshold=0.5, cache_dir=None, **lm(server)
    )
    result = asyncio.run(lmc.aevaluate("two.lmc.json", data="dev.jsonl", cache_dir=None, **lm(server)))
    assert result.candidate.metric.name == "em" and result.candidate.metric.threshold == 0.5
    assert any("compiled with" in n for n in result.notes)
    other = lmc.evaluate("two.lmc.json", data="dev.jsonl", metric="acc", threshold=1.0, cache_dir=None, **lm(server))
    assert other.candidate.metric.name == "acc" and other.candidate.metric.threshold == 1.0
    with pytest.raises(MetricChoiceError, match="several metrics"):
        lmc.evaluate("two.lmp", data="dev.jsonl", cache_dir=None, **lm(server))


# ---------------------------------------------------------------- load


def test_load_calls_batches_and_refuses_bad_inputs(ws, server):
    prog = lmc.load("s.lmp", cache_dir=None, **lm(server))
    assert prog(review="a bad thing") == {"sentiment": "negative"}
    out = prog.batch([{"review": "good"}, {"review": "bad"}], jobs=2)
    assert out == [{"sentiment": "positive"}, {"sentiment": "negative"}]
    with pytest.raises(ConfigError, match="missing input field 'review'; did you mean 'reviw'"):
        prog(reviw="x")
    with pytest.raises(ConfigError, match="input field 'review' does not fit str"):
        prog(review=3)
    with pytest.raises(ConfigError, match="unknown input field 'extra'"):
        prog(review="x", extra=1)


# ---------------------------------------------------------------- the README's example


def test_the_readme_example_runs(tmp_path, monkeypatch):
    """The Python block of the README's API section, as written, against the loopback server (via the environment)."""
    import re
    import shutil

    from tests.test_programs_run import typed_responder

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### The Python API", 1)[1].split("\n### ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, re.S)
    (tmp_path / "programs").mkdir()
    (tmp_path / "datasets").mkdir()
    (tmp_path / "build").mkdir()
    shutil.copy(ROOT / "programs" / "route.lmp", tmp_path / "programs")
    for name in ("route_train.jsonl", "route_dev.jsonl", "route_test.jsonl"):
        shutil.copy(ROOT / "datasets" / name, tmp_path / "datasets")
    monkeypatch.chdir(tmp_path)
    with LoopbackServer(typed_responder) as srv:
        monkeypatch.setenv("LMC_LM", "openai/test")
        monkeypatch.setenv("LMC_API_BASE", srv.url)
        monkeypatch.setenv("LMC_CACHE_DIR", str(tmp_path / "cache"))
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "build" / "route-api.lmc.json").exists()
