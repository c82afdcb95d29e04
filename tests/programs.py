"""The .lmp programs several test files share, kept as files in tests/fixtures/programs/."""

from __future__ import annotations

from pathlib import Path

PROGRAMS = Path(__file__).resolve().parent / "fixtures" / "programs"


def program(name: str) -> str:
    """The text of tests/fixtures/programs/<name>.lmp."""
    return (PROGRAMS / f"{name}.lmp").read_text(encoding="utf-8")


# A one-module sentiment classifier with an accuracy metric.
SENTIMENT = program("sentiment")
# Query writing then answering: two Predict modules, exact-match metric.
TWO_STEP = program("two_step")
# The same with ChainOfThought answering.
TWO_STEP_COT = program("two_step_cot")
