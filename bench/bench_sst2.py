"""SST-2 with the embedded Gemma 3 270M: lmc's optimizers vs DSPy 3.4.1's, test accuracy, LM calls and compile time.

Every run (one system x one optimizer) writes `bench/results/sst2[-quick]/<system>-<optimizer>.json` and is
skipped on the next invocation unless `--fresh`, so the long full run survives interruptions. lmc is driven
through its CLI exactly as a user would (`lmc compile`, `lmc eval`); DSPy runs in a child process
(`bench/dspy_side.py`) against llama.cpp's OpenAI-compatible server on the same GGUF file, behind a counting
proxy so its LM calls are counted the same way for every optimizer.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))
PROGRAM = BENCH / "programs" / "sst2.lmp"
LM = "local/gemma-3-270m"
OPTIMIZERS = ("labeled", "bootstrap", "random-search", "mipro")
DSPY_NAMES = {"zero-shot": "Predict (no compile)", "labeled": "LabeledFewShot", "bootstrap": "BootstrapFewShot",
              "random-search": "BootstrapFewShotWithRandomSearch", "mipro": "MIPROv2 (auto=light)"}
TARGET_ACC = 0.88


def dataset_path() -> Path:
    env = os.environ.get("LMC_SST2")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared/datasets/sst2_dev.jsonl"


def split(quick: bool) -> dict[str, list[dict]]:
    """train = first 100, dev = next 200, test = the rest, after random.Random(0).shuffle; quick trims dev and test."""
    rows = [json.loads(line) for line in dataset_path().read_text().splitlines() if line.strip()]
    random.Random(0).shuffle(rows)
    parts = {"train": rows[:100], "dev": rows[100:300], "test": rows[300:]}
    if quick:
        parts["dev"], parts["test"] = parts["dev"][:50], parts["test"][:100]
    return parts


def _env() -> dict:
    return dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", PYTHONPATH=str(ROOT))


def _lmc(args: list[str], log: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lmc", *args]
    with log.open("a") as f:
        f.write("$ lmc " + " ".join(args) + "\n")
        f.flush()
        proc = subprocess.run(cmd, cwd=ROOT, env=_env(), stdout=f, stderr=subprocess.STDOUT, text=True)
        f.write(f"[exit {proc.returncode}]\n")
    return proc


def _eval(target: Path, data: Path, out: Path, log: Path) -> dict:
    """Test accuracy of a program or artifact through `lmc eval`, with parse failures counted from the report."""
    report = out.with_suffix(".report.json")
    _lmc(["eval", str(target), "--data", str(data), "--lm", LM, "--cache-dir", str(out.parent / "cache-eval"),
          "--report", str(report)], log)
    if not report.exists():
        raise RuntimeError(f"lmc eval wrote no report; see {log}")
    rep = json.loads(report.read_text())
    examples = rep["examples"]
    parse = [e for e in examples if e.get("error_kind") == "parse"]
    return {"test_acc": round(rep["summary"]["score"], 4), "test_n": rep["summary"]["n"],
            "test_errors": rep["summary"]["errors"], "test_parse_failures": len(parse),
            "test_eval_calls": rep["summary"]["calls"] - rep["summary"]["cached_calls"],
            "parse_failure_samples": [e["error"][:300] for e in parse[:5]]}


def _compile(opt: str, files: dict[str, Path], out_dir: Path, quick: bool, log: Path, cache: Path,
             artifact: Path, warm: bool = False) -> dict:
    if not warm:
        # A compile cut short leaves a partly filled cache, and resuming on it would undercount real calls.
        shutil.rmtree(cache, ignore_errors=True)
    args = ["compile", str(PROGRAM), "--train", str(files["train"]), "--dev", str(files["dev"]), "--optimizer", opt,
            "--lm", LM, "--seed", "0", "--cache-dir", str(cache), "-o", str(artifact)]
    if opt in ("labeled", "bootstrap"):
        # DSPy's LabeledFewShot and BootstrapFewShot never look at the dev set; scoring it (lmc's default,
        # to refuse a compiled program worse than the one written) would make the call counts incomparable.
        args.append("--no-score-dev")
    if quick and opt in ("random-search", "mipro"):
        args += ["--candidates", "3"] + (["--trials", "6", "--instructions", "2"] if opt == "mipro" else [])
    start = time.perf_counter()
    proc = _lmc(args, log)
    wall = time.perf_counter() - start
    stats_path = artifact.with_name(artifact.name.replace(".lmc.json", ".stats.json"))
    if proc.returncode != 0 or not stats_path.exists():
        raise RuntimeError(f"lmc compile --optimizer {opt} failed (exit {proc.returncode}); see {log}")
    stats = json.loads(stats_path.read_text())
    comp = json.loads(artifact.read_text()).get("compile", {})
    return {"compile_wall_s": round(wall, 1), "compile_calls": stats["calls"] - stats["cached_calls"],
            "compile_calls_total": stats["calls"], "compile_cached_calls": stats["cached_calls"],
            "dev_baseline": comp.get("scores", {}).get("baseline", {}).get("dev"),
            "dev_final": comp.get("scores", {}).get("final", {}).get("dev"),
            "command": "lmc " + " ".join(args)}


def lmc_run(opt: str, files: dict[str, Path], out_dir: Path, quick: bool) -> dict:
    log = out_dir / f"lmc-{opt}.log"
    if opt == "zero-shot":
        return {"system": "lmc", "optimizer": opt, **_eval(PROGRAM, files["test"], out_dir / "lmc-zero-shot.json", log)}
    if opt == "warm-recompile":
        # Same optimizer, same seed, same (now warm) cache as the bootstrap run: must make no LM call.
        first = out_dir / "lmc-bootstrap.lmc.json"
        if not first.exists():
            raise RuntimeError("warm-recompile needs the bootstrap run first")
        again = out_dir / "lmc-bootstrap-warm.lmc.json"
        res = _compile("bootstrap", files, out_dir, quick, log, out_dir / "cache-bootstrap", again, warm=True)
        res["identical_artifact"] = again.read_bytes() == first.read_bytes()
        return {"system": "lmc", "optimizer": opt, **res}
    artifact = out_dir / f"lmc-{opt}.lmc.json"
    res = _compile(opt, files, out_dir, quick, log, out_dir / f"cache-{opt}", artifact)
    return {"system": "lmc", "optimizer": opt, **res, **_eval(artifact, files["test"], out_dir / f"lmc-{opt}.json", log)}


def dspy_run(opt: str, files: dict[str, Path], out_dir: Path, quick: bool, server_url: str) -> dict:
    out = out_dir / f"dspy-{opt}.result.json"
    cmd = [sys.executable, str(BENCH / "dspy_side.py"), "sst2", "--optimizer", opt, "--api-base", server_url,
           "--train", str(files["train"]), "--dev", str(files["dev"]), "--test", str(files["test"]), "--out", str(out)]
    if quick:
        cmd.append("--quick")
    log = out_dir / f"dspy-{opt}.log"
    with log.open("a") as f:
        proc = subprocess.run(cmd, cwd=ROOT, env=_env(), stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"DSPy {opt} failed (exit {proc.returncode}); see {log}")
    return {"system": "dspy", "optimizer": opt, **json.loads(out.read_text())}


def _code_version() -> dict:
    """The lmc commit a run measured, and whether lmc/ had uncommitted edits (others work in this checkout)."""
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return proc.stdout.strip()

    return {"lmc_commit": git("rev-parse", "--short", "HEAD"), "lmc_dirty": bool(git("status", "--porcelain", "lmc"))}


def run(quick: bool = False, fresh: bool = False, only_system: str | None = None,
        only_optimizers: tuple[str, ...] | None = None) -> dict:
    """Run (or resume) every SST-2 run and return the figures; per-run JSON lands under bench/results/."""
    out_dir = BENCH / "results" / ("sst2-quick" if quick else "sst2")
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = split(quick)
    files = {}
    for name, rows in parts.items():
        files[name] = out_dir / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    # lmc's cheap optimizers first (their accuracy is what prompt work needs), then DSPy's counterparts, then
    # the searches pair by pair; an interrupted run still holds comparable pairs.
    order = [("lmc", "zero-shot"), ("lmc", "labeled"), ("lmc", "bootstrap"), ("lmc", "warm-recompile"),
             ("dspy", "zero-shot"), ("dspy", "labeled"), ("dspy", "bootstrap"),
             ("lmc", "random-search"), ("dspy", "random-search"), ("lmc", "mipro"), ("dspy", "mipro")]
    plan = [(system, opt) for system, opt in order if only_system in (None, system)]
    runs: dict[str, dict] = {}
    server = None
    try:
        for system, opt in plan:
            path = out_dir / f"{system}-{opt}.json"
            if path.exists() and not fresh:
                runs[f"{system}/{opt}"] = json.loads(path.read_text())
                print(f"[sst2] {system} {opt}: done earlier ({path.name})", flush=True)
                continue
            if os.environ.get("LMC_SST2_SUMMARY_ONLY") or (only_optimizers and opt not in only_optimizers):
                continue  # report what has been measured, start nothing new
            print(f"[sst2] {system} {opt} ...", flush=True)
            start = time.perf_counter()
            try:
                if system == "lmc":
                    res = lmc_run(opt, files, out_dir, quick)
                else:
                    if server is None:
                        from dspy_side import LlamaServer  # only the DSPy side needs llama.cpp's server
                        server = LlamaServer().start()
                    res = dspy_run(opt, files, out_dir, quick, server.url)
            except RuntimeError as e:
                print(f"[sst2] {system} {opt}: FAILED: {e}", flush=True)
                runs[f"{system}/{opt}"] = {"system": system, "optimizer": opt, "error": str(e)}
                continue
            res["run_wall_s"] = round(time.perf_counter() - start, 1)
            res.update(_code_version())
            res["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
            path.write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
            runs[f"{system}/{opt}"] = res
            print(f"[sst2] {system} {opt}: " + json.dumps({k: v for k, v in res.items()
                                                            if k not in ("parse_failure_samples", "command")}), flush=True)
    finally:
        if server is not None:
            server.stop()
    return summarize(runs, quick, parts)


def summarize(runs: dict[str, dict], quick: bool, parts: dict) -> dict:
    def acc(key: str) -> float | None:
        return runs.get(key, {}).get("test_acc")

    lmc_best = max((acc(f"lmc/{o}") for o in OPTIMIZERS if acc(f"lmc/{o}") is not None), default=None)
    dspy_best = max((acc(f"dspy/{o}") for o in OPTIMIZERS if acc(f"dspy/{o}") is not None), default=None)
    calls = {s: {o: runs.get(f"{s}/{o}", {}).get("compile_calls") for o in OPTIMIZERS} for s in ("lmc", "dspy")}
    fewer_calls = None
    pairs = [(calls["lmc"][o], calls["dspy"][o]) for o in OPTIMIZERS
             if calls["lmc"][o] is not None and calls["dspy"][o] is not None]
    if pairs:
        fewer_calls = all(a <= b for a, b in pairs)
    warm = runs.get("lmc/warm-recompile", {})
    return {
        "quick": quick, "split": {k: len(v) for k, v in parts.items()}, "dataset": str(dataset_path()),
        "runs": runs, "lmc_best_test_acc": lmc_best, "dspy_best_test_acc": dspy_best,
        "target_acc": TARGET_ACC,
        "meets_acc_target": None if lmc_best is None else lmc_best >= TARGET_ACC,
        "beats_dspy": None if lmc_best is None or dspy_best is None else lmc_best >= dspy_best,
        "no_more_calls_than_dspy": fewer_calls,
        "warm_recompile_calls": warm.get("compile_calls"),
        "warm_recompile_identical": warm.get("identical_artifact"),
    }


def main() -> None:
    import signal

    # A plain SIGTERM would skip `finally` and leave llama.cpp's server running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="dev 50, test 100, fewer candidates")
    ap.add_argument("--fresh", action="store_true", help="redo runs that already have results")
    ap.add_argument("--system", choices=("lmc", "dspy"), help="only this side")
    ap.add_argument("--optimizers", help="comma-separated subset, e.g. labeled,bootstrap (the summary keeps all)")
    a = ap.parse_args()
    only = tuple(a.optimizers.split(",")) if a.optimizers else None
    print(json.dumps(run(a.quick, a.fresh, a.system, only), indent=2, sort_keys=True, default=str))


if __name__ == "__main__":
    main()
