"""Every example program in programs/ runs end to end through `lmc run` against the loopback server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lmc.check import check_path
from tests.lmserver import LoopbackServer

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = sorted((ROOT / "programs").glob("*.lmp"))
EXAMPLES_PER_PROGRAM = 4

_OUTPUT_LINE = re.compile(r"^- (\w+)(?: — (.*))?$")


def output_fields(system: str) -> list[tuple[str, str]]:
    """(name, description-and-type-hint) of each output the system message asks for."""
    block = system.split("Outputs:\n", 1)[1].split("\n\n", 1)[0]
    out = []
    for line in block.splitlines():
        m = _OUTPUT_LINE.match(line.strip())
        if m:
            out.append((m.group(1), m.group(2) or ""))
    return out


def plausible(name: str, hint: str) -> str:
    """A well-formed value for a field, chosen by its type hint (and a few well-known names)."""
    if name == "code":
        return "result = 6 * 7"
    if "one of:" in hint:
        options = [o.strip() for o in hint.split("one of:", 1)[1].split("(or none)")[0].split(",")]
        return "finish" if "finish" in options else options[0]
    if "an integer" in hint or "a number" in hint:
        return "42"
    if "true or false" in hint:
        return "true"
    if "JSON (list" in hint:
        return '["alpha", "beta"]'
    if "JSON (" in hint:
        return "{}"
    if name == "reasoning" or name == "rationale":
        return "Step by step, the answer follows."
    return f"{name} text"


def typed_reply(messages: list[dict]) -> str:
    fields = output_fields(str(messages[0]["content"]))
    return "\n".join(f"<{n}>{plausible(n, h)}</{n}>" for n, h in fields)


def typed_responder(request: dict) -> str:
    """Loopback responder: a tagged, well-typed answer for whatever outputs the prompt asks for."""
    if request.get("messages"):
        return typed_reply(request["messages"])
    return "42"


@pytest.fixture(scope="module")
def server():
    with LoopbackServer(typed_responder) as srv:
        yield srv


def dataset_for(program: Path) -> Path:
    """A dataset whose examples hold the program's inputs, preferring one named like the program."""
    inputs = [name for name, _ in check_path(program).program_inputs()]
    words = set(re.split(r"[_\W]+", program.stem))
    best = None
    for path in sorted((ROOT / "datasets").glob("*_dev.jsonl")) + sorted((ROOT / "datasets").glob("*.jsonl")):
        first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
        if not all(name in first for name in inputs):
            continue
        if words & set(re.split(r"[_\W]+", path.stem)):
            return path
        best = best or path
    assert best is not None, f"no dataset in datasets/ has the inputs {inputs} of {program.name}"
    return best


def test_every_program_is_covered():
    assert len(PROGRAMS) >= 7
    # Names that match no dataset still find one by their inputs.
    assert dataset_for(ROOT / "programs" / "judged_qa.lmp").name.startswith("qa_")


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.stem)
def test_program_runs_end_to_end(program, server, tmp_path, monkeypatch, capsys):
    from lmc.cli import main

    monkeypatch.chdir(ROOT)  # programs name their corpora relative to the project
    data = tmp_path / "in.jsonl"
    lines = dataset_for(program).read_text(encoding="utf-8").splitlines()[:EXAMPLES_PER_PROGRAM]
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code = main(
        [
            "run",
            str(program),
            "--lm",
            "openai/test",
            "--api-base",
            server.url,
            "--data",
            str(data),
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
            "-j",
            "4",
        ]
    )
    captured = capsys.readouterr()
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert code == 0, captured.err + "\n" + "\n".join(str(r["error"]) for r in results)
    assert sorted(r["id"] for r in results) == sorted(json.loads(x)["id"] for x in lines)
    prog_outputs = [f.name for f in check_path(program).program().outputs]
    for r in results:
        assert r["error"] is None and set(r["outputs"]) == set(prog_outputs)
        assert r["usage"]["calls"] >= 1
    assert "Traceback" not in captured.err


def test_litellm_path_runs_a_program(server, tmp_path, monkeypatch, capsys):
    """A provider lmc does not send directly goes through litellm itself, to the same server."""
    from lmc.cli import main

    monkeypatch.chdir(ROOT)
    code = main(
        ["run", "programs/sentiment.lmp", "--lm", "lm_studio/test", "--api-base", server.url, "--no-cache", "--input", '{"review": "Lovely."}']
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out) == {"sentiment": "positive"}
