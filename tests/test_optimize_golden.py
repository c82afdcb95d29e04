"""Golden fixtures for the optimizer passes, run through `lmc compile` against a scripted LM.

Each tests/fixtures/optimize/*.txt is a `# title:` line, `# program:` (a name in
tests/fixtures/programs/), `# args:` (the compile flags choosing the passes), then a line
`# expected predictor table` and the table as JSON: each predictor's instructions, demos (by
example id) and settings, the extras a pass leaves in the IR, the dev scores, and any files a
pass writes.  The examples are tests/fixtures/optimize/{train,dev}.jsonl; the LM is
tests/sentiment_lm.py behind the loopback server.  The runner only uses the CLI, so it holds
whatever shape the passes take inside.  After an intended change, rewrite the tables with
`LMC_UPDATE_GOLDEN=1 pytest tests/test_optimize_golden.py` and review the diff.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.lmserver import LoopbackServer
from tests.sentiment_lm import responder

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CASES = sorted((FIXTURES / "optimize").glob("*.txt"))
MARK = "# expected predictor table\n"


def split(path: Path) -> tuple[dict[str, str], str, str | None]:
    """(header fields, the header text, expected JSON or None)."""
    text = path.read_text(encoding="utf-8")
    head, _, expected = text.partition(MARK)
    fields = {}
    for line in head.splitlines():
        key, _, value = line.removeprefix("# ").partition(": ")
        fields[key] = value
    assert head.startswith("# title: "), f"{path.name}: the first line must be '# title: <what the pass shows>'"
    assert {"program", "args"} <= set(fields), f"{path.name}: needs '# program:' and '# args:' lines"
    return fields, head, expected or None


def _ids(value: Any) -> Any:
    """Demos (example dicts) shown by their ids, so a table stays readable."""
    if isinstance(value, dict):
        if "_id" in value:
            return value["_id"]
        return {k: _ids(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ids(v) for v in value]
    return value


def table(art: dict, ws: Path) -> dict:
    predictors = {p["id"]: {"instructions": p["instructions"], "demos": _ids(p["demos"]), "settings": p["settings"]} for p in art["ir"]["predictors"]}
    scores = art["compile"]["scores"]
    files = {
        str(f.relative_to(ws)): len(f.read_text(encoding="utf-8").splitlines())
        for f in sorted(ws.rglob("*.jsonl"))
        if f.parent != ws and "cache" not in f.parts
    }
    return {
        "predictors": predictors,
        "extras": _ids(art["ir"]["extras"]),
        "dev": {"baseline": scores["baseline"]["dev"], "final": scores["final"]["dev"]},
        "passes": [p["name"] for p in art["compile"]["passes"]],
        "files": files,
    }


@pytest.fixture(scope="module")
def server():
    with LoopbackServer(responder) as srv:
        yield srv


def test_there_is_a_fixture_for_every_pass():
    from lmc.optimize import PASS_NAMES

    args = " ".join(split(p)[0]["args"] for p in CASES)
    assert PASS_NAMES
    for name in PASS_NAMES:
        assert f"--optimizer {name}" in args or f"--then {name}" in args, f"no fixture runs the {name} pass"


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_the_pass_leaves_the_golden_predictor_table(path, server, tmp_path, monkeypatch, capsys):
    from lmc.cli import main

    fields, head, expected = split(path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("LMC_LM", raising=False)
    shutil.copy(FIXTURES / "programs" / f"{fields['program']}.lmp", "p.lmp")
    code = main(
        [
            "compile",
            "p.lmp",
            "--train",
            str(FIXTURES / "optimize" / "train.jsonl"),
            "--dev",
            str(FIXTURES / "optimize" / "dev.jsonl"),
            "-o",
            "out.lmc.json",
            "--cache-dir",
            "cache",
            "--lm",
            "openai/test",
            "--api-base",
            server.url,
            *shlex.split(fields["args"]),
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    got = (
        json.dumps(table(json.loads(Path("out.lmc.json").read_text(encoding="utf-8")), tmp_path), indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    )
    if os.environ.get("LMC_UPDATE_GOLDEN"):
        path.write_text(head + MARK + got, encoding="utf-8")
        return
    assert expected is not None, f"{path.name} has no '{MARK.strip()}' section; run with LMC_UPDATE_GOLDEN=1"
    assert json.loads(got) == json.loads(expected), f"{path.name} ({fields['title']}): the predictor table changed"
