"""bench/bench_compare.py without an LM: answer scoring, the one-commit rule for tables and verdicts, optimizer pairing."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def bc(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT))
    try:
        from bench import bench_compare
    finally:
        sys.path.remove(str(ROOT))
    monkeypatch.setattr(bench_compare, "RESULTS", tmp_path)
    return bench_compare


def _answers(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _run(
    bc, system: str, opt: str, acc: float, calls: int, commit: str = "c1", clean: bool = True, finished: str = "2026-12-01T10:00:00", **extra
) -> None:
    folder = bc.RESULTS / "route-small" / system
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "system": system,
        "optimizer": opt,
        "lmc_commit": commit,
        "clean": clean,
        "finished_at": finished,
        "test_acc": acc,
        "test_n": 40,
        "compile_calls": calls,
        "eval_calls": 40,
        "compile_wall_s": 1.0,
        "eval_wall_s": 2.0,
        "parse_failures": 0,
        "top_answer": "card arrival",
        "top_answer_share": 0.3,
        "split": {"train": 120, "dev": 20, "test": 40},
        **extra,
    }
    (folder / f"{opt}.json").write_text(json.dumps(data))


def test_score_answers_counts_parse_failures_and_the_most_common_answer(bc, tmp_path):
    path = tmp_path / "a.answers.jsonl"
    _answers(
        path,
        [
            {"id": "1", "gold": "positive", "raw": " positive", "parsed": "positive", "correct": True},
            {"id": "2", "gold": "negative", "raw": " positive", "parsed": "positive", "correct": False},
            {
                "id": "3",
                "gold": "negative",
                "raw": " 10/10",
                "parsed": None,
                "correct": False,
                "error": "output 'sentiment': expected one of ...",
                "error_kind": "parse",
            },
            {
                "id": "4",
                "gold": "negative",
                "raw": "[[ ## review",
                "parsed": None,
                "correct": False,
                "error": "AdapterParseError: LM response cannot be serialized",
            },
            {"id": "5", "gold": "negative", "raw": None, "parsed": None, "correct": False, "error": "LMServerError: connection refused"},
        ],
    )
    s = bc.score_answers(path)
    assert s["test_n"] == 5 and s["test_acc"] == 0.2
    assert s["parse_failures"] == 2 and s["lm_errors"] == 1  # no reply at all is not a parse failure
    assert (s["top_answer"], s["top_answer_share"]) == ("(none)", 0.6)


def test_tables_use_only_the_newest_clean_commit_and_verdicts_need_both_sides(bc):
    _run(bc, "lmc-server", "labeled", 0.7, 0)
    _run(bc, "dspy-server", "labeled", 0.5, 0)
    _run(bc, "lmc-server", "bootstrap", 0.8, 30)  # DSPy's side of bootstrap never ran at c1
    _run(bc, "dspy-server", "bootstrap", 0.9, 10, commit="c0", finished="2026-11-30T10:00:00")
    _run(bc, "lmc-local", "labeled", 0.9, 0, clean=False, finished="2026-12-02T10:00:00")  # newest, but dirty
    out = bc.summarize(["route"], "small")
    t = out["tasks"]["route"]
    assert t["commit"] == "c1"
    assert set(t["runs"]) == {"lmc-server/labeled", "dspy-server/labeled", "lmc-server/bootstrap"}
    assert len(t["stale"]) == 2
    md = out["markdown"]
    labeled = next(line for line in md.splitlines() if line.startswith("| labeled"))
    assert "lmc >= DSPy: yes" in labeled and "fewer calls: yes" in labeled
    bootstrap = next(line for line in md.splitlines() if line.startswith("| bootstrap"))
    assert "no verdict" in bootstrap and "lmc >= DSPy" not in bootstrap
    assert "Stale runs" in md and "`dspy-server/bootstrap` (c0)" in md and "`lmc-local/labeled` (c1+edits)" in md


def test_no_table_without_a_clean_run(bc):
    _run(bc, "lmc-server", "labeled", 0.7, 0, clean=False)
    out = bc.summarize(["route"], "small")
    assert out["tasks"]["route"]["commit"] is None
    assert "No clean run yet: no table." in out["markdown"]
    assert "| labeled" not in out["markdown"]


def test_a_failed_run_gets_no_verdict(bc):
    _run(bc, "lmc-server", "mipro", 0.7, 100)
    folder = bc.RESULTS / "route-small" / "dspy-server"
    folder.mkdir(parents=True)
    (folder / "mipro.json").write_text(
        json.dumps(
            {
                "system": "dspy-server",
                "optimizer": "mipro",
                "lmc_commit": "c1",
                "clean": True,
                "finished_at": "2026-12-01T09:00:00",
                "error": "DSPy mipro failed",
            }
        )
    )
    row = next(line for line in bc.summarize(["route"], "small")["markdown"].splitlines() if line.startswith("| mipro"))
    assert "FAILED" in row and "no verdict" in row


def test_optimizer_pairs_use_the_same_budgets(bc):
    task = bc.TASKS["route"]
    s = bc.settings(task, "small", 20)
    args = lambda opt: bc.lmc_compile_args(bc.Run(task, "small", "lmc-server", opt, {}, {}, s))  # noqa: E731
    for opt in ("labeled", "bootstrap", "knn"):
        assert "--no-score-dev" in args(opt)  # their DSPy counterparts never touch dev
    assert "--no-score-dev" not in args("random-search")
    mipro = args("mipro")
    value = lambda flag: mipro[mipro.index(flag) + 1]  # noqa: E731
    # DSPy's MIPROv2 has one num_candidates for instructions and demo sets.
    assert value("--candidates") == value("--instructions") == str(s["candidates"])
    assert value("--trials") == str(s["trials"]) and value("--minibatch") == str(min(25, 20))
    assert args("labeled")[args("labeled").index("--max-labeled") + 1] == "12"
    evolve = args("evolve")
    # GEPA's max_metric_calls is the same number (dspy_side.compile_program).
    assert evolve[evolve.index("--max-calls") + 1] == str(s["max_calls"]) == "80"
    assert evolve[evolve.index("--minibatch") + 1] == str(s["reflection_minibatch"])


def test_gepa_metric_scores_like_the_others_and_explains_like_lmc():
    dspy = pytest.importorskip("dspy")
    sys.path.insert(0, str(ROOT / "bench"))
    import dspy_side

    metric = dspy_side.make_feedback_metric("sentiment")
    gold = dspy.Example(review="fine", sentiment="positive").with_inputs("review")
    wrong = metric(gold, dspy.Prediction(sentiment="negative"), None, "classify", None)  # GEPA's five arguments
    assert wrong.score == 0.0 and wrong.feedback == 'wrong: expected "positive", got "negative"'
    assert metric(gold, dspy.Prediction(sentiment="Positive")).score == 1.0
    assert metric(gold, dspy.Prediction()).feedback == 'no answer; expected "positive"'


def test_variants_score_dev_stay_in_their_own_folder_and_come_last(bc):
    runs = bc.plan(["sst2"], "small", ("lmc-local",), ("zero-shot",), "no", ("knn8", "greedy-zero-shot"))
    assert [r.stem for r in runs] == ["zero-shot", "knn8", "greedy-zero-shot"]
    knn, greedy = runs[1], runs[2]
    # Chosen on dev: a variant keeps lmc's dev scoring, unlike the tables' knn (paired with DSPy's, which skips dev).
    assert "--no-score-dev" not in bc.lmc_compile_args(knn) and bc.lmc_compile_args(knn)[:2] == ["--optimizer", "knn"]
    assert knn.dir.name == bc.VARIANTS_DIR and knn.program == bc.TASKS["sst2"].program and greedy.program == bc.SST2_GREEDY
    assert "score_labels=false" in greedy.program.read_text()
    # Outside SYSTEMS' folders: the tables never load them, so they cannot make the tables' runs stale.
    assert bc.VARIANTS_DIR not in bc.SYSTEMS


def test_task_definitions_match_their_programs(bc):
    for task in bc.TASKS.values():
        task.check_program()


def test_grammars_admit_exactly_the_adapter_answer_with_a_label(bc):
    sys.path.insert(0, str(ROOT / "bench"))
    import dspy_side

    g = dspy_side.grammar("chat", "intent", ["card arrival", 'say "hi"'])
    assert g == ('root ::= "[[ ## intent ## ]]\\n" ("card arrival" | "say \\"hi\\"") "\\n\\n[[ ## completed ## ]]"')
    assert '"\\"intent\\":"' in dspy_side.grammar("json", "intent", ["a"])
    assert set(dspy_side.CONSTRAINED) <= set(dspy_side.CONFIGS)


def test_code_version_ignores_the_benchmarks_own_outputs(bc, monkeypatch):
    status = " M bench/results/compare/x.json\n M bench/RESULTS.md\n?? bench/results/new.answers.jsonl"
    monkeypatch.setattr(bc, "_git", lambda *a: status if a[0] == "status" else "abc")
    assert bc.code_version() == {"lmc_commit": "abc", "clean": True, "dirty_files": []}
    monkeypatch.setattr(bc, "_git", lambda *a: status + "\n M lmc/cli.py" if a[0] == "status" else "abc")
    assert bc.code_version()["dirty_files"] == ["lmc/cli.py"] and not bc.code_version()["clean"]


def _hard_maker():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_banking_hard", ROOT / "bench" / "make_banking_hard.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_route12_sets_are_balanced_disjoint_and_fit_their_program(bc):
    mod = _hard_maker()
    labels = bc.TASKS["route12"].labels
    assert sorted(labels) == sorted(mod.base.label(i) for i in mod.INTENTS)
    seen: dict[str, str] = {}
    for part, per_intent in mod.PER_INTENT.items():
        rows = [json.loads(line) for line in (mod.OUT / f"route12_{part}.jsonl").read_text().splitlines()]
        counts = {label: sum(r["intent"] == label for r in rows) for label in labels}
        assert counts == dict.fromkeys(labels, per_intent), part
        for r in rows:
            key = " ".join(r["message"].lower().split())
            assert key not in seen, f"{r['id']} ({part}) repeats a message of {seen[key]}"
            seen[key] = part


def test_route12_sets_rebuild_byte_for_byte():
    mod = _hard_maker()
    folder = mod.base.default_source()
    if not (folder / "banking77_test.jsonl").is_file():
        pytest.skip("the BANKING77 source files are not on this machine")
    assert mod.main(["--check"]) == 0


def test_answers_files_must_have_one_complete_line_per_test_example(bc, tmp_path):
    task = bc.TASKS["sst2"]
    test = tmp_path / "test.jsonl"
    _answers(test, [{"id": "a", "review": "good", "sentiment": "positive"}, {"id": "b", "review": "bad", "sentiment": "negative"}])
    good = [
        {"id": "a", "input": "good", "gold": "positive", "raw": " positive", "parsed": "positive", "correct": True},
        {"id": "b", "input": "bad", "gold": "negative", "raw": None, "parsed": None, "correct": False},
    ]
    path = tmp_path / "labeled.answers.jsonl"
    _answers(path, good)
    bc.check_answers(path, test, task)
    for bad, why in (
        (good[:1], "ids do not match"),
        ([good[1], good[0]], "ids do not match"),
        ([good[0], {k: v for k, v in good[1].items() if k != "raw"}], "missing ['raw']"),
        ([good[0], {**good[1], "gold": "positive"}], "gold"),
        ([good[0], {**good[1], "correct": 0}], "boolean"),
    ):
        _answers(path, bad)
        with pytest.raises(RuntimeError, match=re.escape(why)):
            bc.check_answers(path, test, task)
    path.unlink()
    with pytest.raises(RuntimeError, match="no per-example answers"):
        bc.check_answers(path, test, task)


def test_dspy_config_comes_from_the_study_at_the_same_clean_commit(bc):
    folder = bc.RESULTS / "sst2-small" / "study"
    folder.mkdir(parents=True)
    for config, accs in {"chat-stop": (0.0, 0.5), "json": (0.2, 0.5), "chat-grammar": (0.6, 0.5), "json-grammar": (0.5, 0.5)}.items():
        for opt, acc in zip(bc.STUDY_OPTIMIZERS, accs):
            (folder / f"{config}-{opt}.json").write_text(
                json.dumps(
                    {
                        "dspy_config": config,
                        "optimizer": opt,
                        "lmc_commit": "c1",
                        "clean": True,
                        "test_acc": acc,
                        "parse_failures": 0,
                        "eval_calls": 20,
                    }
                )
            )
    clean = {"lmc_commit": "c1", "clean": True}
    assert bc.dspy_config("route", "dspy-server", clean)[0] == "json"  # route has no study: SST-2's
    assert bc.dspy_config("sst2", "dspy-grammar", clean)[0] == "chat-grammar"
    # Another commit's or a dirty tree's study configures nothing.
    assert bc.dspy_config("sst2", "dspy-server", {"lmc_commit": "c2", "clean": True}) == (
        bc.DSPY_SERVER_CONFIG,
        "default (no complete config study at this commit)",
    )
    assert bc.dspy_config("sst2", "dspy-server", {"lmc_commit": "c1", "clean": False})[0] == bc.DSPY_SERVER_CONFIG


def test_a_constrained_dspy_configuration_proposes_mipro_instructions_unconstrained():
    pytest.importorskip("dspy")
    sys.path.insert(0, str(ROOT / "bench"))
    import dspy_side

    lm, _ = dspy_side.make_lm("chat-grammar", "http://127.0.0.1:9/v1", "sentiment", ["positive", "negative"])
    assert "grammar" in lm.kwargs["extra_body"]
    free, _ = dspy_side.make_lm("chat-grammar", "http://127.0.0.1:9/v1", "sentiment", ["positive", "negative"], constrained=False)
    assert "extra_body" not in free.kwargs and free.kwargs["stop"] == [dspy_side.CHAT_END]


def _run_all(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_all", ROOT / "bench" / "run_all.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "run_all", mod)  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_run_all_summary_only_rebuilds_compare_from_disk_and_refuses_the_rest(monkeypatch, capsys):
    run_all = _run_all(monkeypatch)
    seen = {}

    def fake_run_one(b, quick, summary_only=False):
        seen[b.name] = (quick, summary_only)
        return {"size": "small", "tasks": {}, "markdown": "table"}, 0.1

    written = {}
    monkeypatch.setattr(run_all, "run_one", fake_run_one)
    monkeypatch.setattr(run_all, "write_results", lambda new, commands: written.update(new, commands=commands))
    monkeypatch.setattr(sys, "argv", ["run_all.py", "--quick", "--only", "compare", "--summary-only"])
    assert run_all.main() == 0
    assert seen == {"compare": (True, True)}
    assert written["commands"] == ["python bench/run_all.py --quick --only compare --summary-only"]
    assert "table" in written["compare"]
    monkeypatch.setattr(sys, "argv", ["run_all.py", "--only", "check", "--summary-only"])
    with pytest.raises(SystemExit):
        run_all.main()
    assert "--summary-only rebuilds only compare" in capsys.readouterr().err


def test_run_all_keeps_hand_written_notes_after_their_benchmark(monkeypatch, tmp_path):
    run_all = _run_all(monkeypatch)
    results = tmp_path / "RESULTS.md"
    monkeypatch.setattr(run_all, "RESULTS", results)
    results.write_text(
        "<!-- manual:compare-notes -->\nhow to read it\n<!-- /manual:compare-notes -->\n<!-- bench:check -->\nold check\n<!-- /bench:check -->\n"
    )
    run_all.write_results({"compare": "<!-- bench:compare -->\nnew tables\n<!-- /bench:compare -->\n"}, ["cmd"])
    text = results.read_text()
    assert text.index("old check") < text.index("new tables") < text.index("how to read it") < text.index("make demo")


def test_tables_show_unparsed_answers_and_examples_without_a_reply(bc):
    _run(bc, "lmc-server", "zero-shot", 0.1, 0, parse_failures=34, lm_errors=1)
    _run(bc, "dspy-server", "zero-shot", 0.0, 0, parse_failures=40)
    row = next(line for line in bc.summarize(["route"], "small")["markdown"].splitlines() if line.startswith("| zero-shot"))
    assert "| 34 (1) / 40 (0) |" in row
