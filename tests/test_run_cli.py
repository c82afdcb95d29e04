"""`lmc run`: single inputs, streamed batches, resume, exit codes, one-line errors, traces and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lmserver import LoopbackServer
from tests.test_programs_run import typed_responder

ROOT = Path(__file__).resolve().parent.parent
SENTIMENT = ROOT / "programs" / "sentiment.lmp"
SECRET = "sk-test-SECRET"


def responder(request: dict) -> str:
    text = json.dumps(request.get("messages") or request.get("prompt"))
    if "BADREVIEW" in text:
        return "I would rather not say."
    return typed_responder(request)


@pytest.fixture(scope="module")
def server():
    with LoopbackServer(responder) as srv:
        yield srv


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Runs `lmc ...` in-process from tmp_path; returns (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("LMC_LM", raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        from lmc.cli import main

        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err + captured.out
        return code, captured.out, captured.err

    return run


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def reviews(n: int, bad: tuple[int, ...] = ()) -> list[dict]:
    return [{"id": f"r{i:03d}", "review": ("BADREVIEW " if i in bad else "") + f"review number {i}"} for i in range(n)]


def lm_args(server) -> list[str]:
    return ["--lm", "openai/test", "--api-base", server.url]


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


# ---------------------------------------------------------------- single input


def test_single_input_json_and_fields(cli, server):
    code, out, err = cli("run", SENTIMENT, *lm_args(server), "--input", '{"review": "Great phone."}')
    assert code == 0, err
    assert json.loads(out) == {"sentiment": "positive"}
    code, out, err = cli("run", SENTIMENT, *lm_args(server), "-i", "review=42")
    assert code == 0, err  # a str field keeps "42" as text instead of failing as a number
    assert json.loads(out) == {"sentiment": "positive"}


def test_single_input_that_fails_exits_1_with_raw_output(cli, server):
    code, out, err = cli("run", SENTIMENT, *lm_args(server), "-i", "review=BADREVIEW meh")
    assert code == 1 and out == ""
    line = one_error_line(err)
    assert "I would rather not say." in line and "classify" in line


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--input", "{review: 1}"], "--input is not valid JSON"),
        (["--input", "[1, 2]"], "must be a JSON object"),
        (["--input", '{"reviw": "x"}'], "missing input field 'review'; did you mean 'reviw'?"),
        (["--input", '{"review": 3}'], "input field 'review' does not fit str"),
        (["--input", "[" * 50_000 + "]" * 50_000], "--input: JSON nested too deeply"),
        (["--input", '{"review": ' + "1" * 5000 + "}"], "--input: a number with 5000 digits is too long; write it as a string"),
        (["--input", '{"review": "a", "review": "b"}'], "--input: duplicate key 'review' in one object"),
        (["-i", "review"], "expected field=value"),
        ([], "nothing to run"),
        (["-i", "review=x", "--out", "o.jsonl"], "--out is for --data"),
    ],
)
def test_bad_single_inputs_are_one_line_usage_errors(cli, server, args, expected):
    code, out, err = cli("run", SENTIMENT, *lm_args(server), *args)
    assert code == 2
    assert expected in one_error_line(err)


# ---------------------------------------------------------------- batches and resume


def test_batch_streams_one_line_per_example(cli, server, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", reviews(12))
    code, out, err = cli("run", SENTIMENT, *lm_args(server), "--data", data, "--out", "out.jsonl", "-j", "4", "--cache-dir", "cache")
    assert code == 0, err
    rows = read_lines(tmp_path / "out.jsonl")
    assert sorted(r["id"] for r in rows) == [f"r{i:03d}" for i in range(12)]
    for r in rows:
        assert list(r) == ["id", "line", "input_sha256", "program_sha256", "lm", "outputs", "error", "error_kind", "usage"]
        assert len(r["input_sha256"]) == len(r["program_sha256"]) == 64 and r["lm"] == "openai/test"
        assert r["outputs"] == {"sentiment": "positive"} and r["error"] is None
        assert r["line"] == int(r["id"][1:]) + 1
        assert r["usage"]["calls"] == 1 and r["usage"]["prompt_tokens"] > 0
    assert err.startswith("done: 12 run (12 ok, 0 failed) of 12")  # the plain summary when stderr is no TTY


def test_resume_after_a_torn_file_repeats_no_request(cli, server, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", reviews(20))
    args = ["run", SENTIMENT, *lm_args(server), "--data", data, "--out", "out.jsonl", "--cache-dir", "cache"]
    server.reset_counters()
    assert cli(*args)[0] == 0
    assert server.requests == 20 + 1  # and the endpoint's JSON-schema probe
    out = tmp_path / "out.jsonl"
    lines = out.read_bytes().splitlines(keepends=True)
    # Keep 12 whole lines and half of the 13th, as a crash mid-write would.
    out.write_bytes(b"".join(lines[:12]) + lines[12][: len(lines[12]) // 2])
    code, _, err = cli(*args)
    assert code == 0, err
    assert "dropped 1 torn line" in err and "12 already done" in err
    ids = [r["id"] for r in read_lines(out)]
    assert sorted(ids) == [f"r{i:03d}" for i in range(20)]  # each id exactly once
    assert server.requests == 21 and server.duplicates() == 0  # the redone examples came from the cache
    # A third run has nothing to do and sends nothing.
    code, _, err = cli(*args)
    assert code == 0 and "0 run" in err and "20 already done" in err
    assert server.requests == 21


def test_failures_exit_1_and_others_go_on(cli, server, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", reviews(6, bad=(2, 4)))
    code, _, err = cli("run", SENTIMENT, *lm_args(server), "--data", data, "--out", "out.jsonl", "--no-cache")
    assert code == 1
    assert "4 ok, 2 failed" in err
    rows = {r["id"]: r for r in read_lines(tmp_path / "out.jsonl")}
    assert len(rows) == 6
    for i in (2, 4):
        r = rows[f"r{i:03d}"]
        assert r["outputs"] is None and r["error_kind"] == "parse"
        assert "I would rather not say." in r["error"]
    # Rerunning keeps the verdict: the failures are still in the file.
    code, _, _ = cli("run", SENTIMENT, *lm_args(server), "--data", data, "--out", "out.jsonl", "--no-cache")
    assert code == 1


@pytest.mark.parametrize(
    "rows, expected",
    [
        (['{"id": "a", "review": "x"}', '{"id": "b", "review": '], "in.jsonl:2:"),
        ([{"id": "a", "review": "x"}, {"id": "b", "text": "y"}], "in.jsonl:2: missing input field 'review'"),
        ([{"id": "a", "review": ["x"]}], "in.jsonl:1: input field 'review' does not fit str"),
        ([{"id": "a", "review": "x"}, {"id": "a", "review": "y"}], "in.jsonl:2: duplicate id 'a'"),
    ],
)
def test_bad_data_files_are_one_line_errors_naming_file_and_line(cli, server, tmp_path, rows, expected):
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    server.reset_counters()
    code, _, err = cli("run", SENTIMENT, *lm_args(server), "--data", data, "--out", "out.jsonl")
    assert code == 2
    assert expected in one_error_line(err)
    assert server.requests == 0 and not (tmp_path / "out.jsonl").exists()


def test_unknown_provider_is_a_usage_error(cli, tmp_path):
    code, _, err = cli("run", SENTIMENT, "--lm", "nosuchprovider/model", "-i", "review=x")
    assert code == 2
    assert "unknown LM provider 'nosuchprovider'" in one_error_line(err)


def test_unreachable_api_base_exits_3_quickly(cli, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again on exit: nothing listens there
    data = write_jsonl(tmp_path / "in.jsonl", reviews(3))
    start = time.perf_counter()
    code, _, err = cli("run", SENTIMENT, "--lm", "openai/test", "--api-base", f"http://127.0.0.1:{port}/v1", "--data", data, "--out", "out.jsonl")
    assert code == 3
    assert time.perf_counter() - start < 5
    assert f"cannot reach http://127.0.0.1:{port}/v1" in one_error_line(err)


def test_wrong_api_key_exits_3_keeps_finished_and_hides_the_key(cli, tmp_path):
    with LoopbackServer(typed_responder, api_key="sk-the-right-one") as srv:
        data = write_jsonl(tmp_path / "in.jsonl", reviews(5))
        code, out, err = cli("run", SENTIMENT, "--lm", "openai/test", "--api-base", srv.url, "--data", data, "--out", "out.jsonl", "-j", "2")
    assert code == 3
    assert "authentication failed for openai/test" in err and "OPENAI_API_KEY" in err
    assert "rerun to resume" in err
    assert SECRET not in err + out
    assert (tmp_path / "out.jsonl").read_text() == ""  # nothing finished, nothing half-written


def test_a_tool_that_raises_fails_only_its_example(cli, server, tmp_path):
    (tmp_path / "lmc_test_tools_boom.py").write_text(
        "def shout(text):\n    if 'boom' in text:\n        raise RuntimeError('the tool broke')\n    return text.upper()\n"
    )
    prog = tmp_path / "tooly.lmp"
    prog.write_text(
        'tool shout(text: str) -> str = python("lmc_test_tools_boom:shout")\n\n'
        "program main(question: str) -> (answer: str) {\n"
        '  return {"answer": shout(question)}\n}\n'
    )
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": "1", "question": "fine"}, {"id": "2", "question": "boom"}])
    code, _, err = cli("run", prog, *lm_args(server), "--data", data, "--out", "out.jsonl")
    assert code == 1, err
    rows = {r["id"]: r for r in read_lines(tmp_path / "out.jsonl")}
    assert rows["1"]["outputs"] == {"answer": "FINE"}
    assert rows["2"]["error"].startswith("tool 'shout' raised RuntimeError: the tool broke")


def test_trace_file_holds_every_call_and_no_secret(cli, server, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", reviews(3, bad=(1,)))
    code, _, err = cli("run", SENTIMENT, *lm_args(server), "--data", data, "--out", "out.jsonl", "--trace", "trace.jsonl", "--no-cache")
    assert code == 1
    text = (tmp_path / "trace.jsonl").read_text()
    assert SECRET not in text
    traces = {t["id"]: t for t in map(json.loads, text.splitlines())}
    assert set(traces) == {"r000", "r001", "r002"}
    ok = traces["r000"]
    assert ok["ok"] and len(ok["calls"]) == 1
    call = ok["calls"][0]
    assert call["predictor"] == "classify" and call["inputs"] == {"review": "review number 0"}
    assert call["outputs"] == {"sentiment": "positive"} and call["raw"] == "<sentiment>positive</sentiment>"
    assert "Classify the sentiment of the review." in call["prompt"] and "<review>" in call["prompt"]
    assert call["usage"]["prompt_tokens"] > 0 and call["latency_s"] >= 0
    bad = traces["r001"]
    # ask, repair with the parse error, JSON mode: three calls, each recorded with its raw reply
    assert not bad["ok"] and len(bad["calls"]) == 3
    assert all(c["raw"] == "I would rather not say." and c["error"] for c in bad["calls"])
    assert "I could not read that reply" in bad["calls"][1]["prompt"]
    assert "JSON object" in bad["calls"][2]["prompt"]


def test_single_input_trace(cli, server, tmp_path):
    code, _, _ = cli("run", SENTIMENT, *lm_args(server), "-i", "review=ok", "--trace", "t.jsonl")
    assert code == 0
    [t] = read_lines(tmp_path / "t.jsonl")
    assert t["ok"] and t["calls"][0]["predictor"] == "classify"


def test_data_without_out_streams_the_lines_to_stdout(cli, server, tmp_path):
    """The same lines --out would hold, on stdout (nothing to resume from); the summary on stderr."""
    data = write_jsonl(tmp_path / "in.jsonl", reviews(5))
    code, out, err = cli("run", SENTIMENT, *lm_args(server), "--data", data, "-j", "2")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["id"] for r in rows) == [f"r{i:03d}" for i in range(5)]
    assert all(r["error"] is None and r["outputs"]["sentiment"] in ("positive", "negative") for r in rows)
    assert list(rows[0]) == ["id", "line", "input_sha256", "program_sha256", "lm", "outputs", "error", "error_kind", "usage"]
    assert "done: 5 run (5 ok, 0 failed) of 5" in err and "{" not in err
    code, again, _ = cli("run", SENTIMENT, *lm_args(server), "--data", data)
    assert code == 0 and len(again.splitlines()) == 5  # no --out, no resume: every example again


def test_data_and_out_options_are_checked(cli, server, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", reviews(1))
    code, _, err = cli("run", SENTIMENT, *lm_args(server), "-i", "review=x", "--data", data)
    assert code == 2 and "either" in one_error_line(err)
    code, _, err = cli("run", SENTIMENT, *lm_args(server), "--data", "missing.jsonl", "--out", "o.jsonl")
    assert code == 2 and "missing.jsonl" in one_error_line(err)
    code, _, err = cli("run", tmp_path / "nope.lmp", *lm_args(server), "-i", "review=x")
    assert code == 2 and "no such file" in one_error_line(err)


# ---------------------------------------------------------------- Ctrl-C


def test_ctrl_c_keeps_finished_lines_and_resumes(tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", reviews(40))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    with LoopbackServer(typed_responder, latency=0.1) as srv:
        args = [
            sys.executable,
            "-m",
            "lmc",
            "run",
            str(SENTIMENT),
            "--lm",
            "openai/test",
            "--api-base",
            srv.url,
            "--data",
            str(data),
            "--out",
            "out.jsonl",
            "-j",
            "2",
            "--cache-dir",
            "cache",
        ]
        proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out = tmp_path / "out.jsonl"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 4):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
        assert proc.returncode == 130, stderr
        assert "interrupted; rerun to resume" in stderr and "Traceback" not in stderr
        first = read_lines(out)  # every line whole
        assert 4 <= len(first) < 40
        done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    ids = [r["id"] for r in read_lines(out)]
    assert sorted(ids) == [f"r{i:03d}" for i in range(40)]


def test_cli_main_keeps_typer_exit_codes(tmp_path):
    from lmc.cli import main

    bad = tmp_path / "bad.lmp"
    bad.write_text("program main(x: str) -> (y: str) { return zz }\n")
    assert main(["check", str(bad)]) == 1
