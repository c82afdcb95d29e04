"""The language reference (docs/language.md, `lmc help`) is generated from the code's tables and cannot drift from them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lmc import reference
from lmc.check import analyze

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "language.md"


def test_docs_language_md_is_what_the_code_generates():
    assert DOC.read_text(encoding="utf-8") == reference.GENERATED_NOTE + reference.language_md(), (
        "docs/language.md is out of date: run python -m lmc.reference --write"
    )


def test_the_check_mode_says_when_the_page_is_stale(tmp_path, monkeypatch):
    monkeypatch.setattr(reference, "DOC", tmp_path / "language.md")
    (tmp_path / "language.md").write_text("old text")
    assert reference.main(["--check"]) == 1
    assert reference.main(["--write"]) == 0 and reference.main(["--check"]) == 0


BLOCKS = re.findall(r"```lmp\n(.*?)```", reference.language_md(), re.S)


def test_there_is_an_example_for_each_part_of_the_language():
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_every_example_in_the_reference_checks(i):
    diags = analyze(BLOCKS[i], f"example{i}.lmp").diagnostics
    assert not diags, [d.headline() for d in diags]


def test_every_table_is_used_and_every_name_is_documented():
    template = reference.TEMPLATE.read_text()
    assert set(re.findall(r"\{\{table ([a-z_]+)\}\}", template)) == set(reference.TABLES)
    from lmc.builtins import BUILTINS
    from lmc.kinds import KINDS as MODULE_KINDS
    from lmc.metrics import BUILTIN_METRICS
    from lmc.syntax import KEYWORDS

    text = reference.language_md()
    for name in [*BUILTINS, *MODULE_KINDS, *BUILTIN_METRICS, *KEYWORDS]:
        assert f"`{name}" in text, name


def test_the_operator_table_names_every_operator_of_the_grammar():
    grammar = (ROOT / "lmc" / "grammars" / "lmp.lark").read_text()
    ops = set()
    for term in ("COMPOP", "ADDOP", "MULOP", "AUGOP"):
        line = re.search(rf"^{term}: (.*)$", grammar, re.M).group(1)
        ops |= set(re.findall(r'"([^"]+)"', line))
    section = reference.topics()["expressions"] + reference.topics()["programs"]
    for op in ops:  # standing alone, not as part of a longer operator
        assert re.search(r"(?<![-=<>!+*/%])" + re.escape(op) + r"(?![-=<>!+*/%])", section), op


def test_lmc_help_lists_topics_and_prints_one():
    run = subprocess.run([sys.executable, "-m", "lmc", "help"], capture_output=True, text=True)
    assert run.returncode == 0
    assert all(f"  {t}" in run.stdout for t in ("builtins", "kinds".replace("kinds", "modules"), "metrics", "passes", "exit-codes"))
    run = subprocess.run([sys.executable, "-m", "lmc", "help", "builtins"], capture_output=True, text=True)
    assert run.returncode == 0 and "`split(x, [y])`" in run.stdout and "## builtins" in run.stdout
    run = subprocess.run([sys.executable, "-m", "lmc", "help", "kinds"], capture_output=True, text=True)
    assert run.returncode == 0 and "## modules" in run.stdout and "`ReAct`" in run.stdout
    run = subprocess.run([sys.executable, "-m", "lmc", "help", "buitlins"], capture_output=True, text=True)
    assert run.returncode == 2 and "no help topic 'buitlins'; did you mean 'builtins'?" in run.stderr
