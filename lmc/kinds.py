"""Module kinds: one frozen description each (settings and their defaults, extra outputs, lowering, run-time behaviour).

`check` reads a kind's settings and extra outputs, `lower` expands a module into
the predictors its `lower` function returns, and the interpreter calls its `run`
function with a `Step` (the interpreter's services for one module call).  A new
kind is one more `Kind` in `KINDS`, written here.

>>> KINDS["ReAct"].default("max_iters"), KINDS["MultiChainComparison"].default("m")
(5, 3)
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol

from . import ir as I
from .errors import OutputParseError, RunError
from .prompts import show_value
from .types import JSON, STR, list_of, literal, optional

# Settings every kind takes, and those of them that belong to each LM call (predictor) rather than the module.
COMMON_SETTINGS = ("temperature", "max_tokens", "lm", "max_backtracks", "instructions", "stop", "truncate_inputs", "score_labels", "length_normalize")
PREDICTOR_SETTINGS = ("temperature", "max_tokens", "lm", "stop", "score_labels", "length_normalize")
# Fields lowering adds for the LM to write its thinking in; a labeled example never holds them.
REASONING = I.FieldSpec("reasoning", STR, "think step by step before answering")
RATIONALE = I.FieldSpec("rationale", STR, "compare the attempts and decide which is right")
THINKING_FIELDS = (REASONING.name, RATIONALE.name)
# Kinds that sample several answers draw them at this temperature.
SAMPLE_TEMPERATURE = 0.7


@dataclass(frozen=True)
class Setting:
    """One kind-specific setting: what values it takes (`int`, `number`, `tools`, `metric`) and its default."""

    name: str
    type: str
    default: Any = None
    low: float | None = None  # numbers: the smallest allowed value
    required: tuple[str, str] | None = None  # when it must be given: (what is missing, a hint)

    def expected(self) -> str:
        if self.type == "int":
            return f"an int of {self.low:g} or more"
        return f"a number of {self.low:g} or more"


class Step(Protocol):
    """What the interpreter lends a kind for one call of one module."""

    module: I.ModuleIR

    async def predict(self, role: str, inputs: dict, *, sample: int = 0, temperature: float | None = None, feedback: dict | None = None) -> dict: ...

    def outputs(self, role: str) -> tuple[I.FieldSpec, ...]: ...

    async def call_tool(self, name: str, args: Any) -> Any: ...

    def require_sandbox(self) -> None: ...

    async def run_code(self, code: str, inputs: dict, timeout_s: float) -> Any: ...

    async def score(self, metric: str, inputs: dict, outputs: dict) -> float: ...


# (predictor id, role, signature, instructions) for each LM call a module makes.
Lowered = list[tuple[str, str, I.SignatureIR, str]]
Lower = Callable[[str, I.SignatureIR, str, dict, Callable[[str], I.ToolIR]], Lowered]
Run = Callable[[Step, dict, "dict | None"], Awaitable[dict]]


@dataclass(frozen=True)
class Kind:
    name: str
    lower: Lower  # (module name, signature, instructions, settings, tool lookup) -> predictors
    run: Run  # (step, inputs, feedback) -> outputs
    settings: tuple[Setting, ...] = ()
    extra_outputs: tuple[str, ...] = ()  # outputs the kind adds in front of its signature's

    def setting(self, name: str) -> Setting | None:
        return next((s for s in self.settings if s.name == name), None)

    def default(self, name: str) -> Any:
        s = self.setting(name)
        return None if s is None else s.default

    def value(self, m: I.ModuleIR, name: str) -> Any:
        """Module `m`'s setting `name`, or this kind's default for it."""
        return m.setting(name, self.default(name))


def _sig(base: I.SignatureIR, name: str = "", instructions: str | None = None, inputs: tuple = (), outputs: tuple | None = None) -> I.SignatureIR:
    """`base` with fields added to its inputs, other outputs, and optionally another name."""
    return I.SignatureIR(
        base.name + name,
        base.instructions if instructions is None else instructions,
        base.inputs + inputs,
        base.outputs if outputs is None else outputs,
    )


# ---------------------------------------------------------------- Predict, ChainOfThought


def _lower_predict(name: str, base: I.SignatureIR, instructions: str, settings: dict, tool) -> Lowered:
    return [(name, "main", base, instructions)]


def _lower_cot(name: str, base: I.SignatureIR, instructions: str, settings: dict, tool) -> Lowered:
    return [(name, "main", _sig(base, outputs=(REASONING,) + base.outputs), instructions)]


async def _run_main(step: Step, inputs: dict, feedback: dict | None) -> dict:
    return await step.predict("main", inputs, feedback=feedback)


# ---------------------------------------------------------------- MultiChainComparison


def _lower_mcc(name: str, base: I.SignatureIR, instructions: str, settings: dict, tool) -> Lowered:
    attempts = I.FieldSpec("attempts", list_of(STR), "earlier attempts at this task, which may disagree")
    return [
        (f"{name}.attempt", "attempt", _sig(base, outputs=(REASONING,) + base.outputs), instructions),
        (
            f"{name}.compare",
            "compare",
            _sig(base, "Compare", "", (attempts,), (RATIONALE,) + base.outputs),
            instructions + "\nSeveral attempts are given; weigh them and give the single best answer.",
        ),
    ]


async def _run_mcc(step: Step, inputs: dict, feedback: dict | None) -> dict:
    count = int(MULTI_CHAIN.value(step.module, "m"))
    attempts = await asyncio.gather(
        *[step.predict("attempt", inputs, sample=i, temperature=SAMPLE_TEMPERATURE, feedback=feedback) for i in range(count)]
    )
    fields = step.outputs("attempt")
    lines = [" ".join(f"{f.label}: {show_value(a.get(f.name), multiline_ok=False)}" for f in fields) for a in attempts]
    return await step.predict("compare", {**inputs, "attempts": lines}, feedback=feedback)


# ---------------------------------------------------------------- ReAct


def _lower_react(name: str, base: I.SignatureIR, instructions: str, settings: dict, tool) -> Lowered:
    tools = [str(t) for t in settings.get("tools", ())]
    lines = []
    for t in tools:
        spec = tool(t)
        lines.append(f"- {t}({', '.join(f'{p.name}: {p.type.name}' for p in spec.params)}): {spec.description}")
    lines.append("- finish(): you have gathered enough to answer")
    so_far = I.FieldSpec("trajectory", STR, "thoughts, tool calls and observations so far")
    step = _sig(
        base,
        "Step",
        "",
        (so_far,),
        (
            I.FieldSpec("thought", STR, "what to do next and why"),
            I.FieldSpec("tool", literal(*tools, "finish"), "the tool to call next"),
            I.FieldSpec("tool_args", JSON, "the tool's arguments as a JSON object"),
        ),
    )
    trajectory = I.FieldSpec("trajectory", STR, "thoughts, tool calls and observations")
    extract = _sig(base, inputs=(trajectory,), outputs=(REASONING,) + base.outputs)
    step_instr = instructions + "\nWork step by step: think, then call one tool, read its result, and repeat. Tools:\n" + "\n".join(lines)
    return [(f"{name}.step", "step", step, step_instr), (f"{name}.extract", "extract", extract, instructions)]


async def _run_react(step: Step, inputs: dict, feedback: dict | None) -> dict:
    steps: list[str] = []
    for i in range(int(REACT.value(step.module, "max_iters"))):
        trajectory = "\n".join(steps) if steps else "(nothing yet)"
        out = await step.predict("step", {**inputs, "trajectory": trajectory}, feedback=feedback if i == 0 else None)
        tool, args = out.get("tool"), out.get("tool_args")
        steps.append(f"Thought {i + 1}: {out.get('thought', '')}")
        if tool == "finish":
            steps.append(f"Action {i + 1}: finish")
            break
        steps.append(f"Action {i + 1}: {tool}({json.dumps(args, ensure_ascii=False)})")
        try:
            observation = await step.call_tool(str(tool), args)
        except RunError as err:
            if err.kind == "tool":  # a bug in the user's tool must surface, not be fed back to the LM
                raise
            observation = f"error: {err.message}"
        steps.append(f"Observation {i + 1}: {_clip(show_value(observation))}")
    trajectory = "\n".join(steps)
    out = await step.predict("extract", {**inputs, "trajectory": trajectory})
    return {**out, "trajectory": trajectory}


def _clip(text: str, limit: int = 1500) -> str:
    return text if len(text) <= limit else text[:limit] + " ..."


# ---------------------------------------------------------------- ProgramOfThought


def _lower_pot(name: str, base: I.SignatureIR, instructions: str, settings: dict, tool) -> Lowered:
    retry = (I.FieldSpec("previous_code", optional(STR), "code that failed before"), I.FieldSpec("error", optional(STR), "the error it raised"))
    code = I.FieldSpec("code", STR, "Python code that computes the answer and stores it in `result`")
    ran = (I.FieldSpec("code", STR, "the program that was run"), I.FieldSpec("code_output", STR, "what the program computed"))
    code_instr = (
        instructions + "\nWrite a short Python program (standard library only, no input(), no files, "
        "no network) that computes the answer and assigns it to a variable named `result`."
    )
    return [
        (f"{name}.code", "code", _sig(base, "Code", "", retry, (code,)), code_instr),
        (f"{name}.answer", "answer", _sig(base, inputs=ran), instructions),
    ]


async def _run_pot(step: Step, inputs: dict, feedback: dict | None) -> dict:
    step.require_sandbox()  # refuse before spending an LM call where no sandbox can start
    tries = int(PROGRAM_OF_THOUGHT.value(step.module, "max_iters"))
    timeout = float(PROGRAM_OF_THOUGHT.value(step.module, "timeout"))
    extra: dict = {}
    code, output, error = "", "", None
    for i in range(tries):
        out = await step.predict("code", {**inputs, **extra}, feedback=feedback if i == 0 else None)
        code = _strip_code(out.get("code", ""))
        result = await step.run_code(code, {k: v for k, v in inputs.items() if _is_json(v)}, timeout)
        if result.ok:
            output = show_value(result.value) if result.value is not None else result.stdout.strip()
            error = None
            break
        error = result.error
        extra = {"previous_code": code, "error": error}
    if error is not None:
        raise RunError(f"generated code failed {tries} times; last error: {error}", "runtime")
    out = await step.predict("answer", {**inputs, "code": code, "code_output": output})
    return {**out, "code": code}


def _strip_code(text: str) -> str:
    t = text.strip()
    if t.startswith("```"):
        t = t.split("\n", 1)[1] if "\n" in t else ""
        if t.rstrip().endswith("```"):
            t = t.rstrip()[:-3]
    return t.strip()


def _is_json(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------- BestOfN


async def _run_best_of_n(step: Step, inputs: dict, feedback: dict | None) -> dict:
    reward = BEST_OF_N.value(step.module, "reward")
    threshold = BEST_OF_N.value(step.module, "threshold")
    best, best_score, last_error = None, -1.0, None
    for i in range(int(BEST_OF_N.value(step.module, "n"))):
        try:
            out = await step.predict("main", inputs, sample=i, temperature=SAMPLE_TEMPERATURE if i else None, feedback=feedback)
        except OutputParseError as err:
            last_error = err
            continue
        s = await step.score(reward, dict(inputs), out) if reward else 0.0
        if s > best_score:
            best, best_score = out, s
        if threshold is not None and s >= float(threshold):
            break
    if best is None:
        raise last_error or RunError("no sample produced an answer")
    return best


# ---------------------------------------------------------------- the table

MULTI_CHAIN = Kind("MultiChainComparison", _lower_mcc, _run_mcc, (Setting("m", "int", 3, low=2),))
REACT = Kind(
    "ReAct",
    _lower_react,
    _run_react,
    (Setting("tools", "tools", required=("tools", "add tools=[search, calc]")), Setting("max_iters", "int", 5, low=1)),
    ("trajectory",),
)
PROGRAM_OF_THOUGHT = Kind(
    "ProgramOfThought", _lower_pot, _run_pot, (Setting("max_iters", "int", 3, low=1), Setting("timeout", "number", 5.0, low=0)), ("code",)
)
BEST_OF_N = Kind(
    "BestOfN",
    _lower_predict,
    _run_best_of_n,
    (
        Setting("n", "int", 3, low=1),
        Setting("reward", "metric", required=("a reward metric", "add reward=<metric name>")),
        Setting("threshold", "number", None, low=0),
    ),
)

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("Predict", _lower_predict, _run_main),
        Kind("ChainOfThought", _lower_cot, _run_main, (), ("reasoning",)),
        MULTI_CHAIN,
        REACT,
        PROGRAM_OF_THOUGHT,
        BEST_OF_N,
    )
}


def extra_outputs(kind: str) -> tuple[str, ...]:
    """The outputs kind `kind` adds to its signature's (none for a kind the checker refused)."""
    k = KINDS.get(kind)
    return k.extra_outputs if k is not None else ()


def extra_output_names() -> tuple[str, ...]:
    """Every output some kind adds besides a signature's own (a prediction's "other" fields)."""
    return tuple(dict.fromkeys(x for k in KINDS.values() for x in k.extra_outputs))
