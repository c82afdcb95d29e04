"""The `evolve` pass: Pareto front, reflection on feedback, acceptance, merges, budgets and reproducibility,
checked exactly on the scripted FakeLM, then end to end from the CLI against the loopback server."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from lmc import optimize
from lmc.errors import BudgetExceeded, LmcError
from lmc.optimize.evolve import Member, blame, clean_instruction, merged_instructions, pareto_front, tunable
from lmc.runtime import Call, Result
from lmc.scoring import Outcome
from tests.fakelm import FakeLM, full_text
from tests.lmserver import LoopbackServer
from tests.test_optimize import DEV, SENTIMENT, TRAIN, TWO_STEP, last_user, magic_lm, make_ctx, run, run_pass, system, tag

SARCASM = "Classify the review; beware of sarcasm, which flips the sentiment."


def sarcasm_reflection(spec, req):
    return f"<instruction>{SARCASM}</instruction>"


# ---------------------------------------------------------------- the front


def test_the_front_keeps_every_candidate_best_on_some_example_and_drops_the_dominated():
    scores = [
        (1, 0, 0, 1),  # 0: best on e0 (with 2), e3
        (0, 1, 0, 1),  # 1: best on e1, e3
        (1, 0, 0, 0),  # 2: dominated by 0
        (0, 1, 0, 1),  # 3: the same as 1, later: adds nothing
        (0, 0, 0, 0),  # 4: dominated; e2 is won by no one, so the rest tie there
    ]
    assert pareto_front(scores) == {0: 3, 1: 3}
    assert pareto_front([(0.5, 0.5)]) == {0: 2}
    # a candidate better on one example stays even when worse on average
    assert pareto_front([(0.9, 0.9, 0.0), (0.0, 0.0, 1.0)]) == {0: 2, 1: 1}


def test_a_merge_takes_each_predictor_from_the_member_that_changed_it():
    from lmc.check import check_source
    from lmc.lower import lower

    ir = lower(check_source(TWO_STEP, "t.lmp"))

    def with_(mq: str, rp: str):
        return ir.with_predictors([replace(ir.predictor("make_query"), instructions=mq), replace(ir.predictor("reply"), instructions=rp)])

    base = ir.predictor("make_query").instructions, ir.predictor("reply").instructions
    pool = [
        Member("a", with_(*base), (0.5,)),
        Member("i", with_("Q-new", base[1]), (0.6,), (0,)),
        Member("j", with_(base[0], "R-new"), (0.7,), (0,)),
        Member("k", with_("Q-other", base[1]), (0.9,), (0,)),
    ]
    pids = ["make_query", "reply"]
    assert merged_instructions(pool, 1, 2, 0, pids) == {"make_query": "Q-new", "reply": "R-new"}
    # both changed the same predictor and nothing else: the merge would add nothing new from one of them
    assert merged_instructions(pool, 1, 3, 0, pids) is None


def test_blame_points_at_the_predictor_that_failed_then_the_last_one_before_a_wrong_answer():
    from lmc.datasets import from_records

    ex = list(from_records([{"id": "a", "question": "q", "answer": "x"}], path="d.jsonl"))[0]

    def outcome(calls, passed=False):
        return Outcome(ex, Result({"answer": "y"}, trace=calls), 1.0 if passed else 0.0, passed)

    q = Call("make_query", "make_query", {}, {"query": "z"})
    r = Call("reply", "reply", {}, {"answer": "y"})
    broken = Call("make_query", "make_query", {}, None, error="could not parse")
    assert blame([outcome([q, r])], ["make_query", "reply"], 0) == "reply"
    assert blame([outcome([broken, r])], ["make_query", "reply"], 1) == "make_query"
    assert blame([outcome([q, r], passed=True)], ["make_query", "reply"], 1) == "reply"  # no failure: its turn


def test_a_judge_only_a_metric_calls_is_not_rewritten():
    from lmc.check import check_source
    from lmc.lower import lower

    src = (Path(__file__).resolve().parent.parent / "programs" / "judged_qa.lmp").read_text()
    ir = lower(check_source(src, "judged_qa.lmp"))
    ids = tunable(ir)
    assert ids and not any(ir.predictor(pid).module == "judge" for pid in ids)


def test_reflection_answers_are_cleaned():
    assert clean_instruction('  "Do the task well, please."  ') == "Do the task well, please."
    assert clean_instruction("```\nDo the task well, please.\n```") == "Do the task well, please."
    assert clean_instruction("short") is None and clean_instruction("x" * 5000) is None


# ---------------------------------------------------------------- a search, exactly


def test_a_reflection_reads_the_feedback_and_its_improvement_is_accepted_scored_and_kept():
    reflector = FakeLM(sarcasm_reflection)
    ctx, fake, ir = make_ctx(SENTIMENT, magic_lm, TRAIN, DEV, prompt_script=reflector, rounds=3, minibatch=4, merges=0, pick="round-robin")
    out = run(run_pass("evolve", ir, ctx))
    assert out.predictors[0].instructions == SARCASM
    assert [(c.name, c.score) for c in ctx.candidates] == [("evolve:start", 0.75), ("evolve:round-1", 1.0)]
    # the reflection LM (not the task LM) was asked once: later rounds' parent passes its minibatch
    assert len(reflector.calls) == 1
    assert not any("You improve the instruction" in c.text for c in fake.calls)
    shown = reflector.calls[0].text
    assert "Classify the sentiment of the review." in shown  # the current instruction
    assert "review: MISLEAD" in shown and "sentiment: negative" in shown  # a failing example's inputs and outputs
    assert 'Feedback: wrong: expected "positive", got "negative"' in shown  # the metric's feedback
    assert "Score: 0.00" in shown and "Score: 1.00" in shown
    lineage = ctx.candidates[1].detail["lineage"]
    assert lineage == {
        "round": 1,
        "parent": "evolve:start",
        "predictor": "classify",
        "instruction": SARCASM,
        "minibatch": {"parent": 0.75, "child": 1.0},
    }
    assert sum("already passes its minibatch" in line for line in ctx.logged) == 2
    # no program ran an example twice (outcomes are memoised per example): dev 4 (start), minibatch 4 (parent),
    # 4 (child), dev 4 (child), then only the train examples later minibatches meet for the first time
    assert len({c.text for c in fake.calls}) == len(fake.calls) > 16


def test_a_child_no_better_on_its_minibatch_is_rejected_without_a_dev_score():
    def useless(spec, req):
        return "<instruction>Classify the sentiment of the review, please.</instruction>"

    reflector = FakeLM(useless)
    ctx, fake, ir = make_ctx(SENTIMENT, magic_lm, TRAIN, DEV, prompt_script=reflector, rounds=4, minibatch=8, merges=2, pick="round-robin")
    out = run(run_pass("evolve", ir, ctx))
    assert out == ir
    assert [c.name for c in ctx.candidates] == ["evolve:start"]
    assert sum("rejected (minibatch 0.750 -> 0.750)" in line for line in ctx.logged) == 1
    # the same proposal again is not paid for twice
    assert sum("repeated an instruction already tried" in line for line in ctx.logged) == 3
    assert len(fake.calls) == 4 + 8 + 8  # dev for the start, the parent's and the child's minibatch; no child dev


def test_a_reflection_too_short_to_use_is_said_in_the_log():
    reflector = FakeLM(lambda spec, req: "<instruction>Be good.</instruction>")
    ctx, fake, ir = make_ctx(SENTIMENT, magic_lm, TRAIN, DEV, prompt_script=reflector, rounds=2, minibatch=8, merges=0, pick="round-robin")
    assert run(run_pass("evolve", ir, ctx)) == ir
    assert sum("instruction is too short or too long to use: " in line and "Be good." in line for line in ctx.logged) == 2


def two_lm(spec, req):
    """make_query writes QPLUS under an ALPHA instruction; needA questions need QPLUS, hateA ones QMINUS,
    needB ones a BETA instruction on reply."""
    user, sys_ = last_user(req), system(req)
    if "<query>" not in user:
        return "<query>QPLUS</query>" if "ALPHA" in sys_ else "<query>QMINUS</query>"
    q, query = tag(user, "question") or "", tag(user, "query")
    ok = {"needA": query == "QPLUS", "hateA": query == "QMINUS", "needB": "BETA" in sys_}
    right = next((v for k, v in ok.items() if k in q), True)
    return "<answer>right</answer>" if right else "<answer>wrong</answer>"


def two_reflection(spec, req):
    if "step 'make_query'" in full_text(req):
        return "<instruction>Write a search query, ALPHA style.</instruction>"
    return "<instruction>Answer the question, BETA style.</instruction>"


def questions(spec):
    return [{"id": i, "question": q, "answer": "right"} for i, q in spec]


TRAIN2 = questions(
    [
        ("t1", "needA one"),
        ("t2", "needA two"),
        ("t3", "needB one"),
        ("t4", "needB two"),
        ("t5", "needA three"),
        ("t6", "needB three"),
        ("t7", "hateA one"),
        ("t8", "plain"),
    ]
)
DEV2 = questions([("d1", "needA x"), ("d2", "needA y"), ("d3", "hateA z"), ("d4", "needB w"), ("d5", "plain v")])


def test_siblings_that_improved_different_predictors_are_merged_and_the_merge_wins():
    ctx, fake, ir = make_ctx(
        TWO_STEP, two_lm, TRAIN2, DEV2, prompt_script=FakeLM(two_reflection), seed=0, rounds=2, minibatch=8, merges=1, pick="round-robin"
    )
    out = run(run_pass("evolve", ir, ctx))
    names = [(c.name, c.score) for c in ctx.candidates]
    assert names == [("evolve:start", 0.4), ("evolve:round-1", 0.6), ("evolve:round-2", 0.6), ("evolve:merge-2", 0.8)]
    r1, r2, merge = ctx.candidates[1:]
    assert r1.detail["lineage"]["predictor"] == "make_query" and r2.detail["lineage"]["predictor"] == "reply"
    assert r1.detail["lineage"]["parent"] == r2.detail["lineage"]["parent"] == "evolve:start"  # siblings
    assert merge.detail["merge_of"] == ["evolve:round-2", "evolve:round-1"] or merge.detail["merge_of"] == ["evolve:round-1", "evolve:round-2"]
    assert out.predictor("make_query").instructions == "Write a search query, ALPHA style."
    assert out.predictor("reply").instructions == "Answer the question, BETA style."
    # the front after the merge: round-2 alone wins hateA, the merge the rest; start and round-1 are dominated
    front = [line for line in ctx.logged if line.startswith("evolve: evolve:merge-2")]
    assert front == ["evolve: evolve:merge-2 dev 0.800; front 2 of 4, best dev 0.800"]


def test_merges_stop_at_the_limit():
    ctx, fake, ir = make_ctx(
        TWO_STEP, two_lm, TRAIN2, DEV2, prompt_script=FakeLM(two_reflection), seed=0, rounds=2, minibatch=8, merges=0, pick="round-robin"
    )
    run(run_pass("evolve", ir, ctx))
    assert not any(c.name.startswith("evolve:merge") for c in ctx.candidates)


def test_blame_rewrites_the_step_the_failures_point_at():
    ctx, fake, ir = make_ctx(
        TWO_STEP, two_lm, TRAIN2, DEV2, prompt_script=FakeLM(two_reflection), seed=0, rounds=1, minibatch=8, merges=0, pick="blame"
    )
    run(run_pass("evolve", ir, ctx))
    # the last step before every wrong answer is reply, so blame picks it where round-robin would pick make_query
    assert ctx.candidates[1].detail["lineage"]["predictor"] == "reply"


def test_the_same_seed_gives_the_same_search_and_another_seed_may_not():
    runs = []
    for _ in range(2):
        ctx, _, ir = make_ctx(
            TWO_STEP, two_lm, TRAIN2, DEV2, prompt_script=FakeLM(two_reflection), seed=4, rounds=3, minibatch=3, merges=1, pick="round-robin"
        )
        out = run(run_pass("evolve", ir, ctx))
        runs.append((out, [(c.name, c.score, c.detail) for c in ctx.candidates], ctx.logged))
    assert runs[0] == runs[1]


def test_a_budget_that_runs_out_ends_the_search_with_the_best_candidate_so_far():
    ctx, fake, ir = make_ctx(
        SENTIMENT, magic_lm, TRAIN, DEV, prompt_script=FakeLM(sarcasm_reflection), rounds=5, minibatch=4, merges=0, pick="round-robin"
    )
    lab = ctx.inputs.lab
    outcomes = lab.outcomes
    calls = [0]

    async def scarce(x, examples, label=""):
        calls[0] += 1
        if calls[0] > 3:  # start dev, parent minibatch, child minibatch: the child's dev score is refused
            raise BudgetExceeded("--max-calls 12 reached")
        return await outcomes(x, examples, label)

    lab.outcomes = scarce
    result = run(optimize.run_pass("evolve", ir, ctx.inputs, **ctx.options))
    assert result.exhausted and result.ir == ir
    assert [c.name for c in result.candidates] == ["evolve:start"]
    assert result.notes == ("budget exhausted during evolve: --max-calls 12 reached",)


def test_a_minibatch_larger_than_the_trainset_and_an_unknown_pick_are_refused_before_any_call():
    ctx, fake, ir = make_ctx(
        SENTIMENT, magic_lm, TRAIN, DEV, prompt_script=FakeLM(sarcasm_reflection), rounds=1, minibatch=9, merges=0, pick="round-robin"
    )
    with pytest.raises(LmcError, match=r"--minibatch 9 is larger than the trainset \(8 examples\)"):
        run(run_pass("evolve", ir, ctx))
    with pytest.raises(LmcError, match="--pick must be one of: round-robin, blame; got 'random'"):
        run(optimize.run_pass("evolve", ir, ctx.inputs, pick="random"))
    assert fake.calls == []


# ---------------------------------------------------------------- the command line


def responder(request: dict) -> str:
    msgs = request.get("messages") or []
    first, last = str(msgs[0].get("content", "")), str(msgs[-1].get("content", ""))
    if "You improve the instruction of one step" in first:
        return f"<instruction>{SARCASM}</instruction>"
    review = tag(last, "review") or ""
    right = "negative" if "bad" in review else "positive"
    if "MISLEAD" in review and "sarcasm" not in first:
        right = "positive" if right == "negative" else "negative"
    return f"<sentiment>{right}</sentiment>"


def rows(n: int, prefix: str) -> list[dict]:
    return [
        {
            "id": f"{prefix}{i:02d}",
            "review": f"a {'bad' if i % 2 else 'good'} thing {i}" + (" MISLEAD" if i % 3 == 0 else ""),
            "sentiment": "negative" if i % 2 else "positive",
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def server():
    with LoopbackServer(responder) as srv:
        yield srv


@pytest.fixture
def lmc(tmp_path, monkeypatch, server, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("LMC_LM", raising=False)
    (tmp_path / "s.lmp").write_text(SENTIMENT, encoding="utf-8")
    for name, n in (("train", 12), ("dev", 6)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(n, name[0])))

    def run_(*args: str) -> tuple[int, str, str]:
        from lmc.cli import main

        code = main([str(a) for a in args])
        out = capsys.readouterr()
        assert "Traceback" not in out.err and "internal error" not in out.err, out.err
        return code, out.out, out.err

    def compile_(*args: str, out: str = "out.lmc.json") -> tuple[int, str, str]:
        return run_(
            "compile",
            "s.lmp",
            "--train",
            "train.jsonl",
            "--dev",
            "dev.jsonl",
            "-o",
            out,
            "--cache-dir",
            "cache",
            "--lm",
            "openai/test",
            "--api-base",
            server.url,
            *args,
        )

    run_.compile = compile_
    return run_


def test_evolve_from_the_cli_records_the_lineage_and_inspect_shows_it(lmc, tmp_path, server):
    code, _, err = lmc.compile("--optimizer", "evolve", "--rounds", "3", "--minibatch", "4")
    assert code == 0, err
    rep = json.loads((tmp_path / "out.lmc.json").read_text())["compile"]
    assert rep["scores"]["final"]["dev"] == 1.0 > rep["scores"]["baseline"]["dev"]
    assert rep["passes"] == [{"name": "evolve", "options": {"merges": 2, "minibatch": 4, "pick": "round-robin", "rounds": 3}}]
    steps = rep["lineage"]
    assert [s["candidate"] for s in steps] == ["evolve:start", steps[1]["candidate"]]
    assert steps[1]["parent"] == "evolve:start" and steps[1]["instruction"] == SARCASM
    assert steps[1]["minibatch"]["child"] > steps[1]["minibatch"]["parent"] and steps[1]["dev"] == 1.0
    assert "front 1 of 2, best dev 1.000" in err  # the search's progress, as the log (no terminal) shows it
    code, out, err = lmc("inspect", "out.lmc.json")
    assert code == 0, err
    assert "lineage of the kept program (evolve):" in out and "from evolve:start" in out and SARCASM in out
    code, out, err = lmc("inspect", "out.lmc.json", "--format", "json")
    assert json.loads(out)["lineage"] == steps


def test_a_warm_recompile_calls_nothing_and_writes_the_same_bytes(lmc, tmp_path, server):
    args = ("--optimizer", "bootstrap", "--then", "evolve", "--max-demos", "1", "--rounds", "3", "--seed", "2")
    assert lmc.compile(*args, out="a.lmc.json")[0] == 0
    before = server.requests
    code, _, err = lmc.compile(*args, out="b.lmc.json")
    assert code == 0, err
    assert server.requests == before
    assert (tmp_path / "a.lmc.json").read_bytes() == (tmp_path / "b.lmc.json").read_bytes()
    rep = json.loads((tmp_path / "a.lmc.json").read_text())["compile"]
    assert rep["optimizer"] == ["bootstrap", "evolve"]
    kept = json.loads((tmp_path / "a.lmc.json").read_text())["ir"]["predictors"][0]
    assert kept["demos"] and kept["instructions"] == SARCASM  # bootstrap's demos, evolve's instruction


@pytest.mark.parametrize("cap", [7, 12, 19, 25])
def test_max_calls_is_never_exceeded(lmc, tmp_path, cap):
    code, _, err = lmc.compile("--optimizer", "evolve", "--rounds", "6", "--minibatch", "4", "--max-calls", str(cap), "--no-cache", "--allow-partial")
    assert code == 0, err
    rep = json.loads((tmp_path / "out.lmc.json").read_text())["compile"]
    assert rep["lm_requests"] <= cap


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--optimizer", "evolve", "--pick", "worst"], "'worst' is not one of"),
        (["--optimizer", "evolve", "--minibatch", "13"], "--minibatch 13 is larger than the trainset (12 examples)"),
        (["--optimizer", "evolve", "--rounds", "0"], "--rounds"),
        (["--optimizer", "evolve", "--merges", "-1"], "--merges"),
        (["--optimizer", "bootstrap", "--rounds", "3"], "--rounds is not used by bootstrap; it is an option of evolve"),
        (["--passes", "p.yaml"], "'pick' must be one of: round-robin, blame; got 'best'"),
    ],
)
def test_bad_evolve_options_are_one_line_errors_before_any_call(lmc, tmp_path, server, args, expected):
    (tmp_path / "p.yaml").write_text("- {name: evolve, pick: best}\n")
    before = server.requests
    code, _, err = lmc.compile(*args)
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and not ln.startswith("Usage:") and not ln.startswith("Try ")]
    assert len(lines) == 1 and expected in lines[0], err
    assert server.requests == before


def test_the_live_panel_shows_the_front_and_its_best_dev_score():
    import io

    from rich.console import Console

    from lmc.cli_compile import _LiveView
    from lmc.progress import Progress

    console = Console(file=io.StringIO(), width=120)
    status = Progress("compile", "panel", score_label="best dev score")
    status.set_stage("evolve: round 3/12")
    status.record_best(0.8)
    search: dict = {}
    view = _LiveView(console, status, 0.0, search)
    console.print(view.__rich__())
    assert "front" not in console.file.getvalue()
    search.update({"front": 3, "pool": 5, "best_dev": 0.8})
    console.print(view.__rich__())
    assert "front: 3 of 5 accepted   best on the front: 0.800" in console.file.getvalue()


def test_a_second_evolve_pass_names_its_candidates_apart():
    ctx, fake, ir = make_ctx(
        SENTIMENT, magic_lm, TRAIN, DEV, prompt_script=FakeLM(sarcasm_reflection), rounds=1, minibatch=4, merges=0, pick="round-robin"
    )
    first = run(run_pass("evolve", ir, ctx))
    run(run_pass("evolve", first, ctx))
    names = [c.name for c in ctx.candidates]
    assert names[:2] == ["evolve:start", "evolve:round-1"] and names[2] == "evolve2:start"
    assert len(names) == len(set(names))


def test_a_program_without_lm_calls_is_left_as_it_is_with_a_note():
    src = 'program main(review: str) -> (sentiment: str) {\n  return {"sentiment": "positive"}\n}\nmetric acc = accuracy(sentiment)\n'
    ctx, fake, ir = make_ctx(src, magic_lm, TRAIN, DEV, prompt_script=FakeLM(sarcasm_reflection), rounds=2, minibatch=2, merges=0, pick="round-robin")
    assert run(run_pass("evolve", ir, ctx)) == ir
    assert ctx.notes == ["evolve: the program calls no LM, so there is no instruction to improve"]
    assert fake.calls == []


@pytest.mark.parametrize("optimizer", ["evolve", "random-search", "mipro"])
def test_a_warm_recompile_under_a_spent_max_calls_stops_where_the_cold_one_did(lmc, tmp_path, server, optimizer):
    # Cached answers count against --max-calls in compile: were they free, the warm run would search further
    # (it did: 9 more requests and another program) and a budget-limited compile would depend on its cache.
    args = ("--optimizer", optimizer, "--max-calls", "12", "--allow-partial", "--seed", "1")
    server.reset_counters()
    assert lmc.compile(*args, out="a.lmc.json")[0] == 0
    cold = json.loads((tmp_path / "a.lmc.json").read_text())["compile"]
    before = server.requests
    assert cold["budget"]["exhausted"] and before <= 12
    code, _, err = lmc.compile(*args, out="b.lmc.json")
    assert code == 0, err
    assert server.requests == before
    assert (tmp_path / "a.lmc.json").read_bytes() == (tmp_path / "b.lmc.json").read_bytes()


@pytest.mark.parametrize("cap", [30, 40])
def test_mipro_under_a_small_max_calls_keeps_enough_to_score_its_best_trial_on_dev(lmc, tmp_path, server, cap):
    # Without the reserve, the trials spent these budgets and the compile ended with no program scored on dev.
    server.reset_counters()
    code, _, err = lmc.compile("--optimizer", "mipro", "--max-calls", str(cap), "--allow-partial", "--trials", "12", "--minibatch", "4")
    assert code == 0, err
    rep = json.loads((tmp_path / "out.lmc.json").read_text())["compile"]
    assert [(c["name"], c["dev"]) for c in rep["candidates"]] == [("as-written", pytest.approx(2 / 3)), ("mipro:trial-1", 1.0)]
    assert any("LM calls left of --max-calls; the trials stop so the best of them is scored on dev" in n for n in rep["notes"])
    assert server.requests <= cap
