"""Two `lmc run` processes at 64-way concurrency share one cache directory: nothing corrupt, no write lost."""

from __future__ import annotations

import subprocess

import pytest

from tests.lmserver import LoopbackServer
from tests.reliability.helpers import (
    SENTIMENT,
    expected_sentiment,
    read_jsonl,
    run_data_cmd,
    reviews,
    sentiment_responder,
    subprocess_env,
    write_jsonl,
)
from tests.reliability.test_crash_resume import _check_cache

N = 600  # per process; the two overlap on half of their examples


@pytest.mark.slow
def test_two_processes_share_one_cache(tmp_path):
    a_rows, b_rows = reviews(N), reviews(N, start=N // 2)
    write_jsonl(tmp_path / "a.jsonl", a_rows)
    write_jsonl(tmp_path / "b.jsonl", b_rows)
    env = subprocess_env(LMC_TEST_LM_TIMEOUT="30")
    with LoopbackServer(sentiment_responder, latency=0.01) as srv:

        def start(name):
            return subprocess.Popen(
                run_data_cmd(SENTIMENT, srv.url, 64, data=f"{name}.jsonl", out=f"{name}.out.jsonl"),
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )

        procs = [start("a"), start("b")]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            assert "Traceback" not in err
        distinct = len(srv.by_body)
        assert distinct == N + N // 2 + 1  # and the endpoint's JSON-schema probe
        # Both may race on the shared half and the probe (each misses before the other writes); never more than that.
        assert srv.requests <= distinct + N // 2 + 1
        assert srv.stats()["max_open"] > 32  # the runs really were concurrent
        # No lost writes: every answer is in the cache, so a third run over everything asks nothing.
        write_jsonl(tmp_path / "all.jsonl", reviews(N + N // 2))
        before = srv.requests
        third = subprocess.run(
            run_data_cmd(SENTIMENT, srv.url, 64, data="all.jsonl", out="all.out.jsonl"),
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert third.returncode == 0, third.stderr
        assert srv.requests == before
    assert _check_cache(tmp_path / "cache") == distinct
    assert not list((tmp_path / "cache").glob("*/.tmp-*")), "temp files were left in the cache"
    for name, rows in (("a", a_rows), ("b", b_rows), ("all", reviews(N + N // 2))):
        out = read_jsonl(tmp_path / f"{name}.out.jsonl")
        assert sorted(r["id"] for r in out) == sorted(r["id"] for r in rows)
        for r in out:
            assert r["outputs"] == {"sentiment": expected_sentiment(int(r["id"][1:]))}
