"""Golden fixtures for `lower`: each tests/fixtures/lower/*.txt holds a program and the IR it must lower to.

A fixture is a `# title:` line, the program, a line `# expected IR`, then the IR as JSON
(`ir.to_json`, sorted keys).  After an intended change of the IR, rewrite the expected parts with
`LMC_UPDATE_GOLDEN=1 pytest tests/test_lower_golden.py` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lmc import ir as I
from lmc.check import check_source
from lmc.lower import lower

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "lower"
MARK = "# expected IR\n"
CASES = sorted(FIXTURES.glob("*.txt"))


def split(path: Path) -> tuple[str, str, str | None]:
    """(title, program, expected JSON or None when the fixture has none yet)."""
    text = path.read_text(encoding="utf-8")
    first = text.splitlines()[0] if text else ""
    assert first.startswith("# title: "), f"{path.name}: the first line must be '# title: <what the case shows>'"
    program, _, expected = text.partition(MARK)
    return first[len("# title: ") :], program, expected or None


def lowered(program: str, name: str) -> str:
    return json.dumps(I.to_json(lower(check_source(program, f"{name}.lmp"))), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def test_there_is_a_fixture_per_module_kind():
    text = "".join(p.read_text(encoding="utf-8") for p in CASES)
    for kind in ("Predict(", "ChainOfThought(", "MultiChainComparison(", "ReAct(", "ProgramOfThought(", "BestOfN("):
        assert kind in text


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_lowering_matches_the_golden_ir(path):
    title, program, expected = split(path)
    got = lowered(program, path.stem)
    if os.environ.get("LMC_UPDATE_GOLDEN"):
        path.write_text(program + MARK + got, encoding="utf-8")
        return
    assert expected is not None, f"{path.name} has no '{MARK.strip()}' section; run with LMC_UPDATE_GOLDEN=1"
    assert json.loads(got) == json.loads(expected), f"{path.name} ({title}): the IR changed"
    assert got == expected
    # The golden IR is what an artifact would hold: it reads back to the same IR.
    assert I.to_json(I.from_json_node(json.loads(expected))) == json.loads(expected)
