"""Injected faults (429, 5xx, timeouts, drops, broken bodies) change no result, lose no example."""

from __future__ import annotations

import json
import time

import pytest

from tests.lmserver import FAULT_KINDS, LoopbackServer
from tests.reliability.helpers import SENTIMENT, expected_sentiment, labeled_reviews, read_jsonl, reviews, sentiment_responder, write_jsonl

# 30% of first attempts fail, spread over every kind the server can inject but an empty completion: these runs are
# at temperature 0, where an empty completion is the model's answer (cached, then the prompt is repaired), not a
# fault to retry (tests/test_lm.py, tests/test_accuracy.py).
TRANSIENT = tuple(kind for kind in FAULT_KINDS if kind != "empty")
ALL_FAULTS = {kind: 0.3 / len(TRANSIENT) for kind in TRANSIENT}
N_RUN = 500


@pytest.fixture
def server():
    # A timeout fault sleeps past the client timeout; Retry-After is short so the test stays fast.
    with LoopbackServer(sentiment_responder, retry_after=0.05, timeout_sleep=3.5, seed=7) as srv:
        yield srv


@pytest.fixture
def patient_client(fast_client, monkeypatch):
    """A 2.5 s client timeout: these tests count every resent request, and on a loaded 2-core CI machine a
    healthy answer can take over 1 s to be read; a client that gives up on it resends it, rightly."""
    from tests.reliability.helpers import FAST_ENV

    monkeypatch.setitem(FAST_ENV, "LMC_TEST_LM_TIMEOUT", "2.5")


def _run(cli, server, data, out, cache, j="32"):
    return cli("run", SENTIMENT, "--lm", "openai/test", "--api-base", server.url, "--data", data, "--out", out, "--cache-dir", cache, "-j", j)


def _outputs(path) -> dict[str, dict]:
    rows = read_jsonl(path)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "an example was written twice"
    return {r["id"]: r for r in rows}


@pytest.mark.slow
def test_run_under_30_percent_faults_matches_a_clean_run(cli, patient_client, server, tmp_path, transport):
    data = write_jsonl(tmp_path / "in.jsonl", reviews(N_RUN))
    code, _, err = _run(cli, server, data, "clean.jsonl", "cache-clean")
    assert code == 0, err
    clean = _outputs(tmp_path / "clean.jsonl")
    assert server.stats()["faults_injected"] == {}

    server.reset_counters()
    server.faults = ALL_FAULTS
    t0 = time.monotonic()
    code, _, err = _run(cli, server, data, "faulty.jsonl", "cache-faulty")
    took = time.monotonic() - t0
    assert code == 0, err
    faulty = _outputs(tmp_path / "faulty.jsonl")
    stats = server.stats()

    assert set(faulty) == set(clean) == {r["id"] for r in reviews(N_RUN)}
    for rid, row in clean.items():
        assert faulty[rid]["outputs"] == row["outputs"]
        assert faulty[rid]["error"] is None
    for i in range(N_RUN):
        assert clean[f"r{i:05d}"]["outputs"] == {"sentiment": expected_sentiment(i)}
    injected = stats["faults_injected"]
    assert set(injected) == set(TRANSIENT), injected  # every kind was exercised
    assert sum(injected.values()) >= 0.2 * N_RUN
    # Each request that got an answer was sent again only because it had been faulted.
    assert stats["duplicates"] == sum(injected.values())
    assert "retr" in err and f"{sum(injected.values())} retries" in err, err  # the retries are reported
    assert took < 60


def test_run_reports_no_retries_when_none_happened(cli, fast_client, server, tmp_path, transport):
    data = write_jsonl(tmp_path / "in.jsonl", reviews(5))
    code, _, err = _run(cli, server, data, "out.jsonl", "cache")
    assert code == 0, err
    assert "retries" not in err


@pytest.mark.slow
def test_compile_under_faults_writes_the_same_artifact(cli, patient_client, server, tmp_path, monkeypatch, transport):
    def compile_(where):
        # Same relative paths in two directories: the artifact records paths, and they must not differ.
        d = tmp_path / where
        d.mkdir()
        write_jsonl(d / "train.jsonl", labeled_reviews(12))
        write_jsonl(d / "dev.jsonl", labeled_reviews(8, start=100))
        monkeypatch.chdir(d)
        return cli(
            "compile",
            SENTIMENT,
            "--train",
            "train.jsonl",
            "--dev",
            "dev.jsonl",
            "-o",
            "out.lmc.json",
            "--lm",
            "openai/test",
            "--api-base",
            server.url,
            "--cache-dir",
            "cache",
            "--optimizer",
            "bootstrap",
            "--then",
            "random-search",
            "--candidates",
            "3",
            "-j",
            "8",
        )

    code, _, err = compile_("clean")
    assert code == 0, err
    clean_requests = server.stats()["requests"]
    server.reset_counters()
    server.faults = ALL_FAULTS
    code, _, err = compile_("faulty")
    assert code == 0, err
    stats = server.stats()
    injected = sum(stats["faults_injected"].values())
    assert injected > 0
    assert stats["requests"] == clean_requests + injected
    a = (tmp_path / "clean" / "out.lmc.json").read_text()
    b = (tmp_path / "faulty" / "out.lmc.json").read_text()
    assert a == b  # byte-identical: usage counters in the artifact count answered calls, not attempts
    assert json.loads((tmp_path / "faulty" / "out.stats.json").read_text())["retries"] == injected
    assert json.loads((tmp_path / "clean" / "out.stats.json").read_text())["retries"] == 0


def test_server_down_mid_run_exits_3_and_keeps_finished_lines(cli, fast_client, tmp_path, transport):
    """The server answers 40 requests (the endpoint's probe and 39 examples), then stops listening: exit 3, one clear
    message, the 39 kept; a rerun resumes."""
    write_jsonl(tmp_path / "in.jsonl", reviews(100))
    srv = LoopbackServer(sentiment_responder).start()
    answered = {"n": 0}
    original = srv._respond

    async def respond(method, path, headers, body, writer):
        answered["n"] += 1
        if answered["n"] > 40:
            srv._server.close()  # stop accepting; drop this connection too
            writer.transport.abort()
            return False
        return await original(method, path, headers, body, writer)

    srv._respond = respond
    url = srv.url
    try:
        t0 = time.monotonic()
        code, _, err = cli(
            "run", SENTIMENT, "--lm", "openai/test", "--api-base", url, "--data", "in.jsonl", "--out", "out.jsonl", "--cache-dir", "cache", "-j", "1"
        )
        assert time.monotonic() - t0 < 30
    finally:
        srv.stop()
    assert code == 3, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "cannot reach" in errors[0], err
    assert "rerun to resume" in err
    done = _outputs(tmp_path / "out.jsonl")
    assert len(done) == 39 and all(r["error"] is None for r in done.values())
    with LoopbackServer(sentiment_responder) as again:
        code, _, err = cli(
            "run",
            SENTIMENT,
            "--lm",
            "openai/test",
            "--api-base",
            again.url,
            "--data",
            "in.jsonl",
            "--out",
            "out.jsonl",
            "--cache-dir",
            "cache",
            "-j",
            "4",
        )
        assert code == 0, err
        assert again.stats()["requests"] == 1 + 61  # this server's probe (another URL), then only the unfinished ones
    assert set(_outputs(tmp_path / "out.jsonl")) == {r["id"] for r in reviews(100)}


def test_server_down_from_the_start_is_exit_3_before_any_work(cli, fast_client, tmp_path, transport):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    write_jsonl(tmp_path / "in.jsonl", reviews(3))
    code, _, err = cli(
        "run", SENTIMENT, "--lm", "openai/test", "--api-base", f"http://127.0.0.1:{port}/v1", "--data", "in.jsonl", "--out", "out.jsonl"
    )
    assert code == 3
    assert err.count("error:") == 1 and "cannot reach" in err


def test_persistent_5xx_fails_each_example_not_the_process(cli, fast_client, tmp_path, transport):
    """A server that always answers 503 is up but broken: each example is retried, then fails with a reason."""
    with LoopbackServer(sentiment_responder, status_for=lambda r: (503, "overloaded")) as srv:
        write_jsonl(tmp_path / "in.jsonl", reviews(4))
        code, _, err = cli(
            "run", SENTIMENT, "--lm", "openai/test", "--api-base", srv.url, "--data", "in.jsonl", "--out", "out.jsonl", "--cache-dir", "cache"
        )
        requests = srv.requests
    assert code == 1, err
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert len(rows) == 4
    for r in rows:
        assert "503" in r["error"] and "attempts" in r["error"]
    assert "4 failed" in err
    assert requests == 9 + 4 * 9  # the endpoint's probe and each example: 1 + LMC_TEST_MAX_RETRIES attempts each


def test_a_call_waiting_to_retry_does_not_hold_a_concurrency_slot(tmp_path):
    """With one slot, a healthy call must not wait out another call's backoff."""
    import asyncio

    from lmc.lm import LMClient, LMTransientError, make_request, parse_lm
    from tests.fakelm import FakeLM, request_text

    def script(spec, req):
        if request_text(req) == "flaky" and not getattr(script, "failed", False):
            script.failed = True
            return LMTransientError("server answered 429", kind="rate_limit", model=spec.model)
        return "ok"

    client = LMClient(cache_dir=None, use_cache=False, concurrency=1, backend=FakeLM(script), retry_wait=1.0, retry_max_wait=1.0)
    spec = parse_lm("openai/test")

    async def go():
        flaky = asyncio.ensure_future(client.complete(spec, make_request(spec, messages=[{"role": "user", "content": "flaky"}])))
        await asyncio.sleep(0.05)  # the flaky call was rate-limited once and is waiting 0.5-1 s to retry
        t0 = time.monotonic()
        await client.complete(spec, make_request(spec, messages=[{"role": "user", "content": "healthy"}]))
        healthy_took = time.monotonic() - t0
        await flaky
        return healthy_took

    assert asyncio.run(go()) < 0.3


def test_one_off_server_errors_retry_sooner_than_rate_limits():
    """A lone 5xx, torn answer or timeout (which already waited the whole client timeout) retries after a fifth
    of the base wait; a 429 or refused connection backs off from the full base."""
    from lmc.lm import LMClient, LMTransientError

    client = LMClient(cache_dir=None, use_cache=False, retry_wait=1.0, retry_max_wait=30.0)
    for kind in ("server", "bad_body", "empty", "timeout"):
        waits = [client._wait_for(LMTransientError("x", kind=kind), 1) for _ in range(50)]
        assert 0.1 <= min(waits) and max(waits) <= 0.2, kind
        second = [client._wait_for(LMTransientError("x", kind=kind), 2) for _ in range(50)]
        assert 0.2 <= min(second) and max(second) <= 0.4, kind
    for kind in ("rate_limit", "connection"):
        waits = [client._wait_for(LMTransientError("x", kind=kind), 1) for _ in range(50)]
        assert 0.5 <= min(waits) and max(waits) <= 1.0, kind
    assert client._wait_for(LMTransientError("x", kind="server", retry_after=3.0), 1) == 3.0
    capped = LMClient(cache_dir=None, use_cache=False, retry_wait=1.0, retry_max_wait=2.0)
    assert max(capped._wait_for(LMTransientError("x", kind="rate_limit"), 6) for _ in range(20)) <= 2.0
