"""`lmc compile` end to end against the loopback server: artifacts, determinism, budgets, resume and bad input."""

from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lmserver import LoopbackServer
from tests.programs import SENTIMENT
from tests.sentiment_lm import responder, rows

ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-test-SECRET"


def write_jsonl(path: Path, items: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in items), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server():
    with LoopbackServer(responder) as srv:
        yield srv


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """A project folder with the program and data, the working directory of every command."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("LMC_LM", raising=False)
    (tmp_path / "s.lmp").write_text(SENTIMENT, encoding="utf-8")
    write_jsonl(tmp_path / "train.jsonl", rows(12, "t"))
    write_jsonl(tmp_path / "dev.jsonl", rows(6, "d"))
    return tmp_path


@pytest.fixture
def lmc(ws, server, capsys):
    """Runs `lmc ...` in-process; returns (exit code, stdout, stderr). Never a traceback."""

    def run(*args: str) -> tuple[int, str, str]:
        from lmc.cli import main

        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err + captured.out
        assert "internal error" not in captured.err, captured.err
        return code, captured.out, captured.err

    def compile_(*args: str, out: str = "out.lmc.json", lm: bool = True) -> tuple[int, str, str]:
        extra = ["--lm", "openai/test", "--api-base", server.url] if lm else []
        return run("compile", "s.lmp", "--train", "train.jsonl", "--dev", "dev.jsonl", "-o", out, "--cache-dir", "cache", *extra, *args)

    run.compile = compile_
    return run


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


def artifact(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ---------------------------------------------------------------- the artifact


def test_compile_writes_an_artifact_that_runs(lmc, ws, server):
    code, out, err = lmc.compile("--optimizer", "bootstrap", "--max-demos", "2", "--max-labeled", "0")
    assert code == 0, err
    art = artifact("out.lmc.json")
    assert art["format"] == "lmc-artifact/1"
    demos = art["predictors"]["classify"]["demos"]
    # t00 is MISLEAD and fails zero-shot; the classes alternate in the order of the type's options
    assert sorted(d["_id"] for d in demos) == ["t01", "t02"]
    assert [d["sentiment"] for d in demos] == ["positive", "negative"]
    rep = art["compile"]
    assert rep["optimizer"] == ["bootstrap"] and rep["seed"] == 0
    assert rep["metric"]["name"] == "acc"
    assert rep["data"]["train"] == {"path": "train.jsonl", "sha256": rep["data"]["train"]["sha256"], "n": 12}
    assert rep["data"]["dev"]["n"] == 6
    # dev: d00 and d03 are MISLEAD; zero-shot misses both, two demos fix them
    assert rep["scores"]["baseline"]["dev"] == pytest.approx(4 / 6, abs=1e-6)
    assert rep["scores"]["final"]["dev"] == 1.0
    assert "zero-shot" in err and "compiled" in err
    code, out, err = lmc("run", "out.lmc.json", "--lm", "openai/test", "--api-base", server.url, "--input", '{"review": "bad stuff MISLEAD"}')
    assert code == 0, err
    assert json.loads(out) == {"sentiment": "negative"}


def test_artifact_holds_no_key_and_no_absolute_path(lmc, ws, server):
    # an absolute -o, and absolute data paths, must not leak into the artifact
    code, _, err = lmc(
        "compile",
        str(ws / "s.lmp"),
        "--train",
        str(ws / "train.jsonl"),
        "--dev",
        str(ws / "dev.jsonl"),
        "-o",
        str(ws / "abs" / "a.lmc.json"),
        "--optimizer",
        "labeled",
        "--lm",
        "openai/test",
        "--api-base",
        server.url,
        "--cache-dir",
        str(ws / "cache"),
    )
    assert code == 0, err
    for name in ("a.lmc.json", "a.stats.json"):
        text = (ws / "abs" / name).read_text(encoding="utf-8")
        assert SECRET not in text, name
        assert str(Path.home()) not in text and str(ws) not in text, name
        assert "/tmp" not in text and "/root" not in text, name


def test_random_search_reports_every_candidate_and_keeps_the_best(lmc, ws):
    code, _, err = lmc.compile("--optimizer", "random-search", "--candidates", "2", "--max-demos", "2", "--max-labeled", "1")
    assert code == 0, err
    rep = artifact("out.lmc.json")["compile"]
    names = [c["name"] for c in rep["candidates"]]
    assert names[:6] == [
        "as-written",
        "random-search:zero-shot",
        "random-search:labeled-only",
        "random-search:bootstrap",
        "random-search:bootstrap-1",
        "random-search:bootstrap-2",
    ]
    # then the best demo set with 1 and 2 demos and in other orders (those not already scored)
    assert all(re.fullmatch(r"random-search:[a-z-]+\d?-(1|2|all)-(built|reversed|similar-last)", n) for n in names[6:]), names
    scores = {c["name"]: c["dev"] for c in rep["candidates"]}
    assert all(isinstance(s, float) for s in scores.values())
    assert scores["random-search:zero-shot"] == scores["as-written"] == pytest.approx(4 / 6, abs=1e-6)
    assert scores["random-search:labeled-only"] == pytest.approx(4 / 6, abs=1e-6)  # one demo is not enough
    assert rep["scores"]["final"]["dev"] == max(scores.values()) == 1.0
    assert "candidates" in err  # the summary table lists them


def test_bootstrap_then_mipro_and_a_passes_file_compose(lmc, ws):
    code, _, err = lmc.compile(
        "--optimizer",
        "bootstrap",
        "--then",
        "mipro",
        "--max-demos",
        "1",
        "--trials",
        "4",
        "--instructions",
        "2",
        "--candidates",
        "1",
        "--minibatch",
        "3",
    )
    assert code == 0, err
    art = artifact("out.lmc.json")
    rep = art["compile"]
    assert rep["optimizer"] == ["bootstrap", "mipro"]
    assert any(c["name"].startswith("mipro:trial-") for c in rep["candidates"])
    assert rep["scores"]["final"]["dev"] >= rep["scores"]["baseline"]["dev"]
    (ws / "passes.yaml").write_text("passes:\n  - labeled\n  - name: random-search\n    candidates: 1\n", encoding="utf-8")
    code, _, err = lmc.compile("--passes", "passes.yaml", out="p.lmc.json")
    assert code == 0, err
    rep = artifact("p.lmc.json")["compile"]
    assert rep["optimizer"] == ["labeled", "random-search"]
    assert rep["passes"] == [
        {"name": "labeled", "options": {"max_labeled": 4}},
        {"name": "random-search", "options": {"candidates": 1, "max_demos": 4, "max_labeled": 4, "max_rounds": 1}},
    ]
    names = [c["name"] for c in rep["candidates"]]
    assert "random-search:bootstrap-1" in names
    assert all(n.endswith(("-built", "-reversed", "-similar-last")) for n in names[names.index("random-search:bootstrap-1") + 1 :])


# ---------------------------------------------------------------- determinism and the cache


def test_same_seed_data_and_cache_give_byte_identical_artifacts_and_a_warm_recompile_calls_nothing(lmc, ws, server):
    args = ("--optimizer", "random-search", "--candidates", "2", "--max-demos", "2")
    code, _, err = lmc.compile(*args, out="a.lmc.json")
    assert code == 0, err
    before = server.requests
    code, _, err = lmc.compile(*args, out="b.lmc.json")
    assert code == 0, err
    assert server.requests == before, "a warm-cache recompile must make no LM call"
    assert (ws / "a.lmc.json").read_bytes() == (ws / "b.lmc.json").read_bytes()
    stats = json.loads((ws / "b.stats.json").read_text())
    assert stats["calls"] == stats["cached_calls"] > 0
    # a cold cache (fresh directory) and another -j give the same bytes too
    code, _, err = lmc.compile(*args, "--cache-dir", "cache2", "-j", "1", out="c.lmc.json")
    assert code == 0, err
    assert (ws / "a.lmc.json").read_bytes() == (ws / "c.lmc.json").read_bytes()
    code, _, err = lmc.compile(*args, "-j", "16", out="d.lmc.json")
    assert code == 0, err
    assert (ws / "a.lmc.json").read_bytes() == (ws / "d.lmc.json").read_bytes()
    # another seed is another compile
    code, _, err = lmc.compile(*args, "--seed", "5", out="e.lmc.json")
    assert code == 0, err
    assert artifact("e.lmc.json")["compile"]["seed"] == 5


# ---------------------------------------------------------------- budgets


def test_max_calls_ends_the_search_with_the_best_program_so_far(lmc, ws):
    # zero-shot scoring takes 6 calls; the bootstrap candidates need more than the budget leaves
    code, _, err = lmc.compile("--optimizer", "random-search", "--candidates", "6", "--max-calls", "20", "--no-cache")
    assert code == 0, err
    rep = artifact("out.lmc.json")["compile"]
    assert rep["budget"] == {"max_calls": 20, "max_cost": None, "exhausted": True}
    assert rep["lm_requests"] <= 20
    assert any("budget exhausted" in n for n in rep["notes"])
    assert "budget ran out" in err
    scored = [c["dev"] for c in rep["candidates"] if c["dev"] is not None]
    assert rep["scores"]["final"]["dev"] == max(scored)
    assert len(rep["candidates"]) < 1 + 9


def test_budget_spent_before_the_first_candidate_is_an_error_unless_allow_partial(lmc, ws, server):
    code, _, err = lmc.compile("--optimizer", "bootstrap", "--max-calls", "3", "--no-cache")
    assert code != 0
    line = err.strip().splitlines()[-1]  # after the progress lines, one line says why
    assert line.startswith("error: ") and "Traceback" not in err
    assert "budget" in line and "--allow-partial" in line
    assert not (ws / "out.lmc.json").exists()
    code, _, err = lmc.compile("--optimizer", "bootstrap", "--max-calls", "3", "--no-cache", "--allow-partial")
    assert code == 0, err
    art = artifact("out.lmc.json")
    assert art["compile"]["budget"]["exhausted"] is True
    assert art["predictors"]["classify"]["demos"] == []  # the program as written
    code, out, err = lmc("run", "out.lmc.json", "--lm", "openai/test", "--api-base", server.url, "--input", '{"review": "good"}')
    assert code == 0 and json.loads(out) == {"sentiment": "positive"}, err


# ---------------------------------------------------------------- bad input


BAD_INPUTS = [
    ("missing_input", {"train": [{"id": "x1", "text": "good", "sentiment": "positive"}]}, [], ("train.jsonl:1:", "missing input field 'review'")),
    ("wrong_label_type", {"train": [{"id": "x1", "review": "good", "sentiment": 3}]}, [], ("train.jsonl:1:", "label 'sentiment'", "got 3")),
    ("empty_trainset", {"train": []}, [], ("train.jsonl", "empty")),
    ("unknown_metric", {}, ["--metric", "accuracyy"], ("unknown metric 'accuracyy'", "acc", "exact_match")),
    ("metric_field_not_output", {"lmp": SENTIMENT.replace("accuracy(sentiment)", "accuracy(label)")}, [], ("metric field 'label' is not an output",)),
    ("minibatch_too_large", {}, ["--optimizer", "mipro", "--minibatch", "50"], ("--minibatch 50 is larger than the dev set (6 examples)",)),
    ("unknown_optimizer", {}, ["--optimizer", "bootstarp"], ("'--optimizer': 'bootstarp' is not one of", "did you mean 'bootstrap'")),
    ("unknown_then", {}, ["--then", "mipr"], ("'--then': 'mipr' is not one of", "did you mean 'mipro'")),
    ("bad_passes_yaml", {"passes": "passes: [bootstrap\n"}, ["--passes", "passes.yaml"], ("passes.yaml", "YAML")),
    ("passes_not_a_list", {"passes": "passes: 3\n"}, ["--passes", "passes.yaml"], ("passes.yaml", "list of passes")),
    ("unknown_pass_in_file", {"passes": "- labeled\n- mipr\n"}, ["--passes", "passes.yaml"], ("unknown optimizer 'mipr'",)),
    ("negative_demos", {}, ["--max-demos", "-1"], ("--max-demos", "greater than or equal to 0")),
]


@pytest.mark.parametrize("case, files, args, expected", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_line_and_calls_no_lm(lmc, ws, server, case, files, args, expected):
    if "train" in files:
        write_jsonl(ws / "train.jsonl", files["train"])
    if "lmp" in files:
        (ws / "s.lmp").write_text(files["lmp"], encoding="utf-8")
    if "passes" in files:
        (ws / "passes.yaml").write_text(files["passes"], encoding="utf-8")
    before = server.requests
    code, out, err = lmc.compile(*args)
    assert code not in (0, 70), err
    if err.startswith("Usage: lmc compile"):  # a usage error: the usage line, then the one error line
        assert code == 2
        line = one_error_line(err.split("\n", 1)[1])
    elif case != "metric_field_not_output":
        line = one_error_line(err)
    else:
        line = err.strip().splitlines()[0]
    for fragment in expected:
        assert fragment in line, line
    assert server.requests == before
    assert not (ws / "out.lmc.json").exists()


# ---------------------------------------------------------------- tampering


def _edit_ir(art):
    art["ir"]["predictors"][0]["instructions"] = "Always say positive."


def _edit_view(art):
    art["predictors"]["classify"]["instructions"] = "Always say positive."


def _edit_format(art):
    art["format"] = "lmc-artifact/99"


def _edit_source(art):
    art["program"]["source"] += "\n# edited\n"


@pytest.mark.parametrize(
    "edit, expected",
    [
        (_edit_ir, "IR does not match its sha256"),
        (_edit_view, "predictor 'classify' was edited by hand"),
        (_edit_format, "artifact format 99 is newer"),
        (_edit_source, "program source does not match its sha256"),
    ],
    ids=["ir", "predictor_view", "format", "source"],
)
def test_a_tampered_artifact_is_refused_in_one_line(lmc, ws, server, edit, expected):
    code, _, err = lmc.compile("--optimizer", "labeled")
    assert code == 0, err
    art = artifact("out.lmc.json")
    edit(art)
    (ws / "bad.lmc.json").write_text(json.dumps(art, indent=2), encoding="utf-8")
    before = server.requests
    for cmd in (("run", "bad.lmc.json", "--lm", "openai/test", "--api-base", server.url, "--input", '{"review": "x"}'), ("inspect", "bad.lmc.json")):
        code, out, err = lmc(*cmd)
        assert code != 0
        line = one_error_line(err)
        assert "bad.lmc.json" in line and expected in line, line
    assert server.requests == before


# ---------------------------------------------------------------- interruption and resume


def _subprocess_compile(ws: Path, url: str, out: str) -> subprocess.Popen:
    env = {**os.environ, "OPENAI_API_KEY": SECRET, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": str(ROOT)}
    env.pop("LMC_LM", None)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lmc",
            "compile",
            "s.lmp",
            "--train",
            "train.jsonl",
            "--dev",
            "dev.jsonl",
            "-o",
            out,
            "--optimizer",
            "random-search",
            "--candidates",
            "3",
            "--max-demos",
            "2",
            "--cache-dir",
            "cache",
            "-j",
            "1",
            "--lm",
            "openai/test",
            "--api-base",
            url,
        ],
        cwd=ws,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_an_interrupted_compile_resumes_from_the_cache_without_repeating_a_call(ws):
    """Ctrl-C, then kill -9, then a rerun that completes: no finished call is asked twice."""
    answered: list[str] = []

    def slow(request: dict) -> str:
        time.sleep(0.03)
        reply = responder(request)
        answered.append(json.dumps(request.get("messages"), sort_keys=True) + str(request.get("temperature")))
        return reply

    with LoopbackServer(slow) as srv:
        for sig, stop_at in ((signal.SIGINT, 8), (signal.SIGKILL, 20)):
            proc = _subprocess_compile(ws, srv.url, "out.lmc.json")
            deadline = time.time() + 60
            while len(answered) < stop_at and time.time() < deadline and proc.poll() is None:
                time.sleep(0.01)
            assert proc.poll() is None, "the compile ended before it could be interrupted"
            finished = len(answered)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL), err
            assert "Traceback" not in err
            if sig == signal.SIGINT:
                assert err.strip().splitlines()[-1].startswith("interrupted; no artifact was written"), err
            assert not (ws / "out.lmc.json").exists(), "an interrupted compile must not leave an artifact"
            assert not [p for p in ws.iterdir() if ".tmp" in p.name]
            time.sleep(0.1)
            # with -j 1 at most the one call in flight at the signal was answered but never cached
            assert len(answered) <= finished + 1
        done_before = list(answered)
        proc = _subprocess_compile(ws, srv.url, "out.lmc.json")
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert len(answered) > len(done_before), "the rerun had work left"
        # one call per interruption may have been answered by the server but never received (or cached)
        repeats = len(answered) - len(set(answered))
        assert repeats <= 2, f"{repeats} answered calls were asked again after the restarts"
    art = artifact(ws / "out.lmc.json")
    assert art["compile"]["scores"]["final"]["dev"] == 1.0


def test_without_dev_the_trainset_is_split_with_the_seed_and_says_so(lmc, ws, server):
    code, _, err = lmc(
        "compile",
        "s.lmp",
        "--train",
        "train.jsonl",
        "-o",
        "out.lmc.json",
        "--optimizer",
        "none",
        "--cache-dir",
        "cache",
        "--seed",
        "3",
        "--lm",
        "openai/test",
        "--api-base",
        server.url,
    )
    assert code == 0, err
    assert "no --dev given: split train.jsonl with seed 3 into 8 train and 4 dev examples" in err
    data = artifact("out.lmc.json")["compile"]["data"]
    assert data["train"]["n"] == 8 and data["dev"]["n"] == 4
    assert data["split"] == {"from": "train.jsonl", "dev_fraction": 0.3, "seed": 3}


# ---------------------------------------------------------------- run-time strategies and side outputs


def test_knn_artifact_runs_with_demos_chosen_per_input(lmc, ws, server):
    code, _, err = lmc.compile("--optimizer", "knn", "--k", "2")
    assert code == 0, err
    art = artifact("out.lmc.json")
    pools = art["ir"]["extras"]["items"][0]
    assert pools[0] == "knn" and len(pools[1]["pools"]["classify"]) == 12
    assert art["compile"]["scores"]["final"]["dev"] == 1.0  # two similar demos fix the MISLEAD reviews
    code, out, err = lmc(
        "run", "out.lmc.json", "--lm", "openai/test", "--api-base", server.url, "--input", '{"review": "a bad thing number 3 MISLEAD"}'
    )
    assert code == 0 and json.loads(out) == {"sentiment": "negative"}, err


def test_ensemble_and_finetune_data_from_the_cli(lmc, ws):
    code, _, err = lmc.compile("--optimizer", "ensemble", "--candidates", "2", "--ensemble-size", "3")
    assert code == 0, err
    rep = artifact("out.lmc.json")["compile"]
    assert rep["optimizer"] == ["ensemble"] and any(c["name"].startswith("ensemble:") for c in rep["candidates"])
    code, _, err = lmc.compile("--optimizer", "finetune-data", "--max-labeled", "0", out="ft.lmc.json")
    assert code == 0, err
    files = sorted(p.name for p in (ws / "ft.finetune").iterdir())
    assert files == ["classify.jsonl"]
    lines = (ws / "ft.finetune" / "classify.jsonl").read_text().splitlines()
    assert len(lines) == 8  # the 12 training reviews minus the 4 MISLEAD ones the unprimed teacher gets wrong
    assert all("MISLEAD" not in line for line in lines)
    assert artifact("ft.lmc.json")["compile"]["passes"][-1]["options"]["finetune_dir"] == "ft.finetune"


def test_an_artifact_compiles_further(lmc, ws, server):
    code, _, err = lmc.compile("--optimizer", "labeled", "--max-labeled", "1", out="a.lmc.json")
    assert code == 0, err
    code, _, err = lmc(
        "compile",
        "a.lmc.json",
        "--train",
        "train.jsonl",
        "--dev",
        "dev.jsonl",
        "-o",
        "b.lmc.json",
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
    assert code == 0, err
    a, b = artifact("a.lmc.json"), artifact("b.lmc.json")
    assert len(a["predictors"]["classify"]["demos"]) == 1
    assert b["compile"]["scores"]["baseline"]["dev"] == a["compile"]["scores"]["final"]["dev"]
    assert b["compile"]["scores"]["final"]["dev"] == 1.0
    assert b["program"]["sha256"] == a["program"]["sha256"]


def test_a_compile_never_returns_a_program_worse_than_the_one_written(lmc, ws):
    fragile = [{**r, "review": r["review"].replace(" MISLEAD", "") + " FRAGILE"} for r in rows(6, "f")]
    write_jsonl(ws / "dev.jsonl", fragile)
    code, out, err = lmc.compile("--optimizer", "labeled", "--max-labeled", "2")
    assert code == 0, err
    art = artifact(ws / "out.lmc.json")
    assert art["compile"]["scores"]["baseline"]["dev"] == 1.0
    assert art["compile"]["scores"]["final"]["dev"] == 1.0
    assert all(not p["demos"] for p in art["predictors"].values())  # the program as written
    assert any("kept the program as written" in n for n in art["compile"]["notes"])
    code, out, err = lmc.compile("--optimizer", "labeled", "--max-labeled", "2", "--keep-worse", out="worse.lmc.json")
    assert code == 0, err
    worse = artifact(ws / "worse.lmc.json")
    assert worse["compile"]["scores"]["final"]["dev"] == 0.0 and worse["predictors"]["classify"]["demos"]


def test_no_score_dev_makes_a_labeled_compile_free(lmc, ws, server):
    before = server.requests
    code, out, err = lmc.compile("--optimizer", "labeled", "--max-labeled", "2", "--no-score-dev")
    assert code == 0, err
    assert server.requests == before  # no LM call at all, like a plain few-shot setup
    art = artifact(ws / "out.lmc.json")
    assert art["compile"]["scores"]["final"]["dev"] is None and art["predictors"]["classify"]["demos"]
