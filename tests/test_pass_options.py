"""Strict pass options: each pass of a chain its own options; unknown keys, unused flags and bad values refused up front."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.lmserver import LoopbackServer
from tests.test_programs_run import typed_responder

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server():
    with LoopbackServer(typed_responder) as srv:
        yield srv


@pytest.fixture
def ws(tmp_path, monkeypatch, server):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LMC_LM", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    shutil.copy(ROOT / "programs" / "sentiment.lmp", tmp_path / "s.lmp")
    rows = [{"id": f"r{i}", "review": f"review {i}", "sentiment": "positive" if i % 2 else "negative"} for i in range(8)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    server.reset_counters()
    return tmp_path


@pytest.fixture
def compile_(capsys, server):
    def go(*args) -> tuple[int, str]:
        from lmc.cli import main

        code = main(
            [
                "compile",
                "s.lmp",
                "--train",
                "d.jsonl",
                "--dev",
                "d.jsonl",
                "-o",
                "a.lmc.json",
                "--lm",
                "openai/test",
                "--api-base",
                server.url,
                "--cache-dir",
                "cache",
                *map(str, args),
            ]
        )
        err = capsys.readouterr().err
        assert "Traceback" not in err and "internal error" not in err, err
        return code, err

    return go


def test_each_pass_gets_its_own_options(ws, compile_):
    (ws / "p.yaml").write_text("- name: labeled\n  max_labeled: 1\n- name: random-search\n  max_labeled: 3\n  candidates: 2\n  max-demos: 2\n")
    code, err = compile_("--passes", "p.yaml")
    assert code == 0, err
    rep = json.loads((ws / "a.lmc.json").read_text())["compile"]
    assert rep["passes"] == [
        {"name": "labeled", "options": {"max_labeled": 1}},
        {"name": "random-search", "options": {"candidates": 2, "max_demos": 2, "max_labeled": 3, "max_rounds": 1}},
    ]


def test_a_flag_reaches_every_pass_that_takes_it_and_a_pass_entry_overrides_it(ws, compile_):
    (ws / "p.yaml").write_text("- labeled\n- name: bootstrap\n  max_labeled: 2\n")
    code, err = compile_("--passes", "p.yaml", "--max-labeled", "3")
    assert code == 0, err
    passes = json.loads((ws / "a.lmc.json").read_text())["compile"]["passes"]
    assert passes[0]["options"]["max_labeled"] == 3 and passes[1]["options"]["max_labeled"] == 2


@pytest.mark.parametrize(
    "yaml, fragment",
    [
        ("- name: bootstrap\n  max_demo: 2\n", "p.yaml: pass 1 (bootstrap): 'max_demo' is not an option of bootstrap; did you mean 'max_demos'?"),
        ("- name: bootstrap\n  trials: 3\n", "'trials' is not an option of bootstrap; it is an option of mipro"),
        ("- name: labeled\n- name: random-search\n  max_rounds: 0\n", "pass 2 (random-search): 'max_rounds' must be at least 1"),
        ("- name: mipro\n  candidates: many\n", "'candidates' must be a whole number, got 'many'"),
        ("- name: none\n  k: 3\n", "'k' is not an option of none; it is an option of knn"),
        ("- name: none\n  frobnicate: 3\n", "'frobnicate' is not an option of none; none takes no options"),
        ("- name: ensembel\n", "p.yaml: pass 1: unknown optimizer 'ensembel'; did you mean 'ensemble'?"),
        ("passes:\n  - none\nseed: 3\n", "p.yaml: unknown key 'seed'"),
    ],
)
def test_bad_passes_files_are_refused_before_any_lm_call(ws, compile_, server, yaml, fragment):
    (ws / "p.yaml").write_text(yaml)
    code, err = compile_("--passes", "p.yaml")
    assert code == 2, err
    assert fragment in err and len(err.strip().splitlines()) == 1, err
    assert server.requests == 0 and not (ws / "a.lmc.json").exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--optimizer", "bootstrap", "--trials", "5"], "--trials is not used by bootstrap; it is an option of mipro"),
        (["--optimizer", "mipro", "--max-rounds", "2"], "--max-rounds is not used by mipro; it is an option of bootstrap, random-search, ensemble"),
        (["--optimizer", "bootstrap", "--then", "mipro", "--k", "3"], "--k is not used by bootstrap → mipro; it is an option of knn"),
        (["--optimizer", "labeled", "--ensemble-size", "3"], "--ensemble-size is not used by labeled; it is an option of ensemble"),
        (["--optimizer", "bootstrap", "--prompt-lm", "openai/x"], "--prompt-lm is not used by bootstrap; it is used by mipro"),
        (["--optimizer", "labeled", "--teacher-lm", "openai/x"], "--teacher-lm is not used by labeled"),
        (["--optimizer", "none", "--finetune-dir", "ft"], "--finetune-dir is not used by none; it is an option of finetune-data"),
        (["--passes", "p.yaml", "--optimizer", "none"], "--passes replaces --optimizer and --then"),
    ],
)
def test_a_flag_no_pass_uses_is_an_error(ws, compile_, server, args, fragment):
    (ws / "p.yaml").write_text("- none\n")
    code, err = compile_(*args)
    assert code == 2, err
    assert fragment in err, err
    assert server.requests == 0


@pytest.mark.parametrize(
    "args, option",
    [
        (["--optimizer", "knn", "--k", "0"], "--k"),
        (["--optimizer", "ensemble", "--ensemble-size", "1"], "--ensemble-size"),
        (["--optimizer", "random-search", "--candidates", "0"], "--candidates"),
        (["--optimizer", "mipro", "--trials", "0"], "--trials"),
        (["--optimizer", "mipro", "--minibatch", "0"], "--minibatch"),
        (["--threshold", "1.5"], "--threshold"),
        (["--threshold", "-0.1"], "--threshold"),
        (["-j", "0"], "-j"),
        (["--max-calls", "0"], "--max-calls"),
        (["--rpm", "0"], "--rpm"),
        (["--example-timeout", "0"], "--example-timeout"),
    ],
)
def test_numbers_are_range_checked(ws, compile_, server, args, option):
    code, err = compile_(*args)
    assert code == 2, err
    assert err.startswith("Usage: lmc compile") and f"error: invalid value for option '{option}'" in err, err
    assert server.requests == 0


def test_the_options_the_passes_run_with_are_what_the_artifact_records(ws, compile_):
    code, err = compile_("--optimizer", "knn", "--max-demos", "2")
    assert code == 0, err
    [knn] = json.loads((ws / "a.lmc.json").read_text())["compile"]["passes"]
    assert knn == {"name": "knn", "options": {"k": 2, "max_demos": 2, "max_labeled": 4}}
