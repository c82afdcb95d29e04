"""End-to-end tests of `lmc eval` and `lmc report merge` through the CLI, against the loopback LM server."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from lmc.artifact import Artifact, write
from lmc.cli import main
from lmc.gate import Report
from lmc.targets import load_target
from tests.lmserver import LoopbackServer
from tests.test_gate import _validate_junit

FIX = Path(__file__).resolve().parent / "fixtures" / "eval"
N = 40


class Oracle:
    """Answers the sentiment prompt from the gold label, except for chosen example numbers per program variant.

    The candidate's instructions say "Decide whether", the baseline's "Classify";
    `wrong[variant]` holds the example numbers ("07") answered with the wrong label
    and `garbage[variant]` those answered with a label outside the declared type.
    """

    def __init__(self):
        self.gold = {}
        for line in (FIX / "dev.jsonl").read_text().splitlines():
            rec = json.loads(line)
            self.gold[rec["id"][3:]] = rec["sentiment"]
        self.reset()

    def reset(self):
        self.wrong = {"cand": set(), "base": set()}
        self.garbage = {"cand": set(), "base": set()}

    def __call__(self, request: dict) -> str:
        text = "\n".join(str(m.get("content", "")) for m in request["messages"])
        num = re.search(r"\[(\d\d)\]", text).group(1)
        variant = "cand" if "Decide whether" in text else "base"
        if num in self.garbage[variant]:
            return "<sentiment>neutral</sentiment>"
        answer = self.gold[num]
        if num in self.wrong[variant]:
            answer = "negative" if answer == "positive" else "positive"
        return f"<sentiment>{answer}</sentiment>"


def nums(*values: int) -> set[str]:
    return {f"{v:02d}" for v in values}


@pytest.fixture(scope="module")
def server():
    oracle = Oracle()
    with LoopbackServer(oracle) as srv:
        srv.oracle = oracle
        yield srv


@pytest.fixture
def ws(tmp_path, monkeypatch, server):
    """A working directory holding the fixture programs and data, with a fresh oracle and request counter."""
    for f in FIX.iterdir():
        shutil.copy(f, tmp_path / f.name)
    # The baseline as the same program looks on main: an older version of cand.lmp (a file of the same name).
    (tmp_path / "main").mkdir()
    shutil.copy(FIX / "base.lmp", tmp_path / "main" / "cand.lmp")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LMC_LM", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    server.oracle.reset()
    server.reset_counters()
    return tmp_path


class Lmc:
    def __init__(self, capsys, server):
        self.capsys = capsys
        self.server = server

    def __call__(self, *args: str, lm: bool = True):
        """Run `lmc ARGS`; returns (exit code, stdout, stderr lines)."""
        argv = list(args)
        if lm:
            argv += ["--lm", "openai/test", "--api-base", self.server.url, "--cache-dir", "cache"]
        self.capsys.readouterr()
        code = main(argv)
        out, err = self.capsys.readouterr()
        assert "Traceback" not in err and "internal error" not in err, err
        return code, out, err.strip().splitlines()

    def eval(self, target: str, *args: str, data: str = "dev.jsonl"):
        return self(*["eval", target, "--data", data, *args])

    def merge(self, *args: str):
        return self(*["report", "merge", *args], lm=False)


@pytest.fixture
def lmc(capsys, server):
    return Lmc(capsys, server)


def make_artifact(lmp: str, out: str) -> str:
    t = load_target(lmp)
    write(Artifact(ir=t.ir, program={"name": t.name, "path": lmp, "source": t.source, "sha256": t.sha256}, compile={}, lm=None), out)
    return out


def assert_refused(result, *fragments: str):
    """Exit 2 with one `error:` line as the last line, naming each fragment."""
    code, out, err = result
    assert code == 2, err
    assert err[-1].startswith("error: "), err
    for fragment in fragments:
        assert fragment in err[-1], err[-1]


# ---------------------------------------------------------------- gates


def test_equal_quality_passes_against_baseline_artifact(ws, lmc, server):
    server.oracle.wrong = {"cand": nums(3, 4), "base": nums(3, 4)}
    make_artifact("main/cand.lmp", "base.lmc.json")
    code, _, err = lmc.eval("cand.lmp", "--baseline", "base.lmc.json", "--max-drop", "0.02", "--report", "eval.json")
    assert code == 0, err
    assert err[-1].startswith("PASS: no significant drop vs baseline (delta +0.000"), err[-1]
    assert any("candidate" in line and "0.950" in line for line in err)
    assert any("baseline" in line and "base.lmc.json" in line for line in err)
    rep = Report.load("eval.json")
    assert rep.summary.n == N and rep.summary.score == pytest.approx(0.95)
    assert rep.target.kind == "program" and rep.program.name == "sentiment"
    assert {e.id for e in rep.examples if not e.passed} == {"ex-03", "ex-04"}
    # Distinct prompts for candidate and baseline: both went to the server (after the endpoint's JSON-schema probe).
    assert server.requests == 2 * N + 1


def test_regression_fails_and_lists_flipped_examples(ws, lmc, server):
    server.oracle.wrong = {"cand": nums(3, *range(5, 14)), "base": nums(3, 4)}
    make_artifact("main/cand.lmp", "base.lmc.json")
    code, _, err = lmc.eval("cand.lmp", "--baseline", "base.lmc.json", "--max-drop", "0.02")
    assert code == 1
    assert err[-1].startswith("FAIL: score dropped 0.200 vs baseline, more than --max-drop 0.02"), err[-1]
    flips = next(line for line in err if line.startswith("pass->fail"))
    assert flips.startswith("pass->fail (9): 'ex-05', 'ex-06'") and "'ex-13'" in flips
    assert any(line.startswith("fail->pass (1): 'ex-04'") for line in err)


def test_max_drop_defaults_to_zero_with_baseline(ws, lmc, server):
    server.oracle.wrong = {"cand": nums(*range(5, 14)), "base": set()}
    code, _, err = lmc.eval("cand.lmp", "--baseline", "main/cand.lmp")
    assert code == 1 and "more than --max-drop 0 " in err[-1]


def test_noise_does_not_fail_the_build(ws, lmc, server):
    # Two examples lost, one gained: an observed drop of 0.025 that a coin flip explains (p = 0.5).
    server.oracle.wrong = {"cand": nums(3, 5, 6), "base": nums(3, 4)}
    code, _, err = lmc.eval("cand.lmp", "--baseline", "main/cand.lmp", "--max-drop", "0")
    assert code == 0, err
    assert "delta -0.025" in err[-1] and "p=0.5" in err[-1]


def test_min_score(ws, lmc, server):
    server.oracle.wrong = {"cand": nums(1, 2), "base": set()}
    code, _, err = lmc.eval("cand.lmp", "--min-score", "0.99")
    assert code == 1 and err[-1] == "FAIL: score 0.950 is below --min-score 0.99"
    code, _, err = lmc.eval("cand.lmp", "--min-score", "0.9")
    assert code == 0 and err[-1] == "PASS: score 0.950 >= --min-score 0.9"


def test_too_many_parse_errors_exit_3_and_outrank_quality(ws, lmc, server):
    server.oracle.garbage = {"cand": nums(7, 8, 9), "base": set()}
    code, _, err = lmc.eval("cand.lmp", "--max-errors", "1", "--min-score", "0.99", "--report", "eval.json")
    assert code == 3, err
    assert err[-1].startswith("FAIL: 3 examples failed with LM/parse errors, more than --max-errors 1"), err[-1]
    assert "'ex-07', 'ex-08', 'ex-09'" in err[-1]
    assert any(line.startswith("also: score 0.925 is below --min-score") for line in err)
    rep = Report.load("eval.json")
    bad = [e for e in rep.examples if e.error]
    assert [(e.id, e.error_kind, e.score, e.passed) for e in bad] == [(f"ex-0{i}", "parse", None, False) for i in (7, 8, 9)]
    # Within the budget the same run passes on errors; the score still counts them as 0.
    code, _, err = lmc.eval("cand.lmp", "--max-errors", "3")
    assert code == 0 and "within --max-errors 3" in err[-1]


def test_lm_auth_failure_is_exit_3(ws, capsys):
    with LoopbackServer(Oracle(), api_key="the-right-key") as srv:
        code = main(["eval", "cand.lmp", "--data", "dev.jsonl", "--lm", "openai/test", "--api-base", srv.url, "--cache-dir", "cache"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3, err
    assert err[-1].startswith("error: authentication failed for")
    assert "the-right-key" not in "\n".join(err)


# ---------------------------------------------------------------- reports as baselines, outputs


def test_report_is_reused_as_baseline_without_rerunning_it(ws, lmc, server):
    server.oracle.wrong = {"cand": nums(*range(5, 14)), "base": nums(3)}
    make_artifact("main/cand.lmp", "base.lmc.json")
    code, _, err = lmc.eval("base.lmc.json", "--report", "base.json", "--no-cache")
    assert code == 0 and server.requests == N + 1  # and the endpoint's probe: no cache remembers it
    base = Report.load("base.json")
    assert base.target.kind == "artifact" and base.target.path == "base.lmc.json"

    server.reset_counters()
    code, _, err = lmc.eval("cand.lmp", "--baseline", "base.json", "--max-drop", "0.02", "--no-cache")
    assert code == 1
    assert server.requests == N + 1  # the probe and the candidate only: zero requests for the baseline side
    assert any(line.startswith("baseline 0.975 -> candidate 0.775") for line in err)

    # The same comparison with the artifact evaluated now gives the same verdict.
    server.reset_counters()
    code2, _, err2 = lmc.eval("cand.lmp", "--baseline", "base.lmc.json", "--max-drop", "0.02", "--no-cache")
    assert code2 == 1 and server.requests == 2 * N + 1
    assert err2[-1] == err[-1]


def test_baseline_evaluated_from_cache_makes_no_requests(ws, lmc, server):
    # Candidate and baseline with identical prompts: the baseline side is served from the shared cache.
    code, out, err = lmc.eval("main/cand.lmp", "--baseline", "main/cand.lmp", "--max-drop", "0", "--format", "json")
    assert code == 0 and server.requests == N + 1  # and the endpoint's probe, not counted among the calls
    doc = json.loads(out)
    assert (doc["candidate"]["calls"], doc["candidate"]["cached_calls"]) == (N, 0)
    assert (doc["baseline"]["calls"], doc["baseline"]["cached_calls"]) == (N, N)
    assert doc["baseline"]["prompt_tokens"] == 0 and doc["candidate"]["prompt_tokens"] > 0


def test_junit_is_valid_and_fails_exactly_the_regressed_examples(ws, lmc, server):
    server.oracle.wrong = {"cand": nums(3, 5, 6, 7, 8, 9, 10), "base": nums(3, 4)}
    server.oracle.garbage = {"cand": nums(20), "base": set()}
    code, _, err = lmc.eval("cand.lmp", "--baseline", "main/cand.lmp", "--max-drop", "0.02", "--junit", "eval.xml")
    assert code == 1
    assert "wrote eval.xml" in err
    root = _validate_junit(Path("eval.xml"))
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert len(cases) == N
    failed = sorted(n for n, c in cases.items() if c.find("failure") is not None)
    assert failed == [f"ex-{i:02d}" for i in range(5, 11)]
    assert [n for n, c in cases.items() if c.find("skipped") is not None] == ["ex-03"]
    error = cases["ex-20"].find("error")
    assert error is not None and error.get("type") == "parse"
    assert cases["ex-05"].get("classname") == "lmc.sentiment.acc" and cases["ex-05"].get("line") == "5"
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["verdict"] == "fail" and props["baseline_score"] == "0.9500"


def test_markdown_summary_and_github_step_summary(ws, lmc, server, monkeypatch):
    server.oracle.wrong = {"cand": nums(*range(5, 14)), "base": set()}
    step = ws / "step_summary.md"
    step.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    code, _, err = lmc.eval("cand.lmp", "--baseline", "main/cand.lmp", "--summary", "eval.md", "--github-summary")
    assert code == 1
    md = Path("eval.md").read_text()
    assert md.startswith("### ❌ lmc eval: quality regression")
    assert "| candidate | 0.775 |" in md and "| baseline | 1.000 |" in md
    assert "**Delta -0.225**" in md and "9 pass→fail, 0 fail→pass" in md
    assert "| `ex-05` | 5 | 1.00 | 0.00 | negative | positive |" in md
    assert md.rstrip().splitlines()[-1] == f"**{err[-1]}**"
    assert step.read_text() == "earlier step\n" + md + "\n"
    assert "appended the summary to $GITHUB_STEP_SUMMARY" in err


def test_github_summary_without_the_variable_is_a_note(ws, lmc, server):
    code, _, err = lmc.eval("cand.lmp", "--github-summary")
    assert code == 0 and any("GITHUB_STEP_SUMMARY is not set" in line for line in err)


def test_format_json_prints_the_verdict_on_stdout(ws, lmc, server):
    server.oracle.wrong = {"cand": nums(*range(5, 14)), "base": set()}
    code, out, err = lmc.eval("cand.lmp", "--baseline", "main/cand.lmp", "--max-drop", "0.02", "--max-errors", "0", "--format", "json")
    assert code == 1
    doc = json.loads(out)
    assert doc["verdict"] == "fail" and doc["exit_code"] == 1 and doc["reason"] == err[-1]
    assert doc["paired"]["flipped_to_fail"] == [f"ex-{i:02d}" for i in range(5, 14)]
    assert doc["candidate"]["n"] == N and doc["baseline"]["score"] == 1.0
    assert doc["gates"] == {"min_score": None, "baseline": "main/cand.lmp", "max_drop": 0.02, "max_errors": 0, "confidence": 0.95}
    assert doc["metric"]["name"] == "acc"
    assert any(line.startswith("candidate") for line in err)  # the table still goes to stderr


def test_format_json_on_bad_input_still_prints_one_document(ws, lmc, server):
    code, out, err = lmc.eval("cand.lmp", "--max-drop", "0.1", "--format", "json")
    assert code == 2
    doc = json.loads(out)
    assert doc["verdict"] == "error" and doc["exit_code"] == 2 and "--max-drop needs --baseline" in doc["reason"]


# ---------------------------------------------------------------- shards


def test_shards_merged_equal_the_unsharded_run(ws, lmc, server):
    server.oracle.wrong = {"cand": nums(2, 11, 17, 29, 33), "base": set()}
    code, _, _ = lmc.eval("cand.lmp", "--report", "full.json")
    assert code == 0
    parts = []
    for i in (1, 2, 3):
        code, _, err = lmc.eval("cand.lmp", "--shard", f"{i}/3", "--report", f"part-{i}.json")
        assert code == 0, err
        part = Report.load(f"part-{i}.json")
        assert (part.shard.index, part.shard.count) == (i, 3)
        assert 0 < part.summary.n < N
        parts.append(f"part-{i}.json")
    code, _, err = lmc.merge(*reversed(parts), "-o", "all.json")
    assert code == 0, err
    full, merged = Report.load("full.json"), Report.load("all.json")
    assert merged.shard is None
    assert [(e.id, e.line, e.score, e.passed, e.prediction) for e in merged.examples] == [
        (e.id, e.line, e.score, e.passed, e.prediction) for e in full.examples
    ]
    assert merged.summary.score == pytest.approx(full.summary.score)
    assert merged.summary.calls == full.summary.calls == N


def test_merge_applies_the_gates_once(ws, lmc, server):
    server.oracle.wrong = {"cand": nums(*range(5, 14)), "base": set()}
    code, _, _ = lmc.eval("main/cand.lmp", "--report", "base.json")
    code_full, _, err_full = lmc.eval("cand.lmp", "--baseline", "base.json", "--max-drop", "0.02")
    for i in (1, 2):
        lmc.eval("cand.lmp", "--shard", f"{i}/2", "--report", f"part-{i}.json")
    code, _, err = lmc.merge(
        "part-1.json", "part-2.json", "-o", "all.json", "--baseline", "base.json", "--max-drop", "0.02", "--junit", "eval.xml", "--summary", "eval.md"
    )
    assert code == code_full == 1
    assert err[-1] == err_full[-1]
    assert any(line.startswith("merged 2 shard reports: 40 examples") for line in err)
    _validate_junit(Path("eval.xml"))
    assert Path("eval.md").read_text().startswith("### ❌")


def test_shard_candidate_against_full_baseline_report(ws, lmc, server):
    lmc.eval("main/cand.lmp", "--report", "base.json")
    code, _, err = lmc.eval("cand.lmp", "--shard", "2/3", "--baseline", "base.json")
    assert code == 0, err
    assert any(re.fullmatch(rf"shard 2/3: \d+ of {N} examples", line) for line in err), err


# ---------------------------------------------------------------- bad input: refused before any LM call


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("4/3", "shard '4/3' is out of range"),
        ("0/3", "shard '0/3' is out of range"),
        ("2", "bad shard '2'; expected i/N"),
        ("a/b", "bad shard 'a/b'"),
    ],
)
def test_bad_shard_specs(ws, lmc, server, spec, fragment):
    assert_refused(lmc.eval("cand.lmp", "--shard", spec), fragment)
    assert server.requests == 0


def test_max_drop_without_baseline_is_refused_before_evaluating(ws, lmc, server):
    assert_refused(lmc.eval("cand.lmp", "--max-drop", "0.02"), "--max-drop needs --baseline")
    assert server.requests == 0


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--confidence", "1.5"], "--confidence must be between 0.5 and 1"),
        (["--min-score", "2"], "--min-score must be between 0 and 1"),
        (["--max-errors", "-1"], "--max-errors must be 0 or more"),
        (["--threshold", "1.5"], "invalid value for option '--threshold': Input should be less than or equal to 1"),
        (["--format", "jsn"], "'--format': 'jsn' is not one of: text, json; did you mean 'json'?"),
        (["-j", "0"], "invalid value for option '-j' / '--jobs'"),
        (["--example-timeout", "0"], "invalid value for option '--example-timeout'"),
        (["--max-steps", "0"], "invalid value for option '--max-steps'"),
        (["--report", "cand.lmp/eval.json"], "cannot create it; 'cand.lmp' is a file, not a directory"),
    ],
)
def test_bad_flags(ws, lmc, server, flags, fragment):
    assert_refused(lmc.eval("cand.lmp", *flags), fragment)
    assert server.requests == 0


@pytest.fixture
def base_report(ws, lmc, server):
    code, _, _ = lmc.eval("main/cand.lmp", "--report", "base.json")
    assert code == 0
    server.reset_counters()
    return "base.json"


def test_baseline_on_other_data_is_refused(ws, lmc, server):
    lines = Path("dev.jsonl").read_text().splitlines()
    Path("dev2.jsonl").write_text("\n".join(lines[:-1] + [lines[-1].replace('."', '!"', 1)]) + "\n")
    lmc.eval("main/cand.lmp", "--report", "other-data.json", data="dev2.jsonl")
    server.reset_counters()
    assert_refused(
        lmc.eval("cand.lmp", "--baseline", "other-data.json"), "other-data.json: baseline was evaluated on different data (dev2.jsonl", "same file"
    )
    assert server.requests == 0


def test_baseline_with_other_metric_is_refused(ws, lmc, server, base_report):
    assert_refused(
        lmc.eval("cand.lmp", "--baseline", base_report, "--threshold", "0.5"),
        "baseline used metric acc = accuracy(sentiment) @ 1 but the candidate uses acc = accuracy(sentiment) @ 0.5",
    )
    # A baseline artifact whose metric has another definition is refused before it is evaluated.
    Path("em.lmp").write_text(Path("base.lmp").read_text().replace("accuracy(sentiment)", "exact_match(sentiment)"))
    assert_refused(lmc.eval("cand.lmp", "--baseline", "em.lmp"), "baseline used metric acc = exact_match(sentiment)")
    assert_refused(lmc.eval("cand.lmp", "--baseline", "no_metric.lmp"), "no_metric.lmp: baseline has no metric 'acc' (it defines: none)")
    assert server.requests == 0


def test_report_of_another_program_is_refused_unless_allowed(ws, lmc, server):
    lmc.eval("other.lmp", "--report", "other.json")
    server.reset_counters()
    assert_refused(
        lmc.eval("cand.lmp", "--baseline", "other.json"),
        "the baseline is another program: 'other' of other.lmp",
        "the candidate is 'sentiment' of cand.lmp",
        "--allow-different-program",
    )
    assert_refused(lmc.eval("cand.lmp", "--baseline", "other.lmp"), "--allow-different-program")
    assert server.requests == 0
    code, _, err = lmc.eval("cand.lmp", "--baseline", "other.json", "--allow-different-program")
    assert code == 0 and any("note: comparing program 'sentiment' against another program, 'other'" in line for line in err)


def test_a_program_that_only_shares_the_name_is_another_program(ws, lmc, server):
    """base.lmp also defines program 'sentiment': the name alone no longer makes it the same program."""
    assert_refused(
        lmc.eval("cand.lmp", "--baseline", "base.lmp"),
        "the baseline is another program: 'sentiment' of base.lmp (source sha256",
        "the candidate is 'sentiment' of cand.lmp",
    )
    make_artifact("base.lmp", "b.lmc.json")
    assert_refused(lmc.eval("cand.lmp", "--baseline", "b.lmc.json"), "'sentiment' of base.lmp")
    lmc.eval("base.lmp", "--report", "b.json")
    server.reset_counters()
    assert_refused(lmc.eval("cand.lmp", "--baseline", "b.json"), "'sentiment' of base.lmp")
    assert server.requests == 0
    code, _, err = lmc.eval("cand.lmp", "--baseline", "base.lmp", "--allow-program-change")  # the older spelling
    assert code in (0, 1), err


def test_an_edit_of_the_same_program_is_compared_with_a_note(ws, lmc, server):
    """The pull-request case: the same program name in a file of the same name, on main and in the PR."""
    make_artifact("main/cand.lmp", "base.lmc.json")
    make_artifact("cand.lmp", "cand.lmc.json")
    code, _, err = lmc.eval("cand.lmc.json", "--baseline", "base.lmc.json")
    assert code == 0, err
    assert any("note: the program's source changed since the baseline (sha256" in line for line in err)
    # The very same source: no note at all.
    shutil.copy("cand.lmc.json", "same.lmc.json")
    code, _, err = lmc.eval("cand.lmc.json", "--baseline", "same.lmc.json")
    assert code == 0 and not any("note:" in line for line in err), err


def test_a_report_of_an_earlier_lmc_without_a_program_path_still_loads(ws, lmc, server):
    lmc.eval("cand.lmp", "--report", "r.json")
    doc = json.loads(Path("r.json").read_text())
    assert doc["program"]["path"] == "cand.lmp"
    del doc["program"]["path"]
    Path("old.json").write_text(json.dumps(doc))
    code, _, err = lmc.eval("cand.lmp", "--baseline", "old.json")  # same source sha256: the same program
    assert code == 0, err


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda t: t[: len(t) // 2], "base.json:"),
        (lambda t: t.replace('"score": 1.0', '"score": 1.5', 1), "examples[0] (id 'ex-01').score: expected a number between 0 and 1, got 1.5"),
        (lambda t: t.replace('"n_total": 40', '"n_total": 41'), "examples: 40 examples but data.n_total is 41"),
        (lambda t: t.replace('"format": "lmc-report/1"', '"format": "lmc-report/9"'), "'lmc-report/9' is not supported"),
    ],
)
def test_corrupt_baseline_report_is_refused(ws, lmc, server, base_report, mutate, fragment):
    Path(base_report).write_text(mutate(Path(base_report).read_text()))
    assert_refused(lmc.eval("cand.lmp", "--baseline", base_report), fragment)
    assert server.requests == 0


def test_baseline_report_missing_candidate_ids_is_refused(ws, lmc, server):
    lmc.eval("main/cand.lmp", "--shard", "1/3", "--report", "base-1.json")
    missing = N - Report.load("base-1.json").summary.n
    server.reset_counters()
    assert_refused(lmc.eval("cand.lmp", "--baseline", "base-1.json"), f"baseline report has no result for {missing} candidate example(s): 'ex-")
    assert server.requests == 0


@pytest.mark.parametrize(
    "target, args, fragment",
    [
        ("missing.lmp", [], "missing.lmp: no such file"),
        ("broken.lmp", [], "broken.lmp: the target does not compile (1 error above)"),
        ("no_metric.lmp", [], "no_metric.lmp: the program defines no metric"),
        ("two_metrics.lmp", [], "the program defines several metrics (acc, em); choose one with --metric NAME"),
        ("two_metrics.lmp", ["--metric", "acx"], "unknown metric 'acx'; did you mean 'acc'? defined: acc, em"),
        ("cand.lmp", ["--baseline", "nowhere.json"], "nowhere.json: no such file"),
        ("cand.lmp", ["--baseline", "dev.jsonl"], "dev.jsonl: --baseline expects a program (.lmp), an artifact"),
    ],
)
def test_bad_targets_and_metrics(ws, lmc, server, target, args, fragment):
    assert_refused(lmc.eval(target, *args), fragment)
    assert server.requests == 0


def test_two_metrics_with_metric_flag_works(ws, lmc, server):
    code, _, err = lmc.eval("two_metrics.lmp", "--metric", "em", "--report", "em.json")
    assert code == 0 and Report.load("em.json").metric.spec == "exact_match(sentiment)"


def test_an_artifact_is_scored_as_it_was_compiled(ws, lmc, server):
    """No --metric/--threshold: the metric and threshold recorded at compile time, said in a note; flags win."""
    t = load_target("two_metrics.lmp")
    write(
        Artifact(
            ir=t.ir,
            program={"name": t.name, "path": "two_metrics.lmp", "source": t.source, "sha256": t.sha256},
            compile={"metric": {"name": "em", "spec": "exact_match(sentiment)", "threshold": 0.5}},
            lm=None,
        ),
        "two.lmc.json",
    )
    code, _, err = lmc.eval("two.lmc.json", "--report", "r.json")
    assert code == 0, err
    rep = Report.load("r.json")
    assert (rep.metric.name, rep.metric.threshold) == ("em", 0.5)
    assert any("metric 'em': the one two.lmc.json was compiled with" in line for line in err)
    assert any("threshold 0.5: the one two.lmc.json was compiled with" in line for line in err)
    code, _, err = lmc.eval("two.lmc.json", "--metric", "acc", "--threshold", "1", "--report", "r2.json")
    assert code == 0 and (Report.load("r2.json").metric.name, Report.load("r2.json").metric.threshold) == ("acc", 1.0)
    assert not any("compiled with" in line for line in err)


def test_data_that_does_not_fit_the_program_is_refused(ws, lmc, server):
    Path("bad.jsonl").write_text('{"id": "a", "review": "fine", "sentiment": "positive"}\n{"id": "b", "text": "x", "sentiment": "negative"}\n')
    assert_refused(lmc.eval("cand.lmp", data="bad.jsonl"), "bad.jsonl:2: missing input field 'review'")
    Path("nolabel.jsonl").write_text('{"id": "a", "review": "fine"}\n')
    assert_refused(lmc.eval("cand.lmp", data="nolabel.jsonl"), "nolabel.jsonl:1: missing label 'sentiment'")
    assert server.requests == 0


def test_report_given_as_target_is_refused(ws, lmc, server, base_report):
    assert_refused(lmc.eval(base_report), "base.json: is an evaluation report")


def test_merge_refusals(ws, lmc, server, base_report):
    for i in (1, 2, 3):
        lmc.eval("cand.lmp", "--shard", f"{i}/3", "--report", f"part-{i}.json")
    make_artifact("main/cand.lmp", "base.lmc.json")
    assert_refused(lmc.merge("part-1.json", "part-2.json", "-o", "all.json"), "missing shard(s) 3/3")
    assert_refused(lmc.merge("part-1.json", "part-1.json", "part-2.json"), "shard 1/3 is given twice")
    assert_refused(lmc.merge("part-1.json", "part-2.json", "part-3.json", base_report), "base.json: is not a shard report")
    assert_refused(lmc.merge("part-1.json", "part-2.json", "part-3.json", "--baseline", "base.lmc.json"), "--baseline must be a report")
    assert_refused(lmc.merge("part-1.json", "part-2.json", "part-3.json", "--max-drop", "0.1"), "--max-drop needs --baseline")
    assert not Path("all.json").exists()


def test_empty_shard(ws, lmc, server):
    from lmc.gate import in_shard

    count = 60  # more shards than examples: some hold none
    empty = next(i for i in range(1, count + 1) if not any(in_shard(f"ex-{k:02d}", i, count) for k in range(1, N + 1)))
    code, out, err = lmc.eval("cand.lmp", "--shard", f"{empty}/{count}", "--report", "empty.json", "--format", "json")
    assert code == 0 and json.loads(out)["verdict"] == "pass"
    assert err[-1] == f"PASS: shard {empty}/{count} holds no examples of dev.jsonl; nothing to gate"
    assert Report.load("empty.json").summary.n == 0
    assert_refused(lmc.eval("cand.lmp", "--shard", f"{empty}/{count}", "--min-score", "0.5"), "nothing to gate")
    assert server.requests == 0


def test_missing_data_file_is_refused(ws, lmc, server):
    assert_refused(lmc.eval("cand.lmp", data="nope.jsonl"), "nope.jsonl: file not found")


def test_corrupt_baseline_artifact_is_refused(ws, lmc, server):
    make_artifact("main/cand.lmp", "base.lmc.json")
    text = Path("base.lmc.json").read_text()
    Path("base.lmc.json").write_text(text.replace("Classify the sentiment", "Classify the mood"))
    code, out, err = lmc.eval("cand.lmp", "--baseline", "base.lmc.json", "--format", "json")
    assert_refused((code, out, err), "base.lmc.json:")
    assert json.loads(out)["exit_code"] == 2
    assert server.requests == 0
