"""Benchmark of `lmc run`'s runtime: per-call overhead (interpreter + prompts + client) and throughput vs ideal."""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

PROGRAM = """
signature QA = "question -> answer"
module qa = Predict(QA)
program main(question: str) -> (answer: str) { return qa(question=question) }
"""
N = 400


def _server(latency: float):
    """A loopback server in a child process (its own GIL) answering every chat request `<answer>ok</answer>`."""
    from tests.lmserver import ServerProcess

    return ServerProcess(argv=[__file__, "--serve", str(latency)])


def _serve(latency: float) -> None:
    from tests.lmserver import LoopbackServer

    with LoopbackServer(lambda req: "<answer>ok</answer>", latency=latency) as srv:
        print(srv.url, flush=True)
        time.sleep(600)


async def _raw_rtt(url: str, n: int) -> float:
    """Seconds per sequential POST with a bare aiohttp session: the floor any client pays."""
    import aiohttp

    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> None:
            body = json.dumps({"model": "test", "messages": [{"role": "user", "content": f"q {i}"}]}).encode()
            async with session.post(url + "/chat/completions", data=body, headers={"Content-Type": "application/json"}) as resp:
                json.loads(await resp.read())

        for i in range(20):
            await one(i)
        start = time.perf_counter()
        for i in range(n):
            await one(i)
        return (time.perf_counter() - start) / n


def _batch(url: str, concurrency: int, n: int = N) -> float:
    """Seconds for `n` single-Predict examples through the runner (JSONL output included), cache off."""
    from lmc.check import check_source
    from lmc.datasets import from_records
    from lmc.targets import Target
    from lmc.lower import lower
    from lmc.runner import LineWriter, run_batch
    from lmc.session import RunOptions, open_runtime

    ir = lower(check_source(PROGRAM, "bench.lmp"))
    target = Target(ir, "program", "bench.lmp", "main", PROGRAM, "")
    rt = open_runtime(target, RunOptions(lm="openai/test", api_base=url, use_cache=False, concurrency=concurrency)).runtime
    ds = from_records([{"id": str(i), "question": f"question number {i}?"} for i in range(n)])
    # As DSPy's side warms up as many threads as it runs: every connection of the pool is open before timing.
    warm = from_records([{"id": f"w{i}", "question": f"warm {i}?"} for i in range(max(20, concurrency))])
    with tempfile.TemporaryDirectory() as tmp:
        out = LineWriter(Path(tmp) / "out.jsonl")

        async def go() -> float:
            await run_batch(rt, warm.examples, ["question"], out=None, concurrency=concurrency)
            start = time.perf_counter()
            s = await run_batch(rt, ds.examples, ["question"], out=out, concurrency=concurrency)
            took = time.perf_counter() - start
            await rt.client.aclose()
            assert s.ok == n, f"{s.failed} examples failed"
            return took

        try:
            return asyncio.run(go())
        finally:
            out.close()


def run(n: int = N) -> dict:
    with _server(0.0) as srv:
        rtt = asyncio.run(_raw_rtt(srv.url, n))
        best = min(_batch(srv.url, 1, n) for _ in range(3))
    per_call = best / n
    with _server(0.1) as srv:
        took64 = _batch(srv.url, 64, n)
    ideal = math.ceil(n / 64) * 0.1
    return {
        "calls": n,
        "j1_calls_per_s": round(n / best, 1),
        "j1_ms_per_call": round(per_call * 1000, 3),
        "raw_http_ms_per_call": round(rtt * 1000, 3),
        "overhead_ms_per_call": round((per_call - rtt) * 1000, 3),
        "j64_latency_100ms_s": round(took64, 3),
        "j64_ideal_s": round(ideal, 3),
        "j64_calls_per_s": round(n / took64, 1),
        "j64_fraction_of_ideal": round(ideal / took64, 3),
    }


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        _serve(float(sys.argv[2]))
    else:
        print(json.dumps(run(), indent=2))
