"""Resumes that cannot lie: `lmc run --out` skips an id only for the same input, program and LM.

Each case drives the real CLI against the loopback server and counts requests, so
"re-ran exactly the changed inputs" is measured, not assumed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lmserver import LoopbackServer
from tests.test_programs_run import typed_responder

ROOT = Path(__file__).resolve().parent.parent
SENTIMENT = ROOT / "programs" / "sentiment.lmp"


@pytest.fixture(scope="module")
def server():
    with LoopbackServer(typed_responder) as srv:
        yield srv


@pytest.fixture
def ws(tmp_path, monkeypatch, server):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LMC_LM", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    shutil.copy(SENTIMENT, tmp_path / "prog.lmp")
    server.reset_counters()
    return tmp_path


@pytest.fixture
def run(capsys, server):
    """`lmc run prog.lmp --data in.jsonl --out out.jsonl` (+ extra args) in-process: (exit code, stderr)."""

    def go(*extra, lm="openai/test", program="prog.lmp") -> tuple[int, str]:
        from lmc.cli import main

        code = main(
            ["run", program, "--data", "in.jsonl", "--out", "out.jsonl", "--no-cache", "--lm", lm, "--api-base", server.url, *map(str, extra)]
        )
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return code, err

    return go


def write_rows(path: Path, rows: list) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def out_rows(ws: Path) -> list[dict]:
    return [json.loads(line) for line in (ws / "out.jsonl").read_text().splitlines()]


def test_inserting_a_line_at_the_top_reruns_exactly_the_new_input(ws, run, server):
    rows = [{"review": f"review number {i}"} for i in range(6)]  # no ids: lmc makes them from the content
    write_rows(ws / "in.jsonl", rows)
    assert run()[0] == 0
    assert server.requests == 6 + 1  # and the endpoint's JSON-schema probe (--no-cache: each run probes)
    write_rows(ws / "in.jsonl", [{"review": "a brand new review"}] + rows)
    code, err = run()
    assert code == 0, err
    assert server.requests == 7 + 2  # the probe and the new line, nothing else
    assert "1 run (1 ok, 0 failed), 6 already done of 7" in err
    got = {r["id"]: r for r in out_rows(ws)}
    assert len(got) == 7 == len(out_rows(ws))
    from lmc.outfile import input_digest

    for row in [{"review": "a brand new review"}] + rows:
        assert any(r["input_sha256"] == input_digest(row) for r in got.values())


def test_a_duplicate_line_inserted_reruns_one_example(ws, run, server):
    rows = [{"review": "same"}, {"review": "other"}]
    write_rows(ws / "in.jsonl", rows)
    assert run()[0] == 0
    write_rows(ws / "in.jsonl", [{"review": "same"}] + rows)
    code, err = run()
    assert code == 0 and "1 run" in err and "2 already done" in err
    assert len({r["id"] for r in out_rows(ws)}) == 3


def test_a_changed_input_is_rerun_and_its_old_line_replaced(ws, run, server):
    rows = [{"id": f"r{i}", "review": f"review number {i}"} for i in range(5)]
    write_rows(ws / "in.jsonl", rows)
    assert run()[0] == 0
    first = {r["id"]: r for r in out_rows(ws)}
    rows[2]["review"] = "an edited review"
    rows[4]["note"] = "a field the program does not read"  # not an input: no rerun
    write_rows(ws / "in.jsonl", rows)
    server.reset_counters()
    code, err = run()
    assert code == 0, err
    assert server.requests == 2  # the endpoint's probe and the edited review
    assert "re-running 1 example whose input changed since its line was written" in err
    assert "1 run (1 ok, 0 failed), 4 already done, 1 re-run because their input changed of 5" in err
    after = out_rows(ws)
    assert sorted(r["id"] for r in after) == [f"r{i}" for i in range(5)]  # each id once
    by_id = {r["id"]: r for r in after}
    assert by_id["r2"]["input_sha256"] != first["r2"]["input_sha256"]
    assert all(by_id[i] == first[i] for i in ("r0", "r1", "r3", "r4"))


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"dear diary,\ntoday I ran lmc\n", "out.jsonl:1: not an lmc result line"),
        (b"a text file without a final newline", "out.jsonl:1: not an lmc result line"),
        (b'{"id": "r0", "name": "something else"}\n', "out.jsonl:1: not an lmc result line"),
        (b'{"a": 1}\n{"b": 2}\n', "out.jsonl:1: not an lmc result line"),
        (
            b'{"id": "r0", "line": 1, "outputs": {"sentiment": "positive"}, "error": null, "error_kind": null, "usage": {}}\n',
            "written by an earlier lmc, without the input digests",
        ),
    ],
)
def test_a_file_lmc_did_not_write_is_refused_not_truncated(ws, run, server, content, fragment):
    write_rows(ws / "in.jsonl", [{"id": "r0", "review": "x"}])
    (ws / "out.jsonl").write_bytes(content)
    code, err = run()
    assert code == 2, err
    assert fragment in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert (ws / "out.jsonl").read_bytes() == content
    assert server.requests == 0


def test_a_foreign_line_after_good_ones_marks_nothing_done(ws, run, server):
    write_rows(ws / "in.jsonl", [{"id": f"r{i}", "review": f"review {i}"} for i in range(3)])
    assert run()[0] == 0
    with open(ws / "out.jsonl", "a") as fh:
        fh.write('{"id": "r9", "note": "pasted by hand"}\n')
    before = (ws / "out.jsonl").read_bytes()
    code, err = run()
    assert code == 2 and "out.jsonl:4: not an lmc result line" in err
    assert (ws / "out.jsonl").read_bytes() == before


def test_results_of_another_program_or_lm_are_refused(ws, run, server):
    write_rows(ws / "in.jsonl", [{"id": "r0", "review": "x"}])
    assert run()[0] == 0
    before = (ws / "out.jsonl").read_bytes()
    (ws / "edited.lmp").write_text((ws / "prog.lmp").read_text().replace("Classify the sentiment", "Judge the mood"))
    code, err = run(program="edited.lmp")
    assert code == 2 and "out.jsonl:1: holds results of another program, or of another version of this one" in err
    code, err = run(lm="openai/other")
    assert code == 2 and "holds answers of LM 'openai/test', this run uses 'openai/other'" in err
    assert (ws / "out.jsonl").read_bytes() == before


@pytest.mark.parametrize("cut", [3, 30])
def test_a_torn_last_line_of_a_genuine_file_is_still_repaired(ws, run, server, cut):
    write_rows(ws / "in.jsonl", [{"id": f"r{i}", "review": f"review {i}"} for i in range(3)])
    assert run()[0] == 0
    data = (ws / "out.jsonl").read_bytes()
    last = data[:-1].rsplit(b"\n", 1)[1]
    (ws / "out.jsonl").write_bytes(data[: len(data) - len(last) - 1] + last[:cut])
    code, err = run()
    assert code == 0, err
    assert "dropped 1 torn line" in err and "1 run" in err
    assert sorted(r["id"] for r in out_rows(ws)) == ["r0", "r1", "r2"]


def test_a_second_run_on_the_same_out_fails_at_once(ws):
    """Today's failure: two runs on one --out left 77 lines for 40 ids.  Now the second stops before any call."""
    write_rows(ws / "in.jsonl", [{"id": f"r{i:02d}", "review": f"review {i}"} for i in range(40)])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("LMC_LM", None)
    # 40 answers at 0.4 s, two at a time, keep the first run busy ~8 s: the second run's start-up
    # (over 1 s on a loaded 2-core machine) must land while the first still holds the file.
    with LoopbackServer(typed_responder, latency=0.4) as srv:
        cmd = [
            sys.executable,
            "-m",
            "lmc",
            "run",
            "prog.lmp",
            "--data",
            "in.jsonl",
            "--out",
            "out.jsonl",
            "--no-cache",
            "-j",
            "2",
            "--lm",
            "openai/test",
            "--api-base",
            srv.url,
        ]
        first = subprocess.Popen(cmd, cwd=ws, env=env, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while srv.requests == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        second = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=60)
        took = time.monotonic() - started
        at_refusal = srv.requests
        _, err1 = first.communicate(timeout=120)
    assert first.returncode == 0, err1
    assert second.returncode == 2, second.stderr
    line = second.stderr.strip()
    assert line.startswith("error: out.jsonl is in use by another run (pid ") and "-m lmc run" in line, line
    assert took < 15  # it did not wait for the first run
    assert srv.requests == 40 + 1 and at_refusal < 41  # the second run sent nothing (the 1: the first run's probe)
    rows = out_rows(ws)
    assert len(rows) == 40 and len({r["id"] for r in rows}) == 40
