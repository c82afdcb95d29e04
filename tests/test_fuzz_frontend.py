"""Fuzzing the front end: random bytes and token soups give diagnostics, never another exception or a hang."""

from __future__ import annotations

import random
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmc.check import check_path, check_source
from lmc.errors import CompileErrors, LmcError
from lmc.fmt import format_source
from lmc.parser import KEYWORDS

ROOT = Path(__file__).resolve().parents[1]
TOKENS = sorted(KEYWORDS) + [
    "Predict",
    "ChainOfThought",
    "ReAct",
    "BestOfN",
    "bm25",
    "python",
    "calculator",
    "exact_match",
    "max",
    "true",
    "none",
    "x",
    "y",
    "question",
    "answer",
    "S",
    "m",
    "main",
    "len",
    "range",
    "str",
    "list",
    "dict",
    "int",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ",",
    ":",
    "=",
    "->",
    ".",
    "|",
    "?",
    "+",
    "-",
    "*",
    "/",
    "//",
    "%",
    "==",
    "<",
    ">=",
    "+=",
    ";",
    "#c\n",
    "\n",
    '"s"',
    '"a -> b"',
    "'q'",
    'f"{x}"',
    'f"{',
    '"""doc"""',
    "0",
    "3",
    "2.5",
    "1e3",
    '"',
    "\\",
    "@",
]


@contextmanager
def time_limit(seconds: float):
    def boom(signum, frame):  # pragma: no cover - only on a hang
        raise TimeoutError("front end took too long")

    old = signal.signal(signal.SIGALRM, boom)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def front_end(text: str) -> None:
    with time_limit(5):
        try:
            check_source(text, "fuzz.lmp")
        except (CompileErrors, LmcError) as e:
            assert str(e)
            if isinstance(e, CompileErrors):
                assert e.render()
        try:
            format_source(text, "fuzz.lmp")
        except CompileErrors:
            pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_random_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "f.lmp"
    path.write_bytes(data)
    with time_limit(5):
        try:
            check_path(path)
        except (CompileErrors, LmcError) as e:
            assert str(e)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_token_soup(tokens):
    front_end(" ".join(tokens))


def _mutations(text: str, rng: random.Random, count: int):
    for _ in range(count):
        chars = list(text)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            i = rng.randrange(len(chars) + 1)
            if op < 0.4 and chars:
                del chars[min(i, len(chars) - 1)]
            elif op < 0.8:
                chars.insert(i, rng.choice(["{", "}", "(", ")", '"', ",", "=", " ", "\n", "x", ".", "->", "max", "#"]))
            elif chars:
                j = rng.randrange(len(chars))
                chars[min(i, len(chars) - 1)], chars[j] = chars[j], chars[min(i, len(chars) - 1)]
        yield "".join(chars)


@pytest.mark.parametrize("name", ["multihop", "judged_qa", "react_agent"])
def test_mutated_example_programs(name):
    text = (ROOT / "programs" / f"{name}.lmp").read_text()
    rng = random.Random(name)
    start = time.monotonic()
    for mutated in _mutations(text, rng, 120):
        front_end(mutated)
    assert time.monotonic() - start < 25
