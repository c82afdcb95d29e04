"""Benchmark: parse and check time of a 5 MB and a 50 MB program; linear scaling means a ratio near 10.

Before issue 11 the parser copied the growing list of declarations on every reduction of
`decl*`, and the checker ran with the cycle collector rescanning the fresh AST: a 50 MB
program took over 300 s to check.  Each measurement runs in its own child process, so
its peak RSS is its own and one size's garbage cannot slow the other down.

    python bench/bench_parse_scaling.py [--sizes 5,50]     # JSON on stdout
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def generate(path: Path, size_bytes: int) -> int:
    """A valid program of about `size_bytes`: signatures (one declaration each), then a program using the last."""
    out = []
    size = i = 0
    while size < size_bytes:
        block = (
            f'signature S{i}(question_{i}: str, context: list[str] -> answer_{i}: str "a short answer")\n'
            f'  "Answer question {i} from the context, in one or two words, without preamble."\n'
        )
        out.append(block)
        size += len(block)
        i += 1
    out.append("signature Q(q: str -> a: str)\nmodule m = Predict(Q)\nprogram main(q: str) -> (a: str) {\n  return m(q=q)\n}\n")
    path.write_text("".join(out), encoding="utf-8")
    return i + 2


_CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from lmc.parser import parse, read_source
from lmc.check import check
text = read_source({path!r})
t0 = time.process_time(); w0 = time.perf_counter()
tree = parse(text, {path!r})
parse_cpu, parse_wall = time.process_time() - t0, time.perf_counter() - w0
t0 = time.process_time(); w0 = time.perf_counter()
check(tree, text)
check_cpu, check_wall = time.process_time() - t0, time.perf_counter() - w0
print(json.dumps({{"parse_cpu_s": round(parse_cpu, 3), "parse_wall_s": round(parse_wall, 3),
                  "check_cpu_s": round(check_cpu, 3), "check_wall_s": round(check_wall, 3),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}}))
"""


def measure(path: Path) -> dict:
    # The file is larger than the default 10 MB program limit on purpose; the limit is raised for the child only.
    env = dict(os.environ, LMC_MAX_PROGRAM_BYTES=str(path.stat().st_size + 1))
    code = _CHILD.format(root=str(ROOT), path=str(path))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(sizes_mb: tuple = (5, 50)) -> dict:
    out: dict = {"sizes_mb": list(sizes_mb), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for mb in sizes_mb:
            path = Path(tmp) / f"p{mb}.lmp"
            decls = generate(path, int(mb * 1_000_000))
            r = measure(path)
            r.update(bytes=path.stat().st_size, declarations=decls)
            out["runs"][str(mb)] = r
            path.unlink()
    small, large = (out["runs"][str(m)] for m in (min(sizes_mb), max(sizes_mb)))
    factor = large["bytes"] / small["bytes"]
    out["size_factor"] = round(factor, 2)
    out["parse_ratio"] = round(large["parse_cpu_s"] / small["parse_cpu_s"], 2)
    out["check_ratio"] = round(large["check_cpu_s"] / small["check_cpu_s"], 2)
    # Linear within noise: the ratio stays under 1.3x the size factor (quadratic would be ~the factor squared).
    out["linear"] = out["parse_ratio"] <= 1.3 * factor and out["check_ratio"] <= 1.3 * factor
    out["load_average_1min"] = os.getloadavg()[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="5,50", help="program sizes in MB, comma-separated (first and last compared)")
    a = ap.parse_args()
    print(json.dumps(run(tuple(float(s) for s in a.sizes.split(","))), indent=1))


if __name__ == "__main__":
    main()
