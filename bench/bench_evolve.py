"""evolve vs mipro on the embedded Gemma 3 270M at the same --max-calls budget: held-out accuracy and LM calls.

Two tasks, small on purpose (on two cores shared with other work the embedded model answered one call in
several seconds): SST-2 (train 30, dev 20, test 50 of bench_compare's split) and the six-intent BANKING77
route subset (`datasets/route_*.jsonl`: train 30, dev 20, test 48).  Each optimizer compiles through the CLI with a fresh
cache, the same seed and the same budget; the task LM and the reflection/proposal LM are both the embedded
model.  Each run writes `bench/results/evolve/<task>-<optimizer>.json` (skipped next time unless --fresh);
the evolve runs also keep what the reflection LM proposed (accepted or not), so a figure can show whether
a 270M model proposes anything useful.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_compare import TASKS, _lmc, code_version, task_split  # noqa: E402

LM = "local/gemma-3-270m"
OUT = ROOT / "bench" / "results" / "evolve"
BUDGET = 80
OPTIONS = {
    "mipro": ["--candidates", "2", "--instructions", "2", "--trials", "6", "--minibatch", "8"],
    "evolve": ["--rounds", "8", "--minibatch", "4"],
}


def _jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tasks() -> dict[str, dict]:
    sst, route = task_split(TASKS["sst2"]), task_split(TASKS["route"])
    return {
        "sst2": {
            "program": ROOT / "bench" / "programs" / "sst2.lmp",
            "data": {"train": sst["train"][:30], "dev": sst["dev"][:20], "test": sst["test"][:50]},
        },
        "route": {
            "program": ROOT / "programs" / "route.lmp",
            "data": {"train": random.Random(0).sample(route["train"], 30), "dev": route["dev"][:20], "test": route["test"][:48]},
        },
    }


def evaluate(target: Path, test: Path, out: Path, log: Path) -> dict:
    report = out.with_suffix(".report.json")
    _lmc(["eval", str(target), "--data", str(test), "--lm", LM, "--cache-dir", str(OUT / "cache-eval"), "--report", str(report)], log)
    rep = json.loads(report.read_text())
    wrong = [e for e in rep["examples"] if not e["passed"]]
    return {
        "test_acc": round(rep["summary"]["score"], 4),
        "test_n": rep["summary"]["n"],
        "feedback_samples": [e.get("feedback") or e.get("error") for e in wrong[:3]],
    }


def run_one(task: str, spec: dict, optimizer: str, fresh: bool, version: dict) -> dict:
    """One run, or the stored one when it measured this very commit on a clean tree (so one table is one commit)."""
    result_path = OUT / f"{task}-{optimizer}.json"
    if result_path.exists() and not fresh:
        old = json.loads(result_path.read_text())
        if old.get("lmc_commit") == version["lmc_commit"] and old.get("clean") and version["clean"]:
            return old
    files = {k: _jsonl(v, OUT / f"{task}-{k}.jsonl") for k, v in spec["data"].items()}
    log = OUT / f"{task}-{optimizer}.log"
    log.write_text("")
    if optimizer == "zero-shot":
        scores = evaluate(spec["program"], files["test"], OUT / f"{task}-{optimizer}", log)
        res = {"task": task, "optimizer": optimizer, "compile_calls": 0, **version, **scores}
        result_path.write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
        return res
    artifact = OUT / f"{task}-{optimizer}.lmc.json"
    cache = OUT / f"cache-{task}-{optimizer}"
    shutil.rmtree(cache, ignore_errors=True)  # a fresh cache: the compile's calls are all its own
    args = [
        "compile",
        str(spec["program"]),
        "--train",
        str(files["train"]),
        "--dev",
        str(files["dev"]),
        "--optimizer",
        optimizer,
        "--lm",
        LM,
        "--seed",
        "0",
        "--max-calls",
        str(BUDGET),
        "--cache-dir",
        str(cache),
        "-o",
        str(artifact),
        *OPTIONS[optimizer],
    ]
    start = time.perf_counter()
    code = _lmc(args, log)
    wall = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"lmc compile failed; see {log}")
    rep = json.loads(artifact.read_text())["compile"]
    stats = json.loads(artifact.with_name(artifact.name.replace(".lmc.json", ".stats.json")).read_text())
    res = {
        **version,
        "task": task,
        "optimizer": optimizer,
        "command": "lmc " + " ".join(args),
        "compile_calls": stats["calls"] - stats["cached_calls"],
        "compile_requests": stats["requests"],
        "compile_wall_s": round(wall, 1),
        "dev_baseline": rep["scores"]["baseline"]["dev"],
        "dev_final": rep["scores"]["final"]["dev"],
        "budget_exhausted": rep["budget"]["exhausted"],
        "instruction": json.loads(artifact.read_text())["ir"]["predictors"][0]["instructions"],
        **evaluate(artifact, files["test"], OUT / f"{task}-{optimizer}", log),
    }
    if optimizer == "evolve":
        text = log.read_text()
        res["lineage"] = rep.get("lineage", [])
        res["proposals"] = re.findall(r"evolve: round \d+: new instruction for \w+ rejected \(minibatch [^)]*\): .*", text)
        res["accepted"] = [c["name"] for c in rep["candidates"] if c["name"].startswith("evolve:round")]
        res["skipped_perfect"] = text.count("already passes its minibatch")
        res["no_instruction"] = text.count("the reflection LM gave no instruction")
    result_path.write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
    return res


def markdown(results: list[dict]) -> str:
    """The RESULTS.md table of the runs measured so far."""
    head = "| task | optimizer | test accuracy | dev before → after | compile LM calls (cap) | compile wall | lmc commit |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in results:
        dev = "—" if "dev_final" not in r else f"{r['dev_baseline']:.3f} → {r['dev_final']:.3f}"
        cap = f" ({BUDGET})" if r["optimizer"] != "zero-shot" else ""
        wall = f"{r['compile_wall_s']:.0f} s" if "compile_wall_s" in r else "—"
        commit = "not recorded" if "lmc_commit" not in r else f"{r['lmc_commit']}{'' if r['clean'] else ' (edits)'}"
        acc = f"{r['test_acc']:.3f} (n={r['test_n']})"
        lines.append(f"| {r['task']} | {r['optimizer']} | {acc} | {dev} | {r['compile_calls']}{cap} | {wall} | {commit} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fresh", action="store_true", help="rerun runs already measured")
    ap.add_argument("--only", default="", help="comma-separated tasks (sst2, route)")
    ap.add_argument("--summary", action="store_true", help="print the table of the runs already measured, run nothing")
    args = ap.parse_args()
    if args.summary:
        done = [
            json.loads(p.read_text())
            for task in ("sst2", "route")
            for opt in ("zero-shot", "mipro", "evolve")
            for p in [OUT / f"{task}-{opt}.json"]
            if p.exists()
        ]
        print(markdown(done))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    results = []
    version = code_version()
    for task, spec in tasks().items():
        if args.only and task not in args.only.split(","):
            continue
        for optimizer in ("zero-shot", "mipro", "evolve"):
            print(f"{task} {optimizer} ...", file=sys.stderr, flush=True)
            results.append(run_one(task, spec, optimizer, args.fresh, version))
    print(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
