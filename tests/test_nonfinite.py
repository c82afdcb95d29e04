"""Valid JSON only: NaN and infinity fail the example where they arise, and no file lmc writes holds a bare token."""

from __future__ import annotations

import json

import pytest

from tests.lmserver import LoopbackServer


def strict(text: str):
    def refuse(token):
        raise AssertionError(f"bare {token} in lmc's JSON")

    return json.loads(text, parse_constant=refuse)


def replies(request: dict) -> str:
    """A float output answered as 1e999 for reviews mentioning 'huge', a sane number otherwise."""
    text = json.dumps(request.get("messages"))
    return "<score>1e999</score>" if "huge" in text else "<score>0.5</score>"


@pytest.fixture(scope="module")
def server():
    with LoopbackServer(replies) as srv:
        yield srv


PROGRAM = """signature Rate {
  "Rate the review from 0 to 1."
  review: str
  -> score: float
}

module rate = Predict(Rate)
tool weird(x: str) -> float = python("lmc_test_weird_tool:weird")

program main(review: str, mode: str) -> (score: float) {
  if mode == "nan" {
    return {"score": float("nan")}
  }
  if mode == "overflow" {
    big = float("1e308")
    return {"score": big * 10.0}
  }
  if mode == "tool" {
    return {"score": weird(review)}
  }
  if mode == "json" {
    return {"score": rate(review=review).score}
  }
  return rate(review=review)
}

metric close(example, pred) {
  return 1.0 - (pred.score - example.score) * (pred.score - example.score)
}
"""

ROWS = [
    {"id": "ok", "review": "fine", "mode": "lm", "score": 0.5},
    {"id": "nan", "review": "x", "mode": "nan", "score": 0.5},
    {"id": "overflow", "review": "x", "mode": "overflow", "score": 0.5},
    {"id": "tool", "review": "x", "mode": "tool", "score": 0.5},
    {"id": "huge", "review": "a huge review", "mode": "lm", "score": 0.5},
]


@pytest.fixture
def ws(tmp_path, monkeypatch, server):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("LMC_LM", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    (tmp_path / "lmc_test_weird_tool.py").write_text("def weird(x):\n    return float('inf')\n")
    (tmp_path / "p.lmp").write_text(PROGRAM)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return tmp_path


@pytest.fixture
def lmc(capsys, server):
    def run(*args):
        from lmc.cli import main

        code = main([*map(str, args), "--lm", "openai/test", "--api-base", server.url, "--no-cache"])
        cap = capsys.readouterr()
        assert "Traceback" not in cap.err and "internal error" not in cap.err, cap.err
        return code, cap.out, cap.err

    return run


def test_run_fails_each_non_finite_example_with_its_reason(ws, lmc):
    code, _, err = lmc("run", "p.lmp", "--data", "in.jsonl", "--out", "out.jsonl", "--trace", "trace.jsonl")
    assert code == 1, err
    rows = {r["id"]: r for r in map(strict, (ws / "out.jsonl").read_text().splitlines())}
    assert rows["ok"]["outputs"] == {"score": 0.5} and rows["ok"]["error"] is None
    assert "float() gives nan, not a finite number (line 12)" in rows["nan"]["error"]
    assert "'*' of 1e+308 and 10.0 gives inf, not a finite number (line 16)" in rows["overflow"]["error"]
    assert "tool 'weird' returned a value that is not a finite number" in rows["tool"]["error"]
    assert "(line 19)" in rows["tool"]["error"]
    assert "expected a finite number" in rows["huge"]["error"] and rows["huge"]["error_kind"] == "parse"
    for line in (ws / "trace.jsonl").read_text().splitlines():
        strict(line)
    # The rerun reads its own file back: every line is lmc's, nothing is re-run.
    code, _, err = lmc("run", "p.lmp", "--data", "in.jsonl", "--out", "out.jsonl")
    assert code == 1 and "5 already done" in err


def test_eval_report_is_valid_json_and_serves_as_a_baseline(ws, lmc):
    code, _, err = lmc("eval", "p.lmp", "--data", "in.jsonl", "--report", "r.json", "--junit", "r.xml")
    assert code == 0, err
    doc = strict((ws / "r.json").read_text())
    errors = {e["id"]: e["error"] for e in doc["examples"] if e["error"]}
    assert set(errors) == {"nan", "overflow", "tool", "huge"}
    code, _, err = lmc("eval", "p.lmp", "--data", "in.jsonl", "--baseline", "r.json", "--format", "json")
    assert code == 0, err


def test_a_metric_giving_nan_fails_that_example(ws, lmc):
    (ws / "p.lmp").write_text(PROGRAM.replace("return 1.0 - (pred.score - example.score) * (pred.score - example.score)", 'return float("nan")'))
    code, _, err = lmc("eval", "p.lmp", "--data", "in.jsonl", "--report", "r.json")
    doc = strict((ws / "r.json").read_text())
    ok = [e for e in doc["examples"] if e["id"] == "ok"][0]
    assert ok["score"] is None and "float() gives nan" in ok["error"], ok


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_non_finite_input_is_refused(ws, lmc, value):
    code, _, err = lmc("run", "p.lmp", "--input", f'{{"review": "x", "mode": {value}}}')
    refused = "overflows to infinity; write a smaller number" if value == "1e999" else "is not valid JSON; write null or a string"
    assert code == 2 and f"--input: {value} {refused}" in err, err
    code, out, err = lmc("run", "p.lmp", "-i", "review=x", "-i", f"mode={value}")  # a str field keeps the text
    assert code == 0 and json.loads(out) == {"score": 0.5}, err


def test_json_outputs_refuse_non_finite_values(ws):
    from lmc.errors import OutputParseError
    from lmc.types import Type, coerce

    with pytest.raises(OutputParseError):
        coerce('{"a": NaN}', Type("json"))
    with pytest.raises(OutputParseError):
        coerce("1e999", Type("float"))
    with pytest.raises(OutputParseError):
        coerce("[1, Infinity]", Type("list", (Type("float"),)))
    assert Type("float").check(float("nan"))
    assert coerce("2.5", Type("float")) == 2.5
