"""What a reply must look like, written in each decoder's own language: a llama.cpp grammar, a regular expression.

A request carries its constraint as data (`LMRequest.choices` for one literal-union output,
`LMRequest.shape` for a completion reply of several fields or of another typed field); the
embedded model and a llama.cpp server take `gbnf`, a vLLM server `regex` (or the choices alone),
Ollama a JSON schema of the label (`format`).  Which one a server understands is found once per
endpoint by a probe (lmc/lm/dialect.py) or set in lmc.yaml (`constraints`).

A completion reply starts right after the first output's label, which ends the prompt; every
later field follows on its own line as `Label: value`, as the prompt's demos show it.  A free-text
field before a typed one is one line of at most `TEXT_LIMIT` characters, so the model always
reaches the typed field within its token limit; a free-text last field is left open.
"""

from __future__ import annotations

import json
import re

Shape = tuple[tuple[str, str, tuple[str, ...]], ...]

# Characters a free-text field may take before a typed field must follow (about 120 tokens).
TEXT_LIMIT = 480
# Field kinds a shape can hold; any other output (lists, JSON, optional values) leaves the reply unconstrained.
SHAPE_KINDS = ("str", "literal", "bool", "int", "float")
TYPED_KINDS = ("literal", "bool", "int", "float")


def _gbnf_value(kind: str, options: tuple[str, ...], last: bool) -> str:
    if kind == "literal":
        return "(" + " | ".join(json.dumps(o) for o in options) + ")"
    if kind == "bool":
        return '("true" | "false")'
    if kind == "int":
        return '"-"? [0-9]{1,18}'
    if kind == "float":
        return '"-"? [0-9]{1,18} ("." [0-9]{1,12})?'
    return "[^\\n]*" if last else f"[^\\n]{{1,{TEXT_LIMIT}}}"


def gbnf(choices: tuple[str, ...] = (), shape: Shape = ()) -> str | None:
    """The llama.cpp grammar (GBNF) of a reply, or None when nothing constrains it."""
    if shape:
        parts = []
        for i, (label, kind, options) in enumerate(shape):
            value = _gbnf_value(kind, options, i == len(shape) - 1)
            parts.append(f'" "? {value}' if i == 0 else f'"\\n" {json.dumps(label + ":")} " "? {value}')
        return "root ::= " + " ".join(parts)
    if choices:
        return 'root ::= " "? (' + " | ".join(json.dumps(c) for c in choices) + ")"
    return None


def _regex_value(kind: str, options: tuple[str, ...], last: bool) -> str:
    if kind == "literal":
        return "(" + "|".join(re.escape(o) for o in options) + ")"
    if kind == "bool":
        return "(true|false)"
    if kind == "int":
        return "-?[0-9]{1,18}"
    if kind == "float":
        return r"-?[0-9]{1,18}(\.[0-9]{1,12})?"
    return "[^\\n]*" if last else f"[^\\n]{{1,{TEXT_LIMIT}}}"


def regex(choices: tuple[str, ...] = (), shape: Shape = ()) -> str | None:
    """The same constraint as a regular expression (vLLM's guided decoding), or None."""
    if shape:
        parts = []
        for i, (label, kind, options) in enumerate(shape):
            value = _regex_value(kind, options, i == len(shape) - 1)
            parts.append(f" ?{value}" if i == 0 else f"\\n{re.escape(label + ':')} ?{value}")
        return "".join(parts)
    if choices:
        return " ?(" + "|".join(re.escape(c) for c in choices) + ")"
    return None


def json_schema(choices: tuple[str, ...]) -> dict:
    """A JSON schema whose only valid documents are one of `choices` (Ollama's `format` takes it)."""
    return {"type": "string", "enum": list(choices)}


DIALECTS = ("llama.cpp", "vllm", "ollama")
WIRE_KEYS = ("grammar", "guided_choice", "guided_regex", "format")  # every body field a dialect may add


def wire_fields(dialect: str, choices: tuple[str, ...], shape: Shape) -> dict:
    """The request-body fields that carry a constraint in `dialect`; {} when it cannot carry this one."""
    if dialect == "llama.cpp":
        grammar = gbnf(choices, shape)
        return {"grammar": grammar} if grammar else {}
    if dialect == "vllm":
        if choices and not shape:
            return {"guided_choice": list(choices)}
        pattern = regex(choices, shape)
        return {"guided_regex": pattern} if pattern else {}
    if dialect == "ollama" and choices and not shape:
        return {"format": json_schema(choices)}
    return {}
