"""Typed replies: the constraint a predictor's completion reply is decoded under, and labels chosen by their scores.

For one literal-union (or bool) output the model is asked for the log-probability of each
whole label after the prompt (rank classification, `LMRequest.rank`); the label with the
highest score wins.  A label's score is its tokens' summed log-probability, or their mean
with the predictor setting `length_normalize=true` (labels of different token lengths then
compete per token), plus the predictor's calibration offset for that label when the
`calibrate` pass fitted one (`calibration`, a label -> offset map stored in the artifact).

`score_labels=false` turns scoring off for a predictor: it then generates under the grammar.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from . import ir as I
from .errors import OutputParseError
from .lm.constraint import SHAPE_KINDS, TYPED_KINDS, Shape
from .types import coerce

Scores = tuple[tuple[str, float, int], ...]


def label_options(p: I.Predictor) -> tuple[str, ...]:
    """The labels of `p`'s only output when it is a literal union or a bool, else ()."""
    outs = p.signature.outputs
    if len(outs) != 1:
        return ()
    t = outs[0].type
    if t.kind == "literal":
        return tuple(t.args)
    if t.kind == "bool":
        return ("true", "false")
    return ()


def reply_constraint(p: I.Predictor) -> tuple[tuple[str, ...], Shape]:
    """(choices, shape) of `p`'s completion reply: the labels of a single label output, or the fields of a reply
    of several fields or a typed one (ChainOfThought's reasoning then its answer); ((), ()) leaves the reply free."""
    options = label_options(p)
    if options:
        return options, ()
    outs = p.signature.outputs
    kinds = [f.type.kind for f in outs]
    # Several text fields are held to their order too: a base model's ChainOfThought otherwise reasons past its
    # token bound and never writes the answer's prefix (a RAG program's replies: 17 of 20 unparseable).
    if not all(k in SHAPE_KINDS for k in kinds) or not (len(kinds) > 1 or any(k in TYPED_KINDS for k in kinds)):
        return (), ()
    shape = tuple((f.label, f.type.kind, tuple(f.type.args) if f.type.kind == "literal" else ()) for f in outs)
    return (), shape


def raw_score(logprob: float, tokens: int, normalize: bool) -> float:
    return logprob / max(tokens, 1) if normalize else logprob


def scores(p: I.Predictor, label_scores: Scores, calibration: dict | None = None) -> dict[str, float]:
    """Each label's score as the predictor compares them: normalised if asked, plus its calibration offset."""
    normalize = bool(p.setting("length_normalize", False))
    offsets = calibration if calibration is not None else (p.setting("calibration") or {})
    return {label: raw_score(lp, n, normalize) + float(offsets.get(label, 0.0)) for label, lp, n in label_scores}


def chosen(p: I.Predictor, by_label: dict[str, float]) -> dict[str, Any]:
    """The predictor's outputs for the best-scoring label (the first of equals, in the type's order)."""
    if not by_label:
        raise OutputParseError("the LM scored no label", "")
    best = max(by_label.items(), key=lambda kv: kv[1])[0]
    f = p.signature.outputs[0]
    return {f.name: coerce(best, f.type)}


def log_softmax(values: Iterable[float]) -> list[float]:
    xs = list(values)
    top = max(xs)
    total = top + math.log(sum(math.exp(x - top) for x in xs))
    return [x - total for x in xs]


def _schema(t: Any) -> dict | None:
    k = t.kind
    if k == "literal":
        return {"type": "string", "enum": list(t.args)}
    simple = {"str": "string", "bool": "boolean", "int": "integer", "float": "number"}
    if k in simple:
        return {"type": simple[k]}
    if k == "list" and t.args:
        inner = _schema(t.args[0])
        return {"type": "array", "items": inner} if inner is not None else None
    if k == "optional" and t.args:
        inner = _schema(t.args[0])
        return {"anyOf": [inner, {"type": "null"}]} if inner is not None else None
    return None


def output_schema(p: I.Predictor) -> dict | None:
    """The JSON schema of `p`'s chat reply as one JSON object, when an output is typed and every output has one."""
    outs = p.signature.outputs
    props = {f.name: _schema(f.type) for f in outs}
    if all(f.type.kind == "str" for f in outs) or any(v is None for v in props.values()):
        return None
    return {"type": "object", "properties": props, "required": [f.name for f in outs], "additionalProperties": False}
