"""Ctrl-C and SIGTERM stop lmc within a second, also in CPU-bound loops and batches; step and time limits per example.

The programs here call no LM: their loops are pure interpreter work, the case where
a coroutine that never gives the event loop a turn used to ignore the first SIGINT.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lmserver import LoopbackServer
from tests.test_programs_run import typed_responder

ROOT = Path(__file__).resolve().parent.parent
BIG = "--max-steps=1000000000000"

LOOP = """program main(n: int) -> (y: int) {
  i = 0
  while i < n max 1000000000000 {
    i = i + 1
  }
  return {"y": i}
}

metric same = exact_match(y)
"""

QUICK, HEAVY = 10, 10**12


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    for name in ("LMC_LM", "LMC_MAX_STEPS", "LMC_EXAMPLE_TIMEOUT"):
        env.pop(name, None)
    return env


def _lmc(*args) -> list[str]:
    return [sys.executable, "-m", "lmc", *map(str, args)]


def _stop(proc: subprocess.Popen, sig: int) -> tuple[float, str]:
    """Send `sig`; seconds until the process exited, and its stderr."""
    sent = time.monotonic()
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"lmc ignored signal {sig}: {err}") from None
    return time.monotonic() - sent, err


def _wait_for(pred, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not pred():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


@pytest.fixture
def ws(tmp_path):
    (tmp_path / "loop.lmp").write_text(LOOP)
    return tmp_path


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_cpu_bound_loop_stops_within_a_second(ws, sig, code):
    proc = subprocess.Popen(
        _lmc("run", "loop.lmp", "-i", f"n={HEAVY}", BIG), cwd=ws, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(2.0)  # well into the loop
    assert proc.poll() is None
    took, err = _stop(proc, sig)
    assert proc.returncode == code, err
    assert took < 1.0, f"took {took:.2f}s"
    assert "interrupted" in err and "Traceback" not in err


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_cpu_bound_batch_stops_within_a_second_keeps_its_lines_and_resumes(ws, sig, code):
    rows = [{"id": f"q{i}", "n": QUICK} for i in range(4)] + [{"id": f"h{i}", "n": HEAVY} for i in range(4)]
    (ws / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = ws / "out.jsonl"
    cmd = ["run", "loop.lmp", "--data", "in.jsonl", "--out", "out.jsonl", "-j", "2"]
    proc = subprocess.Popen(_lmc(*cmd, BIG), cwd=ws, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: out.exists() and out.read_text().count("\n") >= 4)
    time.sleep(0.5)  # the heavy examples are all running now
    took, err = _stop(proc, sig)
    assert proc.returncode == code, err
    assert took < 1.0, f"took {took:.2f}s"
    done = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in done) == ["q0", "q1", "q2", "q3"]  # finished lines kept, nothing torn
    # The rerun skips what finished; the heavy examples now meet a small step limit and fail with its line.
    again = subprocess.run(_lmc(*cmd, "--max-steps", "5000"), cwd=ws, env=_env(), capture_output=True, text=True, timeout=60)
    assert again.returncode == 1, again.stderr
    assert "4 run (0 ok, 4 failed), 4 already done of 8" in again.stderr
    final = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert len(final) == 8 == len(out.read_text().splitlines())
    assert "more than 5,000 statements and loop iterations" in final["h0"]["error"]
    assert "(line 4)" in final["h0"]["error"] and "--max-steps" in final["h0"]["error"]


@pytest.mark.parametrize("command", ["eval", "compile"])
def test_eval_and_compile_stop_within_a_second(ws, command):
    rows = [{"id": f"h{i}", "n": HEAVY, "y": 1} for i in range(6)]
    (ws / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = (
        ["eval", "loop.lmp", "--data", "d.jsonl", "--report", "r.json"]
        if command == "eval"
        else ["compile", "loop.lmp", "--train", "d.jsonl", "--dev", "d.jsonl", "-o", "a.lmc.json", "--optimizer", "none"]
    )
    proc = subprocess.Popen(_lmc(*args, BIG), cwd=ws, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.5)
    assert proc.poll() is None, proc.communicate()
    took, err = _stop(proc, signal.SIGTERM)
    assert proc.returncode == 143, err
    assert took < 1.0, f"took {took:.2f}s"
    assert not (ws / "r.json").exists() and not (ws / "a.lmc.json").exists()


def _inproc(capsys, *args):
    from lmc.cli import main

    code = main([*map(str, args)])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    return code, cap.out, cap.err


def test_the_step_limit_names_the_line(ws, capsys, monkeypatch):
    monkeypatch.chdir(ws)
    monkeypatch.delenv("LMC_LM", raising=False)
    code, _, err = _inproc(capsys, "run", "loop.lmp", "-i", f"n={HEAVY}", "--max-steps", "2000")
    assert code == 1
    assert err.strip() == (
        "error: the example ran more than 2,000 statements and loop iterations, the limit (--max-steps); a loop that never ends? (line 4)"
    )
    code, out, _ = _inproc(capsys, "run", "loop.lmp", "-i", "n=500", "--max-steps", "2000")
    assert code == 0 and json.loads(out) == {"y": 500}


def test_the_default_step_limit_ends_a_runaway_loop(ws, capsys, monkeypatch):
    monkeypatch.chdir(ws)
    monkeypatch.delenv("LMC_LM", raising=False)
    monkeypatch.delenv("LMC_MAX_STEPS", raising=False)
    start = time.monotonic()
    code, _, err = _inproc(capsys, "run", "loop.lmp", "-i", f"n={HEAVY}")
    assert code == 1 and "more than 10,000,000 statements" in err
    assert time.monotonic() - start < 60


def test_example_timeout_in_a_cpu_bound_loop_names_the_line(ws, capsys, monkeypatch):
    monkeypatch.chdir(ws)
    monkeypatch.delenv("LMC_LM", raising=False)
    start = time.monotonic()
    code, _, err = _inproc(capsys, "run", "loop.lmp", "-i", f"n={HEAVY}", BIG, "--example-timeout", "0.3")
    assert code == 1 and time.monotonic() - start < 5
    assert err.strip() == ("error: the example ran longer than the 0.3s limit (--example-timeout); stopped at line 4")


def test_example_timeout_while_waiting_for_the_lm(tmp_path, capsys, monkeypatch):
    """A slow LM: each example fails at its limit, naming the line of the module call, and the report says so."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LMC_LM", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    (tmp_path / "s.lmp").write_text((ROOT / "programs" / "sentiment.lmp").read_text())
    with LoopbackServer(typed_responder, latency=3.0) as srv:
        rows = [{"id": "a", "review": "one", "sentiment": "positive"}, {"id": "b", "review": "two", "sentiment": "positive"}]
        (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        start = time.monotonic()
        code, _, err = _inproc(
            capsys,
            "eval",
            "s.lmp",
            "--data",
            "in.jsonl",
            "--lm",
            "openai/test",
            "--api-base",
            srv.url,
            "--no-cache",
            "--example-timeout",
            "0.5",
            "--report",
            "r.json",
        )
        assert time.monotonic() - start < 2.5, err
    doc = json.loads((tmp_path / "r.json").read_text())
    for e in doc["examples"]:
        assert e["error"] == "the example ran longer than the 0.5s limit (--example-timeout); stopped at line 12"
        assert e["error_kind"] == "runtime"
