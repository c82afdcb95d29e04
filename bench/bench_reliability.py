"""Load held under faults (`lmc run` at -j 64 with 10% injected faults, on both transports) and requests repeated after kills.

What a fault may cost.  A faulted request must be sent again, and the run cannot end before its
last honoured wait (Retry-After: 1, or the 1 s client timeout) is over.  Everything else a fault
costs — a slot held by a timed-out request, an example waiting out its backoff — is spare
capacity a good client uses for other examples.  So the benchmark is set up where that spare
capacity exists: 20 ms of server latency at -j 64 leaves the in-flight slots far from full, and
the run is bound by the client's CPU, as a batch against a fast local server is.  The best any
client could then reach, relative to lmc's own fault-free run of T seconds, is

    ceiling = T / (T + extra requests x CPU of one bare HTTP exchange + 1 s)

(the bare exchange's CPU is measured here, on the client and on the server, and the larger one
taken), which `run()` prints.  The fault-free run is made long enough for that ceiling to be at
least 0.95: the fixed 1 s tail is what kept it at 0.78 for the 6 s run this benchmark used to make.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

N = 48_000  # ~32 s fault-free on the direct transport here (27 s at 40000 left the ceiling at 0.949); the litellm transport runs N // LITELLM_SHARE
LITELLM_SHARE = 5  # litellm spends ~5x the CPU per call: a fifth of the examples keeps its run as long
CONCURRENCY = 64
LATENCY = 0.02
FAULT_RATE = 0.10
TARGET_CEILING = 0.95
TARGET_RATIO = 0.85
TAIL_S = 1.0  # the last honoured wait: Retry-After: 1, or the 1 s client timeout
# Every kind the test server can inject but "empty": at temperature 0 an empty completion is the model's answer
# (cached, then the prompt is repaired), not a fault lmc retries. A "timeout" fault holds the request for 2 s; the
# client gives up after LMC_TIMEOUT=1 s, a setting a user would pick for a server that answers in 20 ms (the 60 s
# default would make the figure measure that constant, not lmc).
KINDS = ("429", "429_retry_after", "500", "502", "503", "timeout", "drop", "truncated", "non_json")
# The same 10% without timeouts, reported beside it.
KINDS_NO_TIMEOUT = tuple(k for k in KINDS if k != "timeout")
CLIENT_TIMEOUT_S = "1"
PROGRAM = ROOT / "programs" / "sentiment.lmp"


def _serve(latency: float, rate: float, seconds: float, kinds: tuple[str, ...]) -> None:
    from tests.lmserver import LoopbackServer
    from tests.reliability.helpers import sentiment_responder

    faults = {k: rate / len(kinds) for k in kinds} if rate else None
    with LoopbackServer(sentiment_responder, latency=latency, faults=faults, seed=11, retry_after=1, timeout_sleep=2.0) as srv:
        print(srv.url, flush=True)
        time.sleep(seconds)


def _server(rate: float, kinds: tuple[str, ...] = KINDS):
    """The loopback server in a child process, so client and server do not share one GIL."""
    from tests.lmserver import ServerProcess

    return ServerProcess(argv=[__file__, "--serve", str(LATENCY), str(rate), "1800", ",".join(kinds)])


def _env(transport: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMC_")}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", PYTHONPATH=str(ROOT), LMC_TIMEOUT=CLIENT_TIMEOUT_S)
    if transport:
        env["LMC_TRANSPORT"] = transport
    return env


def _load_run(n: int, rate: float, transport: str | None, kinds: tuple[str, ...] = KINDS) -> dict:
    """One `lmc run` of n examples with the CLI's own retry settings; wall time and what the server saw."""
    import resource

    from tests.reliability.helpers import expected_sentiment, reviews, write_jsonl

    with tempfile.TemporaryDirectory() as tmp, _server(rate, kinds) as srv:
        d = Path(tmp)
        write_jsonl(d / "in.jsonl", reviews(n))
        cmd = [
            sys.executable,
            "-m",
            "lmc",
            "run",
            str(PROGRAM),
            "--lm",
            "openai/test",
            "--api-base",
            srv.url,
            "--data",
            "in.jsonl",
            "--out",
            "out.jsonl",
            "--cache-dir",
            "cache",
            "-j",
            str(CONCURRENCY),
        ]
        server_cpu = srv.stats()["cpu_s"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=d, env=_env(transport), capture_output=True, text=True, timeout=3600)
        took = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        stats = srv.stats()
        rows = [json.loads(x) for x in (d / "out.jsonl").read_text().splitlines()] if (d / "out.jsonl").exists() else []
    ok = sum(1 for r in rows if r["error"] is None and r["outputs"] == {"sentiment": expected_sentiment(int(r["id"][1:]))})
    injected = sum(stats["faults_injected"].values())
    tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    # Failed requests as lmc counted them (its summary line): the injected faults, plus any the server did not
    # inject, such as an answer arriving after the 1 s client timeout on a starved machine.
    seen = re.search(r"retries, (\d+) failed\)", tail)
    client_failed = int(seen.group(1)) if seen else 0
    return {
        "exit": proc.returncode,
        "seconds": round(took, 2),
        "throughput": round(n / took, 1),
        "completed": ok,
        "lines": len(rows),
        "unique_ids": len({r["id"] for r in rows}),
        "requests": stats["requests"],
        "faults_injected": injected,
        "max_open_connections": stats["max_open"],
        "client_cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
        "server_cpu_s": round(stats["cpu_s"] - server_cpu, 2),
        "repeated_bodies": stats["duplicates"],
        "repeats_beyond_faults": stats["duplicates"] - injected,
        "client_failed_requests": client_failed,
        # What must be 0: a request sent again although the client saw no failure of it (an answer resent).
        "repeats_without_a_failure": stats["duplicates"] - client_failed,
        "stderr_tail": tail,
    }


async def _bare_exchange_cpu(url: str, n: int = 2000) -> float:
    """Client CPU seconds of one bare aiohttp POST and read: what any client pays to send a request again."""
    import aiohttp

    body = json.dumps({"model": "test", "messages": [{"role": "user", "content": "review number 1"}]}).encode()
    async with aiohttp.ClientSession() as session:

        async def one() -> None:
            async with session.post(url + "/chat/completions", data=body, headers={"Content-Type": "application/json"}) as resp:
                await resp.read()

        await asyncio.gather(*(one() for _ in range(64)))
        start = time.process_time()
        for _ in range(n // 64):
            await asyncio.gather(*(one() for _ in range(64)))
        return (time.process_time() - start) / (64 * (n // 64))


def _exchange_cost() -> dict:
    """CPU of one request on the client (bare aiohttp) and on the server (its CPU per request, fault-free)."""
    with _server(0.0) as srv:
        cpu0, req0 = srv.stats()["cpu_s"], srv.stats()["requests"]
        client = asyncio.run(_bare_exchange_cpu(srv.url))
        stats = srv.stats()
    server = (stats["cpu_s"] - cpu0) / max(1, stats["requests"] - req0)
    return {"client_ms": round(client * 1000, 4), "server_ms": round(server * 1000, 4)}


def ceiling(clean_s: float, extra_requests: int, exchange_ms: float, tail_s: float = TAIL_S) -> float:
    """The best faulty/fault-free throughput ratio any client could reach (see the module docstring)."""
    return clean_s / (clean_s + extra_requests * exchange_ms / 1000 + tail_s)


def _kills(kills: int, n: int, seed: int) -> dict:
    """`lmc run` killed with SIGKILL `kills` times at random points, then finished; repeats of settled requests."""
    from tests.reliability.helpers import reviews, run_data_cmd, sentiment_responder, subprocess_env, write_jsonl
    from tests.reliability.test_crash_resume import TimedServer, _kill_at_random, _repeats_after_kills

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        write_jsonl(d / "in.jsonl", reviews(n))
        with TimedServer(sentiment_responder, latency=0.03) as srv:
            cmd = run_data_cmd(PROGRAM, srv.url, 4)
            landed = []
            for _ in range(kills):
                _, at, _ = _kill_at_random(cmd, d, srv, rng, signal.SIGKILL, 0.5)
                if at is not None:
                    landed.append(at)
            final = subprocess.run(cmd, cwd=d, env=subprocess_env(LMC_TEST_LM_TIMEOUT="30"), capture_output=True, text=True, timeout=600)
            bad, total = _repeats_after_kills(srv, landed)
            rows = [json.loads(x) for x in (d / "out.jsonl").read_text().splitlines()]
    ids = [r["id"] for r in rows]
    return {
        "kills": len(landed),
        "final_exit": final.returncode,
        "examples": n,
        "lines": len(rows),
        "unique_ids": len(set(ids)),
        "repeated_settled_requests": bad,
        "repeated_in_flight_requests": total - bad,
    }


def _fastest(runs: list[dict]) -> dict:
    """The fastest run, with the worst completion and repeat counts of all (those must hold in every run)."""
    best = dict(min(runs, key=lambda r: r["seconds"]))
    best["completed"] = min(r["completed"] for r in runs)
    best["repeats_beyond_faults"] = max(r["repeats_beyond_faults"] for r in runs)
    best["repeats_without_a_failure"] = max(r["repeats_without_a_failure"] for r in runs)
    return best


def _paths(n: int, transports: Sequence[str]) -> list[tuple[str, str | None, int]]:
    known = {"direct": ("direct", None, n), "litellm": ("litellm", "litellm", n // LITELLM_SHARE)}
    unknown = set(transports) - set(known)
    if unknown:
        raise ValueError(f"unknown transport(s) {sorted(unknown)}; expected direct, litellm")
    return [known[t] for t in transports]


def run(n: int = N, kills: int = 20, repeats: int = 3, transports: Sequence[str] = ("direct", "litellm"), no_timeouts: bool = True) -> dict:
    """The whole benchmark; `transports`, `no_timeouts=False` and `kills=0` leave parts out (the default path's
    fault figure alone takes ~2 minutes, the whole benchmark ~20)."""
    out: dict = {
        "n": n,
        "concurrency": CONCURRENCY,
        "latency_s": LATENCY,
        "fault_rate": FAULT_RATE,
        "fault_kinds": list(KINDS),
        "client_timeout_s": float(CLIENT_TIMEOUT_S),
        "timeout_fault_holds_s": 2.0,
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
    }
    cost = out["exchange_cpu"] = _exchange_cost()
    exchange_ms = max(cost["client_ms"], cost["server_ms"])
    for name, transport, size in _paths(n, transports):
        # Each configuration runs `repeats` times, interleaved, and the fastest run of each is compared.
        trials: dict[str, list[dict]] = {"clean": [], "faulty": []}
        if no_timeouts:
            trials["no_timeouts"] = []
        for _ in range(repeats):
            trials["clean"].append(_load_run(size, 0.0, transport))
            trials["faulty"].append(_load_run(size, FAULT_RATE, transport))
            if no_timeouts:
                trials["no_timeouts"].append(_load_run(size, FAULT_RATE, transport, KINDS_NO_TIMEOUT))
        best = {k: _fastest(runs) for k, runs in trials.items()}
        clean, faulty = best["clean"], best["faulty"]
        for k, runs in trials.items():
            out.setdefault("all_seconds", {}).setdefault(name, {})[k] = [r["seconds"] for r in runs]
        top = ceiling(clean["seconds"], faulty["requests"] - size, exchange_ms)
        path = out[name] = {
            "n": size,
            "clean": clean,
            "faulty": faulty,
            "completion_rate": round(min(b["completed"] for k, b in best.items() if k != "clean") / size, 4),
            "throughput_vs_clean": round(faulty["throughput"] / clean["throughput"], 3),
            "ceiling": round(top, 3),
            "client_cpu_ms_per_example_clean": round(clean["client_cpu_s"] / size * 1000, 3),
        }
        if no_timeouts:
            path["faulty_without_timeouts"] = best["no_timeouts"]
            path["throughput_vs_clean_without_timeouts"] = round(best["no_timeouts"]["throughput"] / clean["throughput"], 3)
    if "direct" in out:
        out["default_path_meets_target"] = out["direct"]["throughput_vs_clean"] >= TARGET_RATIO and out["direct"]["ceiling"] >= TARGET_CEILING
    if kills:
        out["crash_resume"] = _kills(kills, 400, seed=1234)
    out["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        _serve(float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), tuple(sys.argv[5].split(",")))
    else:
        quick = "--quick" in sys.argv
        if "--default-path" in sys.argv:  # issue 14's figure alone: the direct transport, once, no kills
            print(json.dumps(run(n=8000 if quick else N, kills=0, repeats=1, transports=("direct",), no_timeouts=False), indent=2))
        else:
            print(json.dumps(run(n=8000 if quick else N, kills=5 if quick else 20, repeats=1 if quick else 3), indent=2))
