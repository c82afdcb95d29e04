"""Tests for lmc.datasets: strict JSONL/JSON loading, validation against a program, splits, and the shipped datasets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lmc.datasets import Dataset, from_records, load_dataset, shuffle, split, validate
from lmc.errors import DatasetError

REPO = Path(__file__).resolve().parent.parent
DATASETS = REPO / "datasets"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_bytes(content.encode("utf-8"))
    return p


def error_of(path, **kw) -> str:
    with pytest.raises(DatasetError) as info:
        load_dataset(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


class Ty:
    """Stand-in for lmc.types: anything with .name and .check(value) -> str | None."""

    def __init__(self, name, ok):
        self.name = name
        self._ok = ok

    def check(self, value):
        return None if self._ok(value) else f"got {value!r}"


STR = Ty("str", lambda v: isinstance(v, str))
INT = Ty("int", lambda v: isinstance(v, int) and not isinstance(v, bool))
LABEL = Ty('"positive" | "negative"', lambda v: v in ("positive", "negative"))


# ---------------------------------------------------------------- loading


def test_jsonl_basic_ids_lines_and_sha(tmp_path):
    p = write(tmp_path, "qa.jsonl", '{"id": "a", "q": "x"}\n\n{"q": "y", "extra": [1]}\n')
    ds = load_dataset(p)
    assert isinstance(ds, Dataset) and len(ds) == 2
    assert ds.ids[0] == "a" and re.fullmatch(r"qa-[0-9a-f]{12}", ds.ids[1])
    assert [ex.line for ex in ds] == [1, 3]
    assert ds[1].data == {"q": "y", "extra": [1]}
    assert ds[1].get("extra") == [1] and ds[1].get("nope", 5) == 5
    import hashlib

    assert ds.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    assert ds.fields() == ["id", "q", "extra"]
    assert len({ds[0], ds[1], ds[0]}) == 2  # examples can go in sets despite the dict field
    assert ds[0] == load_dataset(p)[0]


def test_missing_ids_are_deterministic(tmp_path):
    p = write(tmp_path, "dev.jsonl", '{"q": 1}\n{"q": 2}\n')
    ids = load_dataset(p).ids
    assert ids == load_dataset(p).ids and len(set(ids)) == 2
    assert all(re.fullmatch(r"dev-[0-9a-f]{12}", i) for i in ids)


def test_missing_ids_follow_the_content_not_the_line(tmp_path):
    """Inserting a line (even a duplicate) gives new ids only to what is new; key order does not matter."""
    p = write(tmp_path, "d.jsonl", '{"q": 1}\n{"q": 2}\n{"q": 1}\n')
    before = load_dataset(p).ids
    assert before[2] == before[0] + "-2" and len(set(before)) == 3  # duplicates numbered in file order
    write(tmp_path, "d.jsonl", '{"q": 0}\n{"q": 1, "x": null}\n{"q": 1}\n{"q": 2}\n{"q": 1}\n')
    after = load_dataset(p).ids
    assert after[2:] == before
    assert not {after[0], after[1]} & set(before)
    write(tmp_path, "d.jsonl", '{"b": 1, "a": 2}\n')
    first = load_dataset(p).ids
    write(tmp_path, "d.jsonl", '{"a": 2, "b": 1}\n')
    assert load_dataset(p).ids == first


def test_integer_ids_become_strings(tmp_path):
    p = write(tmp_path, "d.jsonl", '{"id": 7}\n{"id": "8"}\n')
    assert load_dataset(p).ids == ["7", "8"]


def test_custom_id_field(tmp_path):
    p = write(tmp_path, "d.jsonl", '{"key": "k1"}\n{"key": "k2"}\n')
    assert load_dataset(p, id_field="key").ids == ["k1", "k2"]


def test_bom_and_crlf_tolerated(tmp_path):
    p = write(tmp_path, "d.jsonl", b'\xef\xbb\xbf{"id": "a", "q": "caf\xc3\xa9"}\r\n{"id": "b"}\r\n')
    ds = load_dataset(p)
    assert ds.ids == ["a", "b"] and ds[0].data["q"] == "café"


def test_json_list_file(tmp_path):
    p = write(tmp_path, "d.json", json.dumps([{"id": "x", "a": 1}, {"a": 2}]))
    ds = load_dataset(p)
    assert ds.ids[0] == "x" and ds.ids[1].startswith("d-") and [e.line for e in ds] == [1, 2]


def test_json_list_errors(tmp_path):
    assert "expected a JSON list of objects, got" in error_of(write(tmp_path, "o.json", '{"a": 1}'))
    assert "item 2: expected a JSON object, got a number" in error_of(write(tmp_path, "l.json", '[{"a": 1}, 3]'))
    assert "file is empty" in error_of(write(tmp_path, "e.json", "[]"))
    msg = error_of(write(tmp_path, "bad.json", '[\n{"a": 1},\n{"a" 2}\n]'))
    assert msg.startswith(f"{tmp_path / 'bad.json'}:3: not valid JSON: Expecting ':' delimiter")


def test_malformed_json_line_names_line_and_column(tmp_path):
    p = write(tmp_path, "d.jsonl", '{"id": "a"}\n' * 6 + '{"id": "b" "q": 1}\n')
    msg = error_of(p)
    assert msg == f"{p}:7: not valid JSON: Expecting ',' delimiter at column 12"


def test_line_not_an_object(tmp_path):
    assert ":2: expected a JSON object, got a list" in error_of(write(tmp_path, "d.jsonl", '{"a": 1}\n[1, 2]\n'))
    assert ":1: expected a JSON object, got a string" in error_of(write(tmp_path, "s.jsonl", '"hello"\n'))


def test_json_list_in_jsonl_file_gets_a_hint(tmp_path):
    msg = error_of(write(tmp_path, "d.jsonl", '[\n{"a": 1}\n]\n'))
    assert "looks like a JSON list" in msg


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_refused(tmp_path, token):
    msg = error_of(write(tmp_path, "d.jsonl", f'{{"id": "a", "x": {token}}}\n'))
    assert f":1: {token} is not valid JSON" in msg


def test_duplicate_keys_refused(tmp_path):
    msg = error_of(write(tmp_path, "d.jsonl", '{"id": "a"}\n{"answer": 1, "answer": 2}\n'))
    assert ":2: duplicate key 'answer'" in msg
    nested = error_of(write(tmp_path, "n.jsonl", '{"x": {"k": 1, "k": 1}}\n'))
    assert "duplicate key 'k'" in nested


def test_duplicate_ids_refused(tmp_path):
    p = write(tmp_path, "d.jsonl", '{"id": "z"}\n{"id": "w"}\n{"id": "x"}\n{"id": "y"}\n{"id": "x"}\n')
    assert error_of(p) == f"{p}:5: duplicate id 'x' (first on line 3)"


def test_assigned_id_colliding_with_explicit_id(tmp_path):
    taken = load_dataset(write(tmp_path, "d.jsonl", '{"q": 1}\n')).ids[0]
    p = write(tmp_path, "d.jsonl", f'{{"id": "{taken}"}}\n{{"q": 1}}\n')
    assert f"duplicate id '{taken}' (first on line 1)" in error_of(p)


def test_bad_id_types(tmp_path):
    assert "'id' must be a string or an integer, got a list" in error_of(write(tmp_path, "d.jsonl", '{"id": [1]}\n'))
    assert "'id' must be a string or an integer" in error_of(write(tmp_path, "b.jsonl", '{"id": true}\n'))
    assert "'id' is empty" in error_of(write(tmp_path, "e.jsonl", '{"id": " "}\n'))


def test_empty_and_blank_files(tmp_path):
    assert "file is empty" in error_of(write(tmp_path, "d.jsonl", ""))
    assert "file is empty" in error_of(write(tmp_path, "b.jsonl", "\n  \n\r\n"))


def test_missing_file_and_directory(tmp_path):
    msg = error_of(tmp_path / "nope.jsonl")
    assert "nope.jsonl: file not found" in msg
    assert "is a directory" in error_of(tmp_path)


def test_not_utf8(tmp_path):
    msg = error_of(write(tmp_path, "d.jsonl", b'{"a": 1}\n{"a": "\xff\xfe"}\n'))
    assert ":2: not valid UTF-8 (byte 0xff at column 8)" in msg
    msg = error_of(write(tmp_path, "d.json", b'[\n{"a": "\xff"}]'))
    assert ":2: not valid UTF-8" in msg


def test_long_line_refused_without_reading_it_whole(tmp_path):
    p = write(tmp_path, "d.jsonl", '{"a": 1}\n{"a": "' + "x" * 5000 + '"}\n')
    msg = error_of(p, max_line_bytes=1000)
    assert ":2: line is longer than the 1000 bytes limit" in msg
    # exactly at the limit is fine (the newline is not counted against it)
    q = write(tmp_path, "ok.jsonl", '{"a": "' + "x" * 91 + '"}\n')
    assert len(load_dataset(q, max_line_bytes=100)) == 1


def test_default_line_limit_is_10_mib(tmp_path):
    p = tmp_path / "big.jsonl"
    with p.open("w") as fh:
        fh.write('{"a": "' + "x" * (10 * 1024 * 1024) + '"}\n')
    assert "longer than the 10 MiB limit" in error_of(p)


def test_example_inputs(tmp_path):
    ds = load_dataset(write(tmp_path, "d.jsonl", '{"question": "q", "qestion": 1, "answer": "a"}\n'))
    assert ds[0].inputs(["question"]) == {"question": "q"}
    with pytest.raises(DatasetError) as info:
        ds[0].inputs(["context"])
    assert "d.jsonl:1: missing input field 'context'; expected fields: context" in str(info.value)


def test_from_records():
    ds = from_records([{"q": 1}, {"id": "b", "q": 2}], path="mem")
    assert ds.ids[0].startswith("mem-") and ds.ids[1] == "b" and len(ds.sha256) == 64
    assert from_records([{"q": 1}]).sha256 == from_records([{"q": 1}]).sha256
    with pytest.raises(DatasetError):
        from_records([{"id": "a"}, {"id": "a"}])


# ---------------------------------------------------------------- validation


def qa(tmp_path, content):
    return load_dataset(write(tmp_path, "qa.jsonl", content))


def test_validate_ok(tmp_path):
    ds = qa(tmp_path, '{"question": "q1", "answer": "a"}\n{"question": "q2", "answer": "b"}\n')
    validate(ds, {"question": STR}, {"answer": STR}, need_labels={"answer"})


def test_validate_missing_input(tmp_path):
    ds = qa(tmp_path, '{"question": "q"}\n' * 0 + '{"question": "a"}\n{"question": "b"}\n{"question": "c"}\n{"text": "d"}\n')
    with pytest.raises(DatasetError) as info:
        validate(ds, {"question": STR}, {}, need_labels=set())
    assert str(info.value) == f"{ds.path}:4: missing input field 'question'; expected fields: question"
    assert info.value.line == 4


def test_validate_missing_input_suggests_close_key(tmp_path):
    ds = qa(tmp_path, '{"qustion": "a"}\n')
    with pytest.raises(DatasetError, match=r"did you mean 'qustion'\? expected fields: question"):
        validate(ds, {"question": STR}, {}, need_labels=set())


def test_validate_counts_more_problems(tmp_path):
    ds = qa(tmp_path, '{"x": 1}\n{"x": 2}\n{"x": 3}\n')
    with pytest.raises(DatasetError, match=r":1: missing input field 'question' \(2 more examples with problems\)"):
        validate(ds, {"question": STR}, {}, need_labels=set())


def test_validate_types(tmp_path):
    ds = qa(tmp_path, '{"question": "a", "n": 1}\n{"question": 5, "n": 2}\n')
    with pytest.raises(DatasetError) as info:
        validate(ds, {"question": STR, "n": INT}, {}, need_labels=set())
    assert ":2: input field 'question' does not fit str: got 5" in str(info.value)


def test_validate_labels(tmp_path):
    ds = qa(tmp_path, '{"review": "ok", "sentiment": "positive"}\n{"review": "bad"}\n')
    with pytest.raises(DatasetError, match=r":2: missing label 'sentiment'"):
        validate(ds, {"review": STR}, {"sentiment": LABEL}, need_labels={"sentiment"})
    # without needing labels, a missing label is fine (e.g. `lmc run` on new inputs)
    validate(ds, {"review": STR}, {"sentiment": LABEL}, need_labels=set())


def test_validate_label_type(tmp_path):
    ds = qa(tmp_path, '{"review": "ok", "sentiment": "meh"}\n')
    with pytest.raises(DatasetError, match=r"label 'sentiment' does not fit \"positive\" \| \"negative\""):
        validate(ds, {"review": STR}, {"sentiment": LABEL}, need_labels={"sentiment"})


def test_validate_labels_need_not_be_outputs(tmp_path):
    # a python metric may read any example field, e.g. the supporting passage ids
    ds = qa(tmp_path, '{"question": "q", "supporting": ["a"]}\n{"question": "r", "suporting": []}\n')
    with pytest.raises(DatasetError) as info:
        validate(ds, {"question": STR}, {"answer": STR}, need_labels={"supporting", "question"})
    assert str(info.value) == (f"{ds.path}:2: missing label 'supporting'; did you mean 'suporting'? the metric needs: question, supporting")


def test_validate_accepts_python_classes(tmp_path):
    ds = qa(tmp_path, '{"a": 1, "b": 2.5, "c": true}\n')
    validate(ds, {"a": int, "b": float, "c": bool}, {}, need_labels=set())
    with pytest.raises(DatasetError, match="expected int, got a boolean"):
        validate(ds, {"c": int}, {}, need_labels=set())


# ---------------------------------------------------------------- splits


def numbered(n):
    return from_records([{"id": f"e{i}", "x": i} for i in range(n)], path="mem")


def test_shuffle_deterministic_and_seeded():
    exs = numbered(30).examples
    a, b, c = shuffle(exs, 1), shuffle(exs, 1), shuffle(exs, 2)
    assert [e.id for e in a] == [e.id for e in b]
    assert [e.id for e in a] != [e.id for e in c]
    assert sorted(e.id for e in a) == sorted(e.id for e in exs)
    assert [e.id for e in exs][:3] == ["e0", "e1", "e2"]  # input not mutated


def test_split_is_deterministic_disjoint_and_sized():
    ds = numbered(20)
    train, dev = split(ds, 0.3, seed=0)
    assert len(dev) == 6 and len(train) == 14
    assert set(train.ids).isdisjoint(dev.ids) and set(train.ids) | set(dev.ids) == set(ds.ids)
    assert split(ds, 0.3, seed=0)[1].ids == dev.ids
    assert split(ds, 0.3, seed=5)[1].ids != dev.ids
    # each part keeps file order
    assert train.ids == [i for i in ds.ids if i in set(train.ids)]
    assert train.sha256 == ds.sha256


def test_split_edge_cases():
    t, d = split(numbered(2), 0.01)
    assert len(t) == 1 and len(d) == 1
    t, d = split(numbered(5), 0.0)
    assert len(d) == 0 and len(t) == 5
    with pytest.raises(DatasetError):
        split(numbered(5), 1.5)


# ---------------------------------------------------------------- the shipped datasets


def _shipped_counts() -> dict:
    """The expected sizes live in datasets/check_datasets.py (the data's own checker); one list, not two."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "datasets" / "check_datasets.py"
    spec = importlib.util.spec_from_file_location("check_datasets", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return {k: v for k, v in mod.COUNTS.items() if v is not None}


SHIPPED = _shipped_counts()


@pytest.mark.parametrize("name,count", sorted(SHIPPED.items()))
def test_shipped_dataset_loads_with_expected_count(name, count):
    ds = load_dataset(DATASETS / name)
    assert len(ds) == count
    assert all(not ex.id.startswith(Path(name).stem + "-") for ex in ds), "shipped examples carry explicit ids"


def test_shipped_sentiment_is_balanced_and_well_formed():
    for name in ("sentiment_train.jsonl", "sentiment_dev.jsonl"):
        ds = load_dataset(DATASETS / name)
        validate(ds, {"review": STR}, {"sentiment": LABEL}, need_labels={"sentiment"})
        labels = [ex.data["sentiment"] for ex in ds]
        assert labels.count("positive") == labels.count("negative")
        for ex in ds:
            assert 5 <= len(ex.data["review"].split()) <= 40, ex.id
    train = {ex.data["review"] for ex in load_dataset(DATASETS / "sentiment_train.jsonl")}
    dev = {ex.data["review"] for ex in load_dataset(DATASETS / "sentiment_dev.jsonl")}
    assert not train & dev
    new = load_dataset(DATASETS / "sentiment_new.jsonl")
    assert all("sentiment" not in ex for ex in new)


def test_shipped_numeric_sets_have_numeric_answers():
    for stem in ("math", "arith", "agent"):
        for part in ("train", "dev"):
            for ex in load_dataset(DATASETS / f"{stem}_{part}.jsonl"):
                assert isinstance(ex.data["answer"], (int, float)) and not isinstance(ex.data["answer"], bool), ex.id
    for part in ("train", "dev"):
        for ex in load_dataset(DATASETS / f"math_{part}.jsonl"):
            assert isinstance(ex.data["answer"], int), ex.id


def _corpus_text():
    return [ex.data["title"] + " " + ex.data["text"] for ex in load_dataset(DATASETS / "corpus.jsonl")]


def test_shipped_qa_answers_are_in_the_corpus():
    from lmc.metrics import normalize_text

    passages = [" " + normalize_text(t) + " " for t in _corpus_text()]
    assert 60 <= len(passages) <= 120
    for stem in ("qa", "multihop"):
        for part in ("train", "dev"):
            for ex in load_dataset(DATASETS / f"{stem}_{part}.jsonl"):
                answer = ex.data["answer"]
                assert isinstance(answer, str) and 1 <= len(answer.split()) <= 5, ex.id
                needle = " " + normalize_text(answer) + " "
                assert any(needle in p for p in passages), f"{ex.id}: {answer!r} not in corpus"


def test_shipped_sets_do_not_share_questions():
    for stem in ("qa", "multihop", "math", "arith", "agent"):
        train = {ex.data["question"] for ex in load_dataset(DATASETS / f"{stem}_train.jsonl")}
        dev = {ex.data["question"] for ex in load_dataset(DATASETS / f"{stem}_dev.jsonl")}
        assert not train & dev, stem


def test_validate_with_the_real_type_classes(tmp_path):
    types = pytest.importorskip("lmc.types")
    ds = qa(tmp_path, '{"review": "fine", "sentiment": "positive", "n": 2}\n{"review": "bad", "sentiment": "meh", "n": 3}\n')
    label = types.parse_type('"positive" | "negative"')
    validate(ds, {"review": types.parse_type("str"), "n": types.parse_type("int")}, {}, need_labels=set())
    with pytest.raises(DatasetError, match=r":2: label 'sentiment' does not fit \"positive\" \| \"negative\""):
        validate(ds, {"review": types.parse_type("str")}, {"sentiment": label}, need_labels={"sentiment"})


# ---------------------------------------------------------------- the BANKING77 subset of the demo


def _checker():
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_datasets", DATASETS / "check_datasets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _maker():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_banking_route", DATASETS / "make_banking_route.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_route_sets_fit_the_demo_program_and_are_balanced():
    from lmc.targets import load_target

    ir = load_target(str(REPO / "programs" / "route.lmp")).ir
    inputs = {f.name: f.type for f in ir.program().inputs}
    outputs = {f.name: f.type for f in ir.program().outputs}
    intents = tuple(outputs["intent"].args)
    assert intents == _checker().ROUTE_INTENTS == tuple(_maker().label(i) for i in _maker().INTENTS)
    for part, per_intent in (("train", 20), ("dev", 5), ("test", 10)):
        ds = load_dataset(DATASETS / f"route_{part}.jsonl")
        validate(ds, inputs, outputs, need_labels={"intent"})
        labels = [ex.data["intent"] for ex in ds]
        assert {i: labels.count(i) for i in intents} == dict.fromkeys(intents, per_intent)
        split_ = "test" if part == "test" else "train"
        assert all(ex.id.startswith(f"banking77-{split_}-") for ex in ds)
        # Interleaved, not one intent after another as in BANKING77's files.
        assert len({labels[i] for i in range(6)}) > 2
    new = load_dataset(DATASETS / "route_new.jsonl")
    validate(new, inputs, outputs, need_labels=set())
    assert len(new) == 4 and all("intent" not in ex and ex.id.startswith("banking77-test-") for ex in new)


def test_route_sets_share_no_message():
    seen: dict[str, str] = {}
    for part in ("train", "dev", "test", "new"):
        for ex in load_dataset(DATASETS / f"route_{part}.jsonl"):
            key = " ".join(ex.data["message"].lower().split())
            assert key not in seen, f"{ex.id} ({part}) repeats a message of {seen[key]}"
            seen[key] = part


def test_route_hashes_are_recorded_and_the_checker_passes(capsys):
    import hashlib

    mod = _checker()
    recorded = mod.recorded_hashes()
    for part in ("train", "dev", "test", "new"):
        name = f"route_{part}.jsonl"
        assert recorded[name] == hashlib.sha256((DATASETS / name).read_bytes()).hexdigest(), name
    assert mod.main() == 0, capsys.readouterr().out


def test_route_checker_finds_leaks_imbalance_and_wrong_splits(tmp_path):
    mod = _checker()
    rows = {
        "route_train.jsonl": [{"id": f"banking77-train-{i}", "message": f"m {i}", "intent": intent} for i, intent in enumerate(mod.ROUTE_INTENTS)],
        "route_dev.jsonl": [{"id": "banking77-test-1", "message": "m 0", "intent": "card arrival"}],
        "route_test.jsonl": [{"id": f"banking77-test-{i + 9}", "message": f"t {i}", "intent": intent} for i, intent in enumerate(mod.ROUTE_INTENTS)],
        "route_new.jsonl": [{"id": "banking77-test-3", "message": "x", "intent": "card arrival"}],
    }
    sets = {name: from_records(items, path=name) for name, items in rows.items()}
    problems = mod.route_problems(sets)
    assert any(p.startswith("route_dev.jsonl: intents not the six") for p in problems)
    assert any("route_dev.jsonl:1: id 'banking77-test-1' is not a row of BANKING77's train split" in p for p in problems)
    assert any("route_dev.jsonl:1: message also in route_train.jsonl" in p for p in problems)
    assert any(p.startswith("route_new.jsonl: expected unlabeled messages") for p in problems)
    assert not any(p.startswith(("route_train.jsonl:", "route_test.jsonl:")) for p in problems)


def _banking77_source() -> Path | None:
    folder = _maker().default_source()
    return folder if (folder / "banking77_test.jsonl").is_file() else None


@pytest.mark.skipif(_banking77_source() is None, reason="the BANKING77 source files are not on this machine")
def test_route_files_rebuild_byte_for_byte(tmp_path):
    mod = _maker()
    assert mod.main(["--check"]) == 0
    assert mod.main(["--out", str(tmp_path)]) == 0
    for part in ("train", "dev", "test", "new"):
        assert (tmp_path / f"route_{part}.jsonl").read_bytes() == (DATASETS / f"route_{part}.jsonl").read_bytes()


def test_route_builder_refuses_another_copy_of_the_source(tmp_path):
    (tmp_path / "banking77_train.jsonl").write_text('{"id": "x", "text": "t", "intent": "card_arrival"}\n')
    with pytest.raises(SystemExit, match="SHA-256 .* is not the recorded"):
        _maker().build(tmp_path)
    with pytest.raises(SystemExit, match="cannot read the BANKING77 source"):
        _maker().build(tmp_path / "missing")
