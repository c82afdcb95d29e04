"""The exported Python module: header, signature classes, the `Program(dspy.Module)` and the helpers it uses."""

from __future__ import annotations

from typing import Any

from .. import ir as I
from ..kinds import KINDS, SAMPLE_TEMPERATURE  # attempts and draws sample at lmc's temperature
from . import helpers
from .plan import Mod, Sig
from .pysrc import ExportError, comment, ident, json_schema_type, lit, py_type
from .translate import Translator, metric_method, program_method

KIND_SETTINGS = {
    "MultiChainComparison": {"m"},
    "ReAct": {"tools", "max_iters"},
    "ProgramOfThought": {"max_iters"},
    "BestOfN": {"n", "reward", "threshold"},
}


def signature_class(s: Sig) -> list[str]:
    lines = [f"class {s.cls}(dspy.Signature):", f"    __doc__ = {lit(s.instructions)}", ""]
    for f, kind in [(f, "InputField") for f in s.inputs] + [(f, "OutputField") for f in s.outputs]:
        desc = f"desc={lit(f.description)}" if f.description else ""
        lines.append(f"    {ident(f.name, 'field')}: {py_type(f.type)} = dspy.{kind}({desc})")
    return lines


def _call(fn: str, *args: str, **kwargs: Any) -> str:
    parts = list(args) + [f"{k}={lit(v)}" for k, v in kwargs.items()]
    return f"{fn}({', '.join(parts)})"


class Module:
    """Builds the source of the exported module and the notes on what did not carry over."""

    def __init__(self, ir: I.IR, sigs: list[Sig], mods: list[Mod], *, state_file: str, origin: str):
        self.ir, self.sigs, self.mods = ir, sigs, mods
        self.state_file, self.origin = state_file, origin
        self.tr = Translator(ir, mods)
        self.notes: list[str] = []

    # ------------------------------------------------------------ __init__

    def construct(self, m: Mod) -> list[str]:
        sig, cfg = m.sig.cls, m.config
        extra = set(dict(m.settings)) - KIND_SETTINGS.get(m.kind, set())
        for key in sorted(extra):
            self.notes.append(f"module '{m.name}': setting '{key}' has no DSPy equivalent and was left out")
        if m.kind == "Predict":
            return [f"self.{m.attr} = {_call('dspy.Predict', sig, **cfg)}"]
        if m.kind == "ChainOfThought":
            return [f"self.{m.attr} = {_call('dspy.ChainOfThought', sig, **cfg)}"]
        if m.kind == "BestOfN":
            n = m.settings.get("n", KINDS["BestOfN"].default("n"))
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1000:
                raise ExportError(f"module '{m.name}': n={repr(n)[:20]} is not a count")
            thr = m.settings.get("threshold")
            threshold = 'float("inf")' if thr is None else lit(float(thr)) if isinstance(thr, (int, float)) and not isinstance(thr, bool) else None
            if threshold is None:
                raise ExportError(f"module '{m.name}': threshold={repr(thr)[:20]} is not a number")
            return [
                f"self.{m.attr} = dspy.BestOfN(module={_call('dspy.Predict', sig, **cfg)}, N={n}, "
                f"reward_fn=self._reward_{m.attr}, threshold={threshold})"
            ]
        if m.kind == "MultiChainComparison":
            attempt_cfg = {k: v for k, v in cfg.items() if k != "temperature"}
            return [
                f"self.{m.attempt_attr} = {_call('dspy.ChainOfThought', sig, **attempt_cfg)}",
                f"self.{m.attr} = {_call('dspy.MultiChainComparison', sig, M=m.settings['m'], **cfg)}",
            ]
        if m.kind == "ReAct":
            if cfg:
                self.notes.append(f"ReAct '{m.name}': LM settings {sorted(cfg)} are not passed (dspy.ReAct takes none); set them on the LM")
            tools = []
            for name in m.settings.get("tools") or ():
                spec = next((t for t in self.ir.tools if t.name == name), None)
                if spec is None:
                    raise ExportError(f"module '{m.name}' names unknown tool {repr(name)[:40]}")
                self.tr.tools.add(spec.name)
                args = {p.name: {"type": json_schema_type(p.type)} for p in spec.params}
                tools.append(f"dspy.Tool(self._tool_fn({lit(spec.name)}), name={lit(spec.name)}, desc={lit(spec.description)}, args={lit(args)})")
            self.notes.append(
                f"ReAct '{m.name}': lmc's step instructions (with its tool list) are loaded into "
                f"{m.attr}.react; DSPy names the step's outputs next_thought/next_tool_name/next_tool_args "
                "and writes the trajectory its own way"
            )
            return [f"self.{m.attr} = dspy.ReAct({sig}, tools=[" + ", ".join(tools) + f"], max_iters={m.settings['max_iters']})"]
        if m.kind == "ProgramOfThought":
            code = self.ir.predictor(self.ir.module(m.name).predictor_id("code"))
            lost = f"; lmc's {len(code.demos)} code demo(s) are left out" if code.demos else ""
            self.notes.append(
                f"ProgramOfThought '{m.name}': runs code in DSPy's Deno sandbox (pip install 'dspy[deno]'); "
                "its code-writing steps keep DSPy's own instructions, because lmc's ask for `result = ...` "
                f"where DSPy's interpreter expects SUBMIT(...){lost}"
            )
            if cfg:
                self.notes.append(f"ProgramOfThought '{m.name}': LM settings {sorted(cfg)} are not passed; set them on the LM")
            return [f"self.{m.attr} = dspy.ProgramOfThought({sig}, max_iters={m.settings['max_iters']})"]
        raise ExportError(f"module '{m.name}': unknown kind")

    # ------------------------------------------------------------ methods

    def methods(self) -> list[str]:
        ir, out = self.ir, []
        entry = ir.program()
        out += self.tr.function(
            "forward", entry.inputs, entry.body, outputs=[ident(f.name, "program output") for f in entry.outputs], where=f"program '{entry.name}'"
        )
        for prog in ir.programs:
            if prog.name != entry.name:
                out += [""] + self.tr.function(
                    program_method(prog.name), prog.inputs, prog.body, outputs=[f.name for f in prog.outputs], where=f"program {prog.name!r}"
                )
        rewards = [m for m in self.mods if m.kind == "BestOfN"]
        for metric in self._metrics_used(rewards):
            assert metric.program is not None  # _metrics_used keeps block metrics only
            out += [""] + self.tr.function(
                metric_method(metric.name), metric.program.inputs, metric.program.body, outputs=None, where=f"metric '{metric.name}'"
            )
        for m in self.mods:
            if m.kind == "MultiChainComparison":
                out += [
                    "",
                    f"    def _run_{m.attr}(self, **inputs):",
                    f"        attempts = [self.{m.attempt_attr}(**inputs, config={{'rollout_id': i, 'temperature': {SAMPLE_TEMPERATURE}}})",
                    f"                    for i in range({m.settings['m']})]",
                    f"        return self.{m.attr}(attempts, **inputs)",
                ]
        for m in rewards:
            out += ["", *self._reward(m)]
        out += self._callables()
        keep = [p.path for m in self.mods for p in m.params if p.pid is None]
        if keep:
            out += [
                "",
                "    # lmc carries no prompt for these DSPy-internal steps: they keep the instructions DSPy built.",
                f"    _DSPY_DEFAULTS = {lit(keep)}",
                "",
                "    def load_state(self, state, **kwargs):",
                "        current = self.dump_state()",
                "        state = {**{k: current[k] for k in self._DSPY_DEFAULTS}, **state}",
                "        return super().load_state(state, **kwargs)",
            ]
        return out

    def _metrics_used(self, rewards: list[Mod]) -> list[I.MetricIR]:
        names = {m.settings.get("reward") for m in rewards}
        return [x for x in self.ir.metrics if x.name in names and x.kind == "block" and x.program is not None]

    def _reward(self, m: Mod) -> list[str]:
        name = m.settings.get("reward")
        metric = next((x for x in self.ir.metrics if x.name == name), None)
        head = f"    def _reward_{m.attr}(self, args, pred):"
        if metric is not None and metric.kind == "block" and metric.program is not None:
            return [head, f"        return self.{metric_method(metric.name)}(args, pred)"]
        what = f"metric {str(name)[:40]!r}" if name else "no reward metric"
        self.notes.append(
            f"BestOfN '{m.name}' is rewarded by {what}, which is not an lmc block metric: "
            f"pass Program(rewards={{{str(name)[:40]!r}: fn}}) with fn(args, pred) -> float"
        )
        msg = f"BestOfN {m.name!r} needs its reward: pass Program(rewards={{{name!r}: fn}}) with fn(args, pred) -> float"
        return [
            head,
            f"        fn = self._rewards.get({lit(name)})",
            "        if fn is None:",
            f"            raise NotImplementedError({lit(msg)})",
            "        return float(fn(args, pred))",
        ]

    def _callables(self) -> list[str]:
        ir, tr, out = self.ir, self.tr, []
        kinds: dict[str, list[str | None]] = {}
        for t in sorted(tr.tools):
            spec = next(x for x in ir.tools if x.name == t)
            if spec.kind == "retriever":
                assert spec.ref is not None  # a retriever tool always names its retriever
                tr.retrievers.add(spec.ref)
                kinds[t] = ["retriever", spec.ref]
            elif spec.kind == "calculator":
                tr.need("_calculator")
                kinds[t] = ["calculator", None]
            else:
                kinds[t] = ["python", spec.ref]
                self.notes.append(
                    f"tool '{t}' is the Python function {spec.ref!r} in lmc; the export never imports "
                    f"code named by an artifact: pass Program(tools={{{t!r}: fn}})"
                )
        if tr.retrievers:
            ks = {}
            for r in sorted(tr.retrievers):
                rspec = next((x for x in ir.retrievers if x.name == r), None)
                if rspec is None:
                    raise ExportError(f"a tool refers to unknown retriever {repr(r)[:40]}")
                k = rspec.k if isinstance(rspec.k, int) and not isinstance(rspec.k, bool) else 3
                ks[r] = k
                self.notes.append(
                    f"retriever '{r}' ({rspec.kind} over {rspec.path!r}, k={k}) has no DSPy twin: pass "
                    f"Program(retrievers={{{r!r}: fn}}) with fn(query, k) -> list of passages"
                )
            out += [
                "",
                f"    _RETRIEVER_K = {lit(ks)}",
                "",
                "    def _retrieve(self, name, query, k):",
                "        fn = self._retrievers.get(name)",
                "        if fn is None:",
                "            raise NotImplementedError(f'retriever {name!r} was not given: pass Program(retrievers={{{name!r}: fn}}) '",
                "                                      'with fn(query, k) returning a list of passages')",
                "        found = fn(query, self._RETRIEVER_K.get(name, 3) if k is None else k)",
                "        found = getattr(found, 'passages', found)",
                "        return [p if isinstance(p, str) else str(p) for p in found]",
            ]
        if tr.tools:
            out += [
                "",
                f"    _TOOL_KINDS = {lit(kinds)}",
                "",
                "    def _tool(self, name):",
                "        fn = self._tools.get(name)",
                "        if fn is not None:",
                "            return fn",
                "        kind, ref = self._TOOL_KINDS[name]",
                "        if kind == 'retriever':",
                "            return lambda *args, **kwargs: self._retrieve(ref, (list(args) + list(kwargs.values()) + [''])[0], None)",
                "        if kind == 'calculator':",
                "            return lambda *args, **kwargs: _calculator((list(args) + list(kwargs.values()) + [''])[0])",
                "        raise NotImplementedError(f'tool {name!r} (the Python function {ref!r} in lmc) was not given: '",
                "                                  f'pass Program(tools={{{name!r}: fn}})')",
                "",
                "    def _tool_fn(self, name):",
                "        # Looked up at call time, so a tool given later (or never used) does not fail construction.",
                "        return lambda **kwargs: self._tool(name)(**kwargs)",
            ]
        if tr.unsupported:
            self.notes.append("lmc builtins with no Python twin here (they raise when called): " + ", ".join(sorted(tr.unsupported)))
            out += [
                "",
                "    def _unsupported(self, name):",
                "        raise NotImplementedError(f'the lmc builtin {name!r} has no Python twin in this export')",
            ]
        return out

    # ------------------------------------------------------------ the file

    def source(self) -> str:
        init = []
        for m in self.mods:
            init += ["        " + line for line in self.construct(m)]
        methods = self.methods()  # translation fills helpers and notes
        self._general_notes()
        body = []
        for s in self.sigs:
            body += signature_class(s) + ["", ""]
        doc = f"The lmc program {self.ir.entry!r} as a DSPy module; load {self.state_file} for its compiled prompts."
        body += (
            [
                "class Program(dspy.Module):",
                f"    __doc__ = {lit(doc)}",
                "",
                "    def __init__(self, *, retrievers=None, tools=None, rewards=None):",
                "        super().__init__()",
                "        self._retrievers = dict(retrievers or {})",
                "        self._tools = dict(tools or {})",
                "        self._rewards = dict(rewards or {})",
            ]
            + init
            + [""]
            + methods
            + ["", ""]
        )
        helper_src = helpers.source(self.tr.helpers)
        return "\n".join(self.header() + body) + ("\n" + helper_src if helper_src else "")

    def _general_notes(self) -> None:
        for p in self.ir.predictors:
            alias = p.setting("lm")
            if alias is not None:
                a = next((x for x in self.ir.lms if x.name == alias), None)
                model = f" ({a.model!r})" if a is not None else ""
                self.notes.append(
                    f"predictor '{p.id}' uses the LM alias {str(alias)!r}{model}: give it its LM with set_lm(dspy.LM(...)) on that module"
                )
        knn = self.ir.extra("knn")
        if knn:
            sizes = ", ".join(f"{k}: {len(v) if isinstance(v, list) else '?'}" for k, v in (knn.get("pools") or {}).items())
            self.notes.append(
                f"knn: lmc picks {knn.get('k')} demos per input from pools ({sizes}) at run time; the export "
                "has no demos for those predictors (DSPy's KNNFewShot can rebuild a pool from your trainset)"
            )
        ens = self.ir.extra("ensemble")
        if ens:
            names = [str(n) for n in ens.get("names") or []]
            self.notes.append(f"ensemble: lmc votes over {len(names)} programs; the export is the best single one ({names[0] if names else '?'})")
        exported = {m.name for m in self._metrics_used([m for m in self.mods if m.kind == "BestOfN"])}
        left = [f"{m.name} = {m.spec or m.kind}" for m in self.ir.metrics if m.name not in exported]
        if left:
            self.notes.append("metrics are not exported (score with a DSPy metric): " + "; ".join(left))
        self.tr.notes = list(dict.fromkeys(self.tr.notes))
        self.notes = list(dict.fromkeys(self.notes + self.tr.notes))

    def header(self) -> list[str]:
        retr = ", ".join(f"{r!r}: fn" for r in sorted(self.tr.retrievers))
        tools = ", ".join(f"{t!r}: fn" for t in sorted(self.tr.tools) if next(x for x in self.ir.tools if x.name == t).kind == "python")
        args = ", ".join(a for a in (f"retrievers={{{retr}}}" if retr else "", f"tools={{{tools}}}" if tools else "") if a)
        module = self.state_file[: -len(".json")]
        entry = self.ir.program()
        call = ", ".join(f"{f.name}=..." for f in entry.inputs)
        lines = [
            f"# Generated by `lmc export --to dspy` from {comment(self.origin)} (program {comment(self.ir.entry)}).",
            "# Re-export rather than edit; the compiled instructions and demos are in the state file.",
            "#",
            "# Use it:",
            "#     import dspy",
            f"#     from {comment(module)} import Program",
            '#     dspy.configure(lm=dspy.LM("openai/gpt-4o-mini"))  # any LM',
            f"#     program = Program({comment(args)})",
            f"#     program.load({comment(repr(self.state_file))})",
            f"#     print(program({comment(call)}))",
            "#",
        ]
        if self.notes:
            lines.append("# Not carried over to DSPy (lmc export prints these too):")
            lines += [f"#   - {comment(n)}" for n in self.notes]
        else:
            lines.append("# Everything in the artifact carried over to DSPy.")
        return lines + [
            lit(f"DSPy version of the lmc program {self.ir.entry!r} (generated by lmc export)."),
            "",
            "import json",
            "import logging",
            "from typing import Any, Literal, Optional",
            "",
            "import dspy",
            "",
            "_log = logging.getLogger(__name__)",
            "",
            "",
        ]
