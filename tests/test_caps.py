"""Hard caps and loud failures from the CLI: what lmc counts agrees with what a counting server saw.

Every figure asserted here is compared with the loopback server's own counters
(`tests/lmserver.py`), under faults and concurrency: `--max-calls` is never exceeded at any
`-j`, a run in which the LM fails exits 3 and writes nothing, and the requests, retries,
failures and spend that compile, eval and run report are exactly the server's.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections import Counter
from pathlib import Path

import pytest

from tests.lmserver import LoopbackServer, body_hash
from tests.programs import SENTIMENT


# Every example makes 3 requests: the answer is never short enough, so `suggest` sends it back twice.
TERSE = """
signature Ask(question: str -> answer: str)
module ask = Predict(Ask)
program main(question: str) -> (answer: str) {
  a = ask(question=question)
  suggest len(a.answer) < 3, "Answer in fewer than three characters."
  return a
}
metric em = exact_match(answer)
"""

LM = ("--lm", "openai/test")


def responder(request: dict) -> str:
    text = json.dumps(request.get("messages") or request.get("prompt"))
    if "<question>" in text or "question" in text and "sentiment" not in text:
        return "<answer>a long answer</answer>"
    found = re.findall(r"review number (\d+)", text)
    n = int(found[-1]) if found else 0
    return f"<sentiment>{'negative' if n % 2 else 'positive'}</sentiment>"


def reviews(n: int, start: int = 0, labels: bool = True) -> list[dict]:
    out = []
    for i in range(start, start + n):
        row = {"id": f"r{i:03d}", "review": f"review number {i}"}
        if labels:
            row["sentiment"] = "negative" if i % 2 else "positive"
        out.append(row)
    return out


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def share(request: dict) -> int:
    """A stable 0..99 per request body: failures that depend on it fail every retry of that request too."""
    return int(body_hash(request), 16) % 100


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LMC_LM", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-caps")
    # Quick retries and timeouts: these tests count requests, they do not wait for backoff.
    monkeypatch.setenv("LMC_RETRY_WAIT", "0.005")
    monkeypatch.setenv("LMC_RETRY_MAX_WAIT", "0.02")
    monkeypatch.setenv("LMC_TIMEOUT", "5")
    (tmp_path / "s.lmp").write_text(SENTIMENT, encoding="utf-8")
    (tmp_path / "terse.lmp").write_text(TERSE, encoding="utf-8")
    write_jsonl(tmp_path / "train.jsonl", reviews(16))
    write_jsonl(tmp_path / "dev.jsonl", reviews(10, start=100))
    return tmp_path


@pytest.fixture
def lmc(ws, capsys):
    def run(*args) -> tuple[int, str, str]:
        from lmc.cli import main

        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err + captured.out, captured.err
        assert "internal error" not in captured.err, captured.err
        return code, captured.out, captured.err

    return run


def compile_args(url: str, *extra: str, out: str = "out.lmc.json") -> list[str]:
    return ["compile", "s.lmp", "--train", "train.jsonl", "--dev", "dev.jsonl", "-o", out, "--cache-dir", "cache", *LM, "--api-base", url, *extra]


def last_line(err: str) -> str:
    return err.strip().splitlines()[-1]


def nothing_written(ws: Path) -> bool:
    return not (ws / "out.lmc.json").exists() and not (ws / "out.stats.json").exists()


# ---------------------------------------------------------------- --max-calls is a hard cap


def test_an_always_failing_server_under_max_calls_20_at_j16_sees_at_most_20_requests_and_the_compile_exits_3(lmc, ws, transport):
    with LoopbackServer(responder, status_for=lambda r: (500, "the server had an error")) as srv:
        code, _, err = lmc(*compile_args(srv.url, "--max-calls", "20", "-j", "16", "--optimizer", "random-search"))
        sent = srv.requests
    assert code == 3, err
    assert sent <= 20, sent
    line = last_line(err)
    assert line.startswith("error: every LM request failed") and "500" in line, err
    assert nothing_written(ws)


@pytest.mark.parametrize("j", ["1", "4", "16"])
def test_max_calls_holds_at_any_concurrency_with_retries_counted(lmc, ws, transport, j):
    # 30% of first tries fail once: retries are requests too, and count against the cap.
    with LoopbackServer(responder, faults={"500": 0.3}, faults_per_body=1, seed=3) as srv:
        code, _, err = lmc(*compile_args(srv.url, "--max-calls", "25", "-j", j, "--optimizer", "random-search", "--candidates", "4", "--no-cache"))
        sent, faults = srv.requests, sum(srv.faults_injected.values())
    assert code == 0, err
    assert sent <= 25
    stats = json.loads((ws / "out.stats.json").read_text())
    # Every failed request was an injected fault, and each was retried unless the cap refused its retry (at most
    # one per slot: the retries still waiting when the cap was reached).
    assert stats["requests"] == sent and stats["failed_requests"] == faults
    assert faults - int(j) <= stats["retries"] <= faults
    assert stats["requests"] == stats["calls"] - stats["cached_calls"] + stats["failed_requests"]
    rep = json.loads((ws / "out.lmc.json").read_text())["compile"]
    assert rep["budget"]["exhausted"] is True


def test_a_warm_compile_counts_its_cached_answers_and_a_warm_run_does_not(lmc, ws, transport):
    with LoopbackServer(responder) as srv:
        code, _, err = lmc(*compile_args(srv.url, "--optimizer", "labeled"))
        assert code == 0, err
        first = srv.requests
        # compile: what a cold cache sent, a warm one counts, so a cap the cold compile needed whole is needed
        # whole again (no request is sent) and a smaller cap stops the warm compile where it stops a cold one.
        code, _, err = lmc(*compile_args(srv.url, "--optimizer", "labeled", "--max-calls", str(first), out="again.lmc.json"))
        assert code == 0, err
        assert srv.requests == first
        assert json.loads((ws / "again.lmc.json").read_text())["ir"] == json.loads((ws / "out.lmc.json").read_text())["ir"]
        code, _, err = lmc(*compile_args(srv.url, "--optimizer", "labeled", "--max-calls", "1", out="capped.lmc.json"))
        assert code == 2 and "the budget (--max-calls/--max-cost) ran out before the first candidate was scored" in err
        assert srv.requests == first
        # run: cache hits are free, so the smallest cap does not stop a run whose answers are all cached.
        write_jsonl(ws / "in.jsonl", [{"id": r["id"], "review": r["review"]} for r in reviews(10, start=100)])
        code, _, err = lmc("run", "s.lmp", *LM, "--api-base", srv.url, "--data", "in.jsonl", "--out", "o.jsonl", "--cache-dir", "cache")
        assert code == 0, err
        sent = srv.requests
        code, _, err = lmc(
            "run", "s.lmp", *LM, "--api-base", srv.url, "--data", "in.jsonl", "--out", "o2.jsonl", "--cache-dir", "cache", "--max-calls", "1"
        )
        assert code == 0, err
        assert srv.requests == sent
    assert json.loads((ws / "again.stats.json").read_text())["requests"] == 0


# ---------------------------------------------------------------- loud failure


def test_a_dead_endpoint_exits_3_before_any_work(lmc, ws, transport):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = lmc(*compile_args(f"http://127.0.0.1:{port}/v1"))
    assert code == 3
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [last_line(err)]
    assert "cannot reach" in last_line(err)
    assert nothing_written(ws)
    code, _, err = lmc("eval", "s.lmp", "--data", "dev.jsonl", *LM, "--api-base", f"http://127.0.0.1:{port}/v1", "--report", "r.json")
    assert code == 3 and "cannot reach" in last_line(err), err
    assert not (ws / "r.json").exists()


def test_a_refused_key_exits_3_without_retries(lmc, ws, transport):
    with LoopbackServer(responder, api_key="sk-the-right-one") as srv:
        code, _, err = lmc(*compile_args(srv.url, "-j", "4"))
        sent, dup = srv.requests, srv.duplicates()
    assert code == 3, err
    assert "authentication failed for openai/test" in last_line(err)
    assert "sk-test-caps" not in err
    assert 1 <= sent <= 4 and dup == 0  # the first answers stop the rest; nothing is asked twice
    assert nothing_written(ws)


def test_half_the_calls_failing_is_exit_3_and_the_answered_ones_stay_cached(lmc, ws, transport):
    def half(request):
        return (500, "upstream failed") if share(request) < 50 else None

    with LoopbackServer(responder, status_for=half) as srv:
        code, _, err = lmc(*compile_args(srv.url, "-j", "4"))
    assert code == 3, err
    line = last_line(err)
    assert "LM calls failed" in line and "--max-lm-errors 20%" in line and "last error:" in line, line
    assert nothing_written(ws)
    # The calls that were answered are in the cache: against a healthy server the rerun sends only the rest.
    cached = len([p for p in (ws / "cache").rglob("*.json") if "dialect" not in p.read_text()])  # not the endpoint's record
    assert cached > 0
    with LoopbackServer(responder) as srv:
        code, _, err = lmc(*compile_args(srv.url, "-j", "4"))
        assert code == 0, err
    stats = json.loads((ws / "out.stats.json").read_text())
    assert stats["cached_calls"] >= cached and stats["requests"] == srv.requests


def test_random_failures_without_retries_are_counted_per_request(lmc, ws, transport, monkeypatch):
    monkeypatch.setenv("LMC_MAX_RETRIES", "0")
    with LoopbackServer(responder, faults={"503": 0.5}, seed=11) as srv:
        code, _, err = lmc(*compile_args(srv.url, "-j", "8"))
    assert code == 3, err
    assert "--max-lm-errors" in last_line(err)


def test_a_few_failed_calls_are_tolerated_and_reported(lmc, ws, transport):
    def few(request):
        return (500, "flaky") if share(request) < 5 else None

    failures = Counter()

    def counting(request):
        answer = few(request)
        if answer:
            failures["n"] += 1
        return answer

    with LoopbackServer(responder, status_for=counting) as srv:
        code, _, err = lmc(*compile_args(srv.url, "-j", "8", "--optimizer", "random-search", "--candidates", "3"))
        sent = srv.requests
    assert code == 0, err
    stats = json.loads((ws / "out.stats.json").read_text())
    assert failures["n"] > 0, "the test needs at least one failing request"
    assert stats["requests"] == sent and stats["failed_requests"] == failures["n"]
    assert stats["errors"] > 0  # failed calls (every retry of them failed too)


def test_max_lm_errors_as_a_count_and_bad_values(lmc, ws, transport):
    def few(request):
        return (500, "flaky") if share(request) < 5 else None

    with LoopbackServer(responder, status_for=few) as srv:
        code, _, err = lmc(*compile_args(srv.url, "--max-lm-errors", "0"))
        assert code == 3 and "over --max-lm-errors 0" in last_line(err), err
        assert nothing_written(ws)
        before = srv.requests
        for bad in ("lots", "150%", "1.5", "-1"):
            code, _, err = lmc(*compile_args(srv.url, "--max-lm-errors", bad))
            assert code == 2 and "--max-lm-errors" in last_line(err), (bad, err)
        assert srv.requests == before


def test_eval_against_a_failing_server_exits_3_and_writes_no_report(lmc, ws, transport):
    with LoopbackServer(responder, status_for=lambda r: (502, "bad gateway")) as srv:
        code, _, err = lmc(
            "eval",
            "s.lmp",
            "--data",
            "dev.jsonl",
            *LM,
            "--api-base",
            srv.url,
            "--report",
            "r.json",
            "--junit",
            "j.xml",
            "--max-calls",
            "12",
            "-j",
            "16",
        )
        assert srv.requests <= 12
    assert code == 3, err
    assert "every LM request failed" in err
    assert not (ws / "r.json").exists() and not (ws / "j.xml").exists()


def test_eval_whose_budget_runs_out_exits_3(lmc, ws, transport):
    with LoopbackServer(responder) as srv:
        code, _, err = lmc("eval", "s.lmp", "--data", "dev.jsonl", *LM, "--api-base", srv.url, "--report", "r.json", "--max-calls", "4", "--no-cache")
        assert srv.requests == 4
    assert code == 3, err
    assert "--max-calls 4" in err and "before every example was scored" in err
    assert not (ws / "r.json").exists()


# ---------------------------------------------------------------- accounting agrees with the server


def test_run_with_suggest_repeats_faults_and_concurrency_reports_every_request(lmc, ws, transport):
    per_question: Counter = Counter()
    lock = threading.Lock()

    def count(request):
        found = re.findall(r"question (\d+)", json.dumps(request.get("messages")))
        with lock:
            per_question[found[-1] if found else "?"] += 1
        return None

    rows = [{"id": f"q{i}", "question": f"question {i}"} for i in range(24)]
    write_jsonl(ws / "in.jsonl", rows)
    with LoopbackServer(responder, status_for=count, faults={"500": 0.25, "429": 0.1}, faults_per_body=1, seed=5) as srv:
        code, _, err = lmc("run", "terse.lmp", *LM, "--api-base", srv.url, "--data", "in.jsonl", "--out", "out.jsonl", "-j", "8", "--no-cache")
        sent, faults = srv.requests, sum(srv.faults_injected.values())
    assert code == 0, err
    assert faults > 0
    lines = [json.loads(x) for x in (ws / "out.jsonl").read_text().splitlines()]
    assert len(lines) == 24
    for line in lines:
        n = line["id"][1:]
        usage = line["usage"]
        # 1 call + 2 backtracking repeats, each answered; plus this example's faulted requests, retried.
        assert usage["calls"] == 3, line
        assert usage["requests"] == per_question[n] == 3 + usage["failed_requests"], (line, per_question[n])
        assert usage["retries"] == usage["failed_requests"]
    assert sum(line["usage"]["requests"] for line in lines) == sent
    assert f"{sent} requests sent ({faults} retries, {faults} failed)" in err, err


def test_eval_report_counts_agree_with_the_server_under_faults(lmc, ws, transport):
    with LoopbackServer(responder, faults={"503": 0.3, "timeout": 0.05}, faults_per_body=1, timeout_sleep=1.5, seed=9) as srv:
        code, _, err = lmc(
            "eval", "s.lmp", "--data", "dev.jsonl", *LM, "--api-base", srv.url, "--report", "r.json", "-j", "16", "--no-cache", "--max-lm-errors", "0"
        )
        sent, faults = srv.requests, sum(srv.faults_injected.values())
    # LMC_TIMEOUT is 5 s here, so a 1.5 s "timeout" fault is only slow; everything is answered.
    assert code == 0, err
    summary = json.loads((ws / "r.json").read_text())["summary"]
    assert summary["requests"] == sent
    assert summary["failed_requests"] == summary["retries"] == faults - srv.faults_injected.get("timeout", 0)


def test_compile_stats_agree_with_the_server_under_faults_at_j16(lmc, ws, transport):
    with LoopbackServer(responder, faults={"500": 0.2, "drop": 0.05}, faults_per_body=1, seed=2) as srv:
        code, _, err = lmc(*compile_args(srv.url, "-j", "16", "--optimizer", "random-search", "--candidates", "3"))
        sent, faults = srv.requests, sum(srv.faults_injected.values())
    assert code == 0, err
    stats = json.loads((ws / "out.stats.json").read_text())
    assert stats["requests"] == sent and stats["retries"] == stats["failed_requests"] == faults
    assert f"{sent}" in err  # the summary table shows the requests sent


# ---------------------------------------------------------------- --max-cost


def test_max_cost_over_an_unpriced_server_is_refused_before_any_call(lmc, ws, transport):
    write_jsonl(ws / "in.jsonl", reviews(3, labels=False))
    with LoopbackServer(responder) as srv:
        for cmd in (
            compile_args(srv.url, "--max-cost", "1"),
            ["run", "s.lmp", *LM, "--api-base", srv.url, "--data", "in.jsonl", "--out", "o.jsonl", "--max-cost", "1"],
            ["eval", "s.lmp", *LM, "--api-base", srv.url, "--data", "dev.jsonl", "--max-cost", "1"],
        ):
            code, _, err = lmc(*cmd)
            assert code == 2, err
            line = last_line(err)
            assert "--max-cost needs the price of openai/test" in line and "--price-per-mtok-in" in line, line
        code, _, err = lmc(*compile_args(srv.url, "--max-cost", "1", "--price-per-mtok-in", "3"))
        assert code == 2 and "give both" in last_line(err)
        assert srv.requests == 0
    assert nothing_written(ws) and not (ws / "o.jsonl").exists()


def test_max_cost_with_a_given_price_is_never_exceeded(lmc, ws, transport):
    write_jsonl(ws / "in.jsonl", reviews(40, labels=False))
    price = ("--price-per-mtok-in", "1000", "--price-per-mtok-out", "1000")  # $0.001 a token: a few cents a call
    with LoopbackServer(responder, latency=0.02) as srv:
        code, _, err = lmc(
            "run", "s.lmp", *LM, "--api-base", srv.url, "--data", "in.jsonl", "--out", "o.jsonl", "--max-cost", "2", *price, "-j", "16", "--no-cache"
        )
        sent = srv.requests
    assert code == 1, err  # stopped by the budget
    assert "cost budget spent" in err
    lines = [json.loads(x) for x in (ws / "o.jsonl").read_text().splitlines()]
    spent = sum(line["usage"]["cost"] for line in lines)
    assert 0 < spent <= 2 and len(lines) == sent - 1 < 40  # and the endpoint's JSON-schema probe
    # The server counts tokens as len // 4 of the prompt text and reply; lmc books exactly that, at the price.
    assert all(
        line["usage"]["cost"] == pytest.approx((line["usage"]["prompt_tokens"] + line["usage"]["completion_tokens"]) * 0.001) for line in lines
    )
    summary = next(ln for ln in err.splitlines() if ln.startswith("stopped: "))
    assert f"{sent} requests sent" in summary
    probe = (4 + 2) * 0.001  # the probe "lmc probe: one two" and its 11-character reply, at len // 4 tokens
    assert float(re.search(r"\$(\d+\.\d+)$", summary).group(1)) == pytest.approx(spent + probe, abs=1e-4)


def test_a_price_in_lmc_yaml_lets_max_cost_run_and_a_free_server_is_free(lmc, ws, transport):
    (ws / "lmc.yaml").write_text("price_per_mtok_in: 0\nprice_per_mtok_out: 0\n")
    with LoopbackServer(responder) as srv:
        code, _, err = lmc(*compile_args(srv.url, "--max-cost", "0.000001", "--optimizer", "labeled"))
        assert code == 0, err
    stats = json.loads((ws / "out.stats.json").read_text())
    assert stats["cost"] == 0 and stats["requests"] == srv.requests > 0
    (ws / "lmc.yaml").write_text("price_per_mtok_in: -1\nprice_per_mtok_out: 0\n")
    code, _, err = lmc(*compile_args(srv.url, "--max-cost", "1", out="b.lmc.json"))
    assert code == 2 and "price_per_mtok_in" in last_line(err)


# ---------------------------------------------------------------- oversized inputs


def test_an_input_too_long_for_the_context_fails_its_example_unless_truncation_is_asked(lmc, ws, transport):
    big = "word " * 200_000  # ~1 MB: far over gpt-4o-mini's 128k-token window
    write_jsonl(ws / "in.jsonl", [{"id": "big", "review": "review number 1 " + big + " the end"}, {"id": "small", "review": "review number 2"}])
    seen: list[str] = []

    def keep(request):
        seen.append(json.dumps(request.get("messages")))
        return None

    with LoopbackServer(responder, status_for=keep) as srv:
        code, _, err = lmc(
            "run", "s.lmp", "--lm", "openai/gpt-4o-mini", "--api-base", srv.url, "--data", "in.jsonl", "--out", "o.jsonl", "--no-cache"
        )
        assert code == 1, err
        rows = {r["id"]: r for r in map(json.loads, (ws / "o.jsonl").read_text().splitlines())}
        assert rows["small"]["error"] is None
        error = rows["big"]["error"]
        assert re.search(r"input of [\d,]+ tokens does not fit the 128,000-token context of openai/gpt-4o-mini", error)
        assert "--truncate-inputs" in error and rows["big"]["error_kind"] == "input"
        assert srv.requests == 2  # the endpoint's JSON-schema probe, then only the small one
        code, _, err = lmc(
            "run",
            "s.lmp",
            "--lm",
            "openai/gpt-4o-mini",
            "--api-base",
            srv.url,
            "--data",
            "in.jsonl",
            "--out",
            "t.jsonl",
            "--no-cache",
            "--truncate-inputs",
        )
        assert code == 0, err
    rows = {r["id"]: r for r in map(json.loads, (ws / "t.jsonl").read_text().splitlines())}
    assert rows["big"]["error"] is None
    sent = seen[-1] if "the end" in seen[-1] else seen[-2]
    assert "review number 1" in sent and "the end" in sent and "[...]" in sent  # head and tail kept, middle cut
    assert len(sent) < 128_000 * 4
    assert "cut inputs from their middle" in err


# ---------------------------------------------------------------- embeddings requests count too


RAG = """
retriever docs = embeddings("corpus.jsonl", model="openai/text-embedding-3-small", k=1)
signature Answer(context: list[str], question: str -> answer: str)
module a = Predict(Answer)
program main(question: str) -> (answer: str) {
  found = docs(question)
  return a(context=found, question=question)
}
"""


def test_embedding_requests_are_capped_and_counted_with_the_lm_requests(lmc, ws, transport):
    (ws / "rag.lmp").write_text(RAG, encoding="utf-8")
    write_jsonl(ws / "corpus.jsonl", [{"text": f"fact {i}"} for i in range(5)])
    write_jsonl(ws / "in.jsonl", [{"id": f"q{i}", "question": f"question {i}"} for i in range(6)])
    with LoopbackServer(responder) as srv:
        args = ("run", "rag.lmp", *LM, "--api-base", srv.url, "--data", "in.jsonl", "--no-cache", "-j", "1", "--cache-dir", "c1")
        code, _, err = lmc(*args, "--out", "o.jsonl")
        assert code == 0, err
        by_path = dict(srv.by_path)
        sent = srv.requests
        lines = [json.loads(x) for x in (ws / "o.jsonl").read_text().splitlines()]
        # One embedding of the corpus (the first example builds the index), one per question, one LM call each.
        assert by_path == {"/v1/embeddings": 7, "/v1/chat/completions": 6}
        assert sum(line["usage"]["requests"] for line in lines) == sent == 13
        assert f"{sent} requests sent" in err
        srv.reset_counters()
        code, _, err = lmc(*args[:-2], "--cache-dir", "c2", "--out", "p.jsonl", "--max-calls", "4")
        assert code == 1 and "--max-calls 4" in err, err
        assert srv.requests <= 4


def test_run_keeps_going_past_failed_calls_unless_told_to_stop(lmc, ws, transport):
    write_jsonl(ws / "in.jsonl", reviews(30, labels=False))

    def half(request):
        return (500, "upstream failed") if share(request) < 50 else None

    with LoopbackServer(responder, status_for=half) as srv:
        code, _, err = lmc("run", "s.lmp", *LM, "--api-base", srv.url, "--data", "in.jsonl", "--out", "a.jsonl", "-j", "1")
        assert code == 1, err  # every example has its line, the failed ones with their reason
        assert len((ws / "a.jsonl").read_text().splitlines()) == 30
        code, _, err = lmc(
            "run",
            "s.lmp",
            *LM,
            "--api-base",
            srv.url,
            "--data",
            "in.jsonl",
            "--out",
            "b.jsonl",
            "-j",
            "1",
            "--max-lm-errors",
            "20%",
            "--cache-dir",
            "other",
        )
    assert code == 3 and "over --max-lm-errors 20%" in err, err
    assert len((ws / "b.jsonl").read_text().splitlines()) < 30


def test_the_python_api_takes_the_same_caps(ws, transport):
    import lmc
    from lmc.errors import BudgetExceeded, ConfigError

    with LoopbackServer(responder) as srv:
        prog = lmc.load(ws / "s.lmp", lm="openai/test", api_base=srv.url, cache_dir=None, max_calls=3)
        assert prog(review="review number 1") == {"sentiment": "negative"}
        assert prog(review="review number 2") == {"sentiment": "positive"}
        with pytest.raises(BudgetExceeded):
            prog(review="review number 3")
        assert srv.requests == 3 == prog.runtime.client.usage.requests  # the endpoint's probe counts too
        with pytest.raises(ConfigError, match="--max-cost needs the price of openai/test"):
            lmc.load(ws / "s.lmp", lm="openai/test", api_base=srv.url, max_cost=1.0)


# ---------------------------------------------------------------- one resolution: flag > environment > lmc.yaml


COMPILE_BASE = ["compile", "s.lmp", "--train", "train.jsonl", "--dev", "dev.jsonl", "-o", "out.lmc.json"]
# key -> (flag args, environment, lmc.yaml text, check of (LMClient kwargs, runtimes))
CAP_SOURCES = {
    "max_calls": (["--max-calls", "500"], {"LMC_MAX_CALLS": "500"}, "max_calls: 500\n", lambda c, rts: c["max_calls"] == 500),
    "max_cost": (
        ["--max-cost", "5", "--price-per-mtok-in", "2", "--price-per-mtok-out", "8"],
        {"LMC_MAX_COST": "5", "LMC_PRICE_PER_MTOK_IN": "2", "LMC_PRICE_PER_MTOK_OUT": "8"},
        "max_cost: 5\nprice_per_mtok_in: 2\nprice_per_mtok_out: 8\n",
        lambda c, rts: c["max_cost"] == 5.0 and (c["price"].input, c["price"].output) == (2e-6, 8e-6),
    ),
    "max_lm_errors": (
        ["--max-lm-errors", "35%"],
        {"LMC_MAX_LM_ERRORS": "35%"},
        "max_lm_errors: 35%\n",
        lambda c, rts: c["max_lm_errors"].text == "35%",
    ),
    "truncate_inputs": (
        ["--truncate-inputs"],
        {"LMC_TRUNCATE_INPUTS": "true"},
        "truncate_inputs: true\n",
        lambda c, rts: rts and all(rt.truncate_inputs for rt in rts),
    ),
}


@pytest.fixture
def recorded(monkeypatch):
    from lmc import lm, runtime as rt_module

    got = {"clients": [], "runtimes": []}
    init_client, init_rt = lm.LMClient.__init__, rt_module.Runtime.__init__

    def client(self, *a, **kw):
        got["clients"].append(kw)
        init_client(self, *a, **kw)

    def runtime(self, *a, **kw):
        init_rt(self, *a, **kw)
        got["runtimes"].append(self)

    monkeypatch.setattr(lm.LMClient, "__init__", client)
    monkeypatch.setattr(rt_module.Runtime, "__init__", runtime)
    return got


@pytest.mark.parametrize("key", list(CAP_SOURCES))
@pytest.mark.parametrize("cmd", ["run", "compile", "eval"])
@pytest.mark.parametrize("source", ["flag", "env", "yaml"])
def test_every_command_takes_each_cap_from_each_source(lmc, ws, recorded, monkeypatch, cmd, key, source):
    flags, env, yaml_text, check = CAP_SOURCES[key]
    write_jsonl(ws / "in.jsonl", reviews(3, labels=False))
    with LoopbackServer(responder) as srv:
        base = {
            "run": ["run", "s.lmp", "--data", "in.jsonl", "--out", "o.jsonl"],
            "compile": COMPILE_BASE + ["--optimizer", "labeled"],
            "eval": ["eval", "s.lmp", "--data", "dev.jsonl"],
        }[cmd]
        args = [*base, *LM, "--api-base", srv.url]
        if source == "flag":
            args += flags
        elif source == "env":
            for k, v in env.items():
                monkeypatch.setenv(k, v)
        else:
            (ws / "lmc.yaml").write_text(yaml_text)
        code, _, err = lmc(*args)
    assert code == 0, err
    assert check(recorded["clients"][-1], recorded["runtimes"]), (recorded["clients"][-1], err)


def test_the_default_error_limit_is_20_percent_for_compile_and_eval_and_off_for_run(lmc, ws, recorded):
    write_jsonl(ws / "in.jsonl", reviews(2, labels=False))
    with LoopbackServer(responder) as srv:
        for args, expected in (
            (["run", "s.lmp", "--data", "in.jsonl", "--out", "o.jsonl"], None),
            (["eval", "s.lmp", "--data", "dev.jsonl"], "20%"),
            (COMPILE_BASE, "20%"),
        ):
            code, _, err = lmc(*args, *LM, "--api-base", srv.url)
            assert code == 0, err
            limit = recorded["clients"][-1]["max_lm_errors"]
            assert (limit.text if limit is not None else None) == expected, args
    (ws / "lmc.yaml").write_text("max_lm_errors: lots\n")
    code, _, err = lmc("eval", "s.lmp", "--data", "dev.jsonl", *LM, "--api-base", "http://127.0.0.1:9/v1")
    assert code == 2 and "'max_lm_errors': 'lots' is not a valid max lm errors" in err, err


@pytest.mark.parametrize("stored, probed, replayed", [(2, False, [2]), (-1000, True, []), ("many", True, [])])
def test_a_remembered_endpoint_counts_its_probes_and_an_edited_record_is_probed_again(stored, probed, replayed):
    # compile counts a remembered probe record as the probes it took; a record that would lower the count
    # (negative, or not a number) is read as no record, never as a refund against --max-calls.
    import asyncio

    from lmc.lm.dialect import Endpoints
    from lmc.lm.spec import parse_lm

    class Cache:
        def __init__(self):
            self.entries: dict = {}

        def get(self, key):
            return self.entries.get(key)

        async def aput(self, key, payload):
            self.entries[key] = payload

    cache, sent, counted = Cache(), [], []

    async def send(spec, req):
        sent.append(req)
        return None  # the endpoint refuses every probe: no dialect, no log-probabilities

    spec = parse_lm("text-completion-openai/m", "http://127.0.0.1:9/v1")
    eps = Endpoints(send, cache, replay=counted.append)
    cache.entries[eps._key(spec)] = {"text": json.dumps({"dialect": "none", "logprobs": False, "requests": stored})}
    found = asyncio.run(eps.of(spec))
    assert found.dialect == "none" and bool(sent) is probed and counted == replayed
