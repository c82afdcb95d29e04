"""Metrics that explain: built-in feedback, `(score, feedback)` from python and .lmp metrics, a judge's reason,
and the feedback in eval reports (JSON, read back by the gate, and the HTML table)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from lmc.check import check_source
from lmc.datasets import from_records
from lmc.errors import CompileErrors
from lmc.fmt import format_source
from lmc.lm import LMClient, parse_lm
from lmc.lower import lower
from lmc.metrics import explain, split_feedback
from lmc.runtime import Runtime
from lmc.scoring import evaluate
from tests.fakelm import FakeLM
from tests.lmserver import LoopbackServer
from tests.test_optimize import SENTIMENT, last_user, tag

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "name, gold, pred, score, expected",
    [
        ("accuracy", "positive", "negative", 0.0, 'wrong: expected "positive", got "negative"'),
        ("accuracy", "positive", "positive", 1.0, 'correct: "positive"'),
        ("exact_match", "Paris", "Lyon", 0.0, 'wrong: expected "Paris", got "Lyon" (compared ignoring case, punctuation and articles)'),
        (
            "f1",
            "Marie Curie",
            "Curie Pierre",
            0.5,
            'partly right (token F1 0.50): expected "Marie Curie", got "Curie Pierre"; missing words: marie; extra words: pierre',
        ),
        ("numeric", 12, "twelve", 0.0, 'wrong: expected 12, got "twelve" (not a number)'),
        ("numeric", 12, "about 15", 0.0, 'wrong: expected 12, got "about 15" (read as 15)'),
        ("contains", "Danube", "the Rhine", 0.0, 'wrong: the answer "the Rhine" does not contain "Danube"'),
        ("accuracy", "positive", None, 0.0, 'no answer; expected "positive"'),
    ],
)
def test_builtin_metrics_say_what_was_expected_and_what_came(name, gold, pred, score, expected):
    assert explain(name, gold, pred, score) == expected


def test_a_pair_is_a_score_with_feedback_and_anything_else_a_score_alone():
    assert split_feedback((0.5, " close ")) == (0.5, "close")
    assert split_feedback((1.0, "")) == (1.0, None)
    assert split_feedback(0.25) == (0.25, None)
    assert split_feedback([0.5, "x"]) == ([0.5, "x"], None)  # a list is no pair: to_score refuses it, named


def score_all(source: str, script, records: list[dict], tmp_path: Path | None = None):
    ir = lower(check_source(source, str(tmp_path / "p.lmp") if tmp_path else "p.lmp"))
    client = LMClient(cache_dir=None, backend=FakeLM(script))
    rt = Runtime(ir, client, lm=parse_lm("openai/test"), base_dir=str(tmp_path or ROOT))
    if tmp_path is not None:
        from lmc.pyrefs import PythonPolicy

        rt.python = PythonPolicy(str(tmp_path / "p.lmp"), "program", str(tmp_path), True)
    return asyncio.run(evaluate(rt, list(from_records(records, path="d.jsonl")), ir.metrics[0]))


def answer_lm(spec, req):
    review = tag(last_user(req), "review") or ""
    return "<sentiment>negative</sentiment>" if "bad" in review else "<sentiment>positive</sentiment>"


DATA = [{"id": "a", "review": "good", "sentiment": "positive"}, {"id": "b", "review": "bad", "sentiment": "positive"}]


def test_a_builtin_metric_explains_each_outcome():
    outs = score_all(SENTIMENT, answer_lm, DATA)
    assert [o.feedback for o in outs] == ['correct: "positive"', 'wrong: expected "positive", got "negative"']


def test_an_lmp_metric_returns_a_score_with_feedback():
    src = SENTIMENT.replace(
        "metric acc = accuracy(sentiment)",
        """
metric acc(example, pred) {
  if pred.sentiment == example.sentiment {
    return 1.0
  }
  return 0.0, f"said {pred.sentiment} but the review is {example.sentiment}"
}""",
    )
    outs = score_all(src, answer_lm, DATA)
    assert [(o.score, o.feedback) for o in outs] == [(1.0, None), (0.0, "said negative but the review is positive")]
    # the formatter keeps the pair
    assert 'return 0.0, f"said {pred.sentiment} but the review is {example.sentiment}"' in format_source(src, "p.lmp")


@pytest.mark.parametrize(
    "body, expected",
    [
        (
            'program main(review: str) -> (sentiment: "positive" | "negative") {\n  return classify(review=review), "x"\n}',
            "only a metric returns feedback",
        ),
        ("metric m(example, pred) {\n  return 1.0, 3\n}", "a metric's feedback is text, got int"),
    ],
)
def test_feedback_where_it_does_not_belong_is_a_check_error(body, expected):
    src = (
        SENTIMENT.replace('program main(review: str) -> (sentiment: "positive" | "negative") {\n  return classify(review=review)\n}', body)
        if body.startswith("program")
        else SENTIMENT.replace("metric acc = accuracy(sentiment)", body)
    )
    with pytest.raises(CompileErrors) as e:
        check_source(src, "p.lmp")
    assert expected in str(e.value)


def test_a_python_metric_may_return_score_and_feedback(tmp_path):
    (tmp_path / "mymetric.py").write_text(
        "def judge(example, pred):\n"
        "    ok = example['sentiment'] == pred['sentiment']\n"
        "    return (1.0, None) if ok else (0.0, 'the review is ' + example['sentiment'])\n"
    )
    src = SENTIMENT.replace("metric acc = accuracy(sentiment)", 'metric acc = python("mymetric:judge")')
    outs = score_all(src, answer_lm, DATA, tmp_path)
    assert [(o.score, o.feedback) for o in outs] == [(1.0, None), (0.0, "the review is positive")]


JUDGED = SENTIMENT.replace(
    "metric acc = accuracy(sentiment)",
    """
signature Judge(review: str, predicted: str -> verdict: "yes" | "no")
  "Is the predicted sentiment right for the review?"
module judge = ChainOfThought(Judge)
metric judged(example, pred) {
  v = judge(review=example.review, predicted=pred.sentiment)
  if v.verdict == "yes" {
    return 1.0
  }
  return 0.0
}""",
)


def judged_lm(spec, req):
    user = last_user(req)
    if "<predicted>" in user:
        ok = "bad" not in (tag(user, "review") or "")
        why = "the review is upbeat" if ok else "a bad review is not positive"
        return f"<reasoning>{why}</reasoning><verdict>{'yes' if ok else 'no'}</verdict>"
    return "<sentiment>positive</sentiment>"


def test_a_judged_metric_is_explained_by_what_its_judge_answered():
    outs = score_all(JUDGED, judged_lm, DATA)
    assert [o.score for o in outs] == [1.0, 0.0]
    assert outs[1].feedback == "judge said reasoning: a bad review is not positive; verdict: no"


# ---------------------------------------------------------------- eval reports


def responder(request: dict) -> str:
    review = tag(str(request["messages"][-1]["content"]), "review") or ""
    return "<sentiment>negative</sentiment>" if "bad" in review else "<sentiment>positive</sentiment>"


def test_eval_reports_keep_the_feedback_and_the_gate_reads_it_back(tmp_path, monkeypatch, capsys):
    from lmc.cli import main
    from lmc.gate import Report

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    (tmp_path / "s.lmp").write_text(SENTIMENT)
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in DATA))
    with LoopbackServer(responder) as srv:
        code = main(
            [
                "eval",
                "s.lmp",
                "--data",
                "d.jsonl",
                "--lm",
                "openai/test",
                "--api-base",
                srv.url,
                "--report",
                "r.json",
                "--html",
                "r.html",
                "--no-cache",
            ]
        )
    err = capsys.readouterr().err
    assert code == 1 or code == 0, err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [e.get("feedback") for e in doc["examples"]] == ['correct: "positive"', 'wrong: expected "positive", got "negative"']
    back = Report.from_json(doc)
    assert [e.feedback for e in back.examples] == [e["feedback"] for e in doc["examples"]]
    assert back.to_json() == doc if hasattr(back, "to_json") else True
    html = (tmp_path / "r.html").read_text()
    assert "metric feedback" in html and "wrong: expected &quot;positive&quot;, got &quot;negative&quot;" in html


def test_feedback_survives_the_artifact_and_programs_without_it_keep_their_ir():
    from lmc import ir as I

    src = SENTIMENT.replace("metric acc = accuracy(sentiment)", 'metric acc(example, pred) {\n  return 0.0, "never right"\n}')
    ir = lower(check_source(src, "p.lmp"))
    assert I.from_json(json.loads(json.dumps(I.to_json(ir)))) == ir
    assert '"feedback"' in json.dumps(I.to_json(ir))
    assert '"feedback"' not in json.dumps(I.to_json(lower(check_source(SENTIMENT, "p.lmp"))))
