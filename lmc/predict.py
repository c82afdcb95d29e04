"""One predictor call: demos chosen, the prompt fitted to the model's context, the reply parsed (with repairs)."""

from __future__ import annotations

import json
from typing import Any

from . import ir as I
from . import labels, prompts
from .demos import select_demos
from .errors import OutputParseError, RunError
from .lm import LMRequest, LMResult, LMSpec, make_request
from .runtime import Call, Frame, Runtime


async def predict(
    rt: Runtime, ctx: Frame, pid: str, inputs: dict, *, sample: int = 0, temperature: float | None = None, feedback: dict | None = None
) -> dict:
    p = rt.ir.predictor(pid)
    spec = rt.lm_for(p)
    mode = spec.mode
    values = {f.name: inputs[f.name] for f in p.signature.inputs if f.name in inputs}
    for f in p.signature.inputs:
        if f.name not in values and f.type.kind != "optional":
            raise RunError(f"predictor '{pid}' is missing input '{f.name}'")
    demos = select_demos(rt.ir, p, values, ctx.exclude_demos)
    temp = temperature if temperature is not None else p.setting("temperature", spec.setting("temperature", 0.0))
    max_tokens: Any = p.setting("max_tokens") or spec.setting("max_tokens") or default_max_tokens(p, mode)
    prompt, demos, shown = _fit_context(rt, spec, p, values, demos, mode, feedback, int(max_tokens))
    overrides: dict[str, Any] = {"temperature": temp, "max_tokens": max_tokens, "sample": sample}
    schema = labels.output_schema(p) if mode == "chat" and rt.client.endpoints.setting == "openai" else None
    if schema is not None:  # the server holds the reply to the schema; the prompt asks for that JSON object
        prompt = prompts.render(p, shown, mode=mode, demos=demos, feedback=feedback, json_mode=True)
        overrides["schema"] = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    if mode == "completion":
        choices, shape = labels.reply_constraint(p)
        if choices:
            overrides["choices"] = choices
            overrides["rank"] = not temp and bool(p.setting("score_labels", True))
            overrides["rank_on_server"] = p.setting("score_labels") is True
        elif shape:
            overrides["shape"] = shape
    last_raw, last_err = "", OutputParseError("no answer")
    for attempt in range(3):
        if attempt == 1:
            if mode == "chat":
                prompt = prompts.repair_prompt(prompt, last_raw, str(last_err.message))
            else:  # base models do not read feedback well; sample again instead
                overrides = {**overrides, "sample": sample + 1000, "temperature": max(float(temp or 0), 0.3)}
        elif attempt == 2:
            if mode != "chat":
                break
            prompt = prompts.render(p, shown, mode=mode, demos=demos, feedback=feedback, json_mode=True)
        stop = tuple(p.setting("stop") or ()) + prompt.stop
        req = make_request(spec, messages=prompt.messages, prompt=prompt.text, stop=stop or None, json_mode=prompt.json_mode, **overrides)
        key = req.cache_key(spec.model)
        if key in ctx.memo:
            result, parsed, err, scores = ctx.memo[key]
        else:
            result = await rt.client.complete(spec, req, tag=pid, meter=ctx.meter)
            parsed, err, scores = _read(rt, spec, p, req, result, prompt, mode)
            ctx.memo[key] = (result, parsed, err, scores)
        call = Call(
            pid,
            p.module,
            values,
            parsed,
            raw=result.text,
            prompt=prompt.as_text() if rt.trace_prompts else None,
            error=str(err) if err else None,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            cost=result.cost,
            cached=result.cached,
            latency_s=result.latency_s,
            scores=scores,
        )
        ctx.trace.append(call)
        if err is None:
            return parsed
        last_raw, last_err = result.text, err
    raise OutputParseError(f"predictor '{pid}': {last_err.message} (raw output: {_short(last_raw)})", last_raw)


def _read(
    rt: Runtime, spec: LMSpec, p: I.Predictor, req: LMRequest, result: LMResult, prompt: prompts.Prompt, mode: str
) -> tuple[dict | None, OutputParseError | None, dict | None]:
    """A reply's outputs (or why it does not parse), and each label's score when the label was chosen by scoring."""
    try:
        if result.label_scores:
            scores = labels.scores(p, result.label_scores)
            return labels.chosen(p, scores), None, scores
        if req.rank and not rt.client.on_server(spec):  # a server's fallback is the client's to explain
            rt.warnings.add(f"{spec.model} returned no label scores; predictor '{p.id}' chose its label by decoding instead")
        return prompts.parse(p, result.text, mode=mode, json_mode=prompt.json_mode), None, None
    except OutputParseError as e:
        return None, e, None


_SHORT_KINDS = ("literal", "bool", "int", "float")


def default_max_tokens(p: I.Predictor, mode: str) -> int:
    """An upper bound that fits the outputs: a label needs a few tokens, free text and reasoning more.

    Base models rarely stop on their own, so a tight bound is what keeps them fast."""
    kinds = [f.type.args[0].kind if f.type.kind == "optional" else f.type.kind for f in p.signature.outputs]
    if all(k in _SHORT_KINDS for k in kinds):
        return 16 * len(kinds) if mode == "completion" else 64
    if mode == "completion":
        return 96 if len(kinds) == 1 else 256
    return 1024


def _short(raw: str, limit: int = 200) -> str:
    text = raw.strip().replace("\n", "\\n")
    return json.dumps(text if len(text) <= limit else text[:limit] + "...")


def _fit_context(
    rt: Runtime, spec: LMSpec, p: I.Predictor, values: dict, demos: tuple[dict, ...], mode: str, feedback, max_tokens: int
) -> tuple[prompts.Prompt, tuple[dict, ...], dict]:
    """Render the prompt so it fits the model's context window with room for `max_tokens` of answer.

    Demos go first (last first, with a note). An input that still does not fit fails the
    example, never silently loses part of the prompt; only with --truncate-inputs (or the
    module setting `truncate_inputs=true`) is the longest input cut from its middle.
    Returns the prompt, the demos kept and the input values shown.
    """
    prompt = prompts.render(p, values, mode=mode, demos=demos, feedback=feedback)
    window = rt.client.context_window(spec)
    if not window:
        return prompt, demos, values
    if spec.is_local:  # the embedded backend never reserves more than half its window for the answer
        max_tokens = min(max_tokens, window // 2)
    budget = window - max_tokens - 8
    used = rt.client.count_tokens(spec, prompt.as_text())
    while demos and used > budget:
        demos = demos[:-1]
        prompt = prompts.render(p, values, mode=mode, demos=demos, feedback=feedback)
        used = rt.client.count_tokens(spec, prompt.as_text())
        rt.warnings.add(f"predictor '{p.id}': dropped demos to fit the {window}-token context of {spec.model}")
    if used <= budget:
        return prompt, demos, values
    try:
        allowed = rt.truncate_inputs or bool(rt.ir.module(p.module).setting("truncate_inputs", False))
    except KeyError:
        allowed = rt.truncate_inputs
    if not allowed:
        longest = max(values, key=lambda k: len(prompts.show_value(values[k])), default=None)
        raise RunError(
            f"predictor '{p.id}': input of {used:,} tokens does not fit the {window:,}-token context of "
            f"{spec.model} ({max_tokens:,} tokens kept for the answer)"
            + (f"; shorten '{longest}'" if longest else "")
            + ", or pass --truncate-inputs (module setting truncate_inputs=true) to cut the longest "
            "input from its middle",
            "input",
        )
    shown = dict(values)
    for _ in range(64):
        name = _longest_text(shown)
        text = _text_of(shown[name]) if name is not None else ""
        if name is None or len(text) <= 2 * len(CUT_MARK):
            raise RunError(
                f"predictor '{p.id}': the prompt needs {used:,} tokens and the {window:,}-token context "
                f"of {spec.model} holds {budget:,} besides the answer, even with every input cut",
                "input",
            )
        # Characters per token of this prompt, so the cut is about right the first time; rounded up.
        per_token = max(1.0, len(prompt.as_text()) / max(used, 1))
        cut = int((used - budget) * per_token * 1.1) + 16
        shown[name] = _cut(shown[name], max(0, len(text) - cut))
        prompt = prompts.render(p, shown, mode=mode, demos=demos, feedback=feedback)
        used = rt.client.count_tokens(spec, prompt.as_text())
        if used <= budget:
            rt.warnings.add(f"predictor '{p.id}': cut inputs from their middle to fit the {window}-token context of {spec.model} (--truncate-inputs)")
            return prompt, demos, shown
    raise RunError(
        f"predictor '{p.id}': could not cut the inputs to fit the {window:,}-token context of {spec.model}", "input"
    )  # pragma: no cover - every round removes at least 16 characters


CUT_MARK = "\n[...]\n"


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return max((v for v in value if isinstance(v, str)), key=len, default="")
    return ""


def _longest_text(values: dict) -> str | None:
    """The input holding the longest cuttable text (a string, or a string inside a list of them)."""
    best, size = None, 0
    for name, value in values.items():
        n = len(_text_of(value))
        if n > size:
            best, size = name, n
    return best


def _cut(value: Any, keep: int) -> Any:
    """`value` with its longest text cut to `keep` characters, head and tail kept, a mark where the middle was."""

    def middle(text: str) -> str:
        if keep >= len(text):
            return text
        room = max(0, keep - len(CUT_MARK))
        head = room // 2
        return text[:head] + CUT_MARK + text[len(text) - (room - head) :] if room - head else text[:head] + CUT_MARK

    if isinstance(value, str):
        return middle(value)
    longest = _text_of(value)
    out, done = [], False
    for v in value:
        if not done and v is longest:
            out.append(middle(v))
            done = True
        else:
            out.append(v)
    return out
