"""Tests for lmc.metrics: normalization, each built-in metric, gold alternatives, the registry, and property checks."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lmc.metrics as M
from lmc.errors import LmcError
from lmc.metrics import (
    BUILTIN_METRICS,
    accuracy,
    builtin_metric,
    contains,
    exact_match,
    f1,
    normalize_text,
    numeric,
    parse_number,
    passage_match,
    to_score,
)


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("The Nile", "nile"),
        ("  A   cat\tand\nan owl ", "cat and owl"),
        ("Hello, World!", "hello world"),
        ("Eiffel-Tower", "eiffeltower"),
        ("theory", "theory"),  # 'the' only as a whole word
        ("«Bonjour» — ça va?", "bonjour ça va"),
        ("", ""),
        (None, ""),
        (42, "42"),
    ],
)
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


def test_exact_match():
    assert exact_match("The Nile", "nile.") == 1.0
    assert exact_match("Nile", "Amazon") == 0.0
    assert exact_match("Nile", "the Nile river") == 0.0
    assert exact_match("Nile", None) == 0.0
    assert exact_match(["Paris", "City of Paris"], "city of Paris") == 1.0
    assert exact_match([], "x") == 0.0


def test_f1():
    assert f1("Marie Curie", "Marie Curie") == 1.0
    assert f1("Marie Curie", "Curie") == pytest.approx(2 / 3)
    assert f1("the cat sat", "a dog ran") == 0.0
    assert f1("", "") == 1.0
    assert f1("x", "") == 0.0
    assert f1("x y", "y y y") == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert f1(["nope", "Marie Curie"], "Curie") == pytest.approx(2 / 3)


def test_contains():
    assert contains("Danube", "It is the river Danube.") == 1.0
    assert contains("New York", "in new   york, mostly") == 1.0
    assert contains("4", "42") == 0.0
    assert contains("4", "the answer: 4") == 1.0
    assert contains("Paris", None) == 0.0
    assert contains(["Rome", "Paris"], "Paris!") == 1.0


def test_accuracy():
    assert accuracy("Positive", "  positive ") == 1.0
    assert accuracy("positive", "positive.") == 0.0  # punctuation is not ignored for labels
    assert accuracy(3, 3) == 1.0 and accuracy(3, 3.0) == 1.0
    assert accuracy(True, 1) == 0.0 and accuracy(True, True) == 1.0
    assert accuracy(3, "3") == 0.0
    assert accuracy([1, "A"], [1, "a"]) == 1.0  # list-valued outputs compare as values
    assert accuracy([1, 2], [2, 1]) == 0.0
    assert accuracy({"k": "V"}, {"k": "v"}) == 1.0
    assert accuracy(["positive", "neutral"], "Neutral") == 1.0  # list gold, scalar pred: any of


@pytest.mark.parametrize(
    "text,value",
    [
        ("1,234", 1234.0),
        ("$5", 5.0),
        ("3.0", 3.0),
        ("42 apples", 42.0),
        ("3/4", 0.75),
        ("-7", -7.0),
        ("\u22127", -7.0),
        ("1e3", 1000.0),
        (".5", 0.5),
        ("The answer is 1/2.", 0.5),
        ("5 + 3 = 8", 8.0),
        ("€2,000,000.50 total", 2000000.5),
        (12, 12.0),
        (2.5, 2.5),
        ("none", None),
        ("", None),
        (True, None),
        (None, None),
        (float("nan"), None),
        ("1/0", None),
        ([1], None),
    ],
)
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_numeric():
    assert numeric(1234, "The total is $1,234.") == 1.0
    assert numeric("0.75", "3/4") == 1.0
    assert numeric(3, "3.0000001") == 1.0  # within relative 1e-6
    assert numeric(3, "3.001") == 0.0
    assert numeric(0, "1e-10") == 1.0  # absolute tolerance near zero
    assert numeric(0, "0.001") == 0.0
    assert numeric(3, "three") == 0.0
    assert numeric(3, None) == 0.0
    assert numeric([4, 5], "5") == 1.0


def test_passage_match():
    passages = ["Alessandro Volta built the first battery.", "Rome is in Italy."]
    assert passage_match("Volta", passages) == 1.0
    assert passage_match("volta.", passages) == 1.0
    assert passage_match("Edison", passages) == 0.0
    assert passage_match(["Edison", "Italy"], passages) == 1.0
    assert passage_match("Italy", "Rome is in Italy.") == 1.0
    assert passage_match("Volta", []) == 0.0
    assert passage_match("Volta", None) == 0.0
    assert passage_match("", passages) == 0.0


def test_registry_and_lookup():
    assert set(BUILTIN_METRICS) >= {"exact_match", "f1", "contains", "accuracy", "numeric", "passage_match"}
    for name, metric in BUILTIN_METRICS.items():
        assert metric.name == name and metric.description and "\n" not in metric.description
        assert builtin_metric(name) is metric.fn
    assert builtin_metric("exact_match")("A cat", "cat") == 1.0
    assert BUILTIN_METRICS["f1"]("a b", "a b") == 1.0


def test_unknown_metric_message():
    with pytest.raises(LmcError) as info:
        builtin_metric("exact_mach")
    assert str(info.value) == (
        "unknown metric 'exact_mach'; did you mean 'exact_match'? expected one of: accuracy, contains, exact_match, f1, numeric, passage_match"
    )
    with pytest.raises(LmcError) as info:
        builtin_metric("zzz")
    assert str(info.value).startswith("unknown metric 'zzz'; expected one of: accuracy")


def test_to_score():
    assert to_score(True) == 1.0 and to_score(False) == 0.0 and to_score(0.25) == 0.25 and to_score(1) == 1.0
    for bad in (1.5, -0.1, float("nan"), "1", None):
        with pytest.raises(LmcError):
            to_score(bad)


def test_doctests():
    result = doctest.testmod(M)
    assert result.attempted >= 10 and result.failed == 0


# ---------------------------------------------------------------- properties

plain = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
values = st.one_of(plain, st.integers(), st.floats(allow_nan=True), st.booleans(), st.none(), st.lists(plain, max_size=3))


@settings(max_examples=300, deadline=None)
@given(plain)
def test_normalize_text_is_idempotent(text):
    once = normalize_text(text)
    assert normalize_text(once) == once
    assert once == once.strip() and "  " not in once


@settings(max_examples=200, deadline=None)
@given(plain)
def test_a_text_matches_itself(text):
    assert exact_match(text, text) == 1.0
    assert f1(text, text) == 1.0
    assert contains(text, text) == 1.0
    assert accuracy(text, text) == 1.0


@settings(max_examples=300, deadline=None)
@given(values, values)
def test_every_metric_returns_a_score_in_range(gold, pred):
    for metric in BUILTIN_METRICS.values():
        score = metric(gold, pred)
        assert isinstance(score, float) and 0.0 <= score <= 1.0, metric.name


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_numeric_reads_formatted_integers(n):
    assert numeric(n, f"{n:,}") == 1.0
    assert numeric(n, f"The answer is {n}.") == 1.0
    assert numeric(n, str(n + 1)) == 0.0
