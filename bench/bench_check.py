"""Benchmark: `lmc check` on a generated 5,000-line program, and proof that the CLI start-up never imports litellm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET_LINES = 5000


def generate(lines: int = TARGET_LINES) -> str:
    """A valid program of about `lines` lines: many signatures and modules, and programs calling them."""
    out = ["# generated for bench_check.py", "", 'retriever wiki = bm25("datasets/corpus.jsonl", text="text", k=3)', ""]
    i = 0
    while len(out) < lines:
        out += [
            f"signature Step{i} {{",
            f'  "Do step {i} of the pipeline."',
            '  context: list[str]  "passages"',
            "  question: str",
            '  -> answer: str      "short"',
            "  score: float",
            "}",
            "",
            f"module step{i} = ChainOfThought(Step{i}, temperature=0.5)",
            "",
            f"program p{i}(question: str) -> (answer: str, score: float) {{",
            "  context = []",
            "  for hop in range(2) {",
            "    context = unique(context + wiki(question))",
            "  }",
            "  n = 0",
            "  while n < 3 max 3 {",
            "    n += 1",
            "  }",
            f"  r = step{i}(context=context, question=question)",
            '  suggest len(r.answer) < 100, f"Keep it short, not {len(r.answer)} characters."',
            "  if r.score > 0.5 {",
            "    return r",
            "  } elif r.score > 0.2 {",
            '    return {"answer": lower(r.answer), "score": r.score}',
            "  } else {",
            '    return {"answer": "unknown", "score": 0.0}',
            "  }",
            "}",
            "",
        ]
        i += 1
    out.append("metric em = exact_match(answer)")
    return "\n".join(out) + "\n"


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _time(cmd: list[str], runs: int = 3) -> tuple[float, subprocess.CompletedProcess]:
    best = float("inf")
    proc = None
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT)
        best = min(best, time.perf_counter() - start)
    return best, proc


def _import_profile(code: str) -> dict:
    """Module -> cumulative import microseconds, from `python -X importtime`."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, env=_env(), cwd=ROOT)
    modules = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        head, cum, name = line[len("import time:"):].split("|")
        modules[name.strip()] = int(cum)
    return {"modules": modules}


def run() -> dict:
    source = generate()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.lmp"
        path.write_text(source)
        # Warm the grammar cache once so the timed runs measure the steady state a user sees.
        subprocess.run([sys.executable, "-m", "lmc", "check", str(path)], capture_output=True, env=_env(), cwd=ROOT)
        wall, proc = _time([sys.executable, "-m", "lmc", "check", str(path)])
        ok = "ok: 1 file checked" in proc.stderr
        help_wall, _ = _time([sys.executable, "-m", "lmc", "--help"])
        check_imports = _import_profile(
            f"import sys; sys.argv=['lmc','check',{str(path)!r}]\n"
            "from lmc.cli import main\nmain(['check', sys.argv[2]])")
    cli_imports = _import_profile("import lmc.cli")
    in_process = _in_process(source)
    return {
        "lines": source.count("\n"),
        "check_wall_s_best_of_3": round(wall, 3),
        "check_ok": ok,
        "target_s": 0.5,
        "meets_target": wall < 0.5 and ok,
        "help_wall_s_best_of_3": round(help_wall, 3),
        "import_lmc_cli_ms": round(cli_imports["modules"].get("lmc.cli", 0) / 1000, 1),
        "litellm_imported_by_import_lmc_cli": any(m.startswith("litellm") for m in cli_imports["modules"]),
        "litellm_imported_by_check": any(m.startswith("litellm") for m in check_imports["modules"]),
        "in_process_s": in_process,
    }


def _in_process(source: str) -> dict:
    from lmc.check import check
    from lmc.parser import _lark, parse

    start = time.perf_counter()
    _lark()
    load = time.perf_counter() - start
    start = time.perf_counter()
    f = parse(source, "big.lmp")
    parse_s = time.perf_counter() - start
    start = time.perf_counter()
    check(f, source)
    check_s = time.perf_counter() - start
    return {"grammar_load": round(load, 3), "parse": round(parse_s, 3), "check": round(check_s, 3)}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
