"""`lmc dataset from-traces`: lmc traces and LangSmith exports → compile-ready examples, end to end from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmc.errors import ConfigError
from lmc.traces import parse_where
from tests.lmserver import LoopbackServer
from tests.test_compile_cli import SENTIMENT, responder

SECRET = "sk-test-SECRET"


@pytest.fixture(scope="module")
def server():
    with LoopbackServer(responder) as srv:
        yield srv


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("LMC_LM", raising=False)
    (tmp_path / "s.lmp").write_text(SENTIMENT)

    def run(*args: str) -> tuple[int, str, str]:
        from lmc.cli import main

        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err + captured.out
        return code, captured.out, captured.err

    return run


def lm(server) -> list[str]:
    return ["--lm", "openai/test", "--api-base", server.url, "--cache-dir", "cache"]


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def read(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def one_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# Production-like inputs: "bad" reviews are negative; MISLEAD ones fool the zero-shot model (tests/test_compile_cli).
REVIEWS = (
    [{"id": f"p{i}", "review": f"good stuff {i}"} for i in range(4)]
    + [{"id": f"n{i}", "review": f"bad stuff {i}"} for i in range(4)]
    + [{"id": f"m{i}", "review": f"bad but MISLEAD {i}"} for i in range(3)]
    + [{"id": "dup", "review": "good stuff 0"}]
)


def test_run_trace_to_dataset_to_compile(cli, server, tmp_path):
    jsonl(tmp_path / "prod.jsonl", REVIEWS)
    code, _, err = cli("run", "s.lmp", "--data", "prod.jsonl", "--out", "out.jsonl", "--trace", "trace.jsonl", *lm(server))
    assert code == 0, err
    lines = read(tmp_path / "trace.jsonl")
    first = lines[0]
    assert first["schema"] == "lmc-trace/1" and first["program"] == "main" and first["score"] is None
    assert set(first["inputs"]) == {"review"} and set(first["outputs"]) == {"sentiment"}
    assert first["calls"][0]["module"] == "classify" and "prompt" in first["calls"][0]

    code, _, err = cli("dataset", "from-traces", "trace.jsonl", "--program", "s.lmp", "-o", "train.jsonl")
    assert code == 0, err
    rows = read(tmp_path / "train.jsonl")
    assert len(rows) == 11  # 12 traces, one the duplicate of another's input
    assert all(set(r) == {"id", "review", "sentiment"} for r in rows)
    assert "1 duplicates of an earlier input (first at trace.jsonl:" in err

    # The dataset compiles as it is.
    code, _, err = cli("compile", "s.lmp", "--train", "train.jsonl", "-o", "s.lmc.json", "--optimizer", "labeled", *lm(server))
    assert code == 0, err
    assert (tmp_path / "s.lmc.json").exists()


def test_eval_trace_scores_filter_the_dataset(cli, server, tmp_path):
    gold = [dict(r, sentiment="negative" if "bad" in r["review"] else "positive") for r in REVIEWS[:-1]]
    jsonl(tmp_path / "gold.jsonl", gold)
    code, _, err = cli("eval", "s.lmp", "--data", "gold.jsonl", "--trace", "scored.jsonl", *lm(server))
    assert code in (0, 1), err
    scored = read(tmp_path / "scored.jsonl")
    assert len(scored) == 11 and {t["score"] for t in scored} == {0.0, 1.0}
    wrong = {t["id"] for t in scored if t["score"] == 0.0}
    assert wrong == {"m0", "m1", "m2"}  # the zero-shot program is fooled by MISLEAD

    code, _, err = cli("dataset", "from-traces", "scored.jsonl", "--program", "s.lmp", "--where", "score >= 1", "-o", "good.jsonl")
    assert code == 0, err
    assert {r["id"] for r in read(tmp_path / "good.jsonl")} == {t["id"] for t in scored} - wrong
    assert "3 not matching --where 'score >= 1'" in err

    # Rerunning eval replaces its trace instead of appending to it.
    cli("eval", "s.lmp", "--data", "gold.jsonl", "--trace", "scored.jsonl", *lm(server))
    assert len(read(tmp_path / "scored.jsonl")) == 11

    code, _, err = cli("compile", "s.lmp", "--train", "good.jsonl", "--dev", "gold.jsonl", "-o", "g.lmc.json", "--optimizer", "labeled", *lm(server))
    assert code == 0, err


def test_module_and_error_filters(cli, server, tmp_path):
    trace = [
        {
            "schema": "lmc-trace/1",
            "id": "a",
            "inputs": {"review": "x"},
            "outputs": {"sentiment": "positive"},
            "ok": True,
            "error": None,
            "score": 1,
            "feedback": {"thumbs": 1},
            "calls": [
                {"module": "classify", "predictor": "classify", "inputs": {"review": "x"}, "outputs": {"sentiment": "positive"}, "error": None}
            ],
        },
        {
            "schema": "lmc-trace/1",
            "id": "b",
            "inputs": {"review": "y"},
            "outputs": None,
            "ok": False,
            "error": "classify: could not parse",
            "calls": [{"module": "classify", "inputs": {"review": "y"}, "outputs": None, "error": "could not parse"}],
        },
        {
            "schema": "lmc-trace/1",
            "id": "c",
            "inputs": {"review": "z"},
            "outputs": {"sentiment": "negative"},
            "ok": True,
            "error": None,
            "feedback": {"thumbs": 0},
            "calls": [],
        },
    ]
    jsonl(tmp_path / "t.jsonl", trace)
    code, _, err = cli("dataset", "from-traces", "t.jsonl", "--program", "s.lmp", "--errors", "only", "-o", "e.jsonl")
    assert code == 0, err
    assert read(tmp_path / "e.jsonl") == [{"id": "b", "review": "y"}]  # inputs to label by hand
    code, _, err = cli("dataset", "from-traces", "t.jsonl", "--program", "s.lmp", "--module", "classify", "-o", "m.jsonl")
    assert code == 0, err
    assert read(tmp_path / "m.jsonl") == [{"id": "a.classify.1", "review": "x", "sentiment": "positive"}]
    code, _, err = cli("dataset", "from-traces", "t.jsonl", "--program", "s.lmp", "--where", "feedback.thumbs == 1", "-o", "f.jsonl")
    assert code == 0 and [r["id"] for r in read(tmp_path / "f.jsonl")] == ["a"], err
    code, _, err = cli("dataset", "from-traces", "t.jsonl", "--program", "s.lmp", "--errors", "include", "--where", "error != null", "-o", "i.jsonl")
    assert code == 0 and [r["id"] for r in read(tmp_path / "i.jsonl")] == ["b"], err


LANGSMITH_RUNS = [
    {
        "id": "11111111-0000-0000-0000-000000000001",
        "name": "SentimentChain",
        "run_type": "chain",
        "inputs": {"review": "lovely"},
        "outputs": {"sentiment": "positive"},
        "error": None,
        "parent_run_id": None,
        "trace_id": "11111111-0000-0000-0000-000000000001",
        "start_time": "2026-11-30T10:00:00.000000",
        "end_time": "2026-11-30T10:00:01.500000",
        "feedback_stats": {"correctness": {"n": 1, "avg": 1.0}},
        "child_run_ids": ["22222222-0000-0000-0000-000000000001"],
    },
    {
        "id": "22222222-0000-0000-0000-000000000001",
        "name": "ChatOpenAI",
        "run_type": "llm",
        "inputs": {"messages": [[{"type": "human", "content": "lovely"}]]},
        "outputs": {"generations": [[{"text": "positive"}]]},
        "error": None,
        "parent_run_id": "11111111-0000-0000-0000-000000000001",
    },
    {
        "id": "11111111-0000-0000-0000-000000000002",
        "name": "SentimentChain",
        "run_type": "chain",
        "inputs": {"input": "awful"},
        "outputs": {"output": "negative"},
        "error": None,
        "parent_run_id": None,
        "feedback_stats": {"correctness": {"n": 2, "avg": 0.5}},
    },
    {
        "id": "11111111-0000-0000-0000-000000000003",
        "name": "SentimentChain",
        "run_type": "chain",
        "inputs": {"review": "meh"},
        "outputs": None,
        "error": "RateLimitError",
        "parent_run_id": None,
    },
]


@pytest.mark.parametrize("form", ["jsonl", "json-list", "json-runs", "json-tree"])
def test_langsmith_exports(cli, tmp_path, form):
    runs = LANGSMITH_RUNS
    if form == "jsonl":
        jsonl(tmp_path / "ls.jsonl", runs)
        name = "ls.jsonl"
    else:
        name = "ls.json"
        if form == "json-list":
            doc: object = runs
        elif form == "json-runs":
            doc = {"runs": runs, "cursors": {"next": None}}
        else:  # one run with its children nested, as a RunTree is exported
            doc = dict(runs[0], child_runs=[{k: v for k, v in runs[1].items() if k != "parent_run_id"}])
        (tmp_path / name).write_text(json.dumps(doc, indent=2))
    code, _, err = cli("dataset", "from-traces", name, "--program", "s.lmp", "-o", "out.jsonl")
    assert code == 0, err
    rows = read(tmp_path / "out.jsonl")
    expected = [{"id": "11111111-0000-0000-0000-000000000001", "review": "lovely", "sentiment": "positive"}]
    if form != "json-tree":
        # a one-input chain's 'input'/'output' keys map onto the program's one input and output
        expected.append({"id": "11111111-0000-0000-0000-000000000002", "review": "awful", "sentiment": "negative"})
    assert rows == expected
    if form != "json-tree":
        code, _, err = cli("dataset", "from-traces", name, "--program", "s.lmp", "--where", "score >= 1 and duration_s < 2", "-o", "best.jsonl")
        assert code == 0 and [r["review"] for r in read(tmp_path / "best.jsonl")] == ["lovely"], err


def test_bad_input_is_one_line_with_file_and_line(cli, tmp_path):
    jsonl(tmp_path / "t.jsonl", [{"schema": "lmc-trace/1", "id": "a", "inputs": {"review": "x"}, "calls": []}, "{not json"])
    code, _, err = cli("dataset", "from-traces", "t.jsonl", "--program", "s.lmp", "-o", "o.jsonl")
    assert code == 2 and one_error(err).startswith("error: t.jsonl:2: not valid JSON")
    # The line parser datasets use, with the traces' own reading of values and their own hint.
    (tmp_path / "n.jsonl").write_text('{"schema": "lmc-trace/1", "id": "a", "inputs": {"review": NaN}, "calls": []}\n')
    code, _, err = cli("dataset", "from-traces", "n.jsonl", "--program", "s.lmp", "-o", "o.jsonl")
    assert code == 2 and one_error(err) == "error: n.jsonl:1: NaN is not valid JSON; write null or a string instead"
    (tmp_path / "l.jsonl").write_text('[{"schema": "lmc-trace/1",\n "id": "a"}\n')
    code, _, err = cli("dataset", "from-traces", "l.jsonl", "--program", "s.lmp", "-o", "o.jsonl")
    assert code == 2 and one_error(err).startswith("error: l.jsonl:1: not valid JSON") and "export the runs as one JSON document" in err
    jsonl(tmp_path / "u.jsonl", [{"hello": 1}])
    code, _, err = cli("dataset", "from-traces", "u.jsonl", "--program", "s.lmp", "-o", "o.jsonl")
    assert code == 2 and "u.jsonl:1: neither an lmc trace" in one_error(err)
    (tmp_path / "v.json").write_text('[\n  {"id": "r1", "run_type": "chain", "inputs": 5}\n]')
    code, _, err = cli("dataset", "from-traces", "v.json", "--program", "s.lmp", "-o", "o.jsonl")
    assert code == 2 and "v.json:2: 'inputs' must be a JSON object" in one_error(err)
    code, _, err = cli("dataset", "from-traces", "missing.jsonl", "--program", "s.lmp", "-o", "o.jsonl")
    assert code == 2 and "missing.jsonl: file not found" in one_error(err)
    code, _, err = cli("dataset", "from-traces", "t.jsonl", "--program", "s.lmp", "--where", "score >>= 1", "-o", "o.jsonl")
    assert code == 2 and "--where 'score >>= 1'" in one_error(err)
    code, _, err = cli("dataset", "from-traces", "t.jsonl", "--program", "s.lmp", "--errors", "some", "-o", "o.jsonl")
    assert code == 2 and "'some' is not one of: exclude, include, only" in err
    assert not (tmp_path / "o.jsonl").exists()


def test_nothing_matching_writes_nothing(cli, tmp_path):
    jsonl(
        tmp_path / "t.jsonl",
        [
            {"schema": "lmc-trace/1", "id": "a", "inputs": {"other": "x"}, "outputs": {"sentiment": "positive"}, "error": None, "calls": []},
            {"schema": "lmc-trace/1", "id": "b", "inputs": {"review": 3}, "outputs": {"sentiment": "positive"}, "error": None, "calls": []},
        ],
    )
    code, _, err = cli("dataset", "from-traces", "t.jsonl", "--program", "s.lmp", "-o", "o.jsonl")
    line = one_error(err)
    assert code == 2 and "no trace gave an example" in line
    assert "without input 'review' (first at t.jsonl:1)" in line and "with a bad input 'review'" in line
    assert not (tmp_path / "o.jsonl").exists()


def test_output_never_clobbers_an_input(cli, tmp_path):
    jsonl(
        tmp_path / "t.jsonl",
        [{"schema": "lmc-trace/1", "id": "a", "inputs": {"review": "x"}, "outputs": {"sentiment": "positive"}, "error": None, "calls": []}],
    )
    before = (tmp_path / "t.jsonl").read_bytes()
    for target in ("t.jsonl", "s.lmp"):
        code, _, err = cli("dataset", "from-traces", "t.jsonl", "--program", "s.lmp", "-o", target)
        assert code == 2 and "would destroy an input" in one_error(err)
    assert (tmp_path / "t.jsonl").read_bytes() == before


def test_where_parser():
    w = parse_where("score >= 0.5 and ok == true and name == 'classify'")
    assert w.matches({"score": 0.5, "ok": True, "name": "classify"})
    assert not w.matches({"score": None, "ok": True, "name": "classify"})  # no score: never above a bound
    assert not w.matches({"score": 1, "ok": False, "name": "classify"})
    assert parse_where("error == null").matches({"error": None})
    assert parse_where("error != null").matches({"error": "boom"})
    assert parse_where("feedback.helpful > 0").matches({"feedback.helpful": 1})
    assert parse_where("").matches({})
    for bad in ("score >=", "score 1", "colour == 1", "score >= 1 or ok == true", "score >= 1e999"):
        with pytest.raises(ConfigError):
            parse_where(bad)
