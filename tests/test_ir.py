"""The IR's JSON round trip over every example program, and refusal of tampered or unknown nodes."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from lmc import ir as I
from lmc.check import check_source
from lmc.errors import ArtifactError
from lmc.lower import lower

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = sorted((ROOT / "programs").glob("*.lmp"))

FIXTURE = """
lm fast = "openai/gpt-4o-mini" (temperature=0.2)
signature QA(question: str -> answer: str)
module qa = ChainOfThought(QA, lm="fast", max_tokens=100)
program main(question: str) -> (answer: str) {
  a = qa(question=question)
  assert len(a.answer) < 50, f"Shorter than {50}, please."
  parts = {"q": question, "n": [1, 2.5, -3]}
  if not (a.answer in ["x"]) and true { return a } else { return {"answer": "y"} }
}
metric em = exact_match(answer)
"""


def lowered(text: str, path: str = "fixture.lmp") -> I.IR:
    return lower(check_source(text, path))


@pytest.mark.parametrize("path", PROGRAMS, ids=lambda p: p.stem)
def test_round_trip_of_every_program(path):
    ir = lowered(path.read_text(encoding="utf-8"), str(path))
    text = json.dumps(I.to_json(ir), sort_keys=True)
    back = I.from_json(json.loads(text))
    assert back == ir
    assert I.fingerprint(back) == I.fingerprint(ir)


def test_round_trip_of_a_fixture_with_every_kind_of_value():
    ir = lowered(FIXTURE)
    back = I.from_json(json.loads(json.dumps(I.to_json(ir))))
    assert back == ir
    # predictors keep their settings as sorted pairs and demos as dicts
    p = back.predictor("qa").with_settings(temperature=0.5)
    ir2 = back.with_predictors([I.Predictor(p.id, p.module, p.role, p.signature, "new", ({"question": "q", "answer": "a"},), p.settings)])
    assert I.from_json(json.loads(json.dumps(I.to_json(ir2)))) == ir2


def _find(data, tag):
    if isinstance(data, dict):
        if data.get("$node") == tag:
            yield data
        for v in data.values():
            yield from _find(v, tag)
    elif isinstance(data, list):
        for v in data:
            yield from _find(v, tag)


def test_unknown_node_is_refused():
    data = I.to_json(lowered(FIXTURE))
    next(_find(data, "Var"))["$node"] = "os.system"
    with pytest.raises(ArtifactError, match="unknown IR node 'os.system'"):
        I.from_json(data)


def test_unexpected_key_and_missing_field_are_refused():
    base = I.to_json(lowered(FIXTURE))
    data = copy.deepcopy(base)
    next(_find(data, "Const"))["__class__"] = "x"
    with pytest.raises(ArtifactError, match="unexpected key '__class__'"):
        I.from_json(data)
    data = copy.deepcopy(base)
    del next(_find(data, "Predictor"))["signature"]
    with pytest.raises(ArtifactError, match="malformed IR node Predictor"):
        I.from_json(data)


def test_dangling_references_are_refused():
    base = I.to_json(lowered(FIXTURE))
    data = copy.deepcopy(base)
    next(_find(data, "CallModule"))["module"] = "ghost"
    with pytest.raises(ArtifactError, match="call to missing module 'ghost'"):
        I.from_json(data)
    data = copy.deepcopy(base)
    data["entry"] = "nope"
    with pytest.raises(ArtifactError, match="entry program 'nope' is missing"):
        I.from_json(data)
    data = copy.deepcopy(base)
    next(_find(data, "ModuleIR"))["predictors"]["items"][0][1] = "ghost"
    with pytest.raises(ArtifactError, match="missing predictor 'ghost'"):
        I.from_json(data)


def test_bad_type_version_and_shape_are_refused():
    base = I.to_json(lowered(FIXTURE))
    data = copy.deepcopy(base)
    next(_find(data, "Type"))["text"] = "list[[["
    with pytest.raises(ArtifactError, match="bad type"):
        I.from_json(data)
    data = copy.deepcopy(base)
    data["version"] = 99
    with pytest.raises(ArtifactError, match="version 99"):
        I.from_json(data)
    with pytest.raises(ArtifactError, match="expected an IR object"):
        I.from_json([1, 2])
    with pytest.raises(ArtifactError):
        I.from_json({"$node": "Var", "name": "x"})


def test_nan_cannot_enter_the_ir():
    ir = lowered(FIXTURE)
    p = ir.predictors[0].with_settings(temperature=float("nan"))
    with pytest.raises(ValueError):
        I.to_json(ir.with_predictors([p]))
