"""HTML reports end to end: `lmc eval --html`, `lmc compile --html`, `lmc report html`, rendered in headless Chromium.

The DOM after the page's scripts ran and a screenshot come from a real browser
(tests/browser.py); where Chromium is missing those tests skip with the reason,
and the checks on the file itself still run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import shutil
from pathlib import Path

import pytest

from lmc.artifact import read
from lmc.cli import main
from lmc.gate import Report
from tests import browser
from tests.lmserver import LoopbackServer

FIX = Path(__file__).resolve().parent / "fixtures" / "eval"
HOSTILE = '[05] <script>document.title="pwned"</script><img src=x onerror="document.title=\'img\'"> & "quoted"'
needs_browser = pytest.mark.skipif(browser.CHROMIUM is None, reason=browser.SKIP_REASON)


class Oracle:
    """Answers the sentiment prompt from the gold label of the `[NN]` in the last message.

    `wrong[variant]` lists example numbers answered wrongly (variant: "cand" when the prompt says
    "Decide whether", else "base"); with `noisy` set, a prompt with fewer demos errs more often, so
    the candidates of a search score differently.
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
        self.noisy = False

    def __call__(self, request: dict) -> str:
        messages = request["messages"]
        # The query is the last user turn naming an example (a repair turn after a bad reply names none).
        num = next(m[0] for m in (re.findall(r"\[(\d\d)\]", str(x["content"])) for x in reversed(messages) if x["role"] == "user") if m)
        variant = "cand" if "Decide whether" in str(messages[0]["content"]) else "base"
        if num in self.garbage[variant]:
            return "<sentiment>neutral <b>bold</b></sentiment>"
        answer = self.gold[num]
        demos = (len(messages) - 2) // 2
        flip = num in self.wrong[variant] or (self.noisy and random.Random(f"{num}:{demos}").random() < 0.4 - 0.08 * demos)
        if flip:
            answer = "negative" if answer == "positive" else "positive"
        return f"<sentiment>{answer}</sentiment>"


@pytest.fixture(scope="module")
def server():
    oracle = Oracle()
    with LoopbackServer(oracle) as srv:
        srv.oracle = oracle
        yield srv


@pytest.fixture
def ws(tmp_path, monkeypatch, server):
    """The eval fixtures in a fresh directory, example 05's review replaced by hostile HTML."""
    for f in FIX.iterdir():
        shutil.copy(f, tmp_path / f.name)
    lines = (tmp_path / "dev.jsonl").read_text().splitlines()
    rec = json.loads(lines[4])
    rec["review"] = HOSTILE
    lines[4] = json.dumps(rec)
    (tmp_path / "dev.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LMC_LM", raising=False)
    server.oracle.reset()
    return tmp_path


@pytest.fixture
def lmc(capsys, server):
    def run(*args: str, lm: bool = True):
        argv = list(args) + (["--lm", "openai/test", "--api-base", server.url, "--cache-dir", "cache"] if lm else [])
        capsys.readouterr()
        code = main(argv)
        out, err = capsys.readouterr()
        assert "Traceback" not in err and "internal error" not in err, err
        return code, out, err.strip().splitlines()

    return run


def _nums(*values: int) -> set[str]:
    return {f"{v:02d}" for v in values}


@pytest.fixture
def eval_page(ws, lmc, server):
    """cand.lmp against a baseline report: 5 regressions (one a parse error), 1 improvement; the page and reports."""
    server.oracle.wrong = {"cand": _nums(3, 5, 6, 7), "base": _nums(3, 4)}
    server.oracle.garbage = {"cand": _nums(8), "base": set()}
    code, _, err = lmc("eval", "base.lmp", "--data", "dev.jsonl", "--report", "base.json")
    assert code == 0, err
    code, _, err = lmc(
        "eval",
        "cand.lmp",
        "--data",
        "dev.jsonl",
        "--baseline",
        "base.json",
        "--report",
        "cand.json",
        "--html",
        "eval.html",
        "--allow-different-program",
    )
    assert "wrote eval.html" in err, err
    return ws / "eval.html"


# ---------------------------------------------------------------- the file itself (no browser needed)


def test_eval_page_is_one_self_contained_file(eval_page):
    text = eval_page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text, re.I)
    assert "<link" not in text and "@import" not in text and "url(" not in text
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', text).group(1).replace("&#x27;", "'")
    assert "default-src 'none'" in csp
    script = re.search(r"<script>(.*?)</script>", text, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp
    # Exactly one script element, ours; the hostile review is text.
    assert text.count("<script") == 1 and "<img" not in text
    assert "&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;" in text


def test_eval_page_without_javascript_is_a_complete_table(eval_page):
    dom = browser.parse(eval_page.read_text(encoding="utf-8"))
    rows = dom.find("table", id="examples").find("tbody").find_all("tr")
    assert len(rows) == 40 and not any("hidden" in r.attrs for r in rows)
    assert "hidden" in dom.find("div", id="example-controls").attrs  # filter controls appear only with JS


# ---------------------------------------------------------------- in the browser


@needs_browser
def test_eval_page_in_chromium(eval_page):
    rep = Report.load(eval_page.parent / "cand.json")
    dom = browser.parse(browser.dump_dom(eval_page))
    assert dom.find("title").text() == "lmc eval sentiment: pass"  # the hostile review did not retitle the page
    assert len(dom.find_all("script")) == 1 and not dom.find_all("img")
    table = dom.find("table", id="examples")
    rows = table.find("tbody").find_all("tr")
    assert [r.attrs["id"] for r in rows] == [f"ex-{i}" for i in range(1, 41)]
    assert HOSTILE in rows[4].text()
    assert dom.find("span", id="filter-count").text() == "40 of 40 shown"
    assert "hidden" not in dom.find("div", id="example-controls").attrs
    # Status per row, flips marked, the parse error shown with its kind.
    by_id = {r.find_all("td")[1].text(): r for r in rows}
    assert by_id["ex-05"].attrs["data-status"] == "fail regressed"
    assert by_id["ex-04"].attrs["data-status"] == "pass improved"
    assert by_id["ex-08"].attrs["data-status"] == "error regressed" and "parse" in by_id["ex-08"].text()
    # The paired comparison lists both directions, linking to the rows.
    paired = dom.find("section", id="paired")
    links = [a.attrs["href"] for a in paired.find_all("a")]
    assert links == ["#ex-5", "#ex-6", "#ex-7", "#ex-8", "#ex-4"]
    assert "p = " in paired.text() and "Verdict:" in paired.text()
    # Confusion matrix: counts from the report itself.
    cm = dom.find("section", id="confusion").find("table", class_="cm")
    body = cm.find("tbody").find_all("tr")
    counts = {}
    for e in rep.examples:
        pred = (e.prediction or {}).get("sentiment")
        key = (e.gold["sentiment"], pred if pred in ("positive", "negative") else "(no answer)")
        counts[key] = counts.get(key, 0) + 1
    head = [th.text() for th in cm.find("thead").find_all("th")]
    for row in body[:2]:
        label = row.find("th").text()
        cells = [td.text() for td in row.find_all("td")]
        for col, value in zip(head[1:], cells):
            if col in ("positive", "negative", "(no answer)"):
                assert int(value) == counts.get((label, col), 0), (label, col)
    svgs = dom.find_all("svg")
    assert len(svgs) >= 2 and all(s.find("title").text() for s in svgs)


@needs_browser
def test_filter_and_sort_state_lives_in_the_url(eval_page):
    dom = browser.parse(browser.dump_dom(eval_page, "status=regressed&sort=line&dir=desc"))
    rows = dom.find("table", id="examples").find("tbody").find_all("tr")
    shown = [r.find_all("td")[1].text() for r in rows if "hidden" not in r.attrs]
    assert shown == ["ex-08", "ex-07", "ex-06", "ex-05"]
    assert [r.attrs["id"] for r in rows][:3] == ["ex-40", "ex-39", "ex-38"]
    assert dom.find("span", id="filter-count").text() == "4 of 40 shown"
    line_th = dom.find("table", id="examples").find("th", data_key="line")
    assert line_th.attrs.get("aria-sort") == "descending"
    # Free text matches any column, case-insensitively; sorting by score puts errors (no score) last.
    dom = browser.parse(browser.dump_dom(eval_page, "q=STAFF&sort=score&dir=asc"))
    rows = [r for r in dom.find("table", id="examples").find("tbody").find_all("tr") if "hidden" not in r.attrs]
    assert rows and all("staff" in r.text().lower() for r in rows)
    scores = [r.find_all("td")[5].attrs.get("data-sort") for r in rows]
    assert [float(s) for s in scores if s] == sorted(float(s) for s in scores if s)
    # A plain anchor is not taken for filter state.
    dom = browser.parse(browser.dump_dom(eval_page, "ex-7"))
    assert dom.find("span", id="filter-count").text() == "40 of 40 shown"


@needs_browser
def test_eval_page_screenshot_is_readable(eval_page, tmp_path):
    shot = browser.screenshot(eval_page, tmp_path / "eval.png")
    width, height, _ = browser.png_pixels(shot)
    assert (width, height) == (1280, 2000)
    assert 0.02 < browser.ink(shot) < 0.6
    # With JavaScript off the page is still complete: every row shown, no filter controls.
    nojs = browser.without_scripts(eval_page, eval_page.parent / "nojs.html")
    dom = browser.parse(browser.dump_dom(nojs))
    rows = dom.find("table", id="examples").find("tbody").find_all("tr")
    assert len(rows) == 40 and not any("hidden" in r.attrs for r in rows)
    assert "hidden" in dom.find("div", id="example-controls").attrs
    plain = browser.screenshot(nojs, tmp_path / "nojs.png")
    assert 0.02 < browser.ink(plain) < 0.6


# ---------------------------------------------------------------- lmc report html


def test_report_html_from_reports(eval_page, lmc):
    ws = eval_page.parent
    code, _, err = lmc("report", "html", "cand.json", "--baseline", "base.json", "-o", "again.html", "--allow-different-program", lm=False)
    assert code == 0 and err[-1] == "wrote again.html", err
    text = (ws / "again.html").read_text()
    assert 'id="paired"' in text and 'id="confusion"' in text  # the target cand.lmp is still there: labels known
    assert "review</span>" in text  # inputs found through the report's dataset path
    # A dataset edited since: inputs are left out and the page says why.
    (ws / "dev.jsonl").write_text((ws / "dev.jsonl").read_text().replace("Loved", "Liked"))
    code, _, err = lmc("report", "html", "cand.json", "-o", "stale.html", lm=False)
    assert code == 0 and any("changed since the evaluation" in line for line in err), err
    assert "Inputs are not shown" in (ws / "stale.html").read_text()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["missing.json", "-o", "x.html"], "missing.json: no such file"),
        (["cand.lmp", "-o", "x.html"], "expected an eval report"),
        (["cand.json", "--baseline", "base.json", "-o", "base.json"], "-o base.json is the --baseline; writing it would destroy an input"),
        (["cand.json", "--baseline", "cand.lmp", "-o", "x.html"], "--baseline must be an eval report"),
    ],
)
def test_report_html_refuses_bad_input(eval_page, lmc, args, fragment):
    code, _, err = lmc("report", "html", *args, lm=False)
    assert code == 2 and err[-1].startswith("error: ") and fragment in err[-1], err
    assert not (eval_page.parent / "x.html").exists()


# ---------------------------------------------------------------- compile pages


@pytest.fixture
def compiled(ws, lmc, server):
    server.oracle.noisy = True
    code, _, err = lmc(
        "compile",
        "cand.lmp",
        "--train",
        "dev.jsonl",
        "--optimizer",
        "random-search",
        "--candidates",
        "3",
        "-o",
        "build/s.lmc.json",
        "--html",
        "compile.html",
        "-j",
        "2",
    )
    assert code == 0 and "wrote compile.html" in err, err
    return ws


def test_compile_records_a_timeline_in_the_sidecar_only(compiled, lmc):
    art = read(compiled / "build/s.lmc.json")
    stats = json.loads((compiled / "build/s.stats.json").read_text())
    cands = art.compile["candidates"]
    assert [c["index"] for c in stats["timeline"]["candidates"]] == list(range(len(cands)))
    times = [c["t"] for c in stats["timeline"]["candidates"]]
    assert times == sorted(times) and len(stats["timeline"]["samples"]) >= 2
    assert stats["artifact_sha256"] == hashlib.sha256((compiled / "build/s.lmc.json").read_bytes()).hexdigest()
    assert "timeline" not in json.dumps(art.compile)
    # Wall-clock data stays out of the artifact: a second compile is byte-identical.
    first = (compiled / "build/s.lmc.json").read_bytes()
    code, _, err = lmc(
        "compile", "cand.lmp", "--train", "dev.jsonl", "--optimizer", "random-search", "--candidates", "3", "-o", "build/s.lmc.json", "-j", "2"
    )
    assert code == 0 and (compiled / "build/s.lmc.json").read_bytes() == first


@needs_browser
def test_compile_page_in_chromium(compiled, tmp_path):
    art = read(compiled / "build/s.lmc.json")
    cands = art.compile["candidates"]
    dom = browser.parse(browser.dump_dom(compiled / "compile.html"))
    assert dom.find("title").text() == "lmc compile sentiment"
    assert len(dom.find_all("script")) == 1 and not dom.find_all("img")
    section = dom.find("section", id="candidates")
    bars = section.find("svg").find_all("rect")
    assert len(bars) == len(cands) and sum("best" in b.attrs["class"] for b in bars) == 1
    rows = section.find("table").find("tbody").find_all("tr")
    assert [r.find_all("td")[1].text() for r in rows] == [c["name"] for c in cands]
    assert len(section.find_all("svg")) == 2  # scores in order, and over time
    spend = dom.find("section", id="spend")
    assert len(spend.find_all("svg")) == 3  # calls over time, tokens over time, requests per predictor
    pred = dom.find("section", id="predictors")
    demos = art.ir.predictors[0].demos
    demo_rows = pred.find("table").find("tbody").find_all("tr") if demos else []
    assert len(demo_rows) == len(demos)
    diff = dom.find("section", id="diff").text()
    assert (f"demos 0 → {len(demos)}" in diff) if demos else "is the program as written" in diff
    shot = browser.screenshot(compiled / "compile.html", tmp_path / "compile.png", height=2400)
    assert 0.02 < browser.ink(shot) < 0.6


def test_report_html_of_an_artifact_and_its_sidecar(compiled, lmc):
    code, _, err = lmc("report", "html", "build/s.lmc.json", "-o", "c2.html", lm=False)
    assert code == 0 and err == ["wrote c2.html"], err
    text = (compiled / "c2.html").read_text()
    assert "LM calls over the compile" in text and "Candidate dev scores over" in text
    # A sidecar from another compile of the same path is not drawn against this artifact.
    stats = json.loads((compiled / "build/s.stats.json").read_text())
    stats["artifact_sha256"] = "0" * 64
    (compiled / "build/s.stats.json").write_text(json.dumps(stats))
    code, _, err = lmc("report", "html", "build/s.lmc.json", "-o", "c3.html", lm=False)
    assert code == 0 and any("belongs to another compile" in line for line in err), err
    assert "LM calls over the compile" not in (compiled / "c3.html").read_text()
    (compiled / "build/s.stats.json").unlink()
    code, _, err = lmc("report", "html", "build/s.lmc.json", "-o", "c4.html", lm=False)
    assert code == 0 and any("no stats sidecar" in line for line in err), err
    # The eval report with --artifact gets the compile sections too.
    code, _, err = lmc("eval", "build/s.lmc.json", "--data", "dev.jsonl", "--report", "r.json")
    code, _, err = lmc("report", "html", "r.json", "--artifact", "build/s.lmc.json", "-o", "both.html", lm=False)
    assert code == 0, err
    both = (compiled / "both.html").read_text()
    assert 'id="examples"' in both and 'id="candidates"' in both and "How the artifact was compiled" in both


def test_compile_page_survives_a_malformed_compile_section(compiled):
    from dataclasses import replace

    from lmc.report_html import render_compile

    art = read(compiled / "build/s.lmc.json")
    junk = {
        "candidates": [{"name": "<script>x</script>", "dev": "high"}, 7, {"dev": float("nan")}],
        "scores": [1, 2],
        "optimizer": "bootstrap",
        "metric": {"threshold": "all"},
        "data": {"train": 3},
        "budget": None,
        "notes": ["<b>note</b>", 5],
        "lm_requests_by_predictor": {"x": "many"},
    }
    text = render_compile(replace(art, compile=junk), "s.lmc.json", ({"timeline": {"samples": [{"t": "x"}]}}, None))
    assert "&lt;script&gt;x&lt;/script&gt;" in text and "&lt;b&gt;note&lt;/b&gt;" in text
    assert text.count("<script") == 1


def test_merged_shards_get_a_page_too(ws, lmc):
    for i in (1, 2):
        code, _, err = lmc("eval", "cand.lmp", "--data", "dev.jsonl", "--shard", f"{i}/2", "--report", f"s{i}.json")
        assert code == 0, err
    code, _, err = lmc("report", "merge", "s1.json", "s2.json", "--html", "merged.html", lm=False)
    assert code == 0 and "wrote merged.html" in err, err
    dom = browser.parse((ws / "merged.html").read_text())
    rows = dom.find("table", id="examples").find("tbody").find_all("tr")
    assert len(rows) == 40 and "review" in rows[0].text()  # inputs found again through the report's data path
    assert dom.find("section", id="confusion")


def test_eval_page_names_a_significant_improvement():
    """A gain shows the improvement p-value; the drop test's p (near 1) would say nothing."""
    from lmc.gate import GateOptions, apply_gates
    from lmc.report_html import eval_view
    from tests.test_gate import make_report

    base = make_report([0.0] * 20 + [1.0] * 40)
    cand = make_report([1.0] * 18 + [0.0] * 2 + [1.0] * 40)
    verdict = apply_gates(cand, base, GateOptions(baseline="base.json"))
    anchors = {e.id: e.id for e in cand.examples}
    html = str(eval_view.paired(cand, base, verdict, anchors))
    assert "one-sided improvement p = 3.81e-06" in html and "Verdict: significant improvement." in html
    assert "improvement p-value (mcnemar-exact)" in html
    worse = str(eval_view.paired(base, cand, apply_gates(base, cand, GateOptions(baseline="b.json")), anchors))
    assert "one-sided p = 3.81e-06" in worse and "Verdict: regression." in worse
