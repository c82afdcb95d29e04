"""Embedded Gemma 3 270M throughput at the demo's prompt size: lmc's client serialized vs concurrent, and raw llama.cpp.

A call here is what `make demo` makes: a completion prompt holding 4 labeled demos and one review (~200
tokens), answered with a few tokens. Figures: calls/s, prompt tokens/s (prefill alone, 1 generated token)
and completion tokens/s (decode alone, a short prompt and 64 greedy tokens), for
  - lmc serial:      `await client.complete(...)` one after another,
  - lmc concurrent:  all calls gathered at once (the client queues them on the model's one worker),
  - raw serial:      llama_cpp.Llama.create_completion in a loop (the floor lmc adds to),
  - raw 2 instances: two models of 1 thread each in two threads (the "run requests in parallel" option).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

DEMOS = [
    ("a gorgeous , witty , seductive movie .", "positive"),
    ("the plot is nothing but boilerplate clichés from start to finish .", "negative"),
    ("an utterly charming and hilarious film that reminded me of the best of the genre .", "positive"),
    ("it 's a mess , a dull and lifeless one at that , with nothing to say .", "negative"),
]
REVIEWS = [
    "a thoughtful , provocative , insistently humanizing film .",
    "the acting is wooden and the script is worse .",
    "one of the year 's most intriguing movie experiences .",
    "an exhausting , joyless exercise in style .",
    "a warm , funny , engaging film .",
    "too long , too slow and too pleased with itself .",
    "the performances are uniformly excellent .",
    "nothing here rings true , and nothing here is fun .",
    "a small gem of a movie .",
    "it never finds its footing .",
    "smart , sassy and exceptionally charming .",
    "tedious and numbingly dull .",
    "a lovely , moving film .",
    "a muddled , overlong drama .",
    "clever and genuinely funny .",
    "lame , sophomoric and predictable .",
]


def prompt(review: str) -> str:
    head = "Classify the sentiment of the review.\nAnswer with one of: positive, negative.\n\n"
    demos = "".join(f"Review: {r}\nSentiment: {s}\n\n" for r, s in DEMOS)
    return head + demos + f"Review: {review}\nSentiment:"


def _lmc(n: int, concurrent: bool) -> dict:
    from lmc.lm import LMClient, LMRequest, parse_lm

    client = LMClient(use_cache=False, concurrency=8)
    spec = parse_lm("local/gemma-3-270m")
    reqs = [LMRequest(prompt=prompt(REVIEWS[i % len(REVIEWS)]) + " " * (i // len(REVIEWS)), max_tokens=4, stop=("\n",)) for i in range(n)]

    async def go() -> tuple[float, int, int]:
        await client.complete(spec, LMRequest(prompt=prompt("warm up ."), max_tokens=2, stop=("\n",)))
        start = time.perf_counter()
        if concurrent:
            res = await asyncio.gather(*(client.complete(spec, r) for r in reqs))
        else:
            res = [await client.complete(spec, r) for r in reqs]
        took = time.perf_counter() - start
        await client.aclose()
        return took, sum(r.prompt_tokens for r in res), sum(r.completion_tokens for r in res)

    took, pt, ct = asyncio.run(go())
    return {
        "calls": n,
        "seconds": round(took, 2),
        "calls_per_s": round(n / took, 2),
        "mean_prompt_tokens": pt // n,
        "mean_completion_tokens": round(ct / n, 1),
    }


def _llama(threads: int = 2):
    import llama_cpp

    from lmc.lm.local import model_path

    return llama_cpp.Llama(model_path=model_path(), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)


def _raw(n: int) -> dict:
    llm = _llama()
    llm.create_completion(prompt("warm up ."), max_tokens=2, temperature=0.0, top_k=1)
    start = time.perf_counter()
    for i in range(n):
        llm.create_completion(prompt(REVIEWS[i % len(REVIEWS)]), max_tokens=4, stop=["\n"], temperature=0.0, top_k=1)
    took = time.perf_counter() - start
    # Prefill alone: a fresh prompt each time (llama.cpp reuses a shared prefix, so reset it first).
    toks = llm.tokenize(prompt(REVIEWS[0]).encode())
    llm.reset()
    start = time.perf_counter()
    llm.create_completion(toks, max_tokens=1, temperature=0.0, top_k=1)
    prefill = len(toks) / (time.perf_counter() - start)
    start = time.perf_counter()
    out = llm.create_completion("Once upon a time", max_tokens=64, temperature=0.0, top_k=1)
    decode = out["usage"]["completion_tokens"] / (time.perf_counter() - start)
    return {
        "calls": n,
        "seconds": round(took, 2),
        "calls_per_s": round(n / took, 2),
        "prompt_tok_s": round(prefill, 1),
        "completion_tok_s": round(decode, 1),
        "prompt_tokens": len(toks),
    }


def _raw_two(n: int) -> dict:
    models = [_llama(threads=1), _llama(threads=1)]
    for m in models:
        m.create_completion(prompt("warm up ."), max_tokens=2, temperature=0.0, top_k=1)

    def work(m, items):
        for i in items:
            m.create_completion(prompt(REVIEWS[i % len(REVIEWS)]), max_tokens=4, stop=["\n"], temperature=0.0, top_k=1)

    threads = [threading.Thread(target=work, args=(m, range(k, n, 2))) for k, m in enumerate(models)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    return {"calls": n, "seconds": round(took, 2), "calls_per_s": round(n / took, 2)}


def run(quick: bool = False) -> dict:
    try:
        import llama_cpp  # noqa: F401

        from lmc.lm.local import model_path

        model_path()
    except Exception as e:  # noqa: BLE001 - the local extra is optional
        return {"skipped": f"local model unavailable: {e}"}
    n = 8 if quick else 24
    out = {"load_avg_1m_at_start": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(), "rounds": 2}
    # Two alternated rounds, each figure its best: on a shared machine one round can land in a burst of load.
    for _ in range(2):
        for name, fn in (
            ("raw_serial", lambda: _raw(n)),
            ("lmc_serial", lambda: _lmc(n, concurrent=False)),
            ("lmc_concurrent", lambda: _lmc(n, concurrent=True)),
            ("raw_two_instances", lambda: _raw_two(n)),
        ):
            res = fn()
            prev = out.get(name)
            if prev is None:
                out[name] = res
            else:
                out[name] = {
                    k: (max(v, prev[k]) if k.endswith("_s") and k != "seconds" else min(v, prev[k]) if k == "seconds" else v) for k, v in res.items()
                }
    out["lmc_serial_vs_raw"] = round(out["lmc_serial"]["calls_per_s"] / out["raw_serial"]["calls_per_s"], 3)
    out["lmc_concurrent_vs_serial"] = round(out["lmc_concurrent"]["calls_per_s"] / out["lmc_serial"]["calls_per_s"], 3)
    out["two_instances_vs_raw_serial"] = round(out["raw_two_instances"]["calls_per_s"] / out["raw_serial"]["calls_per_s"], 3)
    out["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, sort_keys=True))
