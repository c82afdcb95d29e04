"""`lmc inspect` (each predictor's exact prompt with its demos) and `lmc diff` (what changed between artifacts)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from lmc.artifact import Artifact, write
from lmc.check import check_source
from lmc.lower import lower
from tests.programs import TWO_STEP_COT as TWO_STEP


DEMO_Q = {"question": "Who wrote Hamlet?", "query": "Hamlet author", "_id": "t1"}
DEMO_R1 = {"query": "Hamlet author", "question": "Who wrote Hamlet?", "reasoning": "Hamlet is by Shakespeare.", "answer": "Shakespeare", "_id": "t1"}
DEMO_R2 = {
    "query": "capital of France",
    "question": "What is the capital of France?",
    "reasoning": "Paris is the capital.",
    "answer": "Paris",
    "_id": "t2",
}


def make(path: Path, *, demos_q=(), demos_r=(), reply_instr=None, temperature=None, score=0.5, optimizer=("none",)):
    ir = lower(check_source(TWO_STEP, "two.lmp"))
    q = replace(ir.predictor("make_query"), demos=tuple(demos_q))
    r = replace(ir.predictor("reply"), demos=tuple(demos_r))
    if reply_instr:
        r = replace(r, instructions=reply_instr)
    if temperature is not None:
        r = r.with_settings(temperature=temperature)
    ir = ir.with_predictors([q, r])
    program = {"name": "main", "path": "two.lmp", "source": TWO_STEP, "sha256": hashlib.sha256(TWO_STEP.encode()).hexdigest()}
    report = {
        "optimizer": list(optimizer),
        "scores": {"baseline": {"dev": 0.25}, "final": {"dev": score}},
        "metric": {"name": "em", "spec": "exact_match(answer)"},
    }
    write(Artifact(ir=ir, program=program, compile=report, lm={"model": "openai/test"}), path)
    return path


@pytest.fixture
def arts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LMC_LM", raising=False)
    a = make(tmp_path / "a.lmc.json", demos_q=[DEMO_Q], demos_r=[DEMO_R1], score=0.5, optimizer=["labeled"])
    b = make(
        tmp_path / "b.lmc.json",
        demos_q=[DEMO_Q],
        demos_r=[DEMO_R2],
        reply_instr="Answer in one to five words.",
        temperature=0.3,
        score=0.75,
        optimizer=["bootstrap", "mipro"],
    )
    return a, b


@pytest.fixture
def lmc(capsys):
    def run(*args) -> tuple[int, str, str]:
        from lmc.cli import main

        code = main([str(a) for a in args])
        cap = capsys.readouterr()
        assert "Traceback" not in cap.out + cap.err and "internal error" not in cap.err, cap.err
        return code, cap.out, cap.err

    return run


# ---------------------------------------------------------------- inspect


def test_inspect_json_holds_each_predictors_exact_prompt_with_demos(arts, lmc):
    from lmc.artifact import read
    from lmc.prompts import render

    a, _ = arts
    code, out, err = lmc("inspect", a, "--format", "json", "--lm", "openai/test")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["kind"] == "artifact" and doc["python"] == []  # this program imports no Python
    views = doc["predictors"]
    assert [v["id"] for v in views] == ["make_query", "reply"]
    ir = read(a).ir
    for v in views:
        p = ir.predictor(v["id"])
        expected = render(p, {f.name: "{" + f.name + "}" for f in p.signature.inputs}, mode="chat", demos=p.demos)
        assert v["prompt"] == expected.as_text()
        assert v["demos"] == [dict(d) for d in p.demos]
    reply = views[1]["prompt"]
    # the demo, with its intermediate reasoning, comes before the placeholders of the real input
    assert "Hamlet is by Shakespeare." in reply and reply.index("Shakespeare") < reply.index("{question}")
    assert "Answer the question." in reply


def test_inspect_text_predictor_filter_and_emit_prompts(arts, lmc, tmp_path):
    a, b = arts
    code, out, err = lmc("inspect", b, "--predictor", "reply", "--lm", "openai/test")
    assert code == 0, err
    assert "Answer in one to five words." in out and "Paris is the capital." in out
    assert "Write a search query." not in out  # only the predictor asked for
    assert "bootstrap → mipro" in out and "0.25 → 0.75" in out
    code, out, err = lmc("inspect", b, "--emit-prompts", tmp_path / "prompts", "--lm", "openai/test")
    assert code == 0, err
    files = sorted(p.name for p in (tmp_path / "prompts").iterdir())
    assert files == ["make_query.txt", "reply.txt"]
    text = (tmp_path / "prompts" / "reply.txt").read_text(encoding="utf-8")
    assert "Answer in one to five words." in text and "Paris" in text and "{query}" in text
    code, out, err = lmc("inspect", b, "--predictor", "replyy")
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "no predictor 'replyy'" in lines[0] and "reply" in lines[0]


def test_inspect_a_knn_artifact_says_demos_are_chosen_per_input(arts, lmc, tmp_path):
    from lmc.artifact import read

    art = read(arts[0])
    ir = art.ir.with_extra("knn", {"k": 1, "method": "bm25", "pools": {"reply": [DEMO_R1, DEMO_R2]}})
    write(replace(art, ir=ir), tmp_path / "k.lmc.json")
    code, out, err = lmc("inspect", tmp_path / "k.lmc.json", "--format", "json", "--lm", "openai/test")
    assert code == 0, err
    reply = json.loads(out)["predictors"][1]
    assert reply["prompt"].startswith("(knn: 1 of 2 pool demos are chosen per input")


# ---------------------------------------------------------------- diff


def test_diff_json_lists_instructions_demos_settings_and_scores(arts, lmc):
    a, b = arts
    code, out, err = lmc("diff", a, b, "--format", "json")
    assert code == 0, err
    d = json.loads(out)
    assert list(d["predictors"]) == ["reply"]  # make_query did not change
    ch = d["predictors"]["reply"]
    assert ch["instructions"] == {"old": "Answer the question.", "new": "Answer in one to five words."}
    assert ch["demos"]["added"] == [DEMO_R2] and ch["demos"]["removed"] == [DEMO_R1]
    assert ch["demos"]["old_count"] == ch["demos"]["new_count"] == 1
    assert ch["settings"]["new"]["temperature"] == 0.3 and "temperature" not in ch["settings"]["old"]
    assert d["scores"] == {"old": 0.5, "new": 0.75}
    assert d["optimizer"] == {"old": ["labeled"], "new": ["bootstrap", "mipro"]}
    assert d["program_changed"] is False


def test_diff_text_and_markdown_read_well_in_a_review(arts, lmc):
    a, b = arts
    code, out, err = lmc("diff", a, b)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1] == "dev score: 0.5 → 0.75"
    assert "predictor reply" in lines and "predictor make_query" not in lines
    assert "    - Answer the question." in lines and "    + Answer in one to five words." in lines
    # demos read in signature order: inputs, then reasoning, then the answer
    assert '    - query="Hamlet author"; question="Who wrote Hamlet?"; reasoning="Hamlet is by' in out
    assert any(ln.startswith("    - ") and "Shakespeare" in ln for ln in lines)
    assert any(ln.startswith("    + ") and "Paris" in ln for ln in lines)
    assert any("settings:" in ln and "0.3" in ln for ln in lines)
    code, md, err = lmc("diff", a, b, "--format", "markdown")
    assert code == 0, err
    assert md.startswith("## lmc diff") and "### predictor reply" in md
    code, same, err = lmc("diff", a, a)
    assert code == 0 and "no changes to predictors" in same


def test_diff_of_reordered_demos_and_a_bad_file(arts, lmc, tmp_path):
    c = make(tmp_path / "c.lmc.json", demos_r=[DEMO_R1, DEMO_R2])
    d = make(tmp_path / "d.lmc.json", demos_r=[DEMO_R2, DEMO_R1])
    code, out, err = lmc("diff", c, d, "--format", "json")
    assert code == 0, err
    assert json.loads(out)["predictors"]["reply"]["demos"] == {"reordered": True, "old_count": 2, "new_count": 2}
    code, out, err = lmc("diff", c, tmp_path / "missing.lmc.json")
    assert code != 0
    assert err.strip().splitlines() == [f"error: {tmp_path / 'missing.lmc.json'}: no such file"]
