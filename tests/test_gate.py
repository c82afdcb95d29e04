"""Tests for lmc.gate: the report format, shards, the paired test, gates and the JUnit/Markdown/JSON outputs."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmc.errors import EXIT_FAIL, EXIT_INFRA, EXIT_OK, ConfigError, ReportError
from lmc.gate import (
    DataRef,
    ExampleResult,
    GateOptions,
    MetricRef,
    ProgramRef,
    Report,
    Shard,
    TargetRef,
    align,
    apply_gates,
    in_shard,
    is_report,
    junit_xml,
    mean_ci,
    merge_reports,
    paired_test,
    parse_shard,
    render_markdown,
    shard_of,
    summarize,
    verdict_json,
    write_junit,
)

FIXTURES = Path(__file__).parent / "fixtures" / "gate"
ROOT = Path(__file__).resolve().parents[1]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_report(
    scores,
    *,
    ids=None,
    errors=None,
    target="build/x.lmc.json",
    program="sentiment",
    program_src="v1",
    program_path="programs/sentiment.lmp",
    data_sha=None,
    metric=None,
    shard=None,
    n_total=None,
    lines=None,
) -> Report:
    """A report from a list of scores; `errors` maps index -> (kind, message)."""
    ids = ids or [f"ex-{i + 1}" for i in range(len(scores))]
    lines = lines or list(range(1, len(scores) + 1))
    errors = errors or {}
    metric = metric or MetricRef("em", "exact_match(answer)", 1.0)
    examples = []
    for i, (ex_id, s) in enumerate(zip(ids, scores)):
        if i in errors:
            kind, msg = errors[i]
            examples.append(ExampleResult(ex_id, lines[i], None, False, msg, kind, None, {"answer": "a"}))
        else:
            examples.append(
                ExampleResult(ex_id, lines[i], float(s), s >= metric.threshold, None, None, {"answer": "a" if s else "b"}, {"answer": "a"})
            )
    return Report(
        program=ProgramRef(program, sha(program_src), program_path),
        target=TargetRef("artifact", target, sha(target)),
        metric=metric,
        data=DataRef("dev.jsonl", data_sha or sha("data"), n_total if n_total is not None else len(scores)),
        shard=shard,
        examples=tuple(examples),
        summary=summarize(examples, calls=len(scores), cost=0.01 * len(scores), duration_s=1.5),
    )


def one_line(err: Exception) -> str:
    text = str(err)
    assert "\n" not in text, text
    assert "Traceback" not in text
    return text


# ---------------------------------------------------------------- report format


def test_report_round_trips_and_saves_atomically(tmp_path):
    rep = make_report([1, 0, 1], errors={0: ("lm", "timeout after 3 retries")})
    path = tmp_path / "r.json"
    rep.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind
    loaded = Report.load(path)
    assert loaded == rep
    assert loaded.path == str(path)
    assert loaded.to_json() == rep.to_json()
    assert is_report(path)
    assert loaded.summary.errors == 1 and loaded.summary.score == pytest.approx(1 / 3)


def test_golden_report_fixture_is_the_contract():
    """The sample report documents the format the evaluator writes; it must load and re-serialise unchanged."""
    path = FIXTURES / "sample.report.json"
    rep = Report.load(path)
    assert json.loads(path.read_text()) == rep.to_json()
    assert rep.summary.n == len(rep.examples) == rep.data.n_total
    assert (rep.summary.requests, rep.summary.retries, rep.summary.failed_requests) == (6, 1, 1)


def test_a_report_written_before_request_counters_existed_still_loads(tmp_path):
    obj = json.loads((FIXTURES / "sample.report.json").read_text())
    for key in ("requests", "retries", "failed_requests"):
        del obj["summary"][key]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(obj))
    rep = Report.load(path)
    assert (rep.summary.requests, rep.summary.retries, rep.summary.failed_requests) == (0, 0, 0)
    obj["summary"]["requests"] = -1
    path.write_text(json.dumps(obj))
    with pytest.raises(ReportError, match="summary.requests"):
        Report.load(path)


def _valid_obj():
    return make_report([1, 0, 1, 1]).to_json()


def _set(path, value):
    def mutate(obj):
        *head, last = path
        for key in head:
            obj = obj[key]
        obj[last] = value

    return mutate


def _delete(path):
    def mutate(obj):
        *head, last = path
        for key in head:
            obj = obj[key]
        del obj[last]

    return mutate


CORRUPTIONS = [
    ("format", _set(["format"], "lmc-artifact/1"), "is not an lmc report"),
    ("newer", _set(["format"], "lmc-report/2"), "not supported"),
    ("missing", _delete(["summary"]), "missing key 'summary'"),
    ("extra", _set(["junk"], 1), "unexpected key 'junk'"),
    ("sha", _set(["data", "sha256"], "xyz"), "data.sha256"),
    ("score-type", _set(["examples", 2, "score"], "1"), "examples[2] (id 'ex-3').score"),
    ("score-range", _set(["examples", 0, "score"], 1.5), "between 0 and 1"),
    ("passed", _set(["examples", 1, "passed"], True), "passed"),
    ("dup-id", _set(["examples", 1, "id"], "ex-1"), "'ex-1' appears more than once"),
    ("error-kind", _set(["examples", 1, "error"], "boom"), "both be null or both be set"),
    ("kind", _set(["target", "kind"], "binary"), "target.kind"),
    ("summary-n", _set(["summary", "n"], 5), "summary.n"),
    ("summary-score", _set(["summary", "score"], 0.5), "summary.score"),
    ("n-total", _set(["data", "n_total"], 9), "not a shard"),
    ("shard", _set(["shard"], {"index": 3, "count": 2}), "larger than count"),
    ("bool-int", _set(["summary", "calls"], True), "summary.calls"),
]


@pytest.mark.parametrize("name,mutate,expected", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_corrupt_reports_give_one_line_errors_naming_file_and_problem(tmp_path, name, mutate, expected):
    obj = _valid_obj()
    mutate(obj)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ReportError) as info:
        Report.load(path)
    text = one_line(info.value)
    assert text.startswith(str(path) + ":"), text
    assert expected in text


def test_unreadable_reports(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"format": "lmc-report/1",\n  "examples": [1, 2,')
    with pytest.raises(ReportError, match=r"broken\.json:2:\d+: not valid JSON"):
        Report.load(bad)
    nan = tmp_path / "nan.json"
    nan.write_text(json.dumps(_valid_obj()).replace('"cost": 0.04', '"cost": NaN'))
    with pytest.raises(ReportError, match="NaN"):
        Report.load(nan)
    with pytest.raises(ReportError, match="no such report file"):
        Report.load(tmp_path / "absent.json")
    arr = tmp_path / "arr.json"
    arr.write_text("[]")
    with pytest.raises(ReportError, match="expected a JSON object"):
        Report.load(arr)
    assert not is_report(arr) and not is_report(bad)


# ---------------------------------------------------------------- shards


@pytest.mark.parametrize("spec,expected", [("1/1", (1, 1)), ("2/4", (2, 4)), (" 4 / 4 ", (4, 4))])
def test_parse_shard(spec, expected):
    assert parse_shard(spec) == expected


@pytest.mark.parametrize("spec", ["3/2", "0/4", "1/0", "a/b", "", "1/4/2", "-1/4", "2"])
def test_parse_shard_rejects_bad_specs(spec):
    with pytest.raises(ConfigError) as info:
        parse_shard(spec)
    assert "expected i/N" in one_line(info.value)


def test_shard_hash_is_pinned():
    """Shards must agree across machines and releases: a change here silently breaks merges of old reports."""
    assert [shard_of(f"ex-{i}", 4) for i in range(1, 11)] == PINNED_SHARDS
    assert shard_of("ünïcode-id", 3) in (1, 2, 3)


PINNED_SHARDS = [4, 2, 3, 3, 3, 3, 1, 1, 3, 1]  # sha256 of the id, first 8 bytes big-endian, mod N, plus 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=40, unique=True), st.integers(1, 7))
def test_every_id_is_in_exactly_one_shard(ids, count):
    for ex_id in ids:
        assert sum(in_shard(ex_id, i, count) for i in range(1, count + 1)) == 1


def split(rep: Report, count: int) -> list[Report]:
    parts = []
    for i in range(1, count + 1):
        exs = tuple(e for e in rep.examples if in_shard(e.id, i, count))
        parts.append(replace(rep, shard=Shard(i, count), examples=exs, summary=summarize(exs, calls=len(exs), cost=0.01 * len(exs), duration_s=0.5)))
    return parts


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_split_then_merge_gives_back_the_report(tmp_path, count):
    rng = random.Random(count)
    rep = make_report([rng.choice([0, 1]) for _ in range(40)], errors={3: ("parse", "no field 'answer'")})
    parts = split(rep, count)
    # Round-trip through disk so shard validation on load is exercised too.
    for i, part in enumerate(parts):
        part.save(tmp_path / f"part{i}.json")
    loaded = [Report.load(tmp_path / f"part{i}.json") for i in range(count)]
    merged = merge_reports(list(reversed(loaded)))
    assert merged.shard is None
    assert merged.examples == rep.examples
    assert merged.summary.n == 40 and merged.summary.errors == 1
    assert merged.summary.score == pytest.approx(rep.summary.score)
    assert merged.summary.calls == 40
    assert merged.summary.duration_s == pytest.approx(0.5 * count)
    assert {e.id for p in parts for e in p.examples} == {e.id for e in rep.examples}
    Report.from_json(merged.to_json())  # a merged report is itself a valid full report


def test_merge_refuses_bad_shard_sets():
    rep = make_report([1, 0] * 20)
    parts = split(rep, 3)
    with pytest.raises(ReportError, match=r"missing shard\(s\) 2/3"):
        merge_reports([parts[0], parts[2]])
    with pytest.raises(ReportError, match="given twice"):
        merge_reports([parts[0], parts[1], parts[1], parts[2]])
    with pytest.raises(ReportError, match="not a shard report"):
        merge_reports([rep])
    with pytest.raises(ReportError, match="no reports"):
        merge_reports([])
    other = replace(parts[1], target=TargetRef("artifact", "other.lmc.json", sha("other")))
    with pytest.raises(ReportError, match="target differs"):
        merge_reports([parts[0], other, parts[2]])
    four = split(rep, 4)
    with pytest.raises(ReportError, match="split in different ways"):
        merge_reports([parts[0], parts[1], four[2]])
    # An example smuggled into a second shard: an overlap, named.
    dup = parts[0].examples[0]
    stolen = replace(parts[1], examples=parts[1].examples + (dup,))
    with pytest.raises(ReportError, match=f"'{dup.id}' appear in more than one shard"):
        merge_reports([parts[0], stolen, parts[2]])
    # A shard that lost examples: coverage is incomplete.
    short = replace(parts[2], examples=parts[2].examples[1:])
    with pytest.raises(ReportError, match="cover 39 of 40"):
        merge_reports([parts[0], parts[1], short])


def test_shard_report_with_foreign_id_is_refused(tmp_path):
    rep = make_report([1, 0] * 10)
    part = split(rep, 2)[0]
    exs = split(rep, 2)[1].examples[:1] + part.examples
    obj = replace(part, examples=exs, summary=summarize(exs)).to_json()
    with pytest.raises(ReportError, match="do not belong to shard 1/2"):
        Report.from_json(obj, "p1.json")


# ---------------------------------------------------------------- statistics


def test_mean_ci_wilson_and_bootstrap():
    mean, lo, hi = mean_ci([1] * 87 + [0] * 13)
    assert mean == 0.87 and lo == pytest.approx(0.7902, abs=1e-4) and hi == pytest.approx(0.9224, abs=1e-4)
    assert mean_ci([1, 1, 1])[1] > 0.3  # Wilson never collapses to [1, 1]
    cont = [0.1 * (i % 10) for i in range(50)]
    m1, l1, h1 = mean_ci(cont)
    assert l1 < m1 < h1 and mean_ci(cont) == (m1, l1, h1)  # seeded: same answer every time
    with pytest.raises(ValueError):
        mean_ci([])


def ids_for(n):
    return [f"ex-{i}" for i in range(n)]


def test_identical_runs_pass():
    s = [1.0] * 200 + [0.0] * 100
    r = paired_test(s, s, ids_for(300), max_drop=0.0)
    assert not r.regressed and r.p_value == 1.0 and r.delta == 0.0
    assert r.flipped_to_fail == [] and r.flipped_to_pass == []


def test_small_noise_passes():
    base = [1.0] * 200 + [0.0] * 100
    cand = list(base)
    for i in (3, 17, 40, 77, 150, 190):  # six slips...
        cand[i] = 0.0
    for i in (205, 260, 299):  # ...and three lucky hits: net -1 point, well within noise
        cand[i] = 1.0
    r = paired_test(base, cand, ids_for(300), max_drop=0.0)
    assert not r.regressed and r.p_value > 0.05
    assert r.flipped_to_fail == [f"ex-{i}" for i in (3, 17, 40, 77, 150, 190)]
    assert r.flipped_to_pass == ["ex-205", "ex-260", "ex-299"]
    assert r.delta == pytest.approx(-3 / 300) and r.delta_lo < r.delta < r.delta_hi
    assert r.method == "mcnemar-exact"


def test_clear_drop_fails():
    base = [1.0] * 200 + [0.0] * 100
    cand = [0.0] * 20 + [1.0] * 180 + [0.0] * 100
    r = paired_test(base, cand, ids_for(300), max_drop=0.02)
    assert r.regressed
    assert r.p_value == pytest.approx(0.5**20)
    assert r.delta_hi < -0.02 and len(r.flipped_to_fail) == 20


def test_improvement_has_its_own_p_value():
    # 20 fail->pass, 2 pass->fail: the drop test says nothing (p near 1), the mirror test says "better".
    base = [0.0] * 20 + [1.0] * 2 + [1.0] * 50
    cand = [1.0] * 20 + [0.0] * 2 + [1.0] * 50
    r = paired_test(base, cand, ids_for(72), max_drop=0.0)
    assert not r.regressed and r.p_value > 0.99
    # P(Bin(22, 1/2) >= 20) = (C(22,20) + C(22,21) + C(22,22)) / 2**22
    assert r.p_improved == pytest.approx((231 + 22 + 1) / 2**22)
    assert r.to_json()["p_improved"] == r.p_improved
    # The two one-sided tests mirror each other: swapping the sides swaps the p-values.
    swapped = paired_test(cand, base, ids_for(72), max_drop=0.0)
    assert swapped.p_value == pytest.approx(r.p_improved) and swapped.p_improved == pytest.approx(r.p_value)
    assert paired_test(base, base, ids_for(72), max_drop=0.0).p_improved == 1.0


@pytest.mark.parametrize("method", ["bootstrap", "normal"])
def test_improvement_p_value_for_graded_scores(method):
    base = [0.2, 0.4, 0.5, 0.1] * 50
    better = [x + 0.3 for x in base[:150]] + base[150:]
    r = paired_test(base, better, ids_for(200), max_drop=0.0, threshold=0.5, method=method)
    assert r.p_improved < 0.01 and r.p_value > 0.99
    same = paired_test(base, base, ids_for(200), max_drop=0.0, threshold=0.5, method=method)
    assert same.p_improved == 1.0


def test_verdict_of_a_significant_gain_names_it():
    base = make_report([0.0] * 20 + [1.0] * 40)
    cand = make_report([1.0] * 18 + [0.0] * 2 + [1.0] * 40)
    v = apply_gates(cand, base, GateOptions(baseline="base.json"))
    assert v.exit_code == 0
    line = next(x for x in v.lines if x.startswith("baseline "))
    assert "delta +0.300" in line and "improvement p=3.81e-06" in line and " p=1 " not in line
    assert v.lines[-1].startswith("PASS: significant improvement vs baseline (delta +0.300, p=3.81e-06)")
    assert "improvement p = " in render_markdown(cand, base, v)


def test_significant_but_small_drop_is_tolerated_by_max_drop():
    n = 5000
    base = [1.0] * n
    cand = [0.0] * 60 + [1.0] * (n - 60)  # a certain 1.2-point drop
    assert paired_test(base, cand, ids_for(n), max_drop=0.0).regressed
    tolerated = paired_test(base, cand, ids_for(n), max_drop=0.02)
    assert not tolerated.regressed and tolerated.p_value < 1e-10


def test_drop_of_exactly_max_drop_is_not_a_regression():
    base = [1.0] * 300
    cand = [0.0] * 6 + [1.0] * 294  # exactly 0.02, where float rounding must not tip the verdict
    assert not paired_test(base, cand, ids_for(300), max_drop=0.02).regressed


@pytest.mark.parametrize("method", ["mcnemar-exact", "mcnemar-midp"])
def test_mcnemar_bound_agrees_with_p_value(method):
    n = 400
    for b in range(0, 25):
        for c in range(0, 25, 3):
            base = [1.0] * b + [0.0] * c + [1.0] * (n - b - c)
            cand = [0.0] * b + [1.0] * c + [1.0] * (n - b - c)
            r = paired_test(base, cand, ids_for(n), max_drop=0.0, method=method)
            if b + c:
                assert (r.delta_hi < 0) == (r.p_value < 0.05), (b, c, r)
                assert r.delta_lo <= r.delta <= r.delta_hi


def test_exact_mcnemar_false_alarm_rate_is_bounded():
    """Given m changed examples, an unchanged program fails with probability <= 5%: the exact test's guarantee."""
    from math import comb

    from lmc.gate.stats import _upper_tail

    for m in range(1, 150):
        size = sum(comb(m, b) for b in range(m + 1) if _upper_tail(b, m, 0.5, False) < 0.05) / 2**m
        assert size <= 0.05, m


def test_continuous_scores_use_paired_bootstrap():
    rng = random.Random(3)
    base = [rng.random() for _ in range(300)]
    noisy = [min(1.0, max(0.0, x + rng.gauss(0, 0.05))) for x in base]
    r = paired_test(base, noisy, ids_for(300), max_drop=0.0, threshold=0.5)
    assert r.method == "bootstrap" and not r.regressed
    dropped = [max(0.0, x - 0.08) for x in base]
    r2 = paired_test(base, dropped, ids_for(300), max_drop=0.02, threshold=0.5)
    assert r2.regressed and r2.delta_hi < 0
    assert r2.flipped_to_fail and all(base[int(i[3:])] >= 0.5 > dropped[int(i[3:])] for i in r2.flipped_to_fail)
    big = paired_test(base * 10, dropped * 10, ids_for(3000), max_drop=0.02, threshold=0.5)
    assert big.method == "normal" and big.regressed


def test_unchanged_program_rarely_fails_and_real_drop_is_caught():
    """A small, seeded version of the benchmark: noisy re-runs pass, a 10-point drop fails."""
    rng = random.Random(11)
    false_alarms = caught = 0
    for _ in range(100):
        p = [rng.choice([0.97, 0.03, rng.random()]) for _ in range(300)]
        base = [float(rng.random() < x) for x in p]
        same = [float(rng.random() < x) for x in p]
        worse = [float(rng.random() < max(0.0, x - 0.15)) for x in p]
        false_alarms += paired_test(base, same, ids_for(300), max_drop=0.02).regressed
        caught += paired_test(base, worse, ids_for(300), max_drop=0.02).regressed
    # Expected ~3 of 100 (<= 5%); a rule without a test fires ~15 times here.
    assert false_alarms <= 8 and caught >= 90


# ---------------------------------------------------------------- align and gates


def test_align_pairs_by_id_in_candidate_order():
    base = make_report([1, 0, 1], ids=["a", "b", "c"])
    cand = make_report([0, 1, 1], ids=["c", "a", "b"])
    ids, b, c = align(base, cand)
    assert ids == ["c", "a", "b"] and b == [1.0, 1.0, 0.0] and c == [0.0, 1.0, 1.0]


def test_align_refuses_incomparable_reports():
    base = make_report([1] * 10)
    with pytest.raises(ReportError, match="different data") as info:
        align(base, make_report([1] * 10, data_sha=sha("other data")))
    one_line(info.value)
    with pytest.raises(ReportError, match="metric em = exact_match"):
        align(base, make_report([1] * 10, metric=MetricRef("f1", "f1(answer)", 0.5)))
    other = make_report([1] * 10, program="multihop")
    with pytest.raises(ReportError, match="--allow-different-program"):
        align(base, other)
    assert align(base, other, allow_program_change=True)[0]
    # A changed source of the same program (same name, a file of the same name) is the normal PR case,
    # also from another checkout; the same name in another file is another program.
    assert align(base, make_report([1] * 10, program_src="v2"))[0]
    assert align(base, make_report([1] * 10, program_src="v2", program_path="../main/programs/sentiment.lmp"))[0]
    with pytest.raises(ReportError, match="another program: 'sentiment' of programs/sentiment.lmp"):
        align(base, make_report([1] * 10, program_src="v2", program_path="programs/other.lmp"))
    with pytest.raises(ReportError, match="'sentiment' of an unrecorded file"):
        align(make_report([1] * 10, program_path=None), make_report([1] * 10, program_src="v2"))
    assert align(make_report([1] * 10, program_path=None), make_report([1] * 10))[0]  # same source
    cand = make_report([1] * 10, ids=[f"new-{i}" for i in range(10)])
    with pytest.raises(ReportError) as info:
        align(base, cand)
    text = one_line(info.value)
    assert "10 candidate example(s)" in text and "'new-4'" in text and "'new-5'" not in text and "and 5 more" in text


def test_shard_candidate_against_full_baseline():
    base = make_report([1, 0] * 20)
    cand = split(make_report([1, 0] * 20), 2)[0]
    ids, b, c = align(base, cand)
    assert len(ids) == len(cand.examples) and b == c


def test_gate_options_validation():
    with pytest.raises(ConfigError, match="--max-drop needs --baseline"):
        GateOptions(max_drop=0.02).validate()
    with pytest.raises(ConfigError, match="--confidence"):
        GateOptions(confidence=1.5).validate()
    with pytest.raises(ConfigError, match="--max-errors"):
        GateOptions(max_errors=-1).validate()
    with pytest.raises(ConfigError, match="no baseline report"):
        apply_gates(make_report([1]), None, GateOptions(baseline="base.json"))
    GateOptions(baseline="b.json", max_drop=0.02, min_score=0.5, max_errors=0).validate()


def test_gates_pass_and_last_line_is_the_reason():
    s = [1] * 250 + [0] * 50
    v = apply_gates(make_report(s), make_report(s), GateOptions(min_score=0.8, baseline="base.json", max_drop=0.02, max_errors=0))
    assert v.exit_code == EXIT_OK and v.reasons == []
    assert v.lines[-1].startswith("PASS:") and "no significant drop" in v.lines[-1]


def test_min_score_fails_with_exit_1():
    v = apply_gates(make_report([1] * 5 + [0] * 5), None, GateOptions(min_score=0.8))
    assert v.exit_code == EXIT_FAIL
    assert v.lines[-1] == "FAIL: score 0.500 is below --min-score 0.8"


def test_regression_fails_with_exit_1_and_names_flips():
    base = make_report([1] * 250 + [0] * 50)
    cand = make_report([0] * 30 + [1] * 220 + [1] * 5 + [0] * 45)
    v = apply_gates(cand, base, GateOptions(baseline="base.json", max_drop=0.02))
    assert v.exit_code == EXIT_FAIL and v.paired.regressed
    assert v.lines[-1].startswith("FAIL: score dropped 0.083 vs baseline")
    assert any(line.startswith("pass->fail (30): 'ex-1'") for line in v.lines)
    assert any(line.startswith("fail->pass (5): 'ex-251'") for line in v.lines)


def test_infrastructure_errors_outrank_quality():
    base = make_report([1] * 100)
    errs = {i: ("lm", "rate limited") for i in range(20)}
    cand = make_report([1] * 100, errors=errs)
    v = apply_gates(cand, base, GateOptions(baseline="b.json", max_drop=0.02, max_errors=5, min_score=0.9))
    assert v.exit_code == EXIT_INFRA
    assert v.lines[-1].startswith("FAIL: 20 examples failed with LM/parse errors, more than --max-errors 5")
    assert len(v.reasons) == 3 and any(line.startswith("also: score dropped") for line in v.lines)
    # assert/runtime failures are quality, not infrastructure: they never trigger exit 3.
    quality_errs = make_report([1] * 100, errors={i: ("assert", "too long") for i in range(20)})
    assert apply_gates(quality_errs, None, GateOptions(max_errors=5)).exit_code == EXIT_OK


def test_empty_candidate_is_refused():
    rep = replace(make_report([]), examples=())
    with pytest.raises(ReportError, match="no examples"):
        apply_gates(rep, None, GateOptions())


# ---------------------------------------------------------------- outputs


def _regressed_pair():
    base = make_report([1] * 250 + [0] * 50)
    scores = [0] * 30 + [1] * 220 + [1] * 5 + [0] * 45
    cand = make_report(scores, errors={290: ("lm", "server said \x1b[31mno\x00")})
    cand = replace(cand, examples=tuple(replace(e, prediction={"answer": 'a|b <x> & "q"'}) if e.id == "ex-2" else e for e in cand.examples))
    verdict = apply_gates(cand, base, GateOptions(baseline="base.json", max_drop=0.02))
    return cand, base, verdict


def _validate_junit(path: Path) -> ET.Element:
    try:
        import xmlschema
    except ImportError:  # structural fallback when the optional validator is absent
        xmlschema = None
    if xmlschema is not None:
        xmlschema.XMLSchema(str(FIXTURES / "junit.xsd")).validate(str(path))
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    for suite in root.iter("testsuite"):
        for key in ("name", "tests", "failures", "errors"):
            assert key in suite.attrib
        cases = suite.findall("testcase")
        assert int(suite.get("tests")) == len(cases)
        assert int(suite.get("failures")) == sum(1 for c in cases if c.find("failure") is not None)
        assert int(suite.get("errors")) == sum(1 for c in cases if c.find("error") is not None)
        assert int(suite.get("skipped")) == sum(1 for c in cases if c.find("skipped") is not None)
    return root


def test_junit_with_baseline_is_valid_and_fails_each_regressed_example(tmp_path):
    cand, base, verdict = _regressed_pair()
    path = tmp_path / "eval.xml"
    write_junit(cand, verdict, path, base)
    root = _validate_junit(path)
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert len(cases) == 300
    failed = {name for name, c in cases.items() if c.find("failure") is not None}
    assert failed == set(verdict.paired.flipped_to_fail) - {"ex-291"}
    assert cases["ex-291"].find("error").get("type") == "lm"
    assert cases["ex-300"].find("skipped") is not None  # failed on both sides: a known failure
    assert cases["ex-251"].find("failure") is None and len(cases["ex-251"]) == 0
    assert "a|b <x>" in cases["ex-2"].find("system-out").text
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["verdict"] == "fail" and props["delta"].startswith("-0.0")


def test_junit_without_baseline_fails_non_passing_examples(tmp_path):
    cand = make_report([1, 0, 1, 0], errors={3: ("parse", "bad json")})
    verdict = apply_gates(cand, None, GateOptions())
    path = tmp_path / "eval.xml"
    write_junit(cand, verdict, path)
    root = _validate_junit(path)
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("4", "1", "1", "0")


def test_junit_validator_catches_a_broken_document(tmp_path):
    """The schema check can fail: a testcase without a name is rejected."""
    xmlschema = pytest.importorskip("xmlschema")
    cand, base, verdict = _regressed_pair()
    text = junit_xml(cand, verdict, base).replace('<testcase name="ex-1" ', "<testcase ", 1)
    bad = tmp_path / "bad.xml"
    bad.write_text(text)
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        xmlschema.XMLSchema(str(FIXTURES / "junit.xsd")).validate(str(bad))


def test_markdown_has_verdict_delta_and_flipped_ids():
    cand, base, verdict = _regressed_pair()
    md = render_markdown(cand, base, verdict)
    assert md.startswith("### ❌ lmc eval: quality regression")
    assert "| candidate | 0.750 |" in md and "| baseline | 0.833 |" in md
    assert "**Delta -0.083**" in md and "one-sided p =" in md
    assert "pass → fail (30)" in md and "`ex-1`" in md and "`ex-10`" in md and "… and 20 more" in md
    assert "fail → pass (5)" in md and "`ex-251`" in md
    assert "a\\|b &lt;x>" in md  # pipes cannot break the table
    # 30 pass->fail vs 5 fail->pass: exact one-sided p = P(Bin(35, 1/2) >= 30)
    p = sum(math.comb(35, k) for k in range(30, 36)) / 2**35
    assert f"(p={p:.3g})**" in md and p == pytest.approx(1.118e-5, rel=1e-3)
    assert md.rstrip().endswith("**FAIL: score dropped 0.083 vs baseline, more than --max-drop 0.02 and significant at 0.95 (p=1.12e-05)**")


def test_markdown_pass_without_baseline():
    cand = make_report([1, 1, 0])
    md = render_markdown(cand, None, apply_gates(cand, None, GateOptions()))
    assert md.startswith("### ✅ lmc eval: pass") and "baseline" not in md.split("\n", 3)[3].lower()


def test_verdict_json_is_plain_json():
    cand, base, verdict = _regressed_pair()
    opts = GateOptions(baseline="base.json", max_drop=0.02)
    doc = json.loads(json.dumps(verdict_json(cand, base, verdict, opts)))
    assert doc["verdict"] == "fail" and doc["exit_code"] == 1
    assert doc["reason"] == verdict.lines[-1]
    assert doc["paired"]["flipped_to_fail"][:2] == ["ex-1", "ex-2"]
    assert doc["candidate"]["n"] == 300 and doc["baseline"]["errors"] == 0
    assert doc["gates"]["max_drop"] == 0.02


def test_benchmark_runs_and_reports_figures():
    sys.path.insert(0, str(ROOT))
    try:
        from bench import bench_gate
    finally:
        sys.path.remove(str(ROOT))
    fig = bench_gate.run(trials=15, precise_trials=0)
    assert set(fig["unchanged"]) == {"gate", "gate-0", "strict", "gate-midp", "naive"}
    assert 0.0 <= fig["false_alarm_rate"] <= 1.0 and 0.0 <= fig["detection_rate"] <= 1.0
    assert os.path.exists(ROOT / "docs" / "ci.md")
