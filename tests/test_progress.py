"""Progress outside a terminal: compile, eval and run print status lines (or lmc-progress/1 JSON) at an interval."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmc.errors import ConfigError
from lmc.progress import Progress, interval_from_env, resolve_mode
from tests.lmserver import LoopbackServer
from tests.test_compile_cli import SENTIMENT, responder, rows

ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-test-SECRET"

# One LM request takes longer than several intervals: the status must still arrive while nothing finishes.
LATENCY = 0.6
INTERVAL = "0.15"


@pytest.fixture(scope="module")
def slow_server():
    with LoopbackServer(responder, latency=LATENCY) as srv:
        yield srv


@pytest.fixture
def project(tmp_path):
    (tmp_path / "s.lmp").write_text(SENTIMENT)
    for name, n in (("train", 4), ("dev", 3)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(n, name)))
    return tmp_path


def lmc(cwd: Path, *args: str, interval: str = INTERVAL) -> subprocess.CompletedProcess:
    """The real CLI in a child process, its stderr a pipe (not a terminal), as in CI."""
    env = {**os.environ, "OPENAI_API_KEY": SECRET, "LMC_PROGRESS_INTERVAL": interval}
    env.pop("LMC_LM", None)
    return subprocess.run([sys.executable, "-m", "lmc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def lm(server) -> list[str]:
    return ["--lm", "openai/test", "--api-base", server.url, "-j", "2", "--no-cache"]


def status_lines(err: str, command: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("[") and f"s] {command}: " in ln]


def json_lines(err: str) -> list[dict]:
    out = []
    for ln in err.splitlines():
        if ln.startswith("{"):
            obj = json.loads(ln)
            assert obj["schema"] == "lmc-progress/1"
            out.append(obj)
    return out


def test_compile_prints_status_lines_while_waiting_for_the_lm(project, slow_server):
    r = lmc(
        project, "compile", "s.lmp", "--train", "train.jsonl", "--dev", "dev.jsonl", "-o", "s.lmc.json", "--optimizer", "labeled", *lm(slow_server)
    )
    assert r.returncode == 0, r.stderr
    lines = status_lines(r.stderr, "compile")
    # 2 dev scorings of 3 examples at 2 at a time, 0.6 s a request: well over a second, many intervals.
    assert len(lines) >= 5, r.stderr
    assert any("examples" in ln and "LM calls" in ln and "$" in ln for ln in lines), lines
    assert any("best dev score" in ln for ln in lines), lines
    assert any("ETA" in ln for ln in lines), lines
    assert "Traceback" not in r.stderr and SECRET not in r.stderr


def test_compile_progress_json_is_one_object_per_line(project, slow_server):
    r = lmc(
        project,
        "compile",
        "s.lmp",
        "--train",
        "train.jsonl",
        "--dev",
        "dev.jsonl",
        "-o",
        "s.lmc.json",
        "--optimizer",
        "labeled",
        "--progress",
        "json",
        *lm(slow_server),
    )
    assert r.returncode == 0, r.stderr
    objs = json_lines(r.stderr)
    events = [o["event"] for o in objs]
    assert events[0] == "start" and events[-1] == "end" and "stage" in events and events.count("progress") >= 3
    keys = {
        "schema",
        "event",
        "command",
        "elapsed_s",
        "stage",
        "done",
        "total",
        "failed",
        "calls",
        "cached_calls",
        "cost",
        "score",
        "score_kind",
        "eta_s",
    }
    assert all(set(o) == keys and o["command"] == "compile" for o in objs)
    elapsed = [o["elapsed_s"] for o in objs]
    assert elapsed == sorted(elapsed)
    end = objs[-1]
    assert end["calls"] >= 6 and end["score"] is not None and end["score_kind"] == "best"
    assert any(o["stage"].startswith("scoring the program as written") for o in objs)
    # No status text lines in JSON mode: stage changes are objects too.
    assert not status_lines(r.stderr, "compile")


def test_quiet_prints_no_progress_and_no_stages(project, slow_server):
    r = lmc(
        project,
        "compile",
        "s.lmp",
        "--train",
        "train.jsonl",
        "--dev",
        "dev.jsonl",
        "-o",
        "s.lmc.json",
        "--optimizer",
        "labeled",
        "--quiet",
        *lm(slow_server),
    )
    assert r.returncode == 0, r.stderr
    assert not status_lines(r.stderr, "compile") and not json_lines(r.stderr)
    assert "scoring the program as written" not in r.stderr
    assert "compiled" in r.stderr  # the result still prints


def test_eval_prints_status_with_running_score(project, slow_server):
    r = lmc(project, "eval", "s.lmp", "--data", "dev.jsonl", *lm(slow_server))
    assert r.returncode in (0, 1), r.stderr
    lines = status_lines(r.stderr, "eval")
    assert len(lines) >= 3, r.stderr
    assert all("/3 examples" in ln for ln in lines) and any("score so far" in ln for ln in lines), lines


def test_eval_with_baseline_counts_both_sides(project, slow_server):
    r = lmc(
        project, "eval", "s.lmp", "--data", "dev.jsonl", "--baseline", "s.lmp", "--progress", "json", *lm(slow_server)[:-1]
    )  # cached: the baseline's calls are the candidate's
    objs = json_lines(r.stderr)
    assert objs[0]["event"] == "start" and objs[1]["event"] == "stage"
    assert objs[-1]["total"] == 6 and objs[-1]["done"] == 6, r.stderr
    assert any(o["stage"] == "scoring the baseline" for o in objs)


def test_run_data_prints_status_and_stdout_stays_clean(project, slow_server):
    (project / "in.jsonl").write_text("".join(json.dumps({"id": f"x{i}", "review": f"fine {i}"}) + "\n" for i in range(4)))
    r = lmc(project, "run", "s.lmp", "--data", "in.jsonl", *lm(slow_server))
    assert r.returncode == 0, r.stderr
    lines = status_lines(r.stderr, "run")
    assert len(lines) >= 3 and all("/4 examples" in ln for ln in lines), r.stderr
    assert all(json.loads(ln)["id"].startswith("x") for ln in r.stdout.splitlines())


def test_progress_options_are_checked(project, slow_server):
    r = lmc(project, "run", "s.lmp", "--data", "x.jsonl", "--progress", "jsn")
    assert r.returncode == 2 and "did you mean 'json'" in r.stderr and "Traceback" not in r.stderr
    r = lmc(project, "eval", "s.lmp", "--data", "dev.jsonl", "--quiet", "--progress", "json", *lm(slow_server))
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: --quiet")
    r = lmc(project, "eval", "s.lmp", "--data", "dev.jsonl", *lm(slow_server), interval="soon")
    assert r.returncode == 2 and "LMC_PROGRESS_INTERVAL='soon'" in r.stderr


# ---------------------------------------------------------------- the reporter, on a clock the test moves


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeUsage:
    calls, cached_calls, cost = 7, 2, 0.0123


def test_status_line_eta_and_best_on_a_controlled_clock():
    clock, out = Clock(), io.StringIO()
    p = Progress("compile", "lines", stream=out, interval=3600, clock=clock, score_label="best dev score")
    p.watch(type("C", (), {"usage": FakeUsage()})())
    p.begin(10, stage="scoring candidate 2")
    clock.now += 4
    for _ in range(4):
        p.advance(score=0.5)
    p.record_best(0.75)
    line = p.line()
    assert line.startswith("[    4.0s] compile: scoring candidate 2")
    assert "4/10 examples" in line and "7 LM calls (2 cached)" in line and "$0.0123" in line
    assert "best dev score 0.750" in line and "ETA 6s" in line  # 1 s an example, 6 to go
    p.begin(5)
    assert p.eta() is None  # nothing finished in this batch yet: no guess
    p.advance(failed=True)
    assert "1/5 examples (1 failed)" in p.line()


def test_mean_score_when_no_best_and_json_snapshot():
    clock = Clock()
    p = Progress("eval", "json", stream=io.StringIO(), interval=3600, clock=clock)
    p.begin(4)
    p.advance(score=1.0)
    p.advance(score=0.0)
    snap = p.snapshot()
    assert snap["score"] == 0.5 and snap["score_kind"] == "mean" and snap["calls"] == 0
    assert "score so far 0.500" in p.line()


def test_modes():
    tty = type("T", (), {"isatty": lambda self: True})()
    pipe = io.StringIO()
    assert resolve_mode(None, stream=tty) == "panel"
    assert resolve_mode("auto", stream=pipe) == "lines"
    assert resolve_mode("json", stream=tty) == "json"
    assert resolve_mode(None, quiet=True) == "off"
    with pytest.raises(ConfigError):
        resolve_mode("lines", quiet=True)


def test_interval_env(monkeypatch):
    monkeypatch.delenv("LMC_PROGRESS_INTERVAL", raising=False)
    assert interval_from_env() == 10.0
    monkeypatch.setenv("LMC_PROGRESS_INTERVAL", "0.5")
    assert interval_from_env() == 0.5
    for bad in ("0", "-1", "nan", "x"):
        monkeypatch.setenv("LMC_PROGRESS_INTERVAL", bad)
        with pytest.raises(ConfigError):
            interval_from_env()


def test_a_terminal_keeps_the_live_panel(project, slow_server):
    """On a TTY: the rich panel (redrawn in place), not the status lines meant for logs."""
    import pty

    env = {**os.environ, "OPENAI_API_KEY": SECRET, "LMC_PROGRESS_INTERVAL": INTERVAL, "COLUMNS": "160"}
    env.pop("LMC_LM", None)
    args = [
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
        "s.lmc.json",
        "--optimizer",
        "labeled",
        *lm(slow_server),
    ]
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, cwd=project, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == 0
    text = b"".join(chunks).decode("utf-8", "replace")
    assert "best dev score" in text and "examples " in text  # the panel's second line
    assert "s] compile: " not in text  # no log-style status lines on a terminal
