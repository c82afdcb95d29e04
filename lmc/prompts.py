"""Prompts: a predictor plus inputs becomes chat messages or completion text; replies become typed outputs.

Two formats, chosen by the LM's mode:

* **chat** — a system message with the instructions and the input/output fields
  (names, types, descriptions); each demo is a user turn and an assistant turn;
  every field travels in its own `<name>...</name>` element, so replies parse
  without guessing.
* **completion** — for base models (the embedded Gemma, litellm text-completion
  models): the instructions, then demos and the query as `Label: value` blocks
  separated by blank lines, ending at the first output label; stop sequences end
  the reply after the last output.

Parsing coerces each field to its declared type (`types.coerce`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from . import limits
from .errors import OutputParseError
from .ir import FieldSpec, Predictor
from .types import _FAIL, _load_json, coerce

FEEDBACK_FIELDS = ("previous_answer", "feedback")


@dataclass(frozen=True)
class Prompt:
    mode: str  # chat | completion
    messages: tuple[dict, ...] | None = None
    text: str | None = None
    stop: tuple[str, ...] = ()
    json_mode: bool = False
    demos_used: int = 0

    def as_text(self) -> str:
        """A readable rendering (for `lmc inspect` and traces)."""
        if self.mode == "completion":
            return self.text or ""
        parts = []
        for m in self.messages or ():
            parts.append(f"=== {m['role']} ===\n{m['content']}")
        return "\n\n".join(parts)


# ---------------------------------------------------------------- values


def show_value(value: Any, multiline_ok: bool = True) -> str:
    """How a field value is written into a prompt."""
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) and not value.is_integer() else str(int(value)) if isinstance(value, float) else str(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        if not value:
            return "(none)"
        if multiline_ok:
            limits.check_chars(sum(len(v) + 6 for v in value), "a list as text")
            return "\n".join(f"[{i}] {v}" for i, v in enumerate(value, 1))
        return limits.to_json(value, what="a list as text")
    # Bounded: a program can build a value of shared sublists that would print exponentially long.
    return limits.to_json(value, sort_keys=True, what="a value as text")


def type_hint(f: FieldSpec) -> str:
    t = f.type
    if t.kind == "literal":
        return "one of: " + ", ".join(t.args)
    if t.kind == "optional" and t.args[0].kind == "literal":
        return "one of: " + ", ".join(t.args[0].args) + " (or none)"
    if t.kind in ("int", "float"):
        return "a number" if t.kind == "float" else "an integer"
    if t.kind == "bool":
        return "true or false"
    if t.kind in ("list", "dict", "json"):
        return f"JSON ({t.name})"
    return ""


# ---------------------------------------------------------------- completion format


def _completion_header(p: Predictor) -> str:
    lines = []
    if p.instructions.strip():
        lines.append(p.instructions.strip())
    notes = []
    for f in p.signature.outputs:
        hint = type_hint(f)
        desc = f" ({f.description})" if f.description else ""
        if hint or desc:
            notes.append(f"{f.label}{desc}: {hint}" if hint else f"{f.label}{desc}")
    if notes and len(p.signature.outputs) > 1 or any(f.description for f in p.signature.outputs):
        lines.append("Give " + "; ".join(notes) + ".")
    return "\n".join(lines)


def _block(fields: tuple[FieldSpec, ...], values: dict) -> list[str]:
    out = []
    for f in fields:
        if f.name in values:
            out.append(f"{f.label}: {show_value(values[f.name])}")
    return out


def completion_prompt(p: Predictor, inputs: dict, demos: tuple[dict, ...], feedback: dict | None = None) -> Prompt:
    sig = p.signature
    chunks = []
    header = _completion_header(p)
    if header:
        chunks.append(header)
    for d in demos:
        chunks.append("\n".join(_block(sig.inputs, d) + _block(sig.outputs, d)))
    query = _block(sig.inputs, inputs)
    if feedback:
        query.append(f"Previous answer: {feedback['previous_answer']}")
        query.append(f"Feedback: {feedback['feedback']}")
    query.append(f"{sig.outputs[0].label}:")
    chunks.append("\n".join(query))
    return Prompt("completion", text="\n\n".join(chunks), stop=completion_stops(p), demos_used=len(demos))


def completion_stops(p: Predictor) -> tuple[str, ...]:
    """Where a completion reply ends: wherever the prompt format would start something other than this answer.

    That is the demo separator (a blank line), any input label (the next example), the first
    output label again and the feedback labels; the later output labels belong to the answer.
    A single short typed output also ends at its line's end.  Most useful first: a server that
    takes only a few stop strings (OpenAI takes 4) keeps these, and `cut_run_on` cuts the rest."""
    sig = p.signature
    stops = ["\n\n"]
    if len(sig.outputs) == 1 and sig.outputs[0].type.kind in ("literal", "int", "float", "bool"):
        stops.append("\n")
    stops += [f"\n{f.label}:" for f in sig.inputs]
    stops += [f"\n{sig.outputs[0].label}:", "\nPrevious answer:", "\nFeedback:"]
    return tuple(dict.fromkeys(stops))


def cut_run_on(p: Predictor, text: str) -> str:
    """`text` up to the first stop of the prompt format: what a server that ignored (or capped) the stops ran on into."""
    end = len(text)
    for stop in completion_stops(p):
        i = text.find(stop)
        if i >= 0:
            end = min(end, i)
    return text[:end]


def parse_completion(p: Predictor, text: str) -> dict:
    text = cut_run_on(p, text)
    outs = p.signature.outputs
    labels = [f.label for f in outs]
    # The reply starts right after the first label; later outputs follow as `Label:` lines.
    pieces: dict[str, str] = {}
    current = outs[0].name
    buf: list[str] = []
    pattern = re.compile(r"^\s*(" + "|".join(re.escape(lb) for lb in labels[1:]) + r")\s*:\s?(.*)$", re.I) if len(labels) > 1 else None
    for line in text.split("\n"):
        m = pattern.match(line) if pattern else None
        if m:
            pieces[current] = "\n".join(buf)
            current = next(f.name for f in outs if f.label.lower() == m.group(1).lower())
            buf = [m.group(2)]
        else:
            buf.append(line)
    pieces[current] = "\n".join(buf)
    return _coerce_all(p, pieces, text)


# ---------------------------------------------------------------- chat format


def _field_line(f: FieldSpec) -> str:
    hint = type_hint(f)
    bits = [b for b in (f.description, hint) if b]
    return f"- {f.name}" + (f" — {'; '.join(bits)}" if bits else "")


def _system(p: Predictor, json_mode: bool) -> str:
    sig = p.signature
    parts = []
    if p.instructions.strip():
        parts.append(p.instructions.strip())
    parts.append("Inputs:\n" + "\n".join(_field_line(f) for f in sig.inputs))
    parts.append("Outputs:\n" + "\n".join(_field_line(f) for f in sig.outputs))
    if json_mode:
        keys = ", ".join(f'"{f.name}"' for f in sig.outputs)
        parts.append(f"Reply with one JSON object with the keys {keys} and nothing else.")
    else:
        example = "\n".join(f"<{f.name}>...</{f.name}>" for f in sig.outputs)
        parts.append("Reply with every output, each inside its own tags, in this order:\n" + example)
    return "\n\n".join(parts)


def _tagged(fields: tuple[FieldSpec, ...], values: dict) -> str:
    names = [f.name for f in fields]
    return "\n".join(f"<{f.name}>\n{_defuse(show_value(values[f.name]), names)}\n</{f.name}>" for f in fields if f.name in values)


def _defuse(text: str, names: list[str]) -> str:
    """Input text is data: a field tag inside it (`</review>`) must not end or open a field."""
    if "<" not in text:
        return text
    pattern = re.compile(r"<(/?)(" + "|".join(re.escape(n) for n in names) + r")>")
    return pattern.sub(lambda m: f"&lt;{m.group(1)}{m.group(2)}&gt;", text)


def _answer(fields: tuple[FieldSpec, ...], values: dict, json_mode: bool) -> str:
    if json_mode:
        return json.dumps({f.name: values.get(f.name) for f in fields}, ensure_ascii=False)
    return "\n".join(f"<{f.name}>{show_value(values[f.name], multiline_ok=False)}</{f.name}>" for f in fields if f.name in values)


def chat_prompt(p: Predictor, inputs: dict, demos: tuple[dict, ...], feedback: dict | None = None, json_mode: bool = False) -> Prompt:
    sig = p.signature
    messages = [{"role": "system", "content": _system(p, json_mode)}]
    for d in demos:
        messages.append({"role": "user", "content": _tagged(sig.inputs, d)})
        messages.append({"role": "assistant", "content": _answer(sig.outputs, d, json_mode)})
    user = _tagged(sig.inputs, inputs)
    if feedback:
        user += (
            f"\n\nYour previous answer was:\n{feedback['previous_answer']}\nIt was not accepted: {feedback['feedback']}\nAnswer again, fixing that."
        )
    messages.append({"role": "user", "content": user})
    return Prompt("chat", messages=tuple(messages), json_mode=json_mode, demos_used=len(demos))


def repair_prompt(prompt: Prompt, reply: str, error: str) -> Prompt:
    """Ask again after a reply that did not parse (chat mode)."""
    messages = list(prompt.messages or ())
    messages.append({"role": "assistant", "content": reply})
    messages.append({"role": "user", "content": f"I could not read that reply: {error}. Reply again using exactly the requested format."})
    return Prompt("chat", messages=tuple(messages), json_mode=prompt.json_mode, demos_used=prompt.demos_used)


_TAG = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)>(.*?)(?:</\1>|(?=<[A-Za-z_][A-Za-z0-9_]*>)|$)", re.S)


def parse_chat(p: Predictor, text: str, json_mode: bool = False) -> dict:
    outs = p.signature.outputs
    names = {f.name for f in outs}
    pieces: dict[str, Any] = {}
    if json_mode or text.lstrip().startswith("{"):
        obj = _load_json(text.strip().removeprefix("```json").removesuffix("```").strip())
        if obj is not _FAIL and isinstance(obj, dict):
            pieces = {k: v for k, v in obj.items() if k in names}
    if not pieces:
        for m in _TAG.finditer(text):
            if m.group(1) in names and m.group(1) not in pieces:
                pieces[m.group(1)] = m.group(2).strip()
    if not pieces and len(outs) == 1 and "<" not in text:
        pieces[outs[0].name] = text.strip()
    return _coerce_all(p, pieces, text)


def _coerce_all(p: Predictor, pieces: dict, raw: str) -> dict:
    out: dict[str, Any] = {}
    for f in p.signature.outputs:
        if f.name not in pieces:
            if f.type.kind == "optional":
                out[f.name] = None
                continue
            raise OutputParseError(f"missing output field '{f.name}' in reply {_quote(raw)}", raw, f.name)
        value = pieces[f.name]
        if isinstance(value, str) and not value.strip() and f.type.kind not in ("optional", "str"):
            raise OutputParseError(f"empty value for output '{f.name}'", raw, f.name)
        try:
            out[f.name] = coerce(value, f.type)
        except OutputParseError as e:
            raise OutputParseError(f"output '{f.name}': {e.message}", raw, f.name) from None
    return out


def _quote(raw: str, limit: int = 120) -> str:
    text = raw.strip().replace("\n", "\\n")
    return json.dumps(text if len(text) <= limit else text[:limit] + "...")


# ---------------------------------------------------------------- entry points


def render(
    p: Predictor, inputs: dict, *, mode: str, demos: tuple[dict, ...] | None = None, feedback: dict | None = None, json_mode: bool = False
) -> Prompt:
    demos = p.demos if demos is None else demos
    if mode == "completion":
        return completion_prompt(p, inputs, demos, feedback)
    return chat_prompt(p, inputs, demos, feedback, json_mode)


def parse(p: Predictor, text: str, *, mode: str, json_mode: bool = False) -> dict:
    if mode == "completion":
        return parse_completion(p, text)
    return parse_chat(p, text, json_mode)
