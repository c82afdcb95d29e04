"""lmc vs DSPy 3.4.1 on Gemma 3 270M, like for like: SST-2 and BANKING77 routing, every optimizer pair, per-example answers.

    python bench/bench_compare.py [--size small|full] [--tasks sst2,route] [--systems ...] [--optimizers ...]
                                  [--study] [--fresh] [--summary-only]

Two tables per task (see bench/README.md for every setting):

* **same endpoint** — both frameworks call one llama.cpp OpenAI-compatible server (llama-cpp-python, the
  embedded model's GGUF file, temperature 0, at most 64 new tokens) through one counting proxy: lmc with
  `--lm text-completion-openai/gemma-3-270m --api-base PROXY` (its completion prompts), DSPy with the
  configuration its config study (`--study`) found best among its adapters and modes. This row measures
  the frameworks.
* **each at its best** — lmc in-process (`--lm local/gemma-3-270m`, grammar-constrained decoding) against DSPy
  with an equivalent constraint sent to the server (llama.cpp's `grammar` field).

Every run (task x size x system x optimizer) writes `bench/results/compare/<task>-<size>/<system>/<optimizer>.json`
and `.answers.jsonl` (id, input, gold, raw answer, parsed answer, correct) and records the lmc commit and
whether the tree was clean. A finished run is skipped when rerun at the same commit (unless `--fresh`), so a
killed run resumes. Tables use only the runs of one commit with a clean tree; a verdict is printed only for
a row whose two sides were both measured there.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))
RESULTS = BENCH / "results" / "compare"
SERVER_LM = "text-completion-openai/gemma-3-270m"
LOCAL_LM = "local/gemma-3-270m"
OPTIMIZERS = ("zero-shot", "labeled", "bootstrap", "random-search", "mipro", "evolve", "knn", "ensemble")
DSPY_NAMES = {
    "zero-shot": "Predict (no compile)",
    "labeled": "LabeledFewShot",
    "bootstrap": "BootstrapFewShot",
    "random-search": "BootstrapFewShotWithRandomSearch",
    "mipro": "MIPROv2",
    "evolve": "GEPA",
    "knn": "KNNFewShot",
    "ensemble": "Ensemble(majority) of random search's top programs",
}
SYSTEMS = ("lmc-server", "dspy-server", "dspy-grammar", "lmc-local")
# The DSPy configurations of the two tables, chosen by the config study (`--study`, recorded in RESULTS.md);
# the summary says so if a later study prefers another one.
DSPY_SERVER_CONFIG = "chat-stop"
DSPY_GRAMMAR_CONFIG = "chat-grammar"
TABLES = (("same endpoint", "lmc-server", "dspy-server"), ("each at its best", "lmc-local", "dspy-grammar"))
# lmc-only configurations (`--variants`), in-process, tried for issue 15's SST-2 full-split figure: compile calls
# within today's mipro (922), each scoring dev itself so that one is chosen on dev, never on test. Name -> (first
# pass, further `lmc compile` options, program or None for the task's). They write to `<task>-<size>/VARIANTS_DIR/`,
# apart from the tables' runs, so they never make a table's runs stale.
VARIANTS_DIR = "lmc-local-variants"
SST2_GREEDY = BENCH / "programs" / "sst2_greedy.lmp"
VARIANTS: dict[str, tuple[str, list[str], Path | None]] = {
    "greedy-zero-shot": ("zero-shot", [], SST2_GREEDY),
    "calibrate": ("calibrate", [], None),
    "knn4": ("knn", ["--k", "4", "--max-demos", "4", "--max-labeled", "4"], None),
    "knn8": ("knn", ["--k", "8", "--max-demos", "8", "--max-labeled", "8"], None),
    "knn6-calibrate": ("knn", ["--k", "6", "--max-demos", "6", "--max-labeled", "6", "--then", "calibrate"], None),
    "random-search8-922": ("random-search", ["--max-demos", "8", "--max-labeled", "8", "--candidates", "2", "--max-calls", "922"], None),
    "random-search16-922": ("random-search", ["--max-demos", "16", "--max-labeled", "16", "--candidates", "2", "--max-calls", "922"], None),
    # mipro keeps the calls of one full dev evaluation since feb9830; before, a cap spent by its trials left none scored.
    "mipro16-922": ("mipro", ["--max-demos", "16", "--max-labeled", "16", "--max-calls", "922"], None),
    "ensemble8-922": (
        "ensemble",
        ["--max-demos", "8", "--max-labeled", "8", "--candidates", "2", "--ensemble-size", "3", "--max-calls", "922"],
        None,
    ),
    "ensemble16-922": (
        "ensemble",
        ["--max-demos", "16", "--max-labeled", "16", "--candidates", "2", "--ensemble-size", "3", "--max-calls", "922"],
        None,
    ),
    "ensemble32-922": (
        "ensemble",
        ["--max-demos", "32", "--max-labeled", "32", "--candidates", "2", "--ensemble-size", "3", "--max-calls", "922"],
        None,
    ),
}
STUDY_OPTIMIZERS = ("zero-shot", "labeled")
# Outputs of the benchmarks themselves never make the tree "dirty".
OUTPUT_PATHS = ("bench/results", "bench/RESULTS.md")


@dataclass(frozen=True)
class Task:
    name: str
    title: str
    program: Path
    signature: str
    input: str
    output: str
    labels: tuple[str, ...]
    instructions: str
    output_desc: str | None
    demos: int  # max bootstrapped demos and max labeled demos, both systems
    source: str

    def spec(self) -> dict:
        return {
            "name": self.name,
            "signature": self.signature,
            "input": self.input,
            "output": self.output,
            "labels": list(self.labels),
            "instructions": self.instructions,
            "output_desc": self.output_desc,
        }

    def check_program(self) -> None:
        """The DSPy signature is written from the .lmp; refuse to run if the two have drifted apart."""
        text = self.program.read_text()
        missing = [
            s
            for s in (
                self.instructions,
                f"signature {self.signature}",
                f"{self.input}: str",
                f"-> {self.output}:",
                *(f'"{label}"' for label in self.labels),
                *([f'"{self.output_desc}"'] if self.output_desc else []),
            )
            if s not in text
        ]
        if missing:
            raise SystemExit(f"{self.program}: no longer matches bench_compare's task '{self.name}' (missing {missing}); update TASKS")


ROUTE_LABELS = ("card arrival", "lost or stolen card", "exchange rate", "top up failed", "transfer timing", "terminate account")
ROUTE12_LABELS = (
    "card arrival",
    "card delivery estimate",
    "lost or stolen card",
    "compromised card",
    "exchange rate",
    "exchange charge",
    "top up failed",
    "top up reverted",
    "transfer timing",
    "pending transfer",
    "terminate account",
    "pending top up",
)
TASKS = {
    "sst2": Task(
        "sst2",
        "SST-2 sentiment",
        BENCH / "programs" / "sst2.lmp",
        "Classify",
        "review",
        "sentiment",
        ("positive", "negative"),
        "Classify the sentiment of the review.",
        None,
        4,
        "../shared/datasets/sst2_dev.jsonl shuffled with random.Random(0): train 100, dev 200, test 572",
    ),
    "route": Task(
        "route",
        "BANKING77 routing (6 intents)",
        ROOT / "programs" / "route.lmp",
        "Route",
        "message",
        "intent",
        ROUTE_LABELS,
        "Route the customer's message to the team that handles its intent.",
        "what the customer needs",
        12,
        "datasets/route_{train,dev,test}.jsonl: train 120, dev 30, test 60",
    ),
    "route12": Task(
        "route12",
        "BANKING77 routing (12 intents in 6 confusable pairs)",
        BENCH / "programs" / "route12.lmp",
        "Route",
        "message",
        "intent",
        ROUTE12_LABELS,
        "Route the customer's message to the team that handles its intent.",
        "what the customer needs",
        12,
        "bench/data/route12_{train,dev,test}.jsonl (bench/make_banking_hard.py): train 120, dev 60, test 120",
    ),
}
# Budgets: `small` checks the harness end to end; `full` is the published comparison.
SIZES = {
    "small": {"dev": 20, "test": 40, "candidates": 2, "trials": 4, "ensemble_size": 3},
    "full": {"dev": None, "test": None, "candidates": 6, "trials": 16, "ensemble_size": 3},
}


def sst2_source() -> Path:
    """$LMC_SST2, else `shared/datasets/sst2_dev.jsonl` beside the repository or one of its parent folders."""
    env = os.environ.get("LMC_SST2")
    if env:
        return Path(env)
    for folder in ROOT.parents:
        path = folder / "shared" / "datasets" / "sst2_dev.jsonl"
        if path.is_file():
            return path
    raise SystemExit("SST-2 data not found: no shared/datasets/sst2_dev.jsonl beside the repository or above it; set LMC_SST2=path")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def task_split(task: Task) -> dict[str, list[dict]]:
    if task.name == "sst2":
        rows = _rows(sst2_source())
        random.Random(0).shuffle(rows)
        return {"train": rows[:100], "dev": rows[100:300], "test": rows[300:]}
    if task.name == "route12":
        return {part: _rows(BENCH / "data" / f"route12_{part}.jsonl") for part in ("train", "dev", "test")}
    return {part: _rows(ROOT / "datasets" / f"route_{part}.jsonl") for part in ("train", "dev", "test")}


def write_split(task: Task, size: str, out: Path) -> tuple[dict[str, Path], dict[str, int]]:
    """The split files of one task and size (dev and test trimmed from the front for `small`)."""
    parts = task_split(task)
    for part in ("dev", "test"):
        n = SIZES[size][part]
        if n is not None:
            parts[part] = parts[part][:n]
    files = {}
    for part, rows in parts.items():
        files[part] = out / f"{part}.jsonl"
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        if not files[part].exists() or files[part].read_text() != text:
            files[part].write_text(text)
    return files, {k: len(v) for k, v in parts.items()}


def settings(task: Task, size: str, n_dev: int) -> dict:
    s = SIZES[size]
    return {
        "max_demos": task.demos,
        "max_labeled": task.demos,
        "candidates": s["candidates"],
        "trials": s["trials"],
        "minibatch": min(25, n_dev),
        "knn_k": task.demos,
        "ensemble_size": s["ensemble_size"],
        # evolve and GEPA: both reflect on 3 train examples a round (GEPA's default), and both stop at one
        # number: lmc's --max-calls (every request: runs, reflections, retries) and GEPA's max_metric_calls
        # (program runs scored by the metric; its reflections and adapter retries come on top). Four dev
        # evaluations' worth: the first, and a few rounds of two minibatches and maybe a dev score each.
        "reflection_minibatch": 3,
        "max_calls": 4 * n_dev,
    }


# ------------------------------------------------------------------ the code version of a run


def _git(*args: str) -> str:
    # Only the trailing newline goes: porcelain status lines start with a meaningful space.
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.rstrip("\n")


def code_version() -> dict:
    """The commit a run measures and whether anything but the benchmarks' own outputs differs from it."""
    dirty = [
        line[3:]
        for line in _git("status", "--porcelain", "--untracked-files=all").splitlines()
        if not any(line[3:].startswith(p) for p in OUTPUT_PATHS)
    ]
    return {"lmc_commit": _git("rev-parse", "--short=12", "HEAD"), "clean": not dirty, "dirty_files": dirty[:20]}


# ------------------------------------------------------------------ one run


@dataclass
class Run:
    task: Task
    size: str
    system: str
    optimizer: str
    files: dict[str, Path]
    counts: dict[str, int]
    settings: dict
    study_config: str | None = None  # set for a config-study run (DSPy only)
    variant: str | None = None  # set for a run of VARIANTS (lmc-local only)
    extra: dict = field(default_factory=dict)

    @property
    def program(self) -> Path:
        return (VARIANTS[self.variant][2] if self.variant else None) or self.task.program

    @property
    def dir(self) -> Path:
        base = RESULTS / f"{self.task.name}-{self.size}"
        if self.study_config:
            return base / "study"
        if self.variant:
            return base / VARIANTS_DIR
        return base / self.system

    @property
    def stem(self) -> str:
        if self.variant:
            return self.variant
        return f"{self.study_config}-{self.optimizer}" if self.study_config else self.optimizer

    @property
    def result(self) -> Path:
        return self.dir / f"{self.stem}.json"

    @property
    def answers(self) -> Path:
        return self.dir / f"{self.stem}.answers.jsonl"

    @property
    def log(self) -> Path:
        return self.dir / f"{self.stem}.log"

    @property
    def label(self) -> str:
        return f"{self.task.name}-{self.size} {self.system} {self.stem}"


def _env() -> dict:
    # lmc's OpenAI-compatible path wants some key; the local server checks none.
    return dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", PYTHONPATH=str(ROOT), OPENAI_API_KEY="none")


def _lmc(args: list[str], log: Path) -> int:
    with log.open("a") as f:
        f.write(f"$ lmc {' '.join(args)}\n")
        f.flush()
        proc = subprocess.run([sys.executable, "-m", "lmc", *args], cwd=ROOT, env=_env(), stdout=f, stderr=subprocess.STDOUT, text=True)
        f.write(f"[exit {proc.returncode}]\n")
    return proc.returncode


def lmc_compile_args(run: Run) -> list[str]:
    """`lmc compile` options of one optimizer, paired with DSPy's (see DSPY_NAMES and dspy_side.compile_program)."""
    s, opt = run.settings, run.optimizer
    args = ["--optimizer", opt, "--seed", "0", "--max-lm-errors", "100%"]
    if run.variant:
        return args + VARIANTS[run.variant][1]
    if opt in ("labeled", "bootstrap", "knn"):
        # DSPy's LabeledFewShot, BootstrapFewShot and KNNFewShot never look at the dev set; scoring it (lmc's
        # default, to refuse a compiled program worse than the one written) would add calls DSPy does not make.
        args.append("--no-score-dev")
    if opt == "labeled":
        args += ["--max-labeled", str(s["max_labeled"])]
    elif opt == "knn":
        args += ["--k", str(s["knn_k"]), "--max-demos", str(s["knn_k"]), "--max-labeled", str(s["knn_k"])]
    elif opt == "evolve":
        # As many rounds as calls: the call budget, not the round count, ends the search (as it ends GEPA's).
        args += ["--max-calls", str(s["max_calls"]), "--rounds", str(s["max_calls"]), "--minibatch", str(s["reflection_minibatch"])]
    else:
        args += ["--max-demos", str(s["max_demos"]), "--max-labeled", str(s["max_labeled"])]
    if opt in ("random-search", "ensemble"):
        args += ["--candidates", str(s["candidates"])]
    if opt == "ensemble":
        args += ["--ensemble-size", str(s["ensemble_size"])]
    if opt == "mipro":
        # DSPy's MIPROv2 has one num_candidates for both instruction proposals and demo sets.
        args += [
            "--candidates",
            str(s["candidates"]),
            "--instructions",
            str(s["candidates"]),
            "--trials",
            str(s["trials"]),
            "--minibatch",
            str(s["minibatch"]),
        ]
    return args


def _stats_calls(stats: dict) -> int:
    return int(stats.get("requests", stats.get("calls", 0) - stats.get("cached_calls", 0)))


def run_lmc(run: Run, endpoint) -> dict:
    """`lmc compile` (not for zero-shot), `lmc eval` on test, then `lmc run --trace` on the same cache for raw texts."""
    from llama_endpoint import take_counts

    server = run.system == "lmc-server"
    lm_args = ["--lm", SERVER_LM, "--api-base", endpoint.url] if server else ["--lm", LOCAL_LM]
    cache = run.dir / f"cache-{run.stem}"
    shutil.rmtree(cache, ignore_errors=True)  # a run cut short must not leave cached calls to the rerun
    work = run.dir / f"{run.stem}.work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out: dict = {}
    target = run.program
    if run.optimizer != "zero-shot":
        artifact = run.dir / f"{run.stem}.lmc.json"
        args = [
            "compile",
            str(run.program),
            "--train",
            str(run.files["train"]),
            "--dev",
            str(run.files["dev"]),
            *lmc_compile_args(run),
            *lm_args,
            "--cache-dir",
            str(cache),
            "-o",
            str(artifact),
        ]
        if server:
            take_counts(endpoint.url)
        start = time.perf_counter()
        code = _lmc(args, run.log)
        out["compile_wall_s"] = round(time.perf_counter() - start, 1)
        stats_path = artifact.with_name(artifact.name.replace(".lmc.json", ".stats.json"))
        if code != 0 or not artifact.exists():
            raise RuntimeError(f"lmc compile failed (exit {code}); see {run.log}")
        stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
        out["compile_lmc_stats"] = {k: v for k, v in stats.items() if not isinstance(v, (dict, list))}
        out["compile_wire"] = take_counts(endpoint.url) if server else None
        out["compile_calls"] = out["compile_wire"]["requests"] if server else _stats_calls(stats)
        command = "lmc " + " ".join(args).replace(f"{ROOT}/", "")
        out["command"] = command.replace(endpoint.url, "PROXY") if server else command
        comp = json.loads(artifact.read_text()).get("compile", {})
        out["dev_scores"] = comp.get("scores")
        out["demos"] = {pid: len(p.get("demos", [])) for pid, p in json.loads(artifact.read_text()).get("predictors", {}).items()}
        if run.optimizer == "bootstrap":
            # Same seed, data and (now warm) cache: lmc promises no LM call and a byte-identical artifact.
            again = work / "warm.lmc.json"
            warm = [a if a != str(artifact) else str(again) for a in args]
            code = _lmc(warm, run.log)
            stats = json.loads(again.with_name("warm.stats.json").read_text()) if code == 0 else {}
            wire = take_counts(endpoint.url)["requests"] if server else None
            out["warm_recompile"] = {
                "exit": code,
                "calls": wire if server else _stats_calls(stats) if stats else None,
                "identical_artifact": code == 0 and again.read_bytes() == artifact.read_bytes(),
            }
        target = artifact
    else:
        out.update(compile_calls=0, compile_wall_s=0.0)
    report = work / "report.json"
    if server:
        take_counts(endpoint.url)
    start = time.perf_counter()
    code = _lmc(
        [
            "eval",
            str(target),
            "--data",
            str(run.files["test"]),
            *lm_args,
            "--cache-dir",
            str(cache),
            "--max-lm-errors",
            "100%",
            "--report",
            str(report),
        ],
        run.log,
    )
    out["eval_wall_s"] = round(time.perf_counter() - start, 1)
    if not report.exists():
        raise RuntimeError(f"lmc eval wrote no report (exit {code}); see {run.log}")
    rep = json.loads(report.read_text())
    out["eval_wire"] = take_counts(endpoint.url) if server else None
    out["eval_calls"] = out["eval_wire"]["requests"] if server else _stats_calls(rep["summary"])
    out["eval_summary"] = {k: v for k, v in rep["summary"].items() if not isinstance(v, (list, dict))}
    # Raw texts: the eval's answers are all in the cache, so this replays them (calls counted apart).
    trace = work / "trace.jsonl"
    _lmc(
        [
            "run",
            str(target),
            "--data",
            str(run.files["test"]),
            "--out",
            str(work / "out.jsonl"),
            "--trace",
            str(trace),
            *lm_args,
            "--cache-dir",
            str(cache),
        ],
        run.log,
    )
    out["trace_replay_wire"] = take_counts(endpoint.url) if server else None
    raws = {}
    if trace.exists():
        for line in trace.read_text().splitlines():
            t = json.loads(line)
            raws[t.get("id")] = [c.get("raw") for c in t.get("calls", []) if c.get("raw") is not None]
    inputs = {r["id"]: r[run.task.input] for r in _rows(run.files["test"])}
    with run.answers.open("w") as f:
        for e in rep["examples"]:
            texts = raws.get(e["id"], [])
            parsed = (e.get("prediction") or {}).get(run.task.output)
            row = {
                "id": e["id"],
                "input": inputs.get(e["id"]),
                "gold": (e.get("gold") or {}).get(run.task.output),
                "raw": texts[-1] if texts else None,
                "parsed": parsed,
                "correct": bool(e.get("passed")),
            }
            if len(texts) > 1:
                row["raw_all"] = texts
            if e.get("error"):
                row["error"] = e["error"][:800]
                row["error_kind"] = e.get("error_kind")
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    out["lmc_score"] = rep["summary"].get("score")
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    return out


def dspy_config(task: str, system: str, version: dict) -> tuple[str, str]:
    """The DSPy configuration of a table run, and where it came from.

    The winner of the config study measured at this same clean commit (the task's own study, else SST-2's),
    so the study and the tables it configures are one measurement; the defaults only when there is none.
    """
    key = "constrained" if system == "dspy-grammar" else "free"
    if version["clean"]:
        for name in dict.fromkeys((task, STUDY_TASK)):
            rows = [r for r in _load(RESULTS / f"{name}-{STUDY_SIZE}" / "study") if r.get("lmc_commit") == version["lmc_commit"] and r.get("clean")]
            best = best_configs(rows).get(key) if rows else None
            if best:
                return best, f"config study of {name}-{STUDY_SIZE} at this commit"
    default = DSPY_GRAMMAR_CONFIG if system == "dspy-grammar" else DSPY_SERVER_CONFIG
    return default, "default (no complete config study at this commit)"


def _last_exception(log: Path) -> str:
    """The last `SomeError: message` line of a traceback in `log` (the log itself is not kept in git)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    found = [ln.strip() for ln in lines if re.match(r"^[\w.]+(Error|Exception): ", ln.strip())]
    return found[-1][:300] if found else "no exception in the log"


def _why(r: dict) -> str:
    """A failed run's reason, with the exception its log ends on when the log is still on disk."""
    err = str(r["error"])
    m = re.search(r"; see (\S+)$", err)
    if m and "): " not in err:
        log = Path(m.group(1))  # recorded where the run was made; the same file under this checkout's results
        if "results/compare/" in log.as_posix():
            log = RESULTS / log.as_posix().split("results/compare/", 1)[1]
        err = f"{err[: m.start()]}: {_last_exception(log)}"
    return re.sub(r"; see \S+$", "", err)


def run_dspy(run: Run, endpoint) -> dict:
    source = "config study run"
    if run.study_config:
        config = run.study_config
    else:
        config, source = dspy_config(run.task.name, run.system, code_version())
    job = {
        "task": run.task.spec(),
        "config": config,
        "optimizer": run.optimizer,
        "settings": run.settings,
        "files": {k: str(v) for k, v in run.files.items()},
        "api_base": endpoint.url,
        "out": str(run.dir / f"{run.stem}.dspy.json"),
        "answers": str(run.answers),
    }
    job_path = run.dir / f"{run.stem}.job.json"
    job_path.write_text(json.dumps(job, indent=2))
    with run.log.open("a") as f:
        proc = subprocess.run(
            [sys.executable, str(BENCH / "dspy_side.py"), "job", str(job_path)], cwd=ROOT, env=_env(), stdout=f, stderr=subprocess.STDOUT
        )
    out_path = Path(job["out"])
    if proc.returncode != 0 or not out_path.exists():
        raise RuntimeError(f"DSPy {run.optimizer} failed (exit {proc.returncode}): {_last_exception(run.log)}; see {run.log}")
    res = json.loads(out_path.read_text())
    out_path.unlink()
    job_path.unlink()
    res["dspy_config_source"] = source
    res["compile_calls"] = res["compile_wire"]["requests"]
    res["eval_calls"] = res["eval_wire"]["requests"]
    return res


ANSWER_KEYS = ("id", "input", "gold", "raw", "parsed", "correct")


def check_answers(path: Path, test: Path, task: Task) -> None:
    """One answer line per test example, in order, each with ANSWER_KEYS: what a reader checks the figures against."""
    if not path.exists():
        raise RuntimeError(f"{path.name}: no per-example answers were written")
    rows, want = _rows(path), _rows(test)
    if [r.get("id") for r in rows] != [r.get("id") for r in want]:
        raise RuntimeError(f"{path.name}: {len(rows)} answers whose ids do not match the {len(want)} test examples")
    for i, (r, w) in enumerate(zip(rows, want), 1):
        missing = [k for k in ANSWER_KEYS if k not in r]
        if missing or not isinstance(r["correct"], bool) or r["gold"] != w[task.output]:
            raise RuntimeError(
                f"{path.name}:{i}: expected keys {list(ANSWER_KEYS)} with the test set's gold answer and a boolean 'correct' (missing {missing})"
            )


def score_answers(path: Path) -> dict:
    """Accuracy, parse failures, LM errors and the share of the most common answer, from the per-example answers."""
    rows = _rows(path)
    n = len(rows)
    answers = Counter(str(r["parsed"]) if r["parsed"] is not None else "(none)" for r in rows)
    top, top_n = answers.most_common(1)[0] if rows else ("(none)", 0)

    # Uniform for both frameworks: the model replied (raw text kept) but no answer could be read from it.
    # No reply at all (a transport error, an empty completion) counts as an LM error instead.
    unparsed = sum(r["parsed"] is None and bool(r.get("raw") or r.get("raw_all")) for r in rows)
    return {
        "test_n": n,
        "test_acc": round(sum(r["correct"] for r in rows) / n, 4) if n else None,
        "parse_failures": unparsed,
        "lm_errors": sum(r["parsed"] is None for r in rows) - unparsed,
        "top_answer": top,
        "top_answer_share": round(top_n / n, 4) if n else None,
        "answer_counts": dict(answers.most_common()),
    }


def execute(run: Run, endpoint, fresh: bool) -> dict | None:
    version = code_version()
    if run.result.exists() and not fresh:
        old = json.loads(run.result.read_text())
        if old.get("lmc_commit") == version["lmc_commit"] and old.get("clean") == version["clean"] and "error" not in old:
            print(f"[compare] {run.label}: done earlier at this commit", flush=True)
            return old
    run.dir.mkdir(parents=True, exist_ok=True)
    print(f"[compare] {run.label} ...", flush=True)
    start = time.perf_counter()
    base = {
        "task": run.task.name,
        "size": run.size,
        "system": run.system,
        "optimizer": run.optimizer,
        "split": run.counts,
        "settings": run.settings,
        **version,
    }
    if run.study_config:
        base["dspy_config"] = run.study_config
    if run.variant:
        base["variant"] = run.variant
    try:
        res = run_lmc(run, endpoint) if run.system.startswith("lmc") else run_dspy(run, endpoint)
    except RuntimeError as e:
        res = {"error": str(e)}
        print(f"[compare] {run.label}: FAILED: {e}", flush=True)
    if "error" not in res:
        try:
            check_answers(run.answers, run.files["test"], run.task)
        except RuntimeError as e:
            res = {"error": str(e)}
            print(f"[compare] {run.label}: FAILED: {e}", flush=True)
    out = {**base, **res}
    if "error" not in res:
        out.update(score_answers(run.answers))
    if endpoint is not None and run.system != "lmc-local":
        out["endpoint"] = endpoint.server.describe()
    out["run_wall_s"] = round(time.perf_counter() - start, 1)
    out["finished_at"] = dt.datetime.now().isoformat(timespec="seconds")
    out["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    out["versions"] = versions()
    run.result.write_text(json.dumps(out, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    if "error" not in out:
        print(
            f"[compare] {run.label}: acc {out['test_acc']} (n={out['test_n']}, unparsed {out['parse_failures']}, "
            f"top answer {out['top_answer']!r} {out['top_answer_share']}), compile {out['compile_calls']} calls "
            f"{out['compile_wall_s']} s, eval {out['eval_calls']} calls {out['eval_wall_s']} s",
            flush=True,
        )
    return out


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("lmc", "dspy", "litellm", "llama_cpp_python"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


# ------------------------------------------------------------------ the plan


STUDY_SIZE = "small"  # the config study always scores on the small split's dev examples
STUDY_TASK = "sst2"  # whose study configures a task that has none of its own


def plan(tasks: list[str], size: str, systems: tuple[str, ...], optimizers: tuple[str, ...], study: str, variants: tuple[str, ...] = ()) -> list[Run]:
    """The study first (if asked), then the server runs pair by pair (one llama.cpp server), then the in-process runs
    (the VARIANTS asked for last)."""
    studies: list[Run] = []
    runs: list[Run] = []
    local: list[Run] = []
    for name in tasks:
        task = TASKS[name]
        task.check_program()
        if study in ("only", "also"):
            from dspy_side import CONFIGS

            out = RESULTS / f"{name}-{STUDY_SIZE}"
            out.mkdir(parents=True, exist_ok=True)
            files, counts = write_split(task, STUDY_SIZE, out)
            # Scored on dev, never test, so choosing a configuration cannot fit the test set.
            study_files = {**files, "test": files["dev"]}
            s = settings(task, STUDY_SIZE, counts["dev"])
            for config in CONFIGS:
                for opt in STUDY_OPTIMIZERS:
                    studies.append(Run(task, STUDY_SIZE, "dspy-server", opt, study_files, counts, s, study_config=config))
        if study == "only":
            continue
        out = RESULTS / f"{name}-{size}"
        out.mkdir(parents=True, exist_ok=True)
        files, counts = write_split(task, size, out)
        s = settings(task, size, counts["dev"])
        for opt in optimizers:
            for system in systems:
                r = Run(task, size, system, opt, files, counts, s)
                (local if system == "lmc-local" else runs).append(r)
        local += [Run(task, size, "lmc-local", VARIANTS[v][0], files, counts, s, variant=v) for v in variants]
    return studies + runs + local


def run(
    size: str = "small",
    tasks: str = "sst2,route",
    systems: str = ",".join(SYSTEMS),
    optimizers: str = ",".join(OPTIMIZERS),
    study: str = "no",
    fresh: bool = False,
    summary_only: bool = False,
    wire_log: bool = False,
    variants: str = "",
) -> dict:
    """Run (or resume) the planned runs, then summarize every run on disk for these tasks and this size.

    `study`: "no", "only" (DSPy's configuration study alone) or "also" (the study, then the tables' runs).
    """
    from llama_endpoint import Endpoint

    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    unknown = [t for t in task_list if t not in TASKS]
    if unknown:
        raise SystemExit(f"unknown task(s) {unknown}; expected some of {list(TASKS)}")
    if size not in SIZES or study not in ("no", "only", "also"):
        raise SystemExit(f"size must be one of {list(SIZES)} and study one of no, only, also")
    sys_list = tuple(s.strip() for s in systems.split(",") if s.strip())
    opt_list = tuple(o.strip() for o in optimizers.split(",") if o.strip())
    var_list = tuple(v.strip() for v in variants.split(",") if v.strip())
    bad = [s for s in sys_list if s not in SYSTEMS] + [o for o in opt_list if o not in OPTIMIZERS] + [v for v in var_list if v not in VARIANTS]
    if bad:
        raise SystemExit(
            f"unknown system(s)/optimizer(s)/variant(s) {bad}; systems: {SYSTEMS}; optimizers: {OPTIMIZERS}; variants: {tuple(VARIANTS)}"
        )
    runs = [] if summary_only else plan(task_list, size, sys_list, opt_list, study, var_list)
    endpoint = None
    try:
        for r in runs:
            if r.system == "lmc-local":
                if endpoint is not None:  # never two llama.cpp instances on two cores at once
                    endpoint.__exit__(None, None, None)
                    endpoint = None
            elif endpoint is None:
                endpoint = Endpoint(RESULTS, wire_log=wire_log).__enter__()
            execute(r, endpoint, fresh)
    finally:
        if endpoint is not None:
            endpoint.__exit__(None, None, None)
    return summarize(task_list, size)


# ------------------------------------------------------------------ tables


def _load(folder: Path) -> list[dict]:
    out = []
    for path in sorted(folder.glob("*.json")):
        if path.name.endswith((".lmc.json", ".stats.json", ".job.json", ".dspy.json")):
            continue
        data = json.loads(path.read_text())
        data["_path"] = str(path.relative_to(RESULTS))
        answers = path.with_name(path.name.replace(".json", ".answers.jsonl"))
        if "error" not in data and answers.exists():
            data.update(score_answers(answers))  # the per-example answers are what the figures are read from
        out.append(data)
    return out


def load_runs(task: str, size: str) -> tuple[list[dict], list[dict]]:
    """The table runs of one task and size, and the config-study runs (always on the small split)."""
    base = RESULTS / f"{task}-{size}"
    main = [r for system in SYSTEMS for r in _load(base / system)]
    return main, _load(RESULTS / f"{task}-{STUDY_SIZE}" / "study")


def measured_commit(runs: list[dict]) -> str | None:
    """The commit of the newest clean, successful run: the one commit a table may be built from."""
    ok = [r for r in runs if r.get("clean") and "error" not in r]
    if not ok:
        return None
    return max(ok, key=lambda r: r.get("finished_at", ""))["lmc_commit"]


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _cell(r: dict | None, key: str, fmt=str) -> str:
    if r is None:
        return "not run"
    if "error" in r:
        return "FAILED"
    v = r.get(key)
    return "–" if v is None else fmt(v)


def _failures(r: dict | None) -> str:
    """Unparsed answers, then (in brackets) examples that got no reply at all."""
    if r is None or "error" in r:
        return _cell(r, "parse_failures")
    return f"{r['parse_failures']} ({r.get('lm_errors', 0)})"


def table(task: Task, size: str, title: str, lmc_sys: str, dspy_sys: str, runs: dict) -> list[str]:
    # Failed runs carry no configuration; where it came from (this commit's study, or the default) is said once.
    used = {(r["dspy_config"], r.get("dspy_config_source", "")) for (system, _), r in runs.items() if system == dspy_sys and r.get("dspy_config")}
    about = "; ".join(f"`{c}`, {src}" if src else f"`{c}`" for c, src in sorted(used))
    lines = [
        f"**{title}**: `{lmc_sys}` vs `{dspy_sys}`" + (f" (DSPy configuration {about})" if about else ""),
        "",
        "| optimizer (lmc / DSPy) | test acc lmc | test acc DSPy | compile calls lmc / DSPy "
        "| compile s lmc / DSPy | test calls lmc / DSPy | unparsed (no reply) lmc / DSPy | top answer share lmc / DSPy "
        "| verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for opt in OPTIMIZERS:
        a, b = runs.get((lmc_sys, opt)), runs.get((dspy_sys, opt))
        if a is None and b is None:
            continue
        verdict = ""
        if a is not None and b is not None and "error" not in a and "error" not in b:
            parts = [f"lmc >= DSPy: {'yes' if a['test_acc'] >= b['test_acc'] else 'no'}"]
            if opt != "zero-shot":
                parts.append(f"fewer calls: {'yes' if a['compile_calls'] <= b['compile_calls'] else 'no'}")
            verdict = "; ".join(parts)
        else:
            verdict = "no verdict (one side not measured at this commit)"
        share = lambda r: _cell(r, "top_answer_share", _pct) + ("" if r is None or "error" in r else f" ({r['top_answer']})")  # noqa: E731
        lines.append(
            f"| {opt} / {DSPY_NAMES[opt]} | {_cell(a, 'test_acc', _pct)} | {_cell(b, 'test_acc', _pct)} "
            f"| {_cell(a, 'compile_calls')} / {_cell(b, 'compile_calls')} "
            f"| {_cell(a, 'compile_wall_s')} / {_cell(b, 'compile_wall_s')} "
            f"| {_cell(a, 'eval_calls')} / {_cell(b, 'eval_calls')} "
            f"| {_failures(a)} / {_failures(b)} "
            f"| {share(a)} / {share(b)} | {verdict} |"
        )
    return lines


def study_table(study: list[dict], commit: str | None, used: dict | None = None) -> list[str]:
    from dspy_side import CONFIGS, CONSTRAINED

    rows = [r for r in study if r.get("lmc_commit") == commit and r.get("clean")] if commit else []
    if not rows:
        return []
    by = {(r["dspy_config"], r["optimizer"]): r for r in rows}
    lines = [
        f"**DSPy configuration study** at lmc commit `{commit}` (scored on the dev split, never test; per-example answers in "
        "`study/<config>-<optimizer>.answers.jsonl`)",
        "",
        "| configuration | zero-shot dev acc (unparsed, no reply, top answer share) "
        "| LabeledFewShot dev acc (unparsed, no reply, top answer share) | LM calls | s per call |",
        "|---|---|---|---|---|",
    ]
    for config, cfg in CONFIGS.items():
        cells, calls, secs = [], 0, 0.0
        for opt in STUDY_OPTIMIZERS:
            r = by.get((config, opt))
            if r is None or "error" in r:
                cells.append("not run" if r is None else "FAILED")
                continue
            cells.append(f"{_pct(r['test_acc'])} ({r['parse_failures']}, {r.get('lm_errors', 0)}, {_pct(r['top_answer_share'])})")
            calls += r["eval_calls"]
            secs += r["eval_wall_s"]
        mark = " (constrained)" if config in CONSTRAINED else ""
        per = f"{secs / calls:.2f}" if calls else "–"
        lines.append(f"| `{config}`{mark}: {cfg['about']} | {cells[0]} | {cells[1]} | {calls} | {per} |")
    best = best_configs(rows)
    lines += [
        "",
        f"Best by mean dev accuracy (ties: fewer unparsed, then fewer calls): unconstrained "
        f"`{best.get('free')}`, constrained `{best.get('constrained')}`."
        + "".join(
            f" The table runs of `{system}` used {', '.join(f'`{c}`' for c in configs)}." for system, configs in (used or {}).items() if configs
        ),
    ]
    return lines


def best_configs(rows: list[dict]) -> dict:
    from dspy_side import CONFIGS, CONSTRAINED

    stats: dict[str, list] = {}
    for r in rows:
        if "error" in r:
            continue
        s = stats.setdefault(r["dspy_config"], [0.0, 0, 0, 0])
        s[0] += r["test_acc"]
        s[1] += r["parse_failures"]
        s[2] += r["eval_calls"]
        s[3] += 1
    full = {c: s for c, s in stats.items() if s[3] == len(STUDY_OPTIMIZERS)}

    def pick(names) -> str | None:
        cands = [c for c in names if c in full]
        return min(cands, key=lambda c: (-full[c][0], full[c][1], full[c][2])) if cands else None

    return {"free": pick([c for c in CONFIGS if c not in CONSTRAINED]), "constrained": pick(CONSTRAINED)}


def summarize(tasks: list[str], size: str) -> dict:
    md: list[str] = []
    out: dict = {"size": size, "tasks": {}}
    for name in tasks:
        task = TASKS[name]
        main, study = load_runs(name, size)
        commit = measured_commit(main)
        current = [r for r in main if r.get("lmc_commit") == commit and r.get("clean")] if commit else []
        stale = [r for r in main if r not in current]
        by = {(r["system"], r["optimizer"]): r for r in current}
        split = (current or main or [{}])[0].get("split", {})
        md += [f"### {task.title} — {size} split (train {split.get('train', '?')} / dev {split.get('dev', '?')} / test {split.get('test', '?')})", ""]
        if commit:
            md += [
                f"lmc commit `{commit}`, clean tree; {len(current)} runs. Data: {task.source}"
                + ("" if size == "full" else f" (this `{size}` split keeps the first {split.get('dev')} dev and {split.get('test')} test examples)")
                + ".",
                "",
            ]
            for title, a, b in TABLES:
                md += table(task, size, title, a, b, by) + [""]
        else:
            md += ["No clean run yet: no table.", ""]
        scommit = measured_commit(study)
        used = {
            system: sorted({r["dspy_config"] for r in current if r["system"] == system and r.get("dspy_config")})
            for system in ("dspy-server", "dspy-grammar")
        }
        md += study_table(study, scommit, used) + ([""] if scommit else [])
        failed = [r for r in current if "error" in r]
        if failed:
            md += ["Failed runs at this commit: " + "; ".join(f"`{r['system']}/{r['optimizer']}`: {_why(r)}" for r in failed), ""]
        if stale:
            md += [
                "Stale runs (another commit or uncommitted edits; not used above): "
                + ", ".join(f"`{r['system']}/{r['optimizer']}` ({r.get('lmc_commit')}{'' if r.get('clean') else '+edits'})" for r in stale),
                "",
            ]
        out["tasks"][name] = {
            "commit": commit,
            "runs": {
                f"{s}/{o}": {
                    k: v
                    for k, v in r.items()
                    if k
                    in (
                        "test_acc",
                        "test_n",
                        "compile_calls",
                        "eval_calls",
                        "compile_wall_s",
                        "eval_wall_s",
                        "parse_failures",
                        "top_answer",
                        "top_answer_share",
                        "error",
                    )
                }
                for (s, o), r in by.items()
            },
            "stale": [r["_path"] for r in stale],
            "study_best": best_configs([r for r in study if r.get("lmc_commit") == scommit and r.get("clean")]) if scommit else None,
        }
    out["markdown"] = "\n".join(md)
    return out


def main() -> None:
    # A plain SIGTERM would skip `finally` and leave llama.cpp's server running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=tuple(SIZES), default="small")
    ap.add_argument("--tasks", default="sst2,route", help=f"comma-separated, of {', '.join(TASKS)}")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset")
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS), help="comma-separated subset")
    ap.add_argument(
        "--study",
        choices=("no", "only", "also"),
        default="no",
        help="DSPy's configuration study (small split's dev): not, alone, or before the tables' runs",
    )
    ap.add_argument("--fresh", action="store_true", help="redo runs already finished at this commit")
    ap.add_argument("--summary-only", action="store_true", help="start nothing; print the tables from disk")
    ap.add_argument("--wire-log", action="store_true", help="append every request and reply to results/compare/wire.jsonl")
    ap.add_argument(
        "--variants",
        default="",
        help=f"comma-separated lmc-only configurations, run after the rest (give --optimizers '' for them alone): {', '.join(VARIANTS)}",
    )
    a = ap.parse_args()
    res = run(a.size, a.tasks, a.systems, a.optimizers, a.study, a.fresh, a.summary_only, a.wire_log, a.variants)
    print(res["markdown"])


if __name__ == "__main__":
    main()
