"""Bounded by design: hostile input files are refused before reading, programs cannot allocate past the limits.

File cases run the real CLI in a child under an address-space ceiling (`prlimit --as`),
so a command that read /dev/zero or waited on a FIFO would die or hang here instead
of passing; each reports its peak RSS.  Sparse files give "100 GB" inputs that cost
no disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.reliability.helpers import SENTIMENT, labeled_reviews, subprocess_env, write_jsonl

CEILING_MB = 256  # address space of the child: Python and lmc's CLI fit, reading any of these inputs would not
# Peak RSS from VmHWM: it belongs to this process image alone, while ru_maxrss survives exec and would
# report the (large) pytest process this child was forked from.
_WRAP = (
    "import sys\n"
    "from lmc.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
    "sys.stderr.write('\\nMAXRSS_KB %s\\n' % hwm)\n"
    "sys.exit(code)\n"
)

pytestmark = pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")


def lmc_limited(*args, cwd: Path, ceiling_mb: int = CEILING_MB, env: dict | None = None, timeout: float = 60):
    """(exit code, stdout, stderr without the RSS line, seconds, peak RSS in MB) of `lmc ARGS` under the ceiling."""
    # prlimit's size suffixes crash util-linux 2.38's parser: give bytes.
    cmd = ["prlimit", f"--as={ceiling_mb * 1024 * 1024}", sys.executable, "-c", _WRAP, *map(str, args)]
    start = time.monotonic()
    done = subprocess.run(cmd, cwd=cwd, env=subprocess_env(**(env or {})), capture_output=True, text=True, timeout=timeout)
    took = time.monotonic() - start
    err_lines = done.stderr.splitlines()
    rss = next((int(line.split()[1]) / 1024 for line in err_lines if line.startswith("MAXRSS_KB ")), None)
    err = "\n".join(line for line in err_lines if not line.startswith("MAXRSS_KB ")).strip()
    return done.returncode, done.stdout, err, took, rss


def _sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)  # a hole: the file claims `size` bytes and uses no disk
    return path


def _inputs(tmp: Path) -> dict:
    fifo = tmp / "pipe.lmp"
    os.mkfifo(fifo)
    os.mkfifo(tmp / "pipe.jsonl")
    os.mkfifo(tmp / "pipe.lmc.json")
    os.mkfifo(tmp / "pipe.json")  # sniffed for "lmc-artifact/" when named only .json: must not block there
    os.mkfifo(tmp / "pipe.yaml")
    os.mkfifo(tmp / "report.json")
    (tmp / "adir.lmc.json").mkdir()
    return {
        "huge.lmp": _sparse(tmp / "huge.lmp", 100 * 10**9),
        "huge.jsonl": _sparse(tmp / "huge.jsonl", 5 * 10**9),
        "huge.lmc.json": _sparse(tmp / "huge.lmc.json", 10**9),
        "huge.yaml": _sparse(tmp / "huge.yaml", 2 * 10**6),
        "huge-report.json": _sparse(tmp / "huge-report.json", 10**9),
    }


LM = ("--lm", "openai/test", "--api-base", "http://127.0.0.1:9/v1")

FILE_CASES = [
    # (id, args, expected text in the one error line)
    ("check-dev-zero", ["check", "/dev/zero"], "/dev/zero: is a character device, not a regular file"),
    ("run-dev-zero", ["run", "/dev/zero", *LM, "-i", "q=x"], "/dev/zero: is a character device"),
    ("fmt-dev-zero", ["fmt", "/dev/zero"], "/dev/zero: is a character device"),
    ("inspect-dev-zero", ["inspect", "/dev/zero"], "/dev/zero: is a character device"),
    ("diff-dev-zero", ["diff", "/dev/zero", "/dev/zero"], "/dev/zero: is a character device"),
    ("check-fifo", ["check", "pipe.lmp"], "pipe.lmp: is a FIFO (named pipe), not a regular file"),
    ("run-fifo", ["run", "pipe.lmp", *LM, "-i", "q=x"], "pipe.lmp: is a FIFO"),
    ("run-fifo-artifact", ["run", "pipe.lmc.json", *LM, "-i", "q=x"], "pipe.lmc.json: is a FIFO"),
    ("run-fifo-json", ["run", "pipe.json", *LM, "-i", "q=x"], "pipe.json: is a FIFO"),
    ("run-data-fifo", ["run", SENTIMENT, *LM, "--data", "pipe.jsonl", "--out", "o.jsonl"], "pipe.jsonl: is a FIFO"),
    ("run-data-dev-zero", ["run", SENTIMENT, *LM, "--data", "/dev/zero", "--out", "o.jsonl"], "/dev/zero: is a char"),
    ("run-data-dev-urandom", ["run", SENTIMENT, *LM, "--data", "/dev/urandom", "--out", "o.jsonl"], "is a character"),
    ("run-out-fifo", ["run", SENTIMENT, *LM, "--data", "d.jsonl", "--out", "pipe.jsonl"], "pipe.jsonl: is a FIFO"),
    ("eval-data-fifo", ["eval", SENTIMENT, *LM, "--data", "pipe.jsonl"], "pipe.jsonl: is a FIFO"),
    ("eval-baseline-fifo", ["eval", SENTIMENT, *LM, "--data", "d.jsonl", "--baseline", "report.json"], "report.json: is a FIFO"),
    ("merge-fifo", ["report", "merge", "report.json"], "report.json: is a FIFO"),
    ("compile-passes-fifo", ["compile", SENTIMENT, *LM, "--train", "d.jsonl", "-o", "o.lmc.json", "--passes", "pipe.yaml"], "pipe.yaml: is a FIFO"),
    ("check-directory", ["check", "."], ".: is a directory, expected a .lmp file"),
    ("inspect-directory", ["inspect", "adir.lmc.json"], "is a directory, expected an artifact"),
    ("check-100gb", ["check", "huge.lmp"], "huge.lmp: 100 GB is larger than the 10 MB limit for a .lmp program"),
    ("run-100gb", ["run", "huge.lmp", *LM, "-i", "q=x"], "100 GB is larger than the 10 MB limit"),
    (
        "run-data-5gb",
        ["run", SENTIMENT, *LM, "--data", "huge.jsonl", "--out", "o.jsonl"],
        "huge.jsonl: 5 GB is larger than the 1 GB limit for a dataset",
    ),
    ("inspect-1gb-artifact", ["inspect", "huge.lmc.json"], "huge.lmc.json: 1 GB is larger than the 200 MB limit"),
    ("merge-1gb-report", ["report", "merge", "huge-report.json"], "1 GB is larger than the 200 MB limit"),
    (
        "compile-2mb-passes",
        ["compile", SENTIMENT, *LM, "--train", "d.jsonl", "-o", "o.lmc.json", "--passes", "huge.yaml"],
        "huge.yaml: 2 MB is larger than the 1 MB limit",
    ),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bounds")
    _inputs(tmp)
    write_jsonl(tmp / "d.jsonl", labeled_reviews(6))
    return tmp


@pytest.mark.parametrize("case", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_hostile_input_files_are_refused_before_reading(workdir, case):
    _, args, expect = case
    code, out, err, took, rss = lmc_limited(*args, cwd=workdir)
    lines = err.splitlines()
    assert code == 2, f"exit {code}\n{err}"
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], err
    assert "Traceback" not in err and "MemoryError" not in err
    assert rss is not None and rss < 160, f"peak RSS {rss:.0f} MB"
    assert took < 10, f"took {took:.1f} s"  # interpreter start-up included; the refusal itself is timed below


@pytest.mark.parametrize("path", ["/dev/zero", "pipe.lmp", "huge.lmp"])
def test_a_refusal_takes_well_under_a_second(workdir, path, monkeypatch, capsys):
    from lmc.cli import main

    monkeypatch.chdir(workdir)
    main(["check", "sentinel-warm-up.lmp"])  # imports done before timing
    start = time.perf_counter()
    code = main(["check", path])
    took = time.perf_counter() - start
    assert code == 2 and took < 1.0, took
    capsys.readouterr()


def test_lmc_yaml_that_is_a_fifo_or_too_large_is_refused(tmp_path):
    os.mkfifo(tmp_path / "lmc.yaml")
    code, _, err, took, _ = lmc_limited("run", SENTIMENT, *LM, "-i", "review=x", cwd=tmp_path)
    assert code == 2 and "lmc.yaml: is a FIFO" in err, err
    os.unlink(tmp_path / "lmc.yaml")
    _sparse(tmp_path / "lmc.yaml", 50 * 10**6)
    code, _, err, took, _ = lmc_limited("check", SENTIMENT, cwd=tmp_path)
    assert code == 2 and "lmc.yaml: 50 MB is larger than the 1 MB limit" in err, err


# ---------------------------------------------------------------- raising and lowering the limits


def _program_of(path: Path, size: int) -> Path:
    body = SENTIMENT.read_text()
    path.write_text(body + "# " + "x" * max(0, size - len(body) - 3) + "\n")
    return path


def test_limits_come_from_the_environment_then_lmc_yaml(cli, tmp_path, monkeypatch):
    prog = _program_of(tmp_path / "p.lmp", 5000)
    code, _, err = cli("check", prog)
    assert code == 0, err
    monkeypatch.setenv("LMC_MAX_PROGRAM_BYTES", "4KB")
    code, _, err = cli("check", prog)
    assert code == 2 and "5 KB is larger than the 4 KB limit" in err and "LMC_MAX_PROGRAM_BYTES" in err
    monkeypatch.delenv("LMC_MAX_PROGRAM_BYTES")
    (tmp_path / "lmc.yaml").write_text("limits:\n  program: 4000\n")
    code, _, err = cli("check", prog)
    assert code == 2 and "the 4 KB limit" in err and "lmc.yaml" in err
    monkeypatch.setenv("LMC_MAX_PROGRAM_BYTES", "1MiB")  # the environment wins over lmc.yaml
    code, _, err = cli("check", prog)
    assert code == 0, err


@pytest.mark.parametrize(
    "yaml_text,expect",
    [
        ("limits:\n  program: lots\n", "limits.program must be a size"),
        ("limits:\n  programs: 5MB\n", "unknown limit 'programs'"),
        ("limits:\n  config: 5MB\n", "unknown limit 'config'"),
        ("limits: 5MB\n", "'limits' must map kinds"),
        ("limits:\n  data: -1\n", "limits.data must be a size"),
    ],
)
def test_bad_limits_in_lmc_yaml_are_one_line_errors(cli, tmp_path, yaml_text, expect):
    (tmp_path / "lmc.yaml").write_text(yaml_text)
    code, _, err = cli("check", SENTIMENT)
    assert code == 2 and expect in err and len(err.strip().splitlines()) == 1, err


def test_a_bad_size_in_the_environment_is_a_one_line_error(cli, monkeypatch):
    monkeypatch.setenv("LMC_MAX_PROGRAM_BYTES", "ten megs")
    code, _, err = cli("check", SENTIMENT)
    assert code == 2 and "LMC_MAX_PROGRAM_BYTES='ten megs' is not a size" in err


def test_a_file_that_grows_past_the_limit_while_read_is_refused(monkeypatch):
    """/proc files report size 0 and still have content: what fstat promised is not trusted, limit+1 bytes are read."""
    from lmc.limits import FileRefused, read_bounded

    monkeypatch.setenv("LMC_MAX_CONFIG_BYTES", "16")
    with pytest.raises(FileRefused, match="grew past the 16 bytes limit"):
        read_bounded("/proc/self/status", "config")


def test_sizes_parse():
    from lmc.limits import human, parse_size

    assert parse_size("10MB") == 10_000_000 and parse_size("1 GiB") == 1024**3 and parse_size(512) == 512
    assert parse_size("2.5k") == 2500 and parse_size("0") is None and parse_size(True) is None
    assert parse_size("1e9") is None and parse_size("-5MB") is None
    assert human(10_000_000) == "10 MB" and human(1_500_000_000) == "1.5 GB" and human(12) == "12 bytes"


# ---------------------------------------------------------------- values: checked before they are allocated

BOUNDS = """\
program main(case: int) -> (out: json) {
  n = 1000000000000
  if case == 1 {
    x = range(n)
  } elif case == 2 {
    x = range(0, 30000000)
  } elif case == 3 {
    s = "ab" * 100000000
  } elif case == 4 {
    l4 = [1, 2] + [3]
  } elif case == 5 {
    s = "x" * 6000000
    t = join([s, s], "")
  } elif case == 6 {
    s = "x" * 1000
    while true max 100 {
      s = s + s
    }
  } elif case == 7 {
    l = [1]
    while true max 100 {
      l = l + l
    }
  } elif case == 8 {
    x = []
    for i in range(200) {
      x = [x, x]
    }
    s = str(x)
  } elif case == 9 {
    i = 3
    while true max 100 {
      i = i * i
    }
  } elif case == 10 {
    s = "x" * 4000000
    t = f"{s}{s}{s}"
  } elif case == 11 {
    s11 = "%0*d" + "x"
  } elif case == 12 {
    x = []
    for i in range(200) {
      x = [x, x]
    }
    t12 = "x" + str(x)
  } elif case == 13 {
    s = "a " * 3000000
    parts = split(s)
  } elif case == 14 {
    x = []
    for i in range(200) {
      x = [x, x]
    }
    return {"out": x}
  } elif case == 15 {
    x = range(1000000)
    s = "y" * 10000000
    l = [s] + [s]
  }
  return {"out": "fine"}
}
"""

EXPECT = {  # case -> what the error says, with its line
    1: "range of 10^12 items exceeds the limit of 1,000,000 (line 4)",
    2: "range of 30,000,000 items exceeds the limit of 1,000,000 (line 6)",
    3: "a repeated text of 200,000,000 characters exceeds the limit of 10,000,000 (line 8)",
    4: "a repeated list of 200,000,000 items exceeds the limit of 1,000,000 (line 10)",
    5: "join() result of 12,000,000 characters exceeds the limit of 10,000,000 (line 13)",
    6: "a text of 16,384,000 characters exceeds the limit of 10,000,000 (line 17)",
    7: "a list of 1,048,576 items exceeds the limit of 1,000,000 (line 22)",
    8: "str() of this value would be longer than 10,000,000 characters, the limit (line 29)",
    9: "an integer of more than 4,300 digits exceeds the limit (line 33)",
    10: "an f-string of more than 10,000,000 characters exceeds the limit (line 37)",
    11: "cannot apply '%' to str and",  # never Python's printf-style formatting
    12: "a value as text would be longer than 10,000,000 characters, the limit (line 45)",
    13: "split() result of 3,000,000 items exceeds the limit of 1,000,000 (line 48)",
    14: "output 'out' would be longer than 10,000,000 characters, the limit",
}


def _bounds_artifact(tmp: Path) -> Path:
    """The program above, with three statements the type checker refuses rewritten in the IR (artifacts skip it)."""
    from lmc import artifact
    from lmc import ir as I
    from lmc.targets import load_target

    (tmp / "bounds.lmp").write_text(BOUNDS)
    t = load_target(tmp / "bounds.lmp")
    path = tmp / "bounds.lmc.json"
    artifact.write(artifact.Artifact(ir=t.ir, program=t.program_json(), compile={}, lm=None), path)
    data = json.loads(path.read_text())

    def walk(node):
        if isinstance(node, dict):
            if node.get("$node") == "Assign" and node["target"] == "l4":  # [1, 2] * 100000000
                node["value"].update(op="*", right={"$node": "Const", "value": 100000000})
            if node.get("$node") == "Assign" and node["target"] == "s11":  # "%0*d" % [100000000, 1]
                node["value"].update(op="%", right={"$node": "Const", "value": [100000000, 1]})
            if node.get("$node") == "Assign" and node["target"] == "t12":  # "x" + x, x of shared sublists
                node["value"]["right"] = {"$node": "Var", "name": "x"}
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(data["ir"])
    data["ir_sha256"] = hashlib.sha256(I.dumps(data["ir"]).encode("utf-8")).hexdigest()
    path.write_text(json.dumps(data, indent=1, sort_keys=True))
    return path


def test_builtins_and_operators_check_sizes_before_allocating(tmp_path):
    art = _bounds_artifact(tmp_path)
    cases = [{"id": f"c{i}", "case": i} for i in range(1, 16)]
    write_jsonl(tmp_path / "cases.jsonl", cases)
    code, out, err, took, rss = lmc_limited(
        "run", art, "--data", "cases.jsonl", "--out", "out.jsonl", "-j", "1", cwd=tmp_path, ceiling_mb=700, timeout=300
    )
    assert "Traceback" not in err and "internal error" not in err, err
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert code == 1, err  # examples failed, the run did not
    for i, expect in EXPECT.items():
        row = rows[f"c{i}"]
        assert row["error"] is not None and expect in row["error"], (i, row["error"])
        assert "MemoryError" not in row["error"] and row["error_kind"] == "runtime"
    assert rows["c15"]["error"] is None and rows["c15"]["outputs"] == {"out": "fine"}  # right at the limits: fine
    assert rss is not None and rss < 600, f"peak RSS {rss:.0f} MB"


def test_the_range_error_of_the_issue_names_its_line(cli, tmp_path):
    prog = tmp_path / "r.lmp"
    prog.write_text('program main(q: str) -> (a: str) {\n  x = 1\n\n  n = 1000000000000\n\n\n  y = range(n)\n  return {"a": q}\n}\n')
    code, out, err = cli("run", prog, "-i", "q=x")
    assert code == 1
    assert err.strip() == "error: range of 10^12 items exceeds the limit of 1,000,000 (line 7)"


# ---------------------------------------------------------------- parsing is linear


def _decls(n: int) -> str:
    return (
        "".join(
            f'signature S{i}(question_{i}: str, context: list[str] -> answer_{i}: str "a short answer")\n'
            f'  "Answer question {i} from the context, in one or two words."\n'
            for i in range(n)
        )
        + 'program main(q: str) -> (a: str) {\n  return {"a": q}\n}\n'
    )


def test_parse_time_grows_linearly_with_the_number_of_declarations():
    """8x the declarations must cost well under 8²/8x the time: the parser once copied the list on each one."""
    from lmc.check import check
    from lmc.parser import parse

    def cost(n: int) -> float:
        text = _decls(n)
        best = float("inf")
        for _ in range(2):
            start = time.process_time()
            check(parse(text, "p.lmp"), text)
            best = min(best, time.process_time() - start)
        return best

    cost(200)  # warm-up: tables and lexers loaded
    small, large = cost(4000), cost(32000)
    assert large / small < 14, f"{small:.3f} s -> {large:.3f} s for 8x the declarations"


def test_bounded_json_matches_json_dumps_and_sizes_shared_lists_at_once():
    """to_json sizes a value over its distinct nodes: exact for any value, instant for 2^200 repeats."""
    import random

    from lmc import limits

    rnd = random.Random(7)

    def gen(depth: int):
        r = rnd.random()
        if depth > 4 or r < 0.3:
            return rnd.choice([None, True, False, 0, -2.5, 1e300, 'héllo\n"', "", 10**20, float("inf")])
        if r < 0.6:
            return [gen(depth + 1) for _ in range(rnd.randint(0, 4))]
        return {rnd.choice(["a", "ü", 'k"ey', ""]) + str(i): gen(depth + 1) for i in range(rnd.randint(0, 4))}

    for _ in range(2000):
        v = gen(0)
        assert limits.to_json(v, sort_keys=True) == json.dumps(v, ensure_ascii=False, sort_keys=True)
    assert limits.to_json({1: "a"}) == '{"1": "a"}'  # non-string keys take the streaming path
    assert limits.to_json([object()], default=lambda o: "obj") == '["obj"]'
    x: list = []
    for _ in range(200):
        x = [x, x]
    started = time.perf_counter()
    with pytest.raises(limits.SizeLimitError, match="would be longer than 10,000,000 characters"):
        limits.to_json(x)
    assert time.perf_counter() - started < 1.0
    cyclic: list = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="Circular reference"):
        limits.to_json(cyclic)
