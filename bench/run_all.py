"""Run every benchmark under bench/, print its figures against their targets, and rewrite bench/RESULTS.md.

    python bench/run_all.py [--quick] [--only NAME[,NAME...]] [--summary-only]

Each benchmark runs in a child process (one crash or one leaked thread cannot spoil the others) and hands
back its `run()` dict as JSON. RESULTS.md keeps one delimited section per benchmark, so `--only` rewrites
just the sections it re-ran and leaves the others (and the hand-filled `make demo` section) as they were.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "RESULTS.md"


@dataclass(frozen=True)
class Figure:
    label: str
    value: object
    target: str = ""
    ok: bool | None = None  # None: reported, no target


@dataclass(frozen=True)
class Bench:
    name: str
    module: str
    title: str
    kwargs: dict
    quick_kwargs: dict
    figures: Callable[[dict], list[Figure]]


def _g(d: dict, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _check_figs(r: dict) -> list[Figure]:
    return [
        Figure(f"`lmc check` on a {r['lines']}-line program (best of 3)", f"{r['check_wall_s_best_of_3']} s", "< 0.5 s", r["meets_target"]),
        Figure("`lmc --help` wall time", f"{r['help_wall_s_best_of_3']} s"),
        Figure("`import lmc.cli`", f"{r['import_lmc_cli_ms']} ms"),
        Figure(
            "litellm imported by `import lmc.cli` / by `lmc check`",
            f"{r['litellm_imported_by_import_lmc_cli']} / {r['litellm_imported_by_check']}",
            "False / False",
            not r["litellm_imported_by_import_lmc_cli"] and not r["litellm_imported_by_check"],
        ),
    ]


def _lsp_figs(r: dict) -> list[Figure]:
    e = r["inline_edit_ms"]
    return [
        Figure(
            f"`lmc lsp`: an in-line edit of a {r['lines']}-line file to its diagnostics, median of {r['edits']}",
            f"{e['median']} ms",
            f"< {r['target_ms']:.0f} ms",
            r["meets_target"],
        ),
        Figure("same, p90 / max", f"{e['p90']} ms / {e['max']} ms"),
        Figure(
            "an edit adding or removing a line (every declaration below it moves), median / max",
            f"{r['line_added_or_removed_ms']['median']} ms / {r['line_added_or_removed_ms']['max']} ms",
        ),
        Figure("opening the file to its first diagnostics", f"{r['open_ms']} ms"),
        Figure("every broken edit reported, every mended one cleared", r["diagnostics_correct"], "True", r["diagnostics_correct"]),
        Figure("load average before the run", r["load_average_before"]),
    ]


def _parse_scaling_figs(r: dict) -> list[Figure]:
    runs = r["runs"]
    small, large = (runs[k] for k in sorted(runs, key=float)[:: len(runs) - 1])
    return [
        Figure(
            f"parse, {small['bytes'] / 1e6:.0f} MB / {large['bytes'] / 1e6:.0f} MB program (CPU)",
            f"{small['parse_cpu_s']} s / {large['parse_cpu_s']} s",
        ),
        Figure(
            f"parse time ratio for {r['size_factor']}x the size",
            r["parse_ratio"],
            f"~{r['size_factor']:.0f} (linear)",
            r["parse_ratio"] <= 1.3 * r["size_factor"],
        ),
        Figure("check (names and types) after parse, small / large (CPU)", f"{small['check_cpu_s']} s / {large['check_cpu_s']} s"),
        Figure("check time ratio", r["check_ratio"], f"~{r['size_factor']:.0f} (linear)", r["check_ratio"] <= 1.3 * r["size_factor"]),
        Figure("peak RSS, small / large", f"{small['peak_rss_mb']} MB / {large['peak_rss_mb']} MB"),
    ]


def _gate_figs(r: dict) -> list[Figure]:
    return [
        Figure(
            f"gate false-alarm rate (unchanged program, {r['trials']} re-runs of {r['n_examples']} examples)",
            _pct(r["false_alarm_rate"]),
            "<= 5%",
            r["false_alarm_rate"] <= 0.05,
        ),
        Figure("gate detection rate (true 5-point drop, mean of concentrated/diffuse)", _pct(r["detection_rate"])),
    ]


def _lm_overhead_figs(r: dict) -> list[Figure]:
    out = [
        Figure(
            "LM client per-call overhead over raw HTTP, direct transport (the default for OpenAI-compatible servers)",
            f"{r['direct_overhead_ms']} ms",
            "<= 0.5 ms",
            r["direct_overhead_ms"] <= 0.5,
        ),
        Figure("LM client per-call overhead over raw HTTP, litellm transport", f"{r['litellm_overhead_ms']} ms"),
        Figure("cache hit cost", f"{r['cache_hit_ms']} ms"),
        Figure(
            f"throughput, {r['throughput_calls']} calls at 100 ms, 64 in flight, direct transport (of ideal)",
            _pct(r["direct_vs_ideal"]),
            ">= 90%",
            r["direct_vs_ideal"] >= 0.9,
        ),
        Figure("same, litellm transport (of ideal)", _pct(r["litellm_vs_ideal"])),
    ]
    return out


def _runtime_figs(r: dict) -> list[Figure]:
    return [
        Figure(
            "`lmc run` batch path per-call overhead over raw HTTP (-j 1)",
            f"{r['overhead_ms_per_call']} ms",
            "<= 1.0 ms",
            r["overhead_ms_per_call"] <= 1.0,
        ),
        Figure(
            f"`lmc run` -j 64, {r['calls']} calls at 100 ms latency (of ideal)",
            _pct(r["j64_fraction_of_ideal"]),
            ">= 90%",
            r["j64_fraction_of_ideal"] >= 0.9,
        ),
    ]


def _dspy_figs(r: dict) -> list[Figure]:
    cold = r["cold_start"]
    threads = ", ".join(f"{t}: {r[f'dspy_t{t}_s']} s = {_pct(r[f'dspy_t{t}_fraction_of_ideal'])}" for t in (16, 32, 64, 128) if f"dspy_t{t}_s" in r)
    return [
        Figure("raw HTTP round trip (bare aiohttp)", f"{r['raw_http_ms']} ms"),
        Figure("DSPy 3.4.1 per-call overhead (Predict, zero latency)", f"{r['dspy_overhead_ms']} ms"),
        Figure(
            "DSPy engine; litellm loaded; server requests per DSPy call",
            f"{r.get('dspy_engine')}; {r.get('dspy_loaded_litellm')}; {r.get('dspy_requests_per_call')}",
        ),
        Figure(
            "lmc per-call overhead, default path (lmc's HTTP transport); ratio to DSPy's",
            f"{r['lmc_overhead_ms']} ms; {r['overhead_ratio_lmc_over_dspy']}",
            "<= 0.5 ms; <= 0.5",
            r["meets_overhead_target"],
        ),
        Figure(
            "lmc per-call overhead, --transport litellm; ratio to DSPy's",
            f"{r['lmc_litellm_overhead_ms']} ms; {r['overhead_ratio_lmc_litellm_over_dspy']}",
        ),
        Figure(f"DSPy Evaluate, {r['calls']} calls at 100 ms, by threads (of ideal)", threads),
        Figure(
            f"lmc -j 64, default path (of ideal {r['ideal_s_at_64']} s); vs DSPy at its best thread count "
            f"({r['dspy_best_threads']}: {r['dspy_best_s']} s)",
            f"{r['lmc_j64_s']} s = {_pct(r['lmc_j64_fraction_of_ideal'])}; {r['speedup_lmc_j64_vs_dspy_best']}x",
            ">= 90%; > 1x",
            r["meets_throughput_target"],
        ),
        Figure(
            "beyond 64 in flight: lmc -j 128 vs DSPy 128 threads (of ideal 0.4 s)",
            f"{r['lmc_j128_s']} s = {_pct(r['lmc_j128_fraction_of_ideal'])} vs {r['dspy_t128_s']} s = {_pct(r['dspy_t128_fraction_of_ideal'])}",
        ),
        Figure(
            "lmc -j 64, --transport litellm (of ideal); vs DSPy's best",
            f"{r['lmc_litellm_j64_s']} s = {_pct(r['lmc_litellm_j64_fraction_of_ideal'])}; {r['speedup_lmc_litellm_j64_vs_dspy_best']}x",
        ),
        Figure(
            f"one call from a cold process, best of {cold['rounds']}: `lmc run -i` (default path) vs DSPy's script (import dspy, one Predict)",
            f"{cold['lmc_s']} s vs {cold['dspy_s']} s ({r['cold_start_ratio_lmc_over_dspy']}x)",
            "lmc <= DSPy",
            r["meets_cold_start_target"],
        ),
        Figure("the same `lmc run -i` with --transport litellm", f"{cold['lmc_litellm_s']} s"),
        Figure(
            "warm-cache rerun of `lmc run` (HTTP requests: cold, warm)",
            f"{r['warm_cache']['cold_requests']}, {r['warm_cache']['warm_requests']}",
            "warm = 0",
            r["meets_warm_cache_target"],
        ),
        Figure("machine load (1-min average, start / end)", f"{r['load_avg_1m_at_start']} / {r['load_avg_1m_at_end']}"),
    ]


def _local_figs(r: dict) -> list[Figure]:
    if "skipped" in r:
        return [Figure("embedded model", r["skipped"])]
    raw, ser, con, two = r["raw_serial"], r["lmc_serial"], r["lmc_concurrent"], r["raw_two_instances"]
    return [
        Figure(f"prompt (prefill) tokens/s, raw llama.cpp, {raw['prompt_tokens']}-token demo prompt", raw["prompt_tok_s"]),
        Figure("completion (decode) tokens/s, raw llama.cpp, greedy", raw["completion_tok_s"]),
        Figure(f"calls/s, raw llama.cpp serial ({raw['calls']} calls)", raw["calls_per_s"]),
        Figure(f"calls/s, lmc client serial (mean {ser['mean_prompt_tokens']} prompt tokens)", ser["calls_per_s"]),
        Figure("calls/s, lmc client with all calls in flight (queued on one worker)", con["calls_per_s"]),
        Figure("calls/s, raw llama.cpp, two 1-thread instances in parallel", two["calls_per_s"]),
        Figure("lmc serial / raw serial", r["lmc_serial_vs_raw"]),
        Figure("two instances / one 2-thread instance", r["two_instances_vs_raw_serial"]),
        Figure("machine load (1-min average, start / end)", f"{r['load_avg_1m_at_start']} / {r['load_avg_1m_at_end']}"),
    ]


def _label_scoring_figs(r: dict) -> list[Figure]:
    if "skipped" in r:
        return [Figure("embedded model", r["skipped"])]
    out = []
    for key in ("sst2_zero_shot", "sst2_4_demos", "banking_10_zero_shot"):
        t = r[key]
        out += [
            Figure(
                f"{t['task']}: CPU ms per call, greedy / scored / scored without KV reuse ({t['calls']} calls, {t['labels']} labels)",
                f"{t['greedy_cpu_ms_per_call']} / {t['scored_cpu_ms_per_call']} / {t['scored_no_reuse_cpu_ms_per_call']}",
            ),
            Figure(f"{t['task']}: wall ms per call, greedy / scored", f"{t['greedy_ms_per_call']} / {t['scored_ms_per_call']}"),
            Figure(f"{t['task']}: accuracy, greedy / scored (same prompts)", f"{_pct(t['greedy_accuracy'])} / {_pct(t['scored_accuracy'])}"),
        ]
    out.append(Figure("machine load (1-min average, start / end)", f"{r['load_avg_1m_at_start']} / {r['load_avg_1m_at_end']}"))
    return out


def _local_share_figs(r: dict) -> list[Figure]:
    if "skipped" in r:
        return [Figure("embedded model", r["skipped"])]
    n = r["examples_per_run"]
    return [
        Figure(f"two `lmc run`s ({n} examples each) on the embedded model: back to back (best of {r['rounds']} rounds)", f"{r['back_to_back_s']} s"),
        Figure("the same two started together, taking turns (default; best of the rounds)", f"{r['together_s']} s"),
        Figure("together / back to back", r["ratio"], "<= 1.2", r["meets_target"]),
        Figure("together without turns (LMC_LOCAL_SLOTS=0) / back to back", r["ratio_without_turns"]),
        Figure(
            "commit; cores; machine load (1-min average, start / end)",
            f"{r['commit']}; {r['cores']}; {r['load_avg_1m_at_start']} / {r['load_avg_1m_at_end']}",
        ),
    ]


def _repeats_figure(faulty: dict, label: str) -> Figure:
    """Requests sent again beyond the injected faults; a repeat after a failure the client saw (a timeout the
    server did not inject, on a starved machine) is a correct retry, an answered request sent again never is."""
    beyond = faulty["repeats_beyond_faults"]
    if "repeats_without_a_failure" not in faulty:  # a result from before the client's count was read
        return Figure(f"requests repeated beyond the injected faults ({label})", beyond, "0", beyond <= 0)
    unseen = faulty["client_failed_requests"] - faulty["faults_injected"]
    return Figure(
        f"requests repeated beyond the injected faults ({label}); of them, after a failure the server did "
        f"not inject (client timeouts), and with no failure at all",
        f"{beyond}; {unseen}; {faulty['repeats_without_a_failure']}",
        "no failure: 0",
        faulty["repeats_without_a_failure"] <= 0,
    )


def _reliability_figs(r: dict) -> list[Figure]:
    out = []
    if "exchange_cpu" in r:
        c = r["exchange_cpu"]
        out.append(
            Figure(
                "CPU of one bare HTTP exchange (client, aiohttp; server, per request): what any client pays to send a request again",
                f"{c['client_ms']} ms; {c['server_ms']} ms",
            )
        )
    for name, label in (("direct", "default path, lmc's HTTP transport"), ("litellm", "--transport litellm")):
        if name not in r:
            continue
        x = r[name]
        faulty, clean = x["faulty"], x["clean"]
        default = name == "direct"
        out += [
            Figure(
                f"completion rate, {x['n']} examples, -j {r['concurrency']}, {r['latency_s'] * 1000:g} ms latency, "
                f"{int(r['fault_rate'] * 100)}% faults ({label})",
                f"{x['completion_rate']:.1%}",
                "100%",
                x["completion_rate"] == 1.0,
            ),
            _repeats_figure(faulty, label),
            Figure(
                f"ceiling for a {clean['seconds']:.1f} s fault-free run ({label}): T / (T + extra requests x CPU of a bare exchange + 1 s)",
                x["ceiling"],
                ">= 0.95" if default else "",
                x["ceiling"] >= 0.95 if default else None,
            ),
            Figure(
                f"throughput with faults vs fault-free ({label}; all {len(r['fault_kinds'])} kinds, timeouts "
                f"included at a {r.get('client_timeout_s', 60):g} s client timeout)",
                x["throughput_vs_clean"],
                ">= 0.85" if default else "",
                x["throughput_vs_clean"] >= 0.85 if default else None,
            ),
        ]
        if "throughput_vs_clean_without_timeouts" in x:
            nt = x["faulty_without_timeouts"]
            out.append(
                Figure(
                    f"the same 10% without timeouts ({label}): throughput vs fault-free; repeats beyond faults",
                    f"{x['throughput_vs_clean_without_timeouts']}; {nt['repeats_beyond_faults']}",
                )
            )
    if "all_seconds" in r:
        out.append(
            Figure(
                "seconds of every run (fastest of each is compared): "
                + "; ".join(f"{path} {kind} {v}" for path, kinds in r["all_seconds"].items() for kind, v in kinds.items()),
                "",
            )
        )
    k = r.get("crash_resume")
    if k is None:  # run without its kill -9 part (reliability_default)
        return out
    out += [
        Figure(
            f"answered requests sent again after {k['kills']} random kill -9s",
            k["repeated_settled_requests"],
            "0",
            k["repeated_settled_requests"] == 0,
        ),
        Figure(
            "final rerun: lines / unique ids / examples",
            f"{k['lines']} / {k['unique_ids']} / {k['examples']}",
            "all equal",
            k["lines"] == k["unique_ids"] == k["examples"],
        ),
    ]
    return out


def _compare_figs(r: dict) -> list[Figure]:
    """One figure per verdict of bench_compare's tables (its Markdown tables go into RESULTS.md as they are)."""
    out = []
    for task, t in r["tasks"].items():
        if not t["commit"]:
            out.append(Figure(f"{task} ({r['size']} split)", "no clean run yet: no table"))
            continue
        for title, lmc_sys, dspy_sys in (("same endpoint", "lmc-server", "dspy-server"), ("each at its best", "lmc-local", "dspy-grammar")):
            for opt in ("zero-shot", "labeled", "bootstrap", "random-search", "mipro", "evolve", "knn", "ensemble"):
                a, b = t["runs"].get(f"{lmc_sys}/{opt}"), t["runs"].get(f"{dspy_sys}/{opt}")
                if a is None or b is None or "error" in a or "error" in b:
                    continue
                out.append(
                    Figure(
                        f"{task} {r['size']}, {title}, {opt}: test accuracy lmc vs DSPy (n={a['test_n']})",
                        f"{_pct(a['test_acc'])} vs {_pct(b['test_acc'])}",
                        "lmc >= DSPy",
                        a["test_acc"] >= b["test_acc"],
                    )
                )
                if opt != "zero-shot":
                    out.append(
                        Figure(
                            f"{task} {r['size']}, {title}, {opt}: compile LM calls lmc vs DSPy",
                            f"{a['compile_calls']} vs {b['compile_calls']}",
                            "lmc <= DSPy",
                            a["compile_calls"] <= b["compile_calls"],
                        )
                    )
        if t["stale"]:
            out.append(Figure(f"{task}: stale runs (other commits or uncommitted edits), not in the tables", len(t["stale"])))
    return out


BENCHES = (
    Bench("check", "bench_check", "Front end: `lmc check` speed and CLI start-up", {}, {}, _check_figs),
    Bench(
        "parse_scaling",
        "bench_parse_scaling",
        "Front end: parse and check time grow linearly with program size",
        {},
        {"sizes_mb": (1, 10)},
        _parse_scaling_figs,
    ),
    Bench("lsp", "bench_lsp", "Language server: diagnostics after an edit of a 5,000-line file", {}, {"edits": 5}, _lsp_figs),
    Bench("gate", "bench_gate", "CI gate: false alarms and detection", {}, {"trials": 100, "precise_trials": 0}, _gate_figs),
    Bench("lm_overhead", "bench_lm_overhead", "LM client: overhead and throughput", {}, {"n": 100}, _lm_overhead_figs),
    Bench("runtime", "bench_runtime", "`lmc run` runtime: overhead and throughput", {}, {"n": 200}, _runtime_figs),
    Bench("overhead_dspy", "bench_overhead_dspy", "lmc vs DSPy 3.4.1: per-call overhead, throughput, warm cache", {}, {"quick": True}, _dspy_figs),
    Bench("local", "bench_local", "Embedded model (Gemma 3 270M) throughput", {}, {"quick": True}, _local_figs),
    Bench("local_share", "bench_local_share", "Embedded model shared by two processes", {}, {"n": 10, "rounds": 1}, _local_share_figs),
    Bench(
        "label_scoring", "bench_label_scoring", "Embedded model: label scoring vs greedy decoding, per call", {}, {"quick": True}, _label_scoring_figs
    ),
    Bench(
        "compare",
        "bench_compare",
        "lmc vs DSPy 3.4.1 on Gemma 3 270M: SST-2 and BANKING77 routing, optimizer by optimizer",
        {"size": "full", "study": "also"},
        {"size": "small", "study": "also"},
        _compare_figs,
    ),
    Bench(
        "reliability", "bench_reliability", "Reliability under load: faults and kill -9", {}, {"n": 8000, "kills": 5, "repeats": 1}, _reliability_figs
    ),
    # Issue 14's figure alone (~2 min instead of ~20): the default path, fault-free and with 10% faults, once.
    Bench(
        "reliability_default",
        "bench_reliability",
        "Reliability under faults: the default path alone",
        {"kills": 0, "repeats": 1, "transports": ["direct"], "no_timeouts": False},
        {"n": 8000, "kills": 0, "repeats": 1, "transports": ["direct"], "no_timeouts": False},
        _reliability_figs,
    ),
)


# ------------------------------------------------------------------ machine and RESULTS.md


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f"{mem_kb / 1024 / 1024:.1f} GiB RAM"
    except (OSError, AttributeError):
        mem = "RAM unknown"
    return f"{cpu}, {os.cpu_count()} cores, {mem}; {platform.system()} {platform.release()}, Python {platform.python_version()}"


def _versions() -> str:
    out = []
    for pkg in ("dspy", "litellm", "llama_cpp_python"):
        try:
            from importlib.metadata import version

            out.append(f"{pkg} {version(pkg)}")
        except Exception:  # noqa: BLE001
            out.append(f"{pkg} not installed")
    return ", ".join(out)


def commit() -> str:
    """The checkout's commit, marked `+edits` when the tree differs from it (figures of uncommitted code)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        # RESULTS.md itself is what this run rewrites: an earlier run's figures there do not make the code dirty.
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/RESULTS.md"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    return head + (" +edits" if dirty else " (clean tree)")


def render_section(
    b: Bench, result: dict, figures: list[Figure], seconds: float, command: str, load_before: float | None = None, code: str | None = None
) -> str:
    load = f"load average {load_before:.1f} at the start, " if load_before is not None else "load average "
    lines = [
        f"<!-- bench:{b.name} -->",
        f"## {b.title}",
        "",
        f"`{command}` — {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}, commit {code or commit()}, {seconds:.0f} s, "
        f"{load}{os.getloadavg()[0]:.1f} at the end",
        "",
    ]
    if "markdown" in result:
        # A benchmark that lays out its own tables (bench_compare) is shown as it wrote them.
        lines.append(result["markdown"])
        result = {k: v for k, v in result.items() if k != "markdown"}
    else:
        lines += ["| figure | value | target | |", "|---|---|---|---|"]
        for f in figures:
            mark = "" if f.ok is None else ("PASS" if f.ok else "MISS")
            lines.append(f"| {f.label} | {f.value} | {f.target} | {mark} |")
    lines += [
        "",
        "<details><summary>raw figures</summary>",
        "",
        "```json",
        json.dumps(result, indent=1, sort_keys=True, default=str)[:12000],
        "```",
        "",
        "</details>",
        f"<!-- /bench:{b.name} -->",
        "",
    ]
    return "\n".join(lines)


DEMO_PLACEHOLDER = """<!-- manual:demo -->
## `make demo` wall time (measured by hand)

| run | wall time | target |
|---|---|---|
| clean clone, no wheel cache (llama-cpp-python built from source) | _to be measured_ | < 10 min |
| clean clone, llama-cpp-python wheel in pip's cache | _to be measured_ | < 10 min |
<!-- /manual:demo -->
"""


def _sections(text: str) -> dict[str, str]:
    return {m.group(1): m.group(0) for m in re.finditer(r"<!-- (?:bench|manual):([\w-]+) -->.*?<!-- /(?:bench|manual):\1 -->\n?", text, re.S)}


def write_results(new: dict[str, str], commands: list[str]) -> None:
    old = _sections(RESULTS.read_text()) if RESULTS.exists() else {}
    sections = {**old, **new}
    sections.setdefault("demo", DEMO_PLACEHOLDER)
    head = [
        "# Benchmark results",
        "",
        "Rewritten by `bench/run_all.py` (`make bench`); each section keeps the date and command of its own last run,",
        "so sections can come from different runs (`--only`). Targets come from issues 3, 4, 6 and 14.",
        "",
        f"- Machine: {machine()}",
        f"- Updated: {dt.datetime.now().strftime('%Y-%m-%d %H:%M %Z').strip()} with {_versions()}",
        "- Commands of this update: " + "; ".join(f"`{c}`" for c in commands),
        "- This machine is shared: other jobs ran during these measurements (see each section's load average);",
        "  timings are upper bounds for an idle 2-core machine, and ratios against DSPy are measured in the same run.",
        "",
    ]
    # A hand-written `<!-- manual:NAME-notes -->` section (how to read a benchmark's tables) follows its benchmark.
    order = [n for b in BENCHES for n in (b.name, f"{b.name}-notes")] + ["demo"]
    body = [sections[k].rstrip("\n") + "\n" for k in order if k in sections]
    body += [v.rstrip("\n") + "\n" for k, v in sections.items() if k not in order]
    RESULTS.write_text("\n".join(head) + "\n" + "\n".join(body))


# ------------------------------------------------------------------ running


def _child(name: str, kwargs: str, out: str) -> None:
    sys.path[:0] = [str(ROOT), str(BENCH)]
    b = next(b for b in BENCHES if b.name == name)
    mod = __import__(b.module)
    result = mod.run(**json.loads(kwargs))
    Path(out).write_text(json.dumps(result, default=str))


# Benchmarks that keep every run on disk and can rebuild their section from it without running anything.
SUMMARIZABLE = ("compare",)


def run_one(b: Bench, quick: bool, summary_only: bool = False) -> tuple[dict, float]:
    import tempfile

    kwargs = b.quick_kwargs if quick else b.kwargs
    if summary_only:
        kwargs = {**kwargs, "summary_only": True}
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out = Path(tmp.name)
    start = time.perf_counter()
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, __file__, "--child", b.name, json.dumps(kwargs), str(out)], cwd=ROOT, env=env)
    took = time.perf_counter() - start
    try:
        if proc.returncode != 0:
            raise RuntimeError(f"{b.module}.run() exited with {proc.returncode}")
        return json.loads(out.read_text()), took
    finally:
        out.unlink(missing_ok=True)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(*sys.argv[2:5])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs of every benchmark (compare: dev 20, test 40)")
    ap.add_argument("--only", help="comma-separated names: " + ", ".join(b.name for b in BENCHES))
    ap.add_argument(
        "--summary-only", action="store_true", help=f"run nothing: rebuild the sections of {', '.join(SUMMARIZABLE)} from the runs on disk"
    )
    a = ap.parse_args()
    names = [b.name for b in BENCHES]
    chosen = names if not a.only else [n.strip() for n in a.only.split(",")]
    unknown = [n for n in chosen if n not in names]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; expected some of {names}")
    if a.summary_only and not set(chosen) <= set(SUMMARIZABLE):
        ap.error(f"--summary-only rebuilds only {', '.join(SUMMARIZABLE)}: add --only {','.join(SUMMARIZABLE)}")
    command = (
        "python bench/run_all.py"
        + (" --quick" if a.quick else "")
        + (f" --only {a.only}" if a.only else "")
        + (" --summary-only" if a.summary_only else "")
    )
    new: dict[str, str] = {}
    missed = 0
    for b in BENCHES:
        if b.name not in chosen:
            continue
        print(f"\n=== {b.name}: {b.title}", flush=True)
        load_before, code = os.getloadavg()[0], commit()  # what is measured is the code as it was at the start
        try:
            result, took = run_one(b, a.quick, a.summary_only)
            figures = b.figures(result)
        except Exception as e:  # noqa: BLE001 - one broken benchmark must not hide the others' figures
            print(f"FAILED: {e}", flush=True)
            new[b.name] = f"<!-- bench:{b.name} -->\n## {b.title}\n\n`{command}`: FAILED: {e}\n<!-- /bench:{b.name} -->\n"
            missed += 1
            continue
        for f in figures:
            mark = "" if f.ok is None else ("PASS" if f.ok else "MISS")
            print(f"  {f.label}: {f.value}" + (f"  (target {f.target}) {mark}" if f.target else ""), flush=True)
            missed += f.ok is False
        new[b.name] = render_section(b, result, figures, took, command, load_before, code)
        write_results(new, [command])  # after each benchmark, so a long run keeps what it measured
    write_results(new, [command])
    print(f"\nwrote {RESULTS.relative_to(ROOT)}; {missed} target(s) missed or benchmarks failed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
