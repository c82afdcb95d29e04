"""Label scoring vs greedy decoding on the embedded model: the cost of one call, and accuracy on a small split.

Both ways answer the same lmc-rendered completion prompts of the SST-2 program (bench/programs/sst2.lmp),
zero-shot and with 4 labeled demos, and of a 10-intent BANKING77 classifier (multi-token labels):
  - greedy: what lmc did before, decoding under a grammar that allows only the labels;
  - scored: the log-probability of each whole label after the prompt (lmc/lm/local.py `_rank`), the
    prompt evaluated once and its KV state reused across labels (and its shared prefix across calls);
  - scored, no reuse: the same with the model's state reset before every call (what the reuse saves).
Calls go straight to the embedded backend (no cache), one at a time, in one round; wall and CPU time
are both reported, CPU time being the steadier figure while other processes share the 2 cores.

    python bench/bench_label_scoring.py [--quick] [--n N]
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

SHARED = ROOT.parents[1] / "shared" / "datasets"
INTENTS = 10
INTENT_PROGRAM = """
signature Intent(text: str -> intent: {labels})
  "Classify the banking customer's message by its intent."
module classify = Predict(Intent)
program main(text: str) -> (intent: {labels}) {{
  return classify(text=text)
}}
metric acc = accuracy(intent)
"""


def _rows(name: str, env: str) -> list[dict]:
    path = Path(os.environ.get(env, SHARED / name))
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sst2_split(n: int) -> tuple[list[dict], list[dict]]:
    """(4 demos, n test rows) from the SST-2 split bench_sst2.py uses: demos from its train part, rows from its test part."""
    rows = _rows("sst2_dev.jsonl", "LMC_SST2")
    random.Random(0).shuffle(rows)
    train, test = rows[:100], rows[300:]
    demos = [next(r for r in train if r["sentiment"] == s) for s in ("positive", "negative")]
    demos += [next(r for r in train if r["sentiment"] == s and r not in demos) for s in ("positive", "negative")]
    return demos, test[:n]


def banking_split(n: int) -> tuple[list[str], list[dict]]:
    rows = _rows("banking77_test.jsonl", "LMC_BANKING77_TEST")
    labels = [k for k, _ in Counter(r["intent"] for r in rows).most_common(INTENTS)]
    picked = [r for r in rows if r["intent"] in labels]
    random.Random(0).shuffle(picked)
    return sorted(labels), picked[:n]


def _predictor(source: str):
    from lmc.check import check_source
    from lmc.lower import lower

    return lower(check_source(source, "bench.lmp")).predictors[0]


def _requests(p, rows: list[dict], field: str, demos: tuple[dict, ...]):
    from lmc import prompts
    from lmc.labels import reply_constraint
    from lmc.lm import LMRequest
    from lmc.predict import default_max_tokens

    choices, _ = reply_constraint(p)
    out = []
    for r in rows:
        prompt = prompts.render(p, {field: r[field]}, mode="completion", demos=demos)
        out.append(LMRequest(prompt=prompt.text, stop=prompt.stop, choices=choices, temperature=0.0, max_tokens=default_max_tokens(p, "completion")))
    return out


def _measure(backend, reqs, rank: bool, reuse: bool) -> tuple[float, float, list[str]]:
    """Mean wall and CPU seconds per call, and the answers.  CPU time (both llama.cpp threads) is the steadier
    figure on a loaded machine: time spent waiting for a core does not count."""
    from dataclasses import replace

    from lmc.lm import LMSpec

    spec = LMSpec("local/gemma-3-270m")
    answers, wall, cpu = [], 0.0, 0.0
    for req in reqs:
        if not reuse:
            backend._load().reset()
        start, start_cpu = time.perf_counter(), time.process_time()
        result = asyncio.run(backend.call(spec, replace(req, rank=rank), 300))
        wall += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        answers.append(result.text.strip())
    return wall / len(reqs), cpu / len(reqs), answers


def _task(backend, name: str, reqs, gold: list[str], rounds: int) -> dict:
    wall: dict = {}
    cpu: dict = {}
    answers: dict = {}
    for _ in range(rounds):
        for mode, rank, reuse in (("greedy", False, True), ("scored", True, True), ("scored_no_reuse", True, False)):
            w, c, got = _measure(backend, reqs, rank, reuse)
            wall[mode], cpu[mode] = min(wall.get(mode, w), w), min(cpu.get(mode, c), c)
            answers[mode] = got
    out: dict = {"task": name, "calls": len(reqs), "labels": len(reqs[0].choices)}
    for mode in wall:
        out[f"{mode}_ms_per_call"] = round(1000 * wall[mode], 1)
        out[f"{mode}_cpu_ms_per_call"] = round(1000 * cpu[mode], 1)
        out[f"{mode}_accuracy"] = round(sum(a == g for a, g in zip(answers[mode], gold)) / len(gold), 4)
    out["scored_vs_greedy_cpu"] = round(cpu["scored"] / cpu["greedy"], 3)
    out["reuse_saves_cpu"] = round(1 - cpu["scored"] / cpu["scored_no_reuse"], 3)
    out["agreement"] = round(sum(a == b for a, b in zip(answers["greedy"], answers["scored"])) / len(gold), 4)
    return out


def run(quick: bool = False, n: int | None = None) -> dict:
    try:
        import llama_cpp  # noqa: F401

        from lmc.lm.local import LocalBackend, model_path

        model_path()
    except Exception as e:  # noqa: BLE001 - the local extra is optional
        return {"skipped": f"local model unavailable: {e}"}
    n = n or (20 if quick else 60)
    rounds = 1
    backend = LocalBackend(slots=0)
    out: dict = {"load_avg_1m_at_start": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(), "rounds": rounds}
    sst2 = _predictor((ROOT / "bench" / "programs" / "sst2.lmp").read_text())
    demos, rows = sst2_split(n)
    gold = [r["sentiment"] for r in rows]
    shown = tuple({"review": d["review"], "sentiment": d["sentiment"]} for d in demos)
    out["sst2_zero_shot"] = _task(backend, "SST-2 test, zero-shot", _requests(sst2, rows, "review", ()), gold, rounds)
    out["sst2_4_demos"] = _task(backend, "SST-2 test, 4 labeled demos", _requests(sst2, rows, "review", shown), gold, rounds)
    labels, brows = banking_split(n // 2)
    intent = _predictor(INTENT_PROGRAM.format(labels=" | ".join(json.dumps(lb) for lb in labels)))
    out["banking_10_zero_shot"] = _task(
        backend, f"BANKING77 test, {INTENTS} intents, zero-shot", _requests(intent, brows, "text", ()), [r["intent"] for r in brows], rounds
    )
    llm = backend._load()
    out["banking_label_tokens"] = {lb: len(llm.tokenize((" " + lb).encode(), add_bos=False, special=False)) for lb in labels}
    backend.close()
    out["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    return out


if __name__ == "__main__":
    count = int(sys.argv[sys.argv.index("--n") + 1]) if "--n" in sys.argv else None
    print(json.dumps(run(quick="--quick" in sys.argv, n=count), indent=2, sort_keys=True))
