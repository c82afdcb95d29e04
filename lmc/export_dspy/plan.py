"""How each lmc module maps onto DSPy: the signature class, the DSPy module, and which lmc predictor feeds which DSPy Predict.

DSPy names its predictors by attribute path (`answer.predict`, `agent.react`,
`agent.extract.predict`); a `Param` records that path, the DSPy field order of
its signature, and how an lmc demo's keys become DSPy's (ReAct says
`next_tool_name` where lmc says `tool`; MultiChainComparison spreads lmc's
`attempts` list over `reasoning_attempt_1..M`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import ir as I
from ..kinds import KINDS
from .pysrc import ExportError, ident, is_ident

PREDICT_CONFIG = ("temperature", "max_tokens", "stop")
REASONING = "reasoning"


@dataclass
class Sig:
    """A DSPy Signature class to emit: the user's signature (without the fields the module kind adds)."""

    cls: str
    instructions: str
    inputs: tuple[I.FieldSpec, ...]
    outputs: tuple[I.FieldSpec, ...]


@dataclass
class Param:
    """One DSPy Predict inside the program and the lmc predictor whose instructions and demos it gets."""

    path: str
    pid: str | None  # None: lmc has nothing for it, DSPy's own prompt stays
    fields: list[tuple[str, str, str]] = field(default_factory=list)  # (DSPy name, prefix override or "", description)
    rename: dict[str, str] = field(default_factory=dict)  # lmc demo key -> DSPy field
    spread: tuple[str, list[str]] | None = None  # lmc list field -> several DSPy fields
    instructions: str = ""


@dataclass
class Mod:
    name: str  # lmc module name
    attr: str  # the attribute holding the DSPy module (the name, unless it would shadow a dspy.Module member)
    kind: str
    sig: Sig
    params: list[Param]
    config: dict  # Predict keyword arguments (temperature, max_tokens, stop)
    settings: dict  # kind settings: m, max_iters, n, reward, threshold, tools
    attempt_attr: str | None = None  # MultiChainComparison: the module producing the attempts


def _desc(f: I.FieldSpec | None, default: str) -> str:
    return f.description if f is not None and f.description else default


def _fields(pred: I.Predictor, order: list[tuple[str, str | None, str]]) -> list[tuple[str, str, str]]:
    """DSPy fields in DSPy's order: (DSPy name, lmc field it comes from or None, DSPy's default description)."""
    sig = pred.signature
    out = []
    for dspy_name, lmc_name, default in order:
        f = (sig.input(lmc_name) or sig.output(lmc_name)) if lmc_name else None
        out.append((dspy_name, "", _desc(f, default)))
    return out


def _plain(fields: tuple[I.FieldSpec, ...]) -> list[tuple[str, str | None, str]]:
    return [(f.name, f.name, "${" + f.name + "}") for f in fields]


def _without(fields: tuple[I.FieldSpec, ...], *names: str) -> tuple[I.FieldSpec, ...]:
    return tuple(f for f in fields if f.name not in names)


def _predictor(ir: I.IR, m: I.ModuleIR, role: str) -> I.Predictor:
    try:
        return ir.predictor(m.predictor_id(role))
    except KeyError:
        raise ExportError(f"module '{m.name}' ({m.kind}) has no '{role}' predictor; the artifact is malformed") from None


def plan_module(ir: I.IR, m: I.ModuleIR, attr: str, sig_cls: str, attempt_attr: str) -> Mod:
    """The DSPy mapping of one module (attribute, signature class name and helper attribute already chosen)."""
    name, kind = attr, m.kind
    settings = dict(m.settings)
    if kind in ("Predict", "BestOfN", "ChainOfThought"):
        p = _predictor(ir, m, "main")
        outs = _without(p.signature.outputs, REASONING) if kind == "ChainOfThought" else p.signature.outputs
        sig = Sig(sig_cls, p.instructions, p.signature.inputs, outs)
        if kind == "ChainOfThought":
            order = _plain(sig.inputs) + [(REASONING, REASONING, "${reasoning}")] + _plain(outs)
            path = f"{name}.predict"
        else:
            order = _plain(sig.inputs) + _plain(outs)
            path = name if kind == "Predict" else f"{name}.module"
        params = [Param(path, p.id, _fields(p, order), instructions=p.instructions)]
        return Mod(m.name, attr, kind, sig, params, _config(p), settings)
    if kind == "MultiChainComparison":
        a, c = _predictor(ir, m, "attempt"), _predictor(ir, m, "compare")
        outs = _without(a.signature.outputs, REASONING)
        sig = Sig(sig_cls, a.instructions, a.signature.inputs, outs)
        count = _count(settings.get("m", KINDS["MultiChainComparison"].default("m")), "m", name)
        settings["m"] = count
        attempts = [f"reasoning_attempt_{i + 1}" for i in range(count)]
        attempt_order = _plain(sig.inputs) + [(REASONING, REASONING, "${reasoning}")] + _plain(outs)
        compare_order = (
            _plain(sig.inputs)
            + [(n, "attempts", "${reasoning attempt}") for n in attempts]
            + [("rationale", "rationale", "${corrected reasoning}")]
            + _plain(outs)
        )
        compare_fields = _fields(c, compare_order)
        # DSPy gives these two its own prefixes; kept so a saved state reads back the same.
        compare_fields = [
            (
                n,
                f"Student Attempt #{attempts.index(n) + 1}:"
                if n in attempts
                else "Accurate Reasoning: Thank you everyone. Let's now holistically"
                if n == "rationale"
                else pre,
                d,
            )
            for n, pre, d in compare_fields
        ]
        params = [
            Param(f"{attempt_attr}.predict", a.id, _fields(a, attempt_order), instructions=a.instructions),
            Param(f"{name}.predict", c.id, compare_fields, spread=("attempts", attempts), instructions=c.instructions),
        ]
        return Mod(m.name, attr, kind, sig, params, _config(c), settings, attempt_attr=attempt_attr)
    if kind == "ReAct":
        step, ext = _predictor(ir, m, "step"), _predictor(ir, m, "extract")
        sig = Sig(sig_cls, ext.instructions, _without(ext.signature.inputs, "trajectory"), _without(ext.signature.outputs, REASONING))
        rename = {"thought": "next_thought", "tool": "next_tool_name", "tool_args": "next_tool_args"}
        step_order = _plain(sig.inputs) + [("trajectory", "trajectory", "${trajectory}")] + [(v, k, "${" + v + "}") for k, v in rename.items()]
        ext_order = _plain(sig.inputs) + [("trajectory", "trajectory", "${trajectory}"), (REASONING, REASONING, "${reasoning}")] + _plain(sig.outputs)
        settings["max_iters"] = _count(settings.get("max_iters", KINDS["ReAct"].default("max_iters")), "max_iters", name)
        params = [
            Param(f"{name}.react", step.id, _fields(step, step_order), rename=rename, instructions=step.instructions),
            Param(f"{name}.extract.predict", ext.id, _fields(ext, ext_order), instructions=ext.instructions),
        ]
        return Mod(m.name, attr, kind, sig, params, _config(step), settings)
    if kind == "ProgramOfThought":
        # The code step is not mapped: its instructions assume lmc's sandbox protocol (`result = ...`).
        ans = _predictor(ir, m, "answer")
        sig = Sig(sig_cls, ans.instructions, _without(ans.signature.inputs, "code", "code_output"), ans.signature.outputs)
        order = (
            _plain(sig.inputs)
            + [
                ("final_generated_code", "code", "python code that answers the question"),
                ("code_output", "code_output", "output of previously-generated python code"),
                (REASONING, None, "${reasoning}"),
            ]
            + _plain(sig.outputs)
        )
        settings["max_iters"] = _count(settings.get("max_iters", KINDS["ProgramOfThought"].default("max_iters")), "max_iters", name)
        params = [
            Param(f"{name}.code_generate.predict", None),
            Param(f"{name}.code_regenerate.predict", None),
            Param(
                f"{name}.generate_output.predict", ans.id, _fields(ans, order), rename={"code": "final_generated_code"}, instructions=ans.instructions
            ),
        ]
        return Mod(m.name, attr, kind, sig, params, _config(ans), settings)
    raise ExportError(f"module '{m.name}' has kind {repr(kind)[:40]}, which lmc does not define")


def _count(value: Any, what: str, module: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise ExportError(f"module '{module}': {what}={repr(value)[:40]} is not a count between 1 and 1000")
    return value


def _config(p: I.Predictor) -> dict:
    out: dict[str, Any] = {}
    for key in PREDICT_CONFIG:
        v = p.setting(key)
        if v is None:
            continue
        if key == "stop" and isinstance(v, (list, tuple)) and all(isinstance(s, str) for s in v):
            out[key] = list(v)
        elif key != "stop" and isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
        else:
            raise ExportError(f"predictor '{p.id}': setting {key}={repr(v)[:40]} has an unexpected type")
    return out


# Members of dspy.Module (and of the generated class) that a module attribute must not shadow.
RESERVED_ATTRS = frozenset(
    {
        "forward",
        "aforward",
        "acall",
        "load",
        "save",
        "load_state",
        "dump_state",
        "named_parameters",
        "parameters",
        "named_sub_modules",
        "predictors",
        "named_predictors",
        "map_named_predictors",
        "set_lm",
        "get_lm",
        "deepcopy",
        "reset_copy",
        "batch",
        "callbacks",
        "history",
        "inspect_history",
        "demos",
        "lm",
        "signature",
        "config",
    }
)


def plan(ir: I.IR) -> tuple[list[Sig], list[Mod]]:
    """Signature classes (one per module, shared when identical) and the module mappings, in declaration order."""
    taken = {"Program", "Any", "Literal", "Optional", "dspy", "logging", "json"}
    attrs: set[str] = set()
    sigs: list[Sig] = []
    mods: list[Mod] = []
    by_key: dict[tuple, str] = {}
    names = [ident(m.name, "module name") for m in ir.modules]
    for n in names:
        if n not in RESERVED_ATTRS and not n.startswith("_"):
            attrs.add(n)
    for m in ir.modules:
        attr = m.name if m.name not in RESERVED_ATTRS and not m.name.startswith("_") else _fresh(m.name.lstrip("_") + "_module", attrs)
        attempt_attr = _fresh(f"{attr}_attempt", attrs) if m.kind == "MultiChainComparison" else ""
        draft = plan_module(ir, m, attr, "", attempt_attr)
        s = draft.sig
        key = (_sig_name(ir, m), s.instructions, _key(s.inputs), _key(s.outputs))
        cls = by_key.get(key)
        if cls is None:
            # Inline signatures are named like "careful.sig"; the class then takes the module's name.
            base = key[0] if is_ident(key[0]) else "".join(w.capitalize() for w in m.name.split("_")) + "Signature"
            cls = _fresh(base, taken)
            by_key[key] = cls
            sigs.append(Sig(cls, s.instructions, s.inputs, s.outputs))
        draft.sig = Sig(cls, s.instructions, s.inputs, s.outputs)
        for f in s.inputs + s.outputs:
            if ident(f.name, f"field of signature {cls}").startswith("_"):
                raise ExportError(f"field {f.name!r} of signature {cls} starts with '_', which DSPy signatures do not allow")
        mods.append(draft)
    return sigs, mods


def _sig_name(ir: I.IR, m: I.ModuleIR) -> str:
    role = {"MultiChainComparison": "attempt", "ReAct": "extract", "ProgramOfThought": "answer"}.get(m.kind, "main")
    return _predictor(ir, m, role).signature.name


def _key(fields: tuple[I.FieldSpec, ...]) -> tuple:
    return tuple((f.name, f.type.name, f.description) for f in fields)


def _fresh(base: str, taken: set[str]) -> str:
    name, i = base, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name
