"""Optimizer passes on the scripted FakeLM, with hand-checked demos, call counts and candidate lists."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from dataclasses import FrozenInstanceError, dataclass, field, replace

from lmc import optimize
from lmc.check import check_source
from lmc.datasets import from_records
from lmc.errors import LmcError
from lmc.interpreter import run_example
from lmc.lm import LMClient, parse_lm
from lmc.lower import lower
from lmc.optimize.lab import Candidate, Lab, PassInputs
from lmc.runtime import Runtime
from tests.fakelm import FakeLM, full_text
from tests.programs import SENTIMENT, TWO_STEP

ROOT = Path(__file__).resolve().parent.parent


COT = """
signature Solve(question: str -> answer: int)
  "Solve the problem."
module solve = ChainOfThought(Solve)
program main(question: str) -> (answer: int) {
  return solve(question=question)
}
metric em = exact_match(answer)
"""


# ---------------------------------------------------------------- helpers


def tag(text: str, name: str) -> str | None:
    m = re.search(rf"<{name}>\s*(.*?)\s*</{name}>", text, re.S)
    return m.group(1) if m else None


def last_user(req) -> str:
    return str(req.messages[-1]["content"])


def earlier(req) -> str:
    """Everything a request shows before its final user turn: instructions and demos."""
    return "\n".join(str(m["content"]) for m in req.messages[:-1])


def system(req) -> str:
    return str(req.messages[0]["content"])


def sentiment_lm(spec, req) -> str:
    """Right on plain reviews; wrong on 'MISLEAD'; right on 'FLAKY' only when sampling (temperature > 0)."""
    review = tag(last_user(req), "review") or ""
    right = "negative" if "bad" in review else "positive"
    wrong = "positive" if right == "negative" else "negative"
    if "MISLEAD" in review or ("FLAKY" in review and req.temperature == 0):
        return f"<sentiment>{wrong}</sentiment>"
    return f"<sentiment>{right}</sentiment>"


def reviews(spec: list[tuple[str, str, str]]) -> list[dict]:
    return [{"id": i, "review": r, "sentiment": s} for i, r, s in spec]


TRAIN = reviews(
    [
        ("t1", "a good film", "positive"),
        ("t2", "MISLEAD a bad plot", "negative"),
        ("t3", "bad acting", "negative"),
        ("t4", "good music", "positive"),
        ("t5", "FLAKY good ending", "positive"),
        ("t6", "a bad script", "negative"),
        ("t7", "good cast", "positive"),
        ("t8", "MISLEAD good sets", "positive"),
    ]
)
DEV = reviews([("d1", "good", "positive"), ("d2", "bad", "negative"), ("d3", "MISLEAD good", "positive"), ("d4", "bad day", "negative")])


@dataclass
class Bench:
    """A compile driver in miniature: the inputs every pass gets, and what the passes run so far returned."""

    inputs: PassInputs
    options: dict
    candidates: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    train_scores: dict = field(default_factory=dict)
    logged: list = field(default_factory=list)

    @property
    def trainset(self):
        return self.inputs.trainset

    @property
    def metric(self):
        return self.inputs.metric

    def make_runtime(self, ir):
        return self.inputs.lab.make_runtime(ir)

    async def score(self, ir, examples=None):
        return await self.inputs.lab.score(ir, examples)

    def record(self, name, ir, score):
        """An earlier pass's candidate, as the driver hands it to the next pass."""
        self.candidates.append(Candidate(name, ir, score))


def make_ctx(
    source: str, script, train: list[dict], dev: list[dict] | None = None, *, seed: int = 0, concurrency: int = 4, prompt_script=None, **options
) -> tuple[Bench, FakeLM, object]:
    fake = script if isinstance(script, FakeLM) else FakeLM(script)
    client = LMClient(cache_dir=None, backend=fake)
    spec = parse_lm("openai/test")
    ir = lower(check_source(source, "t.lmp"))

    def make(x):
        return Runtime(x, client, lm=spec, base_dir=str(ROOT))

    prompt_rt = None
    if prompt_script is not None:
        pclient = LMClient(cache_dir=None, backend=prompt_script, retry_wait=0.001, retry_max_wait=0.002)

        def prompt_rt(x):
            return Runtime(x, pclient, lm=spec, base_dir=str(ROOT))

    lab = Lab(make, list(from_records(dev or train, path="dev.jsonl")), ir.metrics[0], concurrency=concurrency, proposer=prompt_rt)
    bench = Bench(PassInputs(tuple(from_records(train, path="train.jsonl")), ir.metrics[0], lab, seed=seed, source=source), options)
    bench.inputs = replace(bench.inputs, log=bench.logged.append)
    return bench, fake, ir


def run_pass(name: str, ir, bench: Bench):
    """Run one pass as `lmc compile` does: earlier candidates in, its findings added to the bench."""

    async def go():
        result = await optimize.run_pass(name, ir, replace(bench.inputs, candidates=tuple(bench.candidates)), **bench.options)
        bench.candidates += result.candidates
        bench.notes += result.notes
        for k, v in result.train_scores.items():
            bench.train_scores.setdefault(k, v)
        return result.ir

    return go()


def run(coro):
    return asyncio.run(coro)


def demo_ids(ir, pid: str | None = None) -> list[str]:
    p = ir.predictor(pid) if pid else ir.predictors[0]
    return [d["_id"] for d in p.demos]


# ---------------------------------------------------------------- labeled


def test_labeled_picks_k_demos_in_the_seeded_order():
    import random

    ctx, fake, ir = make_ctx(SENTIMENT, sentiment_lm, TRAIN, max_labeled=3, seed=7)
    out = run(run_pass("labeled", ir, ctx))
    order = list(TRAIN)
    random.Random("7:labeled").shuffle(order)
    # Taken in the seeded order until there are k with ceil(k/2) of each class, then classes alternate
    # (positive first, the type's order), so a small model does not copy a majority label.
    taken = []
    for r in order:
        counts = {c: sum(1 for t in taken if t["sentiment"] == c) for c in ("positive", "negative")}
        if len(taken) >= 3 and all(n >= 2 for n in counts.values()):
            break
        taken.append(r)
    pos = [r["id"] for r in taken if r["sentiment"] == "positive"]
    neg = [r["id"] for r in taken if r["sentiment"] == "negative"]
    expected = [x for pair in zip(pos, neg) for x in pair][:3]
    if len(expected) < 3:
        expected += (pos[len(neg) :] + neg[len(pos) :])[: 3 - len(expected)]
    assert demo_ids(out) == expected
    assert [d["sentiment"] for d in out.predictors[0].demos][:2] == ["positive", "negative"]
    first = out.predictors[0].demos[0]
    src = next(r for r in TRAIN if r["id"] == first["_id"])
    assert first["review"] == src["review"] and first["sentiment"] == src["sentiment"]
    assert fake.calls == []  # labeled demos cost no LM call
    # another seed, another (but still seeded) order
    ctx2, _, _ = make_ctx(SENTIMENT, sentiment_lm, TRAIN, max_labeled=3, seed=8)
    again = run(run_pass("labeled", ir, ctx2))
    assert len(demo_ids(again)) == 3 and demo_ids(again) != expected
    ctx3, _, _ = make_ctx(SENTIMENT, sentiment_lm, TRAIN, max_labeled=3, seed=7)
    assert demo_ids(run(run_pass("labeled", ir, ctx3))) == expected


def test_labeled_with_k_larger_than_the_trainset_takes_them_all():
    ctx, _, ir = make_ctx(SENTIMENT, sentiment_lm, TRAIN[:2], max_labeled=5)
    out = run(run_pass("labeled", ir, ctx))
    assert sorted(demo_ids(out)) == ["t1", "t2"]


def test_labeled_notes_predictors_the_dataset_cannot_fill():
    rows = [{"id": f"q{i}", "question": f"q{i}", "answer": "x"} for i in range(4)]
    ctx, _, ir = make_ctx(TWO_STEP, "unused", rows, max_labeled=2)
    out = run(run_pass("labeled", ir, ctx))
    assert demo_ids(out, "make_query") == []  # the dataset has no 'query' field
    assert len(demo_ids(out, "reply")) == 0  # nor the 'query' input of reply
    assert any("make_query" in n for n in ctx.notes)


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_keeps_exactly_the_passing_traces():
    ctx, fake, ir = make_ctx(SENTIMENT, sentiment_lm, TRAIN, max_demos=8, max_labeled=0)
    out = run(run_pass("bootstrap", ir, ctx))
    # t2 and t8 are answered wrongly, t5 too at temperature 0: none of them becomes a demo
    assert demo_ids(out) == ["t1", "t3", "t4", "t6", "t7"]
    for d in out.predictors[0].demos:
        assert d["sentiment"] == next(r["sentiment"] for r in TRAIN if r["id"] == d["_id"])
        assert set(d) == {"review", "sentiment", "_id"}
    assert len(fake.calls) == len(TRAIN)  # one teacher call per example, no retry in one round
    assert ctx.train_scores["teacher_pass_rate"] == round(5 / 8, 4)


def test_bootstrap_stops_once_every_predictor_has_max_demos():
    ctx, fake, ir = make_ctx(SENTIMENT, sentiment_lm, TRAIN, max_demos=2, max_labeled=0, concurrency=8)
    out = run(run_pass("bootstrap", ir, ctx))
    # batches ask only for what is missing: [t1, t2] gives one, then [t3] gives the second
    assert demo_ids(out) == ["t1", "t3"]
    assert [tag(last_user(r), "review") for r in fake.requests] == ["a good film", "MISLEAD a bad plot", "bad acting"]


def test_bootstrap_does_not_run_examples_of_a_class_it_already_has_enough_of():
    """With gold labels known, a passing trace would only repeat its label: full classes are skipped."""
    train = reviews(
        [
            ("p1", "good one", "positive"),
            ("p2", "good two", "positive"),
            ("p3", "good three", "positive"),
            ("p4", "good four", "positive"),
            ("n1", "bad one", "negative"),
            ("p5", "good five", "positive"),
            ("n2", "bad two", "negative"),
        ]
    )
    ctx, fake, ir = make_ctx(SENTIMENT, sentiment_lm, train, max_demos=2, max_labeled=0, concurrency=8)
    out = run(run_pass("bootstrap", ir, ctx))
    # [p1, p2] gives a positive (p2's pass is not needed); then only negatives are run: n1
    assert demo_ids(out) == ["p1", "n1"]
    assert [tag(last_user(r), "review") for r in fake.requests] == ["good one", "good two", "bad one"]


def test_bootstrap_gives_up_on_a_class_the_teacher_never_gets_right_and_fills_with_the_others():
    train = reviews([(f"n{i}", f"MISLEAD bad {i}", "negative") for i in range(7)] + [("p1", "good one", "positive"), ("p2", "good two", "positive")])
    ctx, fake, ir = make_ctx(SENTIMENT, sentiment_lm, train, max_demos=2, max_labeled=0)
    out = run(run_pass("bootstrap", ir, ctx))
    assert demo_ids(out) == ["p1", "p2"]
    tried = [tag(last_user(r), "review") for r in fake.requests]
    assert sum(1 for t in tried if "MISLEAD" in t) == 6 == 3 * 2  # 3 x max_demos tries of the lost class


def test_bootstrap_fills_with_labeled_demos_after_the_bootstrapped_ones():
    ctx, fake, ir = make_ctx(SENTIMENT, sentiment_lm, TRAIN, max_demos=2, max_labeled=3)
    out = run(run_pass("bootstrap", ir, ctx))
    ids = demo_ids(out)
    assert ids[:2] == ["t1", "t3"] and len(ids) == 3 and len(set(ids)) == 3
    assert ids[2] in {r["id"] for r in TRAIN}


def test_an_example_is_never_its_own_demo_in_the_teacher_prompt():
    ctx, fake, ir = make_ctx(SENTIMENT, sentiment_lm, TRAIN, max_demos=8, max_labeled=4)
    run(run_pass("bootstrap", ir, ctx))
    assert len(fake.calls) == len(TRAIN)
    primed = 0
    for req in fake.requests:
        own = tag(last_user(req), "review")
        shown = earlier(req)
        assert own not in shown, f"the teacher saw {own!r} among its own demos"
        primed += shown.count("<review>")
    # the teacher is primed with 4 labeled demos, minus the example itself when it is one of them
    assert primed == 4 * len(TRAIN) - 4


def test_bootstrap_rounds_retry_failures_at_a_sampling_temperature():
    ctx, fake, ir = make_ctx(SENTIMENT, sentiment_lm, TRAIN, max_demos=8, max_labeled=0, max_rounds=2)
    out = run(run_pass("bootstrap", ir, ctx))
    assert demo_ids(out) == ["t1", "t3", "t4", "t6", "t7", "t5"]  # t5 passes once sampled
    first = fake.requests[: len(TRAIN)]
    retries = fake.requests[len(TRAIN) :]
    assert all(r.temperature == 0 for r in first)
    # only the three failures are retried, each at a temperature > 0
    assert sorted(tag(last_user(r), "review") for r in retries) == sorted(["MISLEAD a bad plot", "FLAKY good ending", "MISLEAD good sets"])
    assert all(r.temperature > 0 for r in retries)


def test_bootstrap_demos_hold_reasoning_of_chain_of_thought():
    def lm(spec, req):
        q = tag(last_user(req), "question")
        a, b = (int(x) for x in re.findall(r"\d+", q))
        return f"<reasoning>{a} plus {b} makes {a + b}.</reasoning>\n<answer>{a + b if a < 5 else 0}</answer>"

    rows = [{"id": f"c{a}", "question": f"What is {a} + 10?", "answer": a + 10} for a in range(1, 8)]
    ctx, fake, ir = make_ctx(COT, lm, rows, max_demos=3, max_labeled=0)
    out = run(run_pass("bootstrap", ir, ctx))
    demos = out.predictors[0].demos
    assert [d["_id"] for d in demos] == ["c1", "c2", "c3"]
    assert demos[0] == {"question": "What is 1 + 10?", "reasoning": "1 plus 10 makes 11.", "answer": 11, "_id": "c1"}


def test_bootstrap_gives_every_predictor_of_a_multi_step_program_its_demos():
    def lm(spec, req):
        user = last_user(req)
        if "<query>" in user:  # the reply step: right when the query is the expected one
            q = tag(user, "question")
            return f"<answer>{q.upper() if 'WRONG' not in q else 'nope'}</answer>"
        q = tag(user, "question")
        return f"<query>search {q}</query>"

    rows = [{"id": f"m{i}", "question": w, "answer": w.upper()} for i, w in enumerate(["alpha", "WRONG beta", "gamma"])]
    ctx, fake, ir = make_ctx(TWO_STEP, lm, rows, max_demos=4, max_labeled=0)
    out = run(run_pass("bootstrap", ir, ctx))
    assert out.predictor("make_query").demos == (
        {"question": "alpha", "query": "search alpha", "_id": "m0"},
        {"question": "gamma", "query": "search gamma", "_id": "m2"},
    )
    assert out.predictor("reply").demos == (
        {"query": "search alpha", "question": "alpha", "answer": "ALPHA", "_id": "m0"},
        {"query": "search gamma", "question": "gamma", "answer": "GAMMA", "_id": "m2"},
    )


# ---------------------------------------------------------------- random-search


def demo_count_lm(wanted: int):
    """Like sentiment_lm, but MISLEAD reviews are answered right when the prompt shows exactly `wanted` demos."""

    def lm(spec, req):
        n = earlier(req).count("<review>")
        review = tag(last_user(req), "review") or ""
        right = "negative" if "bad" in review else "positive"
        if "MISLEAD" in review and n != wanted:
            right = "positive" if right == "negative" else "negative"
        return f"<sentiment>{right}</sentiment>"

    return lm


def test_random_search_tries_zero_shot_labeled_and_n_bootstraps_and_keeps_the_best():
    ctx, fake, ir = make_ctx(SENTIMENT, demo_count_lm(3), TRAIN, DEV, max_demos=4, max_labeled=0, candidates=4)
    out = run(run_pass("random-search", ir, ctx))
    names = [c.name for c in ctx.candidates]
    assert names[:7] == ["random-search:zero-shot", "random-search:labeled-only", "random-search:bootstrap"] + [
        f"random-search:bootstrap-{i}" for i in range(1, 5)
    ]  # N + 3 candidates
    # then the best of them with 1 and 2 demos and in two other orders (those that differ from one tried)
    assert names[7:] and all(re.fullmatch(r"random-search:bootstrap(-\d)?-(1|2|all)-(built|reversed|similar-last)", n) for n in names[7:]), names
    passing = {"t1", "t3", "t4", "t5", "t6", "t7"}  # the zero-shot teacher gets MISLEAD wrong
    for c in ctx.candidates:
        n = len(c.ir.predictors[0].demos)
        assert c.score == (1.0 if n == 3 else 0.75), (c.name, n)
        assert {d["_id"] for d in c.ir.predictors[0].demos} <= passing
    assert len(ctx.candidates[0].ir.predictors[0].demos) == 0
    best = [c for c in ctx.candidates if c.score == 1.0]
    assert best, "the seeded demo counts should include a 3-demo candidate"
    assert out == best[0].ir


def test_random_search_searches_fewer_demos_and_other_orders_of_its_best_set():
    from lmc.ir import fingerprint

    # Seed 0 draws 1 demo for its one extra candidate (besides the 4 of "bootstrap"): none holds 2.
    ctx, fake, ir = make_ctx(SENTIMENT, demo_count_lm(2), TRAIN, DEV, max_demos=4, max_labeled=0, candidates=1)
    out = run(run_pass("random-search", ir, ctx))
    assert len(out.predictors[0].demos) == 2  # only a two-demo prompt gets MISLEAD right
    two = next(c for c in ctx.candidates if len(c.ir.predictors[0].demos) == 2)
    assert two.score == 1.0 and two.name.endswith("-2-built") and two.detail["order"] == "built"
    orders = {c.detail.get("order") for c in ctx.candidates}
    assert "reversed" in orders  # similar-last is skipped when it puts the demos in an order already scored
    assert len({fingerprint(c.ir) for c in ctx.candidates[3:]}) == len(ctx.candidates[3:])
    again, _, _ = make_ctx(SENTIMENT, demo_count_lm(2), TRAIN, DEV, max_demos=4, max_labeled=0, candidates=1)
    assert run(run_pass("random-search", ir, again)) == out  # seeded: the same choice every time


def test_random_search_labeled_only_candidate_has_labeled_demos():
    ctx, fake, ir = make_ctx(SENTIMENT, sentiment_lm, TRAIN, DEV, max_demos=2, max_labeled=3, candidates=1)
    run(run_pass("random-search", ir, ctx))
    lab = next(c for c in ctx.candidates if c.name.endswith("labeled-only"))
    assert len(lab.ir.predictors[0].demos) == 3
    # labeled demos carry the gold label, even for examples the LM gets wrong
    for d in lab.ir.predictors[0].demos:
        assert d["sentiment"] == next(r["sentiment"] for r in TRAIN if r["id"] == d["_id"])


def test_scores_are_memoised_by_fingerprint():
    ctx, fake, ir = make_ctx(SENTIMENT, sentiment_lm, TRAIN, DEV)
    assert run(ctx.score(ir)) == 0.75
    n = len(fake.calls)
    assert n == len(DEV)
    assert run(ctx.score(ir)) == 0.75 and len(fake.calls) == n


# ---------------------------------------------------------------- mipro


def magic_lm(spec, req):
    """MISLEAD reviews are answered right only under an instruction that mentions sarcasm."""
    review = tag(last_user(req), "review") or ""
    right = "negative" if "bad" in review else "positive"
    if "MISLEAD" in review and "sarcasm" not in system(req):
        right = "positive" if right == "negative" else "negative"
    return f"<sentiment>{right}</sentiment>"


def proposer_lm(spec, req):
    text = full_text(req)
    if "common mistake" in text:
        return "<instruction>Classify the review; beware of sarcasm, which flips the sentiment.</instruction>"
    tip = tag(text, "tip") or "?"
    return f"<instruction>Classify the review's sentiment carefully ({tip[:20]}).</instruction>"


def test_mipro_proposes_instructions_with_the_prompt_lm_and_keeps_the_best_full_dev_combination():
    proposer = FakeLM(proposer_lm)
    ctx, fake, ir = make_ctx(
        SENTIMENT, magic_lm, TRAIN, DEV, prompt_script=proposer, max_demos=2, max_labeled=1, candidates=2, instructions=5, trials=12, minibatch=4
    )
    out = run(run_pass("mipro", ir, ctx))
    # the prompt LM (not the task LM) proposed: one call per instruction, grounded in data, program and step
    assert len(proposer.calls) == 5
    first = proposer.calls[0].text
    assert "8 training examples" in first and "Field 'sentiment' takes 2 values" in first
    assert "program main(review: str)" in first and "step 'classify'" in first
    assert not any("ProposeInstruction" in c.text or "<tip>" in c.text for c in fake.calls)
    # distinct temperatures make distinct proposals (and cache keys)
    assert len({r.temperature for r in proposer.requests}) == 5
    full = [c for c in ctx.candidates if c.name.startswith("mipro:trial-")]
    assert full, "mipro scored no combination on the full dev set"
    best = max(c.score for c in full)
    assert run(ctx.score(out)) == best == 1.0
    assert "sarcasm" in out.predictors[0].instructions


def test_mipro_survives_proposals_the_prompt_lm_cannot_give():
    """A base model's empty completions for some proposals cost those candidates, not the compile."""

    def flaky(spec, req):
        if req.temperature in (0.91, 0.93):
            return ""  # every retry too: the LM client gives up on this proposal
        return proposer_lm(spec, req)

    proposer = FakeLM(flaky)
    ctx, fake, ir = make_ctx(
        SENTIMENT, magic_lm, TRAIN, DEV, prompt_script=proposer, max_demos=2, max_labeled=1, candidates=2, instructions=5, trials=12, minibatch=4
    )
    out = run(run_pass("mipro", ir, ctx))
    assert {r.temperature for r in proposer.requests} == {0.9, 0.91, 0.92, 0.93, 0.94}
    assert sum(1 for line in ctx.logged if "failed:" in line and "proposal" in line) == 2
    assert "sarcasm" in out.predictors[0].instructions  # the proposals that came still won


def test_mipro_is_deterministic_for_a_seed():
    outs = []
    for _ in range(2):
        ctx, _, ir = make_ctx(
            SENTIMENT,
            magic_lm,
            TRAIN,
            DEV,
            prompt_script=FakeLM(proposer_lm),
            max_demos=2,
            candidates=2,
            instructions=3,
            trials=6,
            minibatch=2,
            seed=3,
        )
        outs.append((run(run_pass("mipro", ir, ctx)), [(c.name, c.score) for c in ctx.candidates]))
    assert outs[0] == outs[1]


def test_mipro_searches_demo_count_and_order_and_records_the_choice():
    """Only a prompt with exactly one demo gets MISLEAD right: mipro must search the count, not only the set."""
    ctx, fake, ir = make_ctx(
        SENTIMENT,
        demo_count_lm(1),
        TRAIN,
        DEV,
        prompt_script=FakeLM(proposer_lm),
        max_demos=3,
        max_labeled=0,
        candidates=2,
        instructions=1,
        trials=16,
        minibatch=4,
        full_eval_every=2,
    )
    out = run(run_pass("mipro", ir, ctx))
    full = [c for c in ctx.candidates if c.name.startswith("mipro:trial-")]
    assert all({k.split(":")[-1] for k in c.detail["choice"]} == {"i", "d", "n", "o"} for c in full)
    best = max(full, key=lambda c: c.score)
    assert best.score == 1.0 and len(out.predictors[0].demos) == 1
    assert best.detail["choice"]["classify:n"] >= 1  # a count of 1, or more of a set that holds just one


def test_mipro_refuses_a_minibatch_larger_than_dev():
    ctx, fake, ir = make_ctx(SENTIMENT, magic_lm, TRAIN, DEV, prompt_script=FakeLM(proposer_lm), minibatch=5)
    with pytest.raises(LmcError) as e:
        run(run_pass("mipro", ir, ctx))
    assert "--minibatch 5" in str(e.value) and "4 examples" in str(e.value) and "\n" not in str(e.value)
    assert fake.calls == []  # refused before any LM call


# ---------------------------------------------------------------- ensemble


def styled_lm(spec, req):
    """Each member's instruction decides its answer, so a vote is visible."""
    s = system(req)
    return "<sentiment>positive</sentiment>" if "ALPHA" in s else "<sentiment>negative</sentiment>"


def seeded_members(ctx, ir, styles_scores):
    from dataclasses import replace

    for style, score in styles_scores:
        cand = ir.with_predictors([replace(ir.predictors[0], instructions=f"Classify. Style {style}.")])
        ctx.record(f"member-{style}", cand, score)


def test_ensemble_picks_the_top_distinct_candidates_and_never_crashes_the_compile():
    ctx, fake, ir = make_ctx(SENTIMENT, styled_lm, TRAIN, DEV[:1], ensemble_size=2)
    seeded_members(ctx, ir, [("ALPHA", 0.5), ("BETA", 0.9), ("GAMMA", 0.7), ("BETA", 0.9)])
    out = run(run_pass("ensemble", ir, ctx))
    # whatever the vote did, the result is the ensemble or its best member (BETA), never a lower one
    assert "BETA" in out.predictors[0].instructions
    assert not any("Traceback" in n for n in ctx.notes)


def test_ensemble_votes_per_output_field_and_survives_the_artifact(tmp_path):
    from lmc.artifact import Artifact, read, write

    ctx, fake, ir = make_ctx(SENTIMENT, styled_lm, TRAIN, DEV[1:2], ensemble_size=3)  # d2: negative
    seeded_members(ctx, ir, [("ALPHA", 0.9), ("BETA", 0.8), ("GAMMA", 0.7)])
    out = run(run_pass("ensemble", ir, ctx))
    ens = out.extra("ensemble")
    assert ens and ens["names"] == ["member-ALPHA", "member-BETA", "member-GAMMA"]
    fake.calls.clear()
    rt = ctx.make_runtime(out)
    r = run(run_example(rt, {"review": "anything"}))
    assert r.outputs == {"sentiment": "negative"}  # ALPHA says positive, BETA and GAMMA outvote it
    assert len(fake.calls) == 3
    write(Artifact(ir=out, program={"name": "main"}, compile={}, lm=None), tmp_path / "e.lmc.json")
    back = read(tmp_path / "e.lmc.json").ir
    r2 = run(run_example(ctx.make_runtime(back), {"review": "anything"}))
    assert r2.outputs == {"sentiment": "negative"}


# ---------------------------------------------------------------- knn


def test_knn_stores_pools_and_picks_different_demos_for_different_inputs():
    ctx, fake, ir = make_ctx(SENTIMENT, sentiment_lm, TRAIN, DEV, k=2, max_labeled=0)
    out = run(run_pass("knn", ir, ctx))
    knn = out.extra("knn")
    assert knn["k"] == 2 and out.predictors[0].demos == ()
    pool = knn["pools"]["classify"]
    # the passing traces first, then the remaining examples as labeled demos (gold labels): all of the trainset
    assert [d["_id"] for d in pool[:5]] == ["t1", "t3", "t4", "t6", "t7"]
    assert sorted(d["_id"] for d in pool) == sorted(r["id"] for r in TRAIN)
    assert all(d["sentiment"] == next(r["sentiment"] for r in TRAIN if r["id"] == d["_id"]) for d in pool)
    fake.calls.clear()
    rt = ctx.make_runtime(out)
    run(run_example(rt, {"review": "the acting was bad acting"}))
    run(run_example(rt, {"review": "lovely music, good music"}))
    shown = [earlier(r) for r in fake.requests]
    assert shown[0] != shown[1]
    assert shown[0].count("<review>") == 2 and shown[1].count("<review>") == 2
    # the most similar demo sits right before the question
    assert shown[0].rstrip().endswith("<sentiment>negative</sentiment>") and "bad acting" in shown[0].split("<review>")[-1]
    assert "good music" in shown[1].split("<review>")[-1]


def test_knn_never_shows_an_example_its_own_demo():
    ctx, fake, ir = make_ctx(SENTIMENT, sentiment_lm, TRAIN, DEV, k=3, max_labeled=0)
    out = run(run_pass("knn", ir, ctx))
    from lmc.scoring import evaluate

    fake.calls.clear()
    run(evaluate(ctx.make_runtime(out), ctx.trainset[:1], ctx.metric, exclude_self=True))
    assert len(fake.calls) == 1
    assert "a good film" not in earlier(fake.requests[0])


# ---------------------------------------------------------------- finetune-data


def test_finetune_data_writes_openai_chat_jsonl_per_predictor(tmp_path):
    def lm(spec, req):
        user = last_user(req)
        q = tag(user, "question")
        if "<query>" in user:
            return f"<answer>{q.upper() if 'WRONG' not in q else 'nope'}</answer>"
        return f"<query>search {q}</query>"

    rows = [{"id": f"m{i}", "question": w, "answer": w.upper()} for i, w in enumerate(["alpha", "WRONG beta", "gamma"])]
    ctx, fake, ir = make_ctx(TWO_STEP, lm, rows, finetune_dir=str(tmp_path / "ft"))
    out = run(run_pass("finetune-data", ir, ctx))
    assert out == ir  # the program is unchanged
    files = sorted(p.name for p in (tmp_path / "ft").iterdir())
    assert files == ["make_query.jsonl", "reply.jsonl"]
    for name in files:
        lines = (tmp_path / "ft" / name).read_text(encoding="utf-8").splitlines()
        assert len(lines) == 2  # alpha and gamma pass; the failing example is not training data
        for line in lines:
            row = json.loads(line)
            assert set(row) == {"messages"}
            roles = [m["role"] for m in row["messages"]]
            assert roles == ["system", "user", "assistant"]
            assert all(isinstance(m["content"], str) and m["content"] for m in row["messages"])
            assert "beta" not in line
    reply = [json.loads(x) for x in (tmp_path / "ft" / "reply.jsonl").read_text().splitlines()]
    assert "search alpha" in reply[0]["messages"][1]["content"]  # the generated query is an input of reply
    assert "ALPHA" in reply[0]["messages"][2]["content"]


def test_knn_leaves_the_example_out_before_choosing_so_it_still_gets_k_demos():
    from lmc.ir import FieldSpec, Predictor, SignatureIR
    from lmc.demos import choose_demos
    from lmc.types import STR

    p = Predictor("p", "m", "main", SignatureIR("S", "", (FieldSpec("q", STR),), (FieldSpec("a", STR),)), "")
    pool = [{"q": f"apple pie number {i}", "a": str(i), "_id": f"e{i}"} for i in range(6)]
    knn = {"k": 3, "pools": {"p": pool}}
    chosen = choose_demos(knn, p, {"q": "apple pie number 2"}, exclude=frozenset({"e2"}))
    assert len(chosen) == 3 and all(d["_id"] != "e2" for d in chosen)


def test_bootstrap_balances_the_classes_of_a_classifier():
    # t1, t4 and t7 (positive) pass before t3 (negative): with 2 demos, one of each class is kept.
    rows = [r for r in TRAIN if r["id"] in ("t1", "t4", "t7", "t3")]
    rows = [rows[0], rows[2], rows[3], rows[1]]  # t1, t4, t7, t3
    ctx, fake, ir = make_ctx(SENTIMENT, sentiment_lm, rows, max_demos=2, max_labeled=0, concurrency=1)
    out = run(run_pass("bootstrap", ir, ctx))
    assert [d["sentiment"] for d in out.predictors[0].demos] == ["positive", "negative"]
    assert demo_ids(out) == ["t1", "t3"]


# ---------------------------------------------------------------- passes as values


def test_the_pass_table_names_every_pass_and_validates_names():
    from lmc.cli_compile import _PASSES

    assert optimize.PASS_NAMES[:8] == ("none", "labeled", "bootstrap", "random-search", "mipro", "knn", "ensemble", "finetune-data")
    assert len(set(optimize.PASS_NAMES)) == len(optimize.PASSES)
    assert _PASSES == optimize.PASS_NAMES  # the CLI's choices are the table
    assert optimize.pass_named("knn") is optimize.PASSES[5] and optimize.pass_name(optimize.PASSES[3]) == "random-search"
    with pytest.raises(LmcError, match=r"unknown optimizer 'mipo'; did you mean 'mipro'\? expected one of: none, "):
        optimize.pass_named("mipo")


def test_each_option_is_declared_once_with_its_default():
    from lmc.optimize.options import OPTIONS

    for name, keys in optimize.PASS_OPTIONS.items():
        assert set(keys) <= set(OPTIONS), name
    assert optimize.options_for("bootstrap", {}, {}) == {"max_demos": 4, "max_labeled": 4, "max_rounds": 1}
    assert optimize.options_for("knn", {"max_demos": 6}, {}) == {"k": 6, "max_demos": 6, "max_labeled": 4}
    assert optimize.options_for("finetune-data", {}, {}, out="b/x.lmc.json")["finetune_dir"] == "b/x.finetune"
    assert optimize.options_for("mipro", {}, {"trials": 3})["trials"] == 3
    assert "(default 4)" in OPTIONS["max_demos"].describe()


def test_a_pass_changes_nothing_it_is_given():
    ctx, fake, ir = make_ctx(SENTIMENT, sentiment_lm, TRAIN, DEV, max_demos=2, max_labeled=0, candidates=1)
    ctx.record("earlier", ir, 0.5)
    inputs = replace(ctx.inputs, candidates=tuple(ctx.candidates))
    before = (inputs.trainset, inputs.candidates, list(inputs.devset), ir)
    result = run(optimize.run_pass("random-search", ir, inputs, **ctx.options))
    assert (inputs.trainset, inputs.candidates, list(inputs.devset), ir) == before
    assert result.candidates and all(c.name.startswith("random-search:") for c in result.candidates)
    with pytest.raises(FrozenInstanceError):
        inputs.candidates = ()
    with pytest.raises(FrozenInstanceError):
        result.ir = ir


def test_ensemble_draws_on_the_candidates_it_is_given_not_on_shared_state():
    ctx, fake, ir = make_ctx(SENTIMENT, styled_lm, TRAIN, DEV[:1], ensemble_size=2)
    seeded_members(ctx, ir, [("ALPHA", 0.5), ("BETA", 0.9)])
    given = run(optimize.run_pass("ensemble", ir, replace(ctx.inputs, candidates=tuple(ctx.candidates)), **ctx.options))
    assert {c.name for c in given.candidates} <= {"ensemble"}  # no search of its own: two were given
    alone = run(optimize.run_pass("ensemble", ir, ctx.inputs, **ctx.options))
    assert any(c.name.startswith("ensemble:") for c in alone.candidates)  # none given: it searched first


def test_mipro_never_changes_a_runtime_it_was_given():
    ctx, fake, ir = make_ctx(
        SENTIMENT, magic_lm, TRAIN, DEV, prompt_script=FakeLM(proposer_lm), max_demos=2, candidates=1, instructions=2, trials=2, minibatch=2
    )
    made = []
    proposer = ctx.inputs.lab.proposer

    def watched(x):
        rt = proposer(x)
        made.append((rt, rt.ir))
        return rt

    ctx.inputs.lab.proposer = watched
    run(run_pass("mipro", ir, ctx))
    assert made and all(rt.ir is ir_ for rt, ir_ in made)  # a runtime per proposal, none reassigned


def test_a_budget_that_runs_out_ends_the_pass_with_what_it_found():
    from lmc.errors import BudgetExceeded

    ctx, fake, ir = make_ctx(SENTIMENT, sentiment_lm, TRAIN, DEV, max_demos=2, max_labeled=0, candidates=3)
    calls = [0]
    score = ctx.inputs.lab.score

    async def scarce(x, examples=None, label=""):
        calls[0] += 1
        if calls[0] > 2:
            raise BudgetExceeded("--max-calls 9 reached")
        return await score(x, examples, label)

    ctx.inputs.lab.score = scarce
    result = run(optimize.run_pass("random-search", ir, ctx.inputs, **ctx.options))
    assert result.exhausted and len(result.candidates) == 2
    assert result.notes == ("budget exhausted during bootstrap scoring: --max-calls 9 reached",)
