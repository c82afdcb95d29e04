"""The DSPy state JSON (`Module.save` format) holding lmc's compiled instructions and demos, keyed by predictor path.

DSPy 3 saves a program as `{path: predictor state, ..., "metadata": {...}}`; a
predictor's state holds its demos (dicts of field values), its signature's
instructions and one `{prefix, description}` per field in signature order, and
its LM (null here: the LM is the user's choice).  `Module.load` reads that back.
"""

from __future__ import annotations

from .. import __version__
from .. import ir as I
from .plan import Mod, Param
from .pysrc import prefix_for

DSPY_FORMAT = "3.x"


def demo(d: dict, p: Param, names: set[str]) -> dict:
    """An lmc demo in DSPy's field names; lmc's bookkeeping keys (`_id`) and fields DSPy's step lacks are dropped."""
    out = {}
    for key, value in d.items():
        if p.spread is not None and key == p.spread[0]:
            for name, item in zip(p.spread[1], value if isinstance(value, list) else [value]):
                out[name] = item
            continue
        name = p.rename.get(key, key)
        if name in names:
            out[name] = value
    return out


def predictor_state(pred: I.Predictor, p: Param) -> dict:
    names = {n for n, _, _ in p.fields}
    return {
        "traces": [],
        "train": [],
        "demos": [demo(dict(d), p, names) for d in pred.demos],
        "signature": {
            "instructions": pred.instructions,
            "fields": [{"prefix": prefix or prefix_for(n), "description": desc} for n, prefix, desc in p.fields],
        },
        "lm": None,
    }


def state(ir: I.IR, mods: list[Mod], *, artifact_sha256: str) -> dict:
    out: dict = {}
    for m in mods:
        for p in m.params:
            if p.pid is not None:
                out[p.path] = predictor_state(ir.predictor(p.pid), p)
    # `Module.load` compares these versions with the running ones and only warns; lmc ran no DSPy, so none are claimed.
    out["metadata"] = {"dependency_versions": {}, "exported_by": f"lmc {__version__}", "format": DSPY_FORMAT, "artifact_sha256": artifact_sha256}
    return out
