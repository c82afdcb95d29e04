"""kill -9 and Ctrl-C at random points of `lmc run --data` and `lmc compile`: reruns finish, nothing lost or repeated."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.lmserver import LoopbackServer, body_hash
from tests.reliability.helpers import (
    SENTIMENT,
    labeled_reviews,
    lmc_cmd,
    read_jsonl,
    run_data_cmd,
    reviews,
    sentiment_responder,
    subprocess_env,
    write_jsonl,
)

KILLS = 20
# The default (direct) transport: every restart through litellm would spend ~3 s importing it, and what is
# under test here (resume, cache, atomic writes) sits above the transport.  test_faults covers both.
# A long client timeout: under a loaded machine a 1 s timeout abandons answers the server did send,
# and a re-send after that is a retry, not a lost cached call.
ENV = {"LMC_TEST_LM_TIMEOUT": "30"}
# A request answered this long before a kill must have reached the cache: the client only has to read,
# parse and rename one small file, so anything slower than this is a lost paid call. On a machine
# with more runnable processes than cores the client waits its turn for the CPU, so the window grows
# with the run queue (one failure at load 12 on 2 cores came from scheduling, not from lmc).
SETTLE_S = 0.25


def settle_window() -> float:
    """SETTLE_S scaled by the run queue of the last minute, read when the kills are judged (not at import)."""
    return SETTLE_S * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


class TimedServer(LoopbackServer):
    """Also records when each distinct request was first answered and when every request arrived."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.first_answered: dict[str, float] = {}
        self.answers: list[tuple[str, float, float]] = []  # (body, arrived, answered)
        self.arrivals: list[tuple[str, float]] = []

    async def _respond(self, method, path, headers, body, writer):
        bhash = None
        arrived = time.monotonic()
        if method == "POST" and body:
            try:
                bhash = body_hash(json.loads(body))
            except ValueError:
                pass
            if bhash:
                with self._lock:
                    self.arrivals.append((bhash, arrived))
        keep = await super()._respond(method, path, headers, body, writer)
        if bhash:
            with self._lock:
                now = time.monotonic()
                self.first_answered.setdefault(bhash, now)
                self.answers.append((bhash, arrived, now))
        return keep


def _repeats_after_kills(srv: TimedServer, kills: list[float]) -> tuple[int, int]:
    """(repeats of a request answered more than SETTLE_S before the kill of the process that sent it, all repeats).

    A request belongs to the process life ended by the first kill after it arrived, or less than the
    settle window before it arrived (an answer sent after that kill went to a dead socket); if the answer
    left the settle window or more before that kill, the client had it and must have cached it, so any
    later send is a lost paid call.
    """
    kills = sorted(kills)
    window = settle_window()
    settled: dict[str, float] = {}  # body -> the kill after which it must never be sent again
    for bhash, arrived, a in srv.answers:
        # The server notes a request once it has read it, which can be just after the kill of the process that
        # sent it (no restarted process sends that soon): such a request belongs to the life that kill ended.
        end = next((k for k in kills if k > arrived - window), None)
        if end is not None and end - a > window:
            settled[bhash] = min(settled.get(bhash, end), end)
    seen: set[str] = set()
    bad = total = 0
    for bhash, t in srv.arrivals:
        if bhash in seen:
            total += 1
            if bhash in settled and t > settled[bhash]:
                bad += 1
                if os.environ.get("LMC_DEBUG_REPEATS"):
                    ans = [round(a - settled[bhash], 3) for b, _, a in srv.answers if b == bhash]
                    arr = [round(x - settled[bhash], 3) for b, x in srv.arrivals if b == bhash]
                    near = [round(k - settled[bhash], 3) for k in kills if abs(k - settled[bhash]) < 5]
                    print("repeat", bhash, "answers rel. kill", ans, "arrivals", arr, "kills", near)
        seen.add(bhash)
    return bad, total


def _kill_at_random(cmd: list[str], cwd: Path, srv: TimedServer, rng: random.Random, sig: int, window: float) -> tuple[int | None, float | None, str]:
    """Start `cmd`, wait for its first LM request, kill it `uniform(0, window)` s later; (rc, kill time, stderr)."""
    base = srv.requests
    proc = subprocess.Popen(cmd, cwd=cwd, env=subprocess_env(**ENV), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while srv.requests == base and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(rng.uniform(0, window))
    killed_at = None
    if proc.poll() is None:
        killed_at = time.monotonic()
        proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"lmc did not stop after signal {sig}: {err}") from None
    return proc.returncode, killed_at, err


def _check_out_file(path: Path) -> list[dict]:
    """Every complete line is one JSON object; ids never repeat (a torn last line is allowed until the rerun)."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    complete = lines[:-1]
    rows = [json.loads(line) for line in complete]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "an id was written twice"
    return rows


def _check_cache(cache: Path) -> int:
    """Every entry verifies; returns how many there are."""
    from lmc.lm import DiskCache

    dc = DiskCache(cache)
    n = 0
    for f in cache.glob("*/*.json"):
        if f.name.startswith(".tmp-"):
            continue
        assert dc.get(f.stem) is not None, f"cache entry {f} does not verify"
        n += 1
    return n


@pytest.mark.slow
def test_run_survives_20_kill9_and_resumes_exactly(tmp_path):
    rng = random.Random(1234)
    n = 400
    write_jsonl(tmp_path / "in.jsonl", reviews(n))
    # ~40 answers a second: 20 lives of about 0.25 s each leave about half the work for the final rerun.
    with TimedServer(sentiment_responder, latency=0.05) as srv:
        cmd = run_data_cmd(SENTIMENT, srv.url, 2)
        kills: list[float] = []
        for _ in range(KILLS):
            rc, at, err = _kill_at_random(cmd, tmp_path, srv, rng, signal.SIGKILL, 0.5)
            assert "Traceback" not in err
            if at is not None:
                kills.append(at)
            else:
                assert rc == 0, err
            _check_out_file(tmp_path / "out.jsonl")
        assert len(kills) >= KILLS - 2  # the kills really landed mid-run
        done = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(**ENV), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert sorted(r["id"] for r in rows) == [r["id"] for r in reviews(n)]  # each id exactly once
    assert (tmp_path / "out.jsonl").read_bytes().endswith(b"\n")
    assert all(r["error"] is None for r in rows)
    assert _check_cache(tmp_path / "cache") == n + 1  # the answers and the endpoint's record (its JSON-schema probe)
    bad, total = _repeats_after_kills(srv, kills)
    assert bad == 0, f"{bad} requests answered before a kill were sent again ({total} repeats in all)"
    # At most the requests in flight at each kill (-j 2) can be repeated.
    assert total <= 2 * len(kills)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_resumes(tmp_path):
    rng = random.Random(99)
    n = 150
    write_jsonl(tmp_path / "in.jsonl", reviews(n))
    with TimedServer(sentiment_responder, latency=0.03) as srv:
        cmd = run_data_cmd(SENTIMENT, srv.url, 4)
        kills = []
        for _ in range(5):
            rc, at, err = _kill_at_random(cmd, tmp_path, srv, rng, signal.SIGINT, 0.4)
            assert "Traceback" not in err, err
            if at is not None:
                kills.append(at)
                assert rc == 130, err
                assert "interrupted" in err and "rerun" in err
            rows = _check_out_file(tmp_path / "out.jsonl")
            assert (tmp_path / "out.jsonl").read_bytes().endswith(b"\n") or not rows  # Ctrl-C never tears a line
        done = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(**ENV), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert sorted(r["id"] for r in rows) == [r["id"] for r in reviews(n)]
    bad, _ = _repeats_after_kills(srv, kills)
    assert bad == 0


def _compile_cmd(url: str) -> list[str]:
    return lmc_cmd(
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
        url,
        "--cache-dir",
        "cache",
        "--optimizer",
        "bootstrap",
        "--then",
        "random-search",
        "--candidates",
        "3",
        "-j",
        "2",
    )


def _compile_dir(d: Path) -> Path:
    d.mkdir()
    write_jsonl(d / "train.jsonl", labeled_reviews(24))
    write_jsonl(d / "dev.jsonl", labeled_reviews(16, start=100))
    return d


@pytest.mark.slow
def test_compile_survives_20_kill9_and_writes_the_same_artifact(tmp_path):
    rng = random.Random(4321)
    ref, work = _compile_dir(tmp_path / "ref"), _compile_dir(tmp_path / "work")
    # Slow answers and -j 2 so that 20 kills, each a fraction of a second after the first request, land mid-compile.
    with TimedServer(sentiment_responder, latency=0.08) as srv:
        done = subprocess.run(_compile_cmd(srv.url), cwd=ref, env=subprocess_env(**ENV), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        distinct = len(srv.first_answered)
        srv.first_answered.clear()
        srv.answers.clear()
        srv.arrivals.clear()
        base = srv.requests
        kills: list[float] = []
        for _ in range(KILLS):
            rc, at, err = _kill_at_random(_compile_cmd(srv.url), work, srv, rng, signal.SIGKILL, 0.3)
            assert "Traceback" not in err
            if at is not None:
                kills.append(at)
            art = work / "out.lmc.json"
            if art.exists():  # never half an artifact
                json.loads(art.read_text())
        done = subprocess.run(_compile_cmd(srv.url), cwd=work, env=subprocess_env(**ENV), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert len(kills) >= KILLS // 2, "too few kills landed mid-compile to prove anything"
    assert (work / "out.lmc.json").read_text() == (ref / "out.lmc.json").read_text()
    assert not list(work.glob(".*tmp*")), "a temp file was left next to the artifact"
    _check_cache(work / "cache")
    bad, total = _repeats_after_kills(srv, kills)
    assert bad == 0, f"{bad} requests answered before a kill were sent again ({total} repeats in all)"
    assert srv.requests - base <= distinct + 2 * len(kills)


def test_torn_cache_entries_are_discarded_and_refetched(tmp_path, caplog):
    """A cache file cut short, emptied, or with a wrong checksum is dropped and the call is made again."""
    write_jsonl(tmp_path / "in.jsonl", reviews(6))
    with TimedServer(sentiment_responder) as srv:
        cmd = lmc_cmd(
            "run", SENTIMENT, "--lm", "openai/test", "--api-base", srv.url, "--data", "in.jsonl", "--out", "out.jsonl", "--cache-dir", "cache"
        )
        first = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(**ENV), capture_output=True, text=True, timeout=60)
        assert first.returncode == 0, first.stderr
        entries = sorted(p for p in (tmp_path / "cache").glob("*/*.json") if "dialect" not in p.read_text())
        assert len(entries) == 6  # the answers; the endpoint's record (its JSON-schema probe) is left whole
        entries[0].write_bytes(entries[0].read_bytes()[:40])  # torn
        entries[1].write_bytes(b"")  # empty
        tampered = json.loads(entries[2].read_text())
        tampered["payload"]["text"] = "<sentiment>negative</sentiment>"  # checksum no longer matches
        entries[2].write_text(json.dumps(tampered))
        entries[3].write_bytes(b"\x00\xff" * 10)  # binary garbage
        (tmp_path / "out.jsonl").unlink()
        before = srv.requests
        second = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(**ENV), capture_output=True, text=True, timeout=60)
        assert second.returncode == 0, second.stderr
        assert "Traceback" not in second.stderr
        assert srv.requests - before == 4  # the four bad entries, and only they, were fetched again
    assert _check_cache(tmp_path / "cache") == 6 + 1
    first_rows = {r["id"]: r["outputs"] for r in read_jsonl(tmp_path / "out.jsonl")}
    assert all(v is not None for v in first_rows.values())


def test_torn_output_line_is_cut_and_redone(tmp_path):
    """A crash mid-line (no final newline) leaves a torn line: the rerun drops it, says so and redoes that example."""
    write_jsonl(tmp_path / "in.jsonl", reviews(5))
    with TimedServer(sentiment_responder) as srv:
        cmd = lmc_cmd("run", SENTIMENT, "--lm", "openai/test", "--api-base", srv.url, "--data", "in.jsonl", "--out", "out.jsonl", "--no-cache")
        assert subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(**ENV), capture_output=True, timeout=60).returncode == 0
        out = tmp_path / "out.jsonl"
        lines = out.read_bytes().split(b"\n")
        out.write_bytes(b"\n".join(lines[:3]) + b"\n" + lines[3][: len(lines[3]) // 2])
        again = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(**ENV), capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stderr
        assert "dropped 1 torn line" in again.stderr
    rows = read_jsonl(out)
    assert sorted(r["id"] for r in rows) == [r["id"] for r in reviews(5)]
