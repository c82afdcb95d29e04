"""Broken programs and the full list of diagnostics each must give: syntax errors do not stop the check.

Each file under tests/fixtures/diagnostics/ starts with one `# error: L:C: message; hint` line per
expected diagnostic, in order.  `LMC_UPDATE_GOLDEN=1` rewrites the headers (review the diff).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lmc.check import analyze, check_source
from lmc.errors import CompileErrors

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "diagnostics"
HEADER = re.compile(r"^# error: (\d+):(\d+): (.*)$")
UPDATE = os.environ.get("LMC_UPDATE_GOLDEN") == "1"
FILES = sorted(FIXTURES.glob("*.lmp"))


def diagnostics(text: str, path: str) -> list[tuple[int, int, str]]:
    return [(d.span.line, d.span.col, d.message + (f"; {d.hint}" if d.hint else "")) for d in analyze(text, path).diagnostics]


def update(path: Path) -> None:
    body = "\n".join(ln for ln in path.read_text().split("\n") if not HEADER.match(ln))
    count = len(diagnostics(body, str(path)))
    found = diagnostics("\n" * count + body, str(path))
    path.write_text("".join(f"# error: {ln}:{col}: {msg}\n" for ln, col, msg in found) + body)


def test_there_are_at_least_twenty_broken_programs():
    assert len(FILES) >= 20


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_broken_program_reports_its_full_diagnostic_list(path: Path):
    if UPDATE:
        update(path)
    text = path.read_text()
    expected = [(int(m[1]), int(m[2]), m[3]) for m in map(HEADER.match, text.split("\n")) if m]
    assert len(expected) >= 2, f"{path.name}: a broken program here shows more than one error"
    assert diagnostics(text, str(path)) == expected
    # check_source (what compile and run use) raises exactly these.
    with pytest.raises(CompileErrors) as e:
        check_source(text, str(path))
    assert [(d.span.line, d.span.col) for d in e.value.diagnostics] == [(ln, col) for ln, col, _ in expected]


def test_lmc_check_reports_every_error_of_a_file_with_many_syntax_errors(tmp_path):
    body = 'module qa = Predict("question -> answer")\nprogram main(question: str) -> (answer: str) {\n'
    body += "".join(f"  v{i} = len(question question)\n" for i in range(30))
    body += '  return {"answer": undefined_thing}\n}\n'
    f = tmp_path / "many.lmp"
    f.write_text(body)
    run = subprocess.run([sys.executable, "-m", "lmc", "check", str(f)], capture_output=True, text=True)
    assert run.returncode == 1
    lines = [ln for ln in run.stderr.splitlines() if ": error: " in ln]
    assert len(lines) == 31
    assert lines[0].startswith(f"{f}:3:21: error: unexpected 'question'")
    assert lines[-1].startswith(f"{f}:33:21: error: 'undefined_thing' is not defined")
    assert run.stderr.rstrip().endswith("31 errors in 1 file")
    js = subprocess.run([sys.executable, "-m", "lmc", "check", "--format", "json", str(f)], capture_output=True, text=True)
    assert len(json.loads(js.stdout)["diagnostics"]) == 31


def test_syntax_errors_do_not_hide_type_errors_but_skipped_names_raise_no_echo():
    src = (
        "signature Broken { a: str -> b: str ]\n"
        "module m = Predict(Broken)\n"
        'program main(q: str) -> (b: str) {\n  x = m(a=q\n  y = nope\n  return {"b": x.b}\n}\n'
    )
    found = diagnostics(src, "e.lmp")
    messages = [m for _, _, m in found]
    assert any(m.startswith("unexpected ']'") for m in messages)
    assert any(m.startswith("'nope' is not defined") for m in messages)
    # Broken (skipped) and x (assigned in the skipped statement) are not reported as unknown.
    assert not any("'Broken'" in m or "'x'" in m for m in messages)
