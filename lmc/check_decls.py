"""Checking declarations: names, signatures, lm, retrievers, tools, modules and builtin metrics, settings by table."""

from __future__ import annotations

import re

from . import nodes as n
from .builtins import BUILTINS
from .checked import SigInfo, ToolInfo, hint_for, is_number_value, kind_word, resolve, show_value
from .decl_rules import BUILTIN_TOOLS, DEFAULT_TOOL_DOC, LM_SETTINGS, METRIC_BUILTINS, RETRIEVER_KWARGS, RULES, Rule, kind_rule
from .errors import Diagnostics, Span, did_you_mean, one_of
from .kinds import COMMON_SETTINGS, KINDS, extra_outputs
from .syntax import shorthand_fields
from .types import FLOAT, STR, Type, list_of

PY_REF = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")


class Declarations:
    """The declarations of one file, checked; program and metric bodies are typed against these (check_body)."""

    def __init__(self, file: n.File, source: str):
        self.file = file
        self.source = source
        self.diags = Diagnostics(file.path, source)
        self.decls: dict[str, n.Decl] = {}
        self.signatures: dict[str, SigInfo] = {}
        self.modules: dict[str, n.ModuleDecl] = {}
        self.module_sigs: dict[str, SigInfo] = {}
        self.retrievers: dict[str, n.RetrieverDecl] = {}
        self.tools: dict[str, n.ToolDecl] = {}
        self.tool_infos: dict[str, ToolInfo] = {}
        self.lms: dict[str, n.LMDecl] = {}
        self.metrics: dict[str, n.MetricDecl] = {}
        self.programs: dict[str, n.ProgramDecl] = {}

    def error(self, msg: str, span: Span, hint: str | None = None) -> None:
        self.diags.error(msg, span, hint)

    def run(self) -> None:
        """Every declaration, in the order their references need: signatures, lm and retrievers, tools, modules."""
        self.collect()
        decls = self.file.decls
        for d in decls:
            if isinstance(d, n.Signature):
                self.signature(d)
        for d in decls:
            if isinstance(d, n.LMDecl):
                self.lm(d)
            elif isinstance(d, n.RetrieverDecl):
                self.retriever(d)
        for d in decls:
            if isinstance(d, n.ToolDecl):
                self.tool(d)
        for d in decls:
            if isinstance(d, n.ModuleDecl):
                self.module(d)

    def collect(self) -> None:
        tables: dict[type, dict] = {
            n.ModuleDecl: self.modules,
            n.RetrieverDecl: self.retrievers,
            n.ToolDecl: self.tools,
            n.LMDecl: self.lms,
            n.MetricDecl: self.metrics,
            n.ProgramDecl: self.programs,
        }
        for d in self.file.decls:
            if d.name in self.decls:
                first = self.decls[d.name]
                self.error(
                    f"'{d.name}' is already declared",
                    d.name_span,
                    f"the first {kind_word(first)} '{d.name}' is at line {first.span.line}; names are unique per file",
                )
                continue
            if d.name in BUILTINS or d.name in KINDS:
                self.error(f"'{d.name}' is a builtin name and cannot be declared", d.name_span, "pick another name")
            self.decls[d.name] = d
            table = tables.get(type(d))
            if table is not None:
                table[d.name] = d

    def recursion(self, calls: dict[str, set[str]]) -> None:
        """`calls`: program -> the programs its body calls (found while typing the bodies)."""

        def reach(start: str) -> set[str]:
            seen: set[str] = set()
            todo = [start]
            while todo:
                for nxt in calls.get(todo.pop(), ()):
                    if nxt not in seen:
                        seen.add(nxt)
                        todo.append(nxt)
            return seen

        for name, d in self.programs.items():
            if name in reach(name):
                self.error(f"program '{name}' calls itself", d.name_span, "programs cannot be recursive; use a bounded loop")

    # -- signatures --------------------------------------------------------------
    def fields(self, fields: tuple[n.Field, ...], seen: dict[str, n.Field], owner: str):
        out = []
        for f in fields:
            if f.name in seen:
                self.error(f"field '{f.name}' appears twice in signature '{owner}'", f.span)
                continue
            seen[f.name] = f
            out.append((f.name, resolve(f.type, self.diags), f.description))
        return tuple(out)

    def signature(self, d: n.Signature) -> None:
        seen: dict[str, n.Field] = {}
        ins = self.fields(d.inputs, seen, d.name)
        outs = self.fields(d.outputs, seen, d.name)
        if not d.outputs and d.form != "shorthand":
            self.error(f"signature '{d.name}' has no output fields", d.name_span, "add outputs after '->', e.g. -> answer: str")
        self.signatures[d.name] = SigInfo(d.name, d.instructions, ins, outs, d.span)

    def shorthand(self, text: str, span: Span, key: str) -> SigInfo | None:
        ins, outs, problems = shorthand_fields(text)
        for message, hint in problems:
            self.error(message, span, hint)
        seen: set[str] = set()
        for name in ins + outs:
            if name in seen:
                problems.append((f"field '{name}' appears twice in the signature shorthand", None))
                self.error(problems[-1][0], span)
            seen.add(name)
        if problems:
            return None
        return SigInfo(key, None, tuple((x, STR, None) for x in ins), tuple((x, STR, None) for x in outs), span)

    # -- settings, by table --------------------------------------------------------
    def settings(self, given: tuple[n.Keyword, ...], allowed: tuple[str, ...], what: str) -> None:
        """Each of `given` checked by its rule, or reported as an unknown `what` (e.g. "lm setting")."""
        for kw in given:
            if kw.name in allowed:
                self.setting(kw, RULES[kw.name])
            else:
                self.error(f"unknown {what} '{kw.name}'", kw.name_span, hint_for(kw.name, allowed))

    def setting(self, kw: n.Keyword, rule: Rule) -> None:
        """Check one setting's value against what its rule accepts."""
        value = n.constant(kw.value)
        const = value is not n.NOT_CONSTANT
        if rule.kind in ("number", "int"):
            if not const:
                self.error(f"setting '{kw.name}' must be a constant", kw.value.span, "settings are fixed when the program is compiled")
            elif not _in_range(value, rule):
                self.error(f"setting '{kw.name}' must be {rule.what}, got {show_value(value)}", kw.value.span)
        elif rule.kind == "str":
            self.str_setting(kw)
        elif rule.kind == "bool":
            if not (const and isinstance(value, bool)):
                self.error(f"setting '{kw.name}' must be true or false, got {show_value(value) if const else 'an expression'}", kw.value.span)
        elif rule.kind == "stop":
            if not (const and (isinstance(value, str) or (isinstance(value, tuple) and all(isinstance(x, str) for x in value)))):
                self.error("setting 'stop' must be a list of strings", kw.value.span, 'e.g. stop=["\\n\\n"]')
        elif rule.kind == "lm":
            self.lm_ref(kw)
        elif rule.kind == "tools":
            self.tools_setting(kw)
        elif rule.kind == "metric":
            self.metric_ref(kw)
        else:  # pragma: no cover - decl_rules names only the kinds above
            raise ValueError(f"no check for settings of kind {rule.kind!r}")

    def str_setting(self, kw: n.Keyword) -> str | None:
        if isinstance(kw.value, n.Const) and isinstance(kw.value.value, str):
            return kw.value.value
        value = n.constant(kw.value)
        shown = show_value(value) if value is not n.NOT_CONSTANT else "an expression"
        self.error(f"setting '{kw.name}' must be a string, got {shown}", kw.value.span)
        return None

    def lm_ref(self, kw: n.Keyword) -> None:
        value = self.str_setting(kw)
        if value is None or "/" in value:
            return
        if value not in self.lms:
            hint = did_you_mean(value, self.lms)
            self.error(
                f"unknown lm '{value}'", kw.value.span, hint or 'name an `lm` declared in this file or a litellm model such as "openai/gpt-4o-mini"'
            )

    def metric_ref(self, kw: n.Keyword) -> None:
        v = kw.value
        if isinstance(v, n.Const) and isinstance(v.value, str):
            v = n.Name(v.span, id=v.value)
        if not isinstance(v, n.Name):
            self.error(f"setting '{kw.name}' must name a metric", kw.value.span, "e.g. reward=judge")
        elif v.id not in self.metrics:
            self.error(f"unknown metric '{v.id}'", v.span, did_you_mean(v.id, self.metrics) or one_of(self.metrics))

    def tools_setting(self, kw: n.Keyword) -> None:
        if not isinstance(kw.value, n.ListExpr):
            self.error("setting 'tools' must be a list of tool names", kw.value.span, "e.g. tools=[search, calc]")
            return
        if not kw.value.items:
            self.error("setting 'tools' is empty", kw.value.span, "give ReAct at least one tool")
        seen = set()
        for item in kw.value.items:
            if not isinstance(item, n.Name):
                self.error("a tool is named, not written as an expression", item.span, "declare it: tool t = ... and list t")
                continue
            target = self.decls.get(item.id)
            if item.id in seen:
                self.error(f"tool '{item.id}' is listed twice", item.span)
            seen.add(item.id)
            if isinstance(target, n.RetrieverDecl):
                self.tool_infos.setdefault(item.id, _retriever_tool(item.id, DEFAULT_TOOL_DOC["retriever"], target.span))
            elif not isinstance(target, n.ToolDecl):
                cands = list(self.tools) + list(self.retrievers)
                if target is None:
                    self.error(
                        f"unknown tool '{item.id}'",
                        item.span,
                        did_you_mean(item.id, cands) or (one_of(cands) if cands else "declare it: tool t = calculator()"),
                    )
                else:
                    self.error(f"'{item.id}' is a {kind_word(target)}, not a tool", item.span)

    # -- lm / retrievers / tools ----------------------------------------------------
    def lm(self, d: n.LMDecl) -> None:
        if "/" not in d.model or d.model.startswith("/") or d.model.endswith("/"):
            self.error(
                f"model '{d.model}' must be written provider/model",
                d.model_span if d.model else d.span,
                'e.g. "openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-latest" or "ollama/llama3"',
            )
        self.settings(d.settings, LM_SETTINGS, "lm setting")

    def retriever(self, d: n.RetrieverDecl) -> None:
        if d.kind not in RETRIEVER_KWARGS:
            self.error(f"unknown retriever kind '{d.kind}'", d.kind_span, hint_for(d.kind, RETRIEVER_KWARGS))
            return
        if not d.args:
            self.error(f"{d.kind}() needs the path of a JSONL corpus", d.kind_span, f'write {d.kind}("datasets/corpus.jsonl", text="text")')
        else:
            path = d.args[0]
            if not (isinstance(path, n.Const) and isinstance(path.value, str)):
                self.error("the corpus path must be a string literal", path.span)
            elif not path.value.strip():
                self.error("the corpus path is empty", path.span)
            for extra in d.args[1:]:
                self.error(f"{d.kind}() takes one positional argument, the corpus path", extra.span, "write other settings as name=value")
        self.settings(d.kwargs, RETRIEVER_KWARGS[d.kind], f"{d.kind} setting")

    def tool(self, d: n.ToolDecl) -> None:
        # Written types are resolved (and unknown ones reported) whatever the tool turns out to be.
        params = tuple((p.name, resolve(p.type, self.diags)) for p in (d.params or ()))
        returns = resolve(d.returns, self.diags) if d.returns is not None else STR
        seen = set()
        for p in d.params or ():
            if p.name in seen:
                self.error(f"parameter '{p.name}' appears twice", p.span)
            seen.add(p.name)
        impl = d.impl
        if isinstance(impl, n.Name):
            info = self.retriever_tool(d, impl)
        elif isinstance(impl, n.Call) and isinstance(impl.func, n.Name):
            info = self.called_tool(d, impl, impl.func, params, returns)
        else:
            info = None
            self.error('a tool is python("pkg.mod:fn"), a retriever name, or a builtin tool such as calculator()', impl.span)
        if info is not None:
            self.tool_infos[d.name] = info

    def retriever_tool(self, d: n.ToolDecl, impl: n.Name) -> ToolInfo | None:
        """`tool t = r`: the retriever `r` as a tool."""
        target = self.decls.get(impl.id)
        if isinstance(target, n.RetrieverDecl):
            if d.params is not None:
                self.error("a retriever tool takes its parameter from the retriever", d.span, f"write tool {d.name} = {impl.id}")
            return _retriever_tool(d.name, d.description or DEFAULT_TOOL_DOC["retriever"], d.span, impl.id)
        if target is None:
            hint = did_you_mean(impl.id, self.retrievers) or (
                "declare it: retriever r = bm25(...)" if not self.retrievers else one_of(self.retrievers)
            )
            self.error(f"unknown retriever '{impl.id}'", impl.span, hint)
        else:
            self.error(
                f"'{impl.id}' is a {kind_word(target)}, not a retriever",
                impl.span,
                'a tool is python("pkg.mod:fn"), a retriever, or a builtin tool such as calculator()',
            )
        return None

    def called_tool(self, d: n.ToolDecl, impl: n.Call, func: n.Name, params: tuple[tuple[str, Type], ...], returns: Type) -> ToolInfo | None:
        """`tool t(...) = python("pkg.mod:fn")` or `tool t = calculator()`."""
        fname = func.id
        if fname == "python":
            ref = self.python_ref(impl)
            if d.params is None:
                self.error(
                    f"python tool '{d.name}' needs its parameters",
                    d.name_span,
                    f'write tool {d.name}(query: str) -> str "what it does" = python(...)',
                )
            if ref is None:
                return None
            return ToolInfo(d.name, "python", ref, params, returns, d.description or f"Call {d.name}.", d.span)
        if fname in BUILTIN_TOOLS:
            if impl.args or impl.kwargs:
                self.error(f"{fname}() takes no arguments", impl.span)
            if d.params is not None:
                self.error(f"builtin tool {fname}() has fixed parameters", d.span, f"write tool {d.name} = {fname}()")
            return ToolInfo(d.name, "builtin", fname, (("expression", STR),), FLOAT, d.description or DEFAULT_TOOL_DOC[fname], d.span)
        self.error(f"unknown builtin tool '{fname}'", func.span, hint_for(fname, BUILTIN_TOOLS + ("python",)))
        return None

    def python_ref(self, call: n.Call) -> str | None:
        arg = call.args[0] if len(call.args) == 1 else None
        if call.kwargs or not (isinstance(arg, n.Const) and isinstance(arg.value, str)):
            self.error('python() takes one string, "pkg.module:function"', call.span)
            return None
        ref = arg.value
        if not PY_REF.fullmatch(ref):
            self.error(f"'{ref}' is not a python reference", arg.span, 'write "pkg.module:function"')
            return None
        return ref

    # -- modules -----------------------------------------------------------------------
    def module(self, d: n.ModuleDecl) -> None:
        kind = d.kind
        if kind not in KINDS:
            self.error(f"unknown module kind '{kind}'", d.kind_span, hint_for(kind, tuple(KINDS)))
        sig = self.module_signature(d)
        if kind in KINDS:
            self.module_settings(d)
        if sig is not None:
            for extra in extra_outputs(kind):
                if any(f[0] == extra for f in sig.inputs + sig.outputs):
                    self.error(
                        f"signature '{sig.name}' already has a field '{extra}', which {kind} adds", (d.signature or d).span, "rename that field"
                    )
            self.module_sigs[d.name] = sig

    def module_signature(self, d: n.ModuleDecl) -> SigInfo | None:
        """A module's signature: a declared one by name, or a shorthand string registered as `<module>.sig`."""
        s = d.signature
        if s is None:
            self.error(f"module '{d.name}' needs a signature", d.kind_span, f'write {d.kind}(SignatureName) or {d.kind}("question -> answer")')
            return None
        if isinstance(s, n.Const) and isinstance(s.value, str):
            sig = self.shorthand(s.value, s.span, f"{d.name}.sig")
            if sig is not None:
                self.signatures[sig.name] = sig
            return sig
        if isinstance(s, n.Name):
            target = self.decls.get(s.id)
            if isinstance(target, n.Signature):
                return self.signatures.get(s.id)
            if target is None:
                sigs = [k for k, v in self.decls.items() if isinstance(v, n.Signature)]
                self.error(f"unknown signature '{s.id}'", s.span, did_you_mean(s.id, sigs) or (one_of(sigs) if sigs else None))
            else:
                self.error(f"'{s.id}' is a {kind_word(target)}, not a signature", s.span)
            return None
        self.error('the first argument of a module is a signature name or a string like "question -> answer"', s.span)
        return None

    def module_settings(self, d: n.ModuleDecl) -> None:
        """The settings every module takes by their rules here, the kind's own by its description in kinds.py."""
        kind = KINDS[d.kind]
        rules = {name: RULES[name] for name in COMMON_SETTINGS} | {s.name: kind_rule(s) for s in kind.settings}
        allowed = tuple(rules)
        for kw in d.settings:
            if kw.name in rules:
                self.setting(kw, rules[kw.name])
                continue
            other = [k.name for k in KINDS.values() if k.setting(kw.name)]
            hint = f"'{kw.name}' is a setting of {', '.join(other)}" if other else did_you_mean(kw.name, allowed)
            self.error(f"unknown setting '{kw.name}' for {kind.name}", kw.name_span, hint or one_of(allowed))
        given = {kw.name for kw in d.settings}
        for spec in kind.settings:
            if spec.required and spec.name not in given:
                self.error(f"{kind.name} needs {spec.required[0]}", d.kind_span, spec.required[1])

    # -- metrics written as a builtin or python() -----------------------------------
    def metric(self, d: n.MetricDecl) -> None:
        impl = d.impl
        if not (isinstance(impl, n.Call) and isinstance(impl.func, n.Name)):
            self.error('a metric is a builtin such as exact_match(answer), python("pkg.mod:fn"), or a block', (impl or d).span)
            return
        fname = impl.func.id
        if fname == "python":
            self.python_ref(impl)
            return
        if fname not in METRIC_BUILTINS:
            self.error(f"unknown metric '{fname}'", impl.func.span, hint_for(fname, METRIC_BUILTINS))
            return
        if not impl.args:
            self.error(f"{fname}() needs the output field to score", impl.span, f"e.g. {fname}(answer)")
        else:
            fieldname = impl.args[0]
            if isinstance(fieldname, n.Const) and isinstance(fieldname.value, str):
                fieldname = n.Name(fieldname.span, id=fieldname.value)
            if not isinstance(fieldname, n.Name):
                self.error("a metric's first argument is an output field name", fieldname.span, f"e.g. {fname}(answer)")
            else:
                self.metric_field(fieldname)
        self.metric_gold(fname, impl)

    def metric_gold(self, fname: str, impl: n.Call) -> None:
        gold = list(impl.args[1:2])
        for extra in impl.args[2:]:
            self.error(f"{fname}() takes at most two fields: the output and the gold example field", extra.span)
        for kw in impl.kwargs:
            if kw.name != "gold":
                self.error(f"unknown metric argument '{kw.name}'", kw.name_span, "expected one of: gold")
                continue
            if gold:
                self.error("the gold field is given twice", kw.span)
            gold.append(kw.value)
        for g in gold:
            if not (isinstance(g, n.Name) or (isinstance(g, n.Const) and isinstance(g.value, str))):
                self.error("the gold field is a name of an example field", g.span, "e.g. gold=answer")

    def metric_field(self, f: n.Name) -> None:
        if not self.programs:
            return
        if len(self.programs) == 1:
            prog = next(iter(self.programs.values()))
            outs = [p.name for p in prog.outputs]
            where = f"program '{prog.name}'"
        else:
            outs = sorted({p.name for prog in self.programs.values() for p in prog.outputs})
            where = "any program"
        if f.id not in outs:
            opts = "expected one of: " + ", ".join(outs) if outs else "it declares no outputs"
            self.error(f"metric field '{f.id}' is not an output of {where}", f.span, opts)


def _in_range(v: object, rule: Rule) -> bool:
    if not is_number_value(v) or (rule.kind == "int" and not isinstance(v, int)):
        return False
    assert isinstance(v, (int, float))
    if rule.lo is not None and not (v > rule.lo if rule.lo_open else v >= rule.lo):
        return False
    return rule.hi is None or v <= rule.hi


def _retriever_tool(name: str, doc: str, span: Span, target: str | None = None) -> ToolInfo:
    return ToolInfo(name, "retriever", target or name, (("query", STR),), list_of(STR), doc, span)
