"""Runs the IR for one example: statements, module semantics, assert/suggest backtracking, traces.

`Runtime` holds what a run shares (the IR, the LM client, retrievers, tools, LM
resolution); `run_example` executes one example and returns its outputs or its
error together with the trace of every predictor call.  One example failing never
affects another: every failure becomes an `ExampleError`-like result.
"""

from __future__ import annotations

import ast as pyast
import asyncio
import hashlib
import inspect
import json
import math
import operator
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from . import ir as I
from . import limits, prompts
from .errors import (BudgetExceeded, ConfigError, ExampleError, LMAuthError, LMError, LMFailure, LmcError,
                     LMUnreachableError, OutputParseError, Warnings)
from .files import find_non_finite
from .limits import SizeLimitError
from .lm import LMClient, LMSpec, Usage, current_meter, make_request, parse_lm
from .types import Type, coerce

DEFAULT_LM = "local/gemma-3-270m"
SAMPLE_TEMPERATURE = 0.7
# Errors that stop a whole run rather than fail one example: every later call would meet them too.
RUN_STOPPING = (LMAuthError, LMUnreachableError, LMFailure, BudgetExceeded)
# Statements and loop iterations one example may execute (--max-steps): generous for real programs (they
# spend their time in LM calls), small enough that a runaway `while ... max 10**12` fails in seconds.
from .settings import DEFAULT_MAX_STEPS  # noqa: E402
# Every this many steps a CPU-bound example gives the event loop a turn, so Ctrl-C, a timeout or another
# example can run (a coroutine that never suspends cannot be cancelled).
YIELD_EVERY = 1000


# ---------------------------------------------------------------- results


@dataclass
class Call:
    """One predictor call in a trace."""

    predictor: str
    module: str
    inputs: dict
    outputs: dict | None
    raw: str = ""
    prompt: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    cached: bool = False
    latency_s: float = 0.0

    def to_json(self, with_prompt: bool = True) -> dict:
        out = {"predictor": self.predictor, "module": self.module, "inputs": self.inputs, "outputs": self.outputs,
               "raw": self.raw, "error": self.error, "usage": {"prompt_tokens": self.prompt_tokens,
               "completion_tokens": self.completion_tokens, "cost": self.cost, "cached": self.cached},
               "latency_s": round(self.latency_s, 4)}
        if with_prompt and self.prompt is not None:
            out["prompt"] = self.prompt
        return out


@dataclass
class Result:
    outputs: dict | None
    error: str | None = None
    error_kind: str | None = None  # lm | parse | assert | runtime | budget
    trace: list[Call] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    # Every LM call and request this example caused, counted by the client as they happened.  The
    # trace keeps only the final attempt after a backtrack, so it cannot be the source of truth.
    lm_usage: Usage | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def usage(self) -> dict:
        """calls answered by the LM, cached_calls, tokens and cost, plus requests sent, retries and failed requests."""
        u = self.lm_usage
        if u is None:
            return {"calls": sum(1 for c in self.trace if not c.cached),
                    "cached_calls": sum(1 for c in self.trace if c.cached),
                    "prompt_tokens": sum(c.prompt_tokens for c in self.trace),
                    "completion_tokens": sum(c.completion_tokens for c in self.trace),
                    "cost": round(sum(c.cost for c in self.trace), 8),
                    "requests": sum(1 for c in self.trace if not c.cached), "retries": 0, "failed_requests": 0}
        return {"calls": u.live_calls, "cached_calls": u.cached_calls, "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens, "cost": round(u.cost, 8), "requests": u.requests,
                "retries": u.retries, "failed_requests": u.failed_requests}


class _Backtrack(Exception):
    def __init__(self, key, module: str, occurrence: int, feedback: dict):
        self.key = key
        self.module = module
        self.occurrence = occurrence
        self.feedback = feedback


class _Return(Exception):
    def __init__(self, value):
        self.value = value


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class RunError(LmcError):
    """A run-time failure inside one example (bad value, failed assert, tool error)."""

    exit_code = 1

    def __init__(self, message: str, kind: str = "runtime", line: int | None = None):
        super().__init__(message + (f" (line {line})" if line else ""))
        self.kind = kind
        self.text = message
        self.line = line


# ---------------------------------------------------------------- runtime


@dataclass
class Runtime:
    """What every example of a run shares."""

    ir: I.IR
    client: LMClient
    lm: LMSpec | None = None  # --lm: overrides the default for predictors that name no LM
    api_base: str | None = None
    base_dir: str = "."
    max_backtracks: int = 2
    trace_prompts: bool = False
    sandbox_limits: Any = None
    extra_lms: dict = field(default_factory=dict)  # alias -> LMSpec from lmc.yaml
    truncate_inputs: bool = False  # --truncate-inputs: cut an input that does not fit the context from its middle
    from_artifact: bool = False  # the IR came from someone's artifact: its aliases may not pick where keys go
    max_steps: int = DEFAULT_MAX_STEPS  # statements + loop iterations per example (--max-steps)
    example_timeout: float | None = None  # seconds per example (--example-timeout); None = no limit
    python: Any = None  # pyrefs.PythonPolicy: which python(...) references may be imported (None: none)
    _retrievers: dict = field(default_factory=dict)
    _tools: dict = field(default_factory=dict)
    _specs: dict = field(default_factory=dict)
    warnings: Warnings = field(default_factory=Warnings)

    def vet(self) -> "Runtime":
        """Refuse now, before any LM call, what this run may not do: import an unlisted python(...)
        reference, or let an artifact's LM alias choose where the key goes."""
        from .pyrefs import check

        check(self.ir, self.python)
        for p in self.ir.predictors:
            self.lm_for(p)
        return self

    # -- LMs -------------------------------------------------------------------
    def default_lm(self) -> LMSpec:
        if self.lm is not None:
            return self.lm
        env = os.environ.get("LMC_LM")
        return parse_lm(env or DEFAULT_LM, self.api_base)

    def lms(self) -> list[LMSpec]:
        """Every LM the program calls: its predictors' (ensemble members share their settings) and the
        models of its embeddings retrievers."""
        out: list[LMSpec] = []
        for p in self.ir.predictors:
            spec = self.lm_for(p)
            if spec not in out:
                out.append(spec)
        for r in self.ir.retrievers:
            if r.kind == "embeddings" and r.model:
                spec = LMSpec(r.model, self.api_base)
                if spec not in out:
                    out.append(spec)
        return out

    def lm_for(self, p: I.Predictor) -> LMSpec:
        name = p.setting("lm")
        key = name or ""
        if key in self._specs:
            return self._specs[key]
        if not name:
            spec = self.default_lm()
        elif name in self.extra_lms:
            spec = self.extra_lms[name]
        elif (alias := self.ir.lm_alias(name)) is not None:
            settings = dict(alias.settings)
            alias_base = settings.pop("api_base", None)
            key_env = settings.pop("api_key_env", None)
            if self.from_artifact:
                from .load import check_artifact_key_env
                from .netguard import check_artifact_lm, is_loopback

                where = f"LM alias '{name}' in the artifact"
                check_artifact_key_env(key_env, where)
                check_artifact_lm(alias.model, settings, where)
                if alias_base and not self.api_base and not is_loopback(alias_base):
                    raise ConfigError(f"{where} sends requests to {alias_base}; an artifact may not choose a remote "
                                      "server for your key", hint="pass --api-base to use a server you trust")
            api_base = self.api_base if (self.from_artifact and self.api_base) else (alias_base or self.api_base)
            spec = parse_lm(alias.model, api_base, api_key_env=key_env, settings=settings)
        else:
            spec = parse_lm(name, self.api_base)
        self._specs[key] = spec
        return spec

    # -- retrievers and tools ------------------------------------------------------
    def retriever(self, name: str):
        r = self._retrievers.get(name)
        if r is None:
            from .retrieve import BM25Retriever, EmbeddingsRetriever

            spec = self.ir.retriever(name)
            if spec.kind == "bm25":
                r = BM25Retriever(spec.path, text_field=spec.text_field, k=spec.k, base_dir=self.base_dir)
            else:
                r = EmbeddingsRetriever(spec.path, model=spec.model, text_field=spec.text_field, k=spec.k,
                                        base_dir=self.base_dir, api_base=self.api_base, meter=self.client)
            self._retrievers[name] = r
        return r

    async def search(self, name: str, query: Any, k: Any = None) -> list[str]:
        r = self.retriever(name)
        q = query if isinstance(query, str) else prompts.show_value(query)
        if hasattr(r, "search"):
            return list(await r.search(q, k))
        return list(await asyncio.to_thread(r, q, k))

    def tool_fn(self, name: str) -> Callable:
        fn = self._tools.get(name)
        if fn is None:
            spec = self.ir.tool(name)
            if spec.kind == "python":
                fn = load_python_ref("tool", name, spec.ref, self.python)
            elif spec.kind == "calculator":
                fn = calculator
            else:
                fn = None  # retriever tools go through search()
            self._tools[name] = fn
        return fn


def load_python_ref(kind: str, name: str, ref: str | None, policy: Any) -> Callable:
    """Import `pkg.mod:fn` for a tool or metric — only as the run's PythonPolicy allows (lmc/pyrefs.py)."""
    from .pyrefs import PyRef, import_ref

    return import_ref(PyRef(kind, name, ref or ""), policy)


# ---------------------------------------------------------------- a safe calculator tool

_OPS = {pyast.Add: operator.add, pyast.Sub: operator.sub, pyast.Mult: operator.mul, pyast.Div: operator.truediv,
        pyast.FloorDiv: operator.floordiv, pyast.Mod: operator.mod, pyast.Pow: operator.pow,
        pyast.USub: operator.neg, pyast.UAdd: operator.pos}
_FUNCS = {"sqrt": math.sqrt, "abs": abs, "round": round, "min": min, "max": max, "log": math.log, "exp": math.exp}


def calculator(expression: str) -> float:
    """Evaluate arithmetic without eval: numbers, + - * / // % **, parentheses, a few functions."""
    text = str(expression).replace("^", "**").replace(",", "").strip()
    try:
        tree = pyast.parse(text, mode="eval")
    except SyntaxError:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from None

    def ev(node):
        if isinstance(node, pyast.Expression):
            return ev(node.body)
        if isinstance(node, pyast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, pyast.BinOp) and type(node.op) in _OPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, pyast.Pow) and abs(right) > 100:
                raise ValueError("exponent too large")
            return _OPS[type(node.op)](left, right)
        if isinstance(node, pyast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.operand))
        if isinstance(node, pyast.Call) and isinstance(node.func, pyast.Name) and node.func.id in _FUNCS and not node.keywords:
            return _FUNCS[node.func.id](*[ev(a) for a in node.args])
        raise ValueError(f"unsupported expression: {expression!r}")

    try:
        value = ev(tree)
    except ZeroDivisionError:
        raise ValueError("division by zero") from None
    return float(value) if isinstance(value, float) and not value.is_integer() else int(value)


# ---------------------------------------------------------------- per-example state


@dataclass
class _Ctx:
    example_id: str | None
    trace: list[Call]
    feedback: dict  # (module, occurrence) -> {"previous_answer", "feedback"}
    counts: dict = field(default_factory=dict)  # module -> calls so far in this attempt
    last_call: tuple | None = None  # (module, occurrence, outputs)
    memo: dict = field(default_factory=dict)  # request key -> parsed outputs, so reruns cost nothing
    attempts: dict = field(default_factory=dict)  # check key -> backtracks used
    given_up: set = field(default_factory=set)
    exclude_demos: frozenset = frozenset()  # demo ids that must not be shown (the example itself)
    depth: int = 0
    steps: int = 0  # statements and loop iterations so far (all attempts of this example)
    next_yield: int = YIELD_EVERY
    max_steps: int = DEFAULT_MAX_STEPS
    line: int = 0  # the statement being executed, for errors that stop the example from outside
    meter: Usage = field(default_factory=Usage)  # this example's LM accounting (see Result.lm_usage)


async def run_example(rt: Runtime, inputs: dict, *, program: str | None = None, example_id: str | None = None,
                      exclude_demo_ids: frozenset = frozenset()) -> Result:
    """Run the program on one example; never raises for example-level failures (a timeout is one)."""
    start = time.perf_counter()
    started: list[_Ctx] = []  # the contexts the example ran in, to say where a timeout stopped it
    try:
        async with asyncio.timeout(rt.example_timeout):
            ens = rt.ir.extra("ensemble")
            if ens and program is None:
                return await _run_ensemble(rt, ens, inputs, example_id, exclude_demo_ids, started)
            return await _run_single(rt, inputs, program=program, example_id=example_id,
                                     exclude_demo_ids=exclude_demo_ids, started=started)
    except TimeoutError:
        line = started[-1].line if started else 0
        return Result(None, error=f"the example ran longer than the {rt.example_timeout:g}s limit "
                      f"(--example-timeout); stopped" + (f" at line {line}" if line else ""), error_kind="timeout",
                      trace=[c for ctx in started for c in ctx.trace], duration_s=time.perf_counter() - start,
                      lm_usage=_sum_usage(ctx.meter for ctx in started))


async def _run_ensemble(rt: Runtime, ens: dict, inputs: dict, example_id, exclude, started: list) -> Result:
    """Every member (a predictor table) runs the program; each output is the members' majority."""
    from .builtins import BUILTINS

    start = time.perf_counter()
    results = []
    for preds in _ensemble_members(rt, ens):
        member = replace(rt.ir, predictors=preds, extras=())
        results.append(await _run_single(replace(rt, ir=member), inputs, example_id=example_id, exclude_demo_ids=exclude,
                                         started=started))
    trace = [c for r in results for c in r.trace]
    usage = _sum_usage(r.lm_usage for r in results)
    ok = [r for r in results if r.ok]
    if not ok:
        first = results[0]
        return Result(None, error=first.error, error_kind=first.error_kind, trace=trace,
                      duration_s=time.perf_counter() - start, lm_usage=usage)
    majority = BUILTINS["majority"].fn
    outputs = {name: majority([r.outputs[name] for r in ok]) for name in ok[0].outputs}
    return Result(outputs, trace=trace, duration_s=time.perf_counter() - start, lm_usage=usage)


def _sum_usage(parts) -> Usage:
    total = Usage()
    for u in parts:
        if u is None:
            continue
        for name in ("calls", "cached_calls", "prompt_tokens", "completion_tokens", "cost", "retries", "errors",
                     "requests", "failed_requests"):
            setattr(total, name, getattr(total, name) + getattr(u, name))
    return total


def _ensemble_members(rt: Runtime, ens: dict) -> list[tuple[I.Predictor, ...]]:
    """Members are stored as IR JSON (the extra must survive artifacts); decoded once per runtime."""
    cache = rt.__dict__.setdefault("_ensemble_cache", {})
    key = id(ens)
    if key not in cache:
        cache[key] = (ens, [tuple(I.from_json_node(p) for p in preds) for preds in ens["members"]])
    return cache[key][1]


async def _run_single(rt: Runtime, inputs: dict, *, program: str | None = None, example_id: str | None = None,
                      exclude_demo_ids: frozenset = frozenset(), started: list | None = None) -> Result:
    start = time.perf_counter()
    ctx = _Ctx(example_id, [], {}, exclude_demos=exclude_demo_ids, max_steps=rt.max_steps)
    if started is not None:
        started.append(ctx)

    def failed(error: str, kind: str) -> Result:
        return Result(None, error=error, error_kind=kind, trace=ctx.trace, duration_s=time.perf_counter() - start,
                      lm_usage=ctx.meter)

    token = current_meter.set(ctx.meter)  # embedding requests of retrievers count for this example too
    try:
        outputs = await run_program(rt, ctx, program or rt.ir.entry, inputs)
        return Result(outputs, trace=ctx.trace, duration_s=time.perf_counter() - start, lm_usage=ctx.meter)
    except RUN_STOPPING:
        raise
    except LMError as e:  # this example's call failed after its retries; the others go on
        return failed(str(e), "lm")
    except OutputParseError as e:
        return failed(str(e), "parse")
    except RunError as e:
        return failed(str(e), e.kind)
    except ConfigError:
        raise
    except LmcError as e:
        return failed(str(e), "runtime")
    except RecursionError:
        return failed("program recursion too deep", "runtime")
    finally:
        current_meter.reset(token)


async def run_program(rt: Runtime, ctx: _Ctx, name: str, inputs: dict) -> dict:
    prog = rt.ir.program(name)
    env = _bind_inputs(prog, inputs)
    # Backtracking restarts the program with feedback for the target call; the
    # per-example memo makes every unchanged call free on the rerun.
    while True:
        ctx.counts = {}
        ctx.last_call = None
        attempt_start = len(ctx.trace)
        try:
            value = await _exec_block(rt, ctx, prog.body, dict(env))
            return _outputs(prog, value)
        except _Backtrack as b:
            # The rerun replays every call (free, from the memo): the trace keeps only the final attempt.
            del ctx.trace[attempt_start:]
            ctx.attempts[b.key] = ctx.attempts.get(b.key, 0) + 1
            ctx.feedback[(b.module, b.occurrence)] = b.feedback


def _bind_inputs(prog: I.ProgramIR, inputs: dict) -> dict:
    env = {}
    for f in prog.inputs:
        if f.name not in inputs:
            if f.type.kind == "optional":
                env[f.name] = None
                continue
            raise RunError(f"missing input '{f.name}'", "runtime")
        value = inputs[f.name]
        err = f.type.check(value)
        if err:
            try:
                value = coerce(value, f.type)
            except OutputParseError:
                raise RunError(f"input '{f.name}': {err}", "runtime") from None
        env[f.name] = value
    return env


def _outputs(prog: I.ProgramIR, value: Any) -> dict:
    names = [f.name for f in prog.outputs]
    if isinstance(value, _Return):
        value = value.value
    if isinstance(value, dict) and all(n in value for n in names):
        raw = {n: value[n] for n in names}
    elif len(names) == 1:
        raw = {names[0]: value}
    elif value is None:
        raise RunError("program ended without returning its outputs", "runtime")
    else:
        missing = [n for n in names if not isinstance(value, dict) or n not in value]
        raise RunError(f"returned value lacks output '{missing[0]}'", "runtime")
    out = {}
    for f in prog.outputs:
        v = raw[f.name]
        if isinstance(v, (list, dict)):
            # Sublists may be shared (`x = [x, x]`): a value small in memory can be exponential as JSON.
            try:
                limits.to_json(v, default=str, what=f"output '{f.name}'")
            except SizeLimitError as e:
                raise RunError(str(e), "runtime") from None
        err = f.type.check(v)
        if err:
            try:
                v = coerce(v, f.type)
            except OutputParseError as e:
                raise RunError(f"output '{f.name}': {e.message}", "parse") from None
        out[f.name] = v
    bad = find_non_finite(out)
    if bad:
        raise RunError(f"output '{bad}' is not a finite number (NaN or infinity); JSON cannot hold it", "runtime")
    return out


# ---------------------------------------------------------------- statements


async def _exec_block(rt: Runtime, ctx: _Ctx, body: tuple, env: dict) -> Any:
    try:
        for stmt in body:
            await _exec(rt, ctx, stmt, env)
    except _Return as r:
        return r.value
    return None


async def _checkpoint(ctx: _Ctx, line: int) -> None:
    """Every YIELD_EVERY steps: enforce --max-steps, and give the event loop a turn (Ctrl-C, timeouts, other examples)."""
    ctx.next_yield = ctx.steps + YIELD_EVERY
    if ctx.steps > ctx.max_steps:
        raise RunError(f"the example ran more than {ctx.max_steps:,} statements and loop iterations, the limit "
                       "(--max-steps); a loop that never ends?", line=line)
    await asyncio.sleep(0)


async def _exec(rt: Runtime, ctx: _Ctx, s: Any, env: dict) -> None:
    ctx.line = s.line or ctx.line
    ctx.steps += 1
    if ctx.steps >= ctx.next_yield:
        await _checkpoint(ctx, ctx.line)
    try:
        await _exec_stmt(rt, ctx, s, env)
    except RunError as err:
        # Expressions carry no line in the IR; the innermost statement around a failure gives it one.
        if err.line or not getattr(s, "line", 0):
            raise
        raise RunError(err.text, err.kind, s.line) from None
    except SizeLimitError as err:  # a value too large to print into a prompt or an f-string
        raise RunError(str(err), line=getattr(s, "line", None)) from None


async def _exec_stmt(rt: Runtime, ctx: _Ctx, s: Any, env: dict) -> None:
    t = type(s)
    if t is I.Assign:
        value = await _eval(rt, ctx, s.value, env)
        if s.op != "=":
            value = _binop(s.op[0], env.get(s.target), value, s.line)
        env[s.target] = value
    elif t is I.Eval:
        await _eval(rt, ctx, s.expr, env)
    elif t is I.Ret:
        raise _Return(await _eval(rt, ctx, s.value, env) if s.value is not None else None)
    elif t is I.Loop:
        items = await _eval(rt, ctx, s.iter, env)
        if isinstance(items, dict):
            items = list(items)
        if not isinstance(items, (list, str)):
            raise RunError(f"cannot loop over {_kind(items)}", line=s.line)
        for item in list(items):
            env[s.var] = item
            ctx.steps += 1
            if ctx.steps >= ctx.next_yield:
                await _checkpoint(ctx, s.line)
            if not await _loop_body(rt, ctx, s.body, env):
                break
    elif t is I.Branch:
        for cond, body in s.branches:
            if _truthy(await _eval(rt, ctx, cond, env)):
                for stmt in body:
                    await _exec(rt, ctx, stmt, env)
                return
        for stmt in s.orelse:
            await _exec(rt, ctx, stmt, env)
    elif t is I.WhileLoop:
        for _ in range(s.bound):
            ctx.steps += 1
            if ctx.steps >= ctx.next_yield:
                await _checkpoint(ctx, s.line)
            if not _truthy(await _eval(rt, ctx, s.cond, env)) or not await _loop_body(rt, ctx, s.body, env):
                break
    elif t is I.Check:
        await _check(rt, ctx, s, env)
    elif t is I.BreakLoop:
        raise _Break()
    elif t is I.ContinueLoop:
        raise _Continue()
    else:  # pragma: no cover - the IR is closed
        raise RunError(f"unknown statement {t.__name__}")


async def _loop_body(rt: Runtime, ctx: _Ctx, body: tuple, env: dict) -> bool:
    """Run one iteration; False when the loop must stop (`break`)."""
    try:
        for stmt in body:
            await _exec(rt, ctx, stmt, env)
    except _Break:
        return False
    except _Continue:
        pass
    return True


async def _check(rt: Runtime, ctx: _Ctx, s: I.Check, env: dict) -> None:
    if _truthy(await _eval(rt, ctx, s.cond, env)):
        return
    message = str(await _eval(rt, ctx, s.message, env)) if s.message is not None else "the check failed"
    key = (s.line, s.kind, s.target)
    target = None
    if s.target is not None:
        n = ctx.counts.get(s.target, 0)
        if n:
            target = (s.target, n - 1, None)
    elif ctx.last_call is not None:
        target = ctx.last_call
    module = rt.ir.module(target[0]) if target else None
    limit = module.setting("max_backtracks", rt.max_backtracks) if module else 0
    if target and key not in ctx.given_up and ctx.attempts.get(key, 0) < limit:
        past = target[2]
        if past is None:
            past = next((c.outputs for c in reversed(ctx.trace) if c.module == target[0] and c.outputs), {})
        previous = "; ".join(f"{k}: {prompts.show_value(v, multiline_ok=False)}" for k, v in (past or {}).items())
        prior = ctx.feedback.get((target[0], target[1]))
        if prior:
            # Earlier rejected answers stay in the prompt: the retry differs from the last one (a
            # deterministic LM or the memo would otherwise repeat it) and the LM sees what it already tried.
            previous = prior["previous_answer"] + "\n" + previous
        raise _Backtrack(key, target[0], target[1], {"previous_answer": previous, "feedback": message})
    if s.kind == "assert":
        raise RunError(f"assertion failed: {message}", "assert", s.line)
    ctx.given_up.add(key)


# ---------------------------------------------------------------- expressions


def _truthy(v: Any) -> bool:
    return bool(v)


def _kind(v: Any) -> str:
    from .types import _jtype

    return _jtype(v)


def _binop(op: str, a: Any, b: Any, line: int = 0) -> Any:
    value = _binop_value(op, a, b, line)
    if isinstance(value, float) and not math.isfinite(value):
        raise RunError(f"'{op}' of {_show(a)} and {_show(b)} gives {value!r}, not a finite number", line=line)
    return value


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _binop_value(op: str, a: Any, b: Any, line: int = 0) -> Any:
    try:
        if op == "+":
            if isinstance(a, str) and not isinstance(b, str):
                b = prompts.show_value(b, multiline_ok=False)
            if isinstance(a, list) and isinstance(b, tuple):
                b = list(b)
            _check_sum(a, b)
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            _check_product(a, b)
            return a * b
        if op == "/":
            return a / b
        if op == "//":
            return a // b
        if op == "%":
            if isinstance(a, (str, bytes)):
                # Python would read this as printf-style formatting ("%0*d" % (10**9, 1) is a 1 GB string).
                raise TypeError
            return a % b
    except ZeroDivisionError:
        raise RunError("division by zero", line=line) from None
    except SizeLimitError as err:
        raise RunError(str(err), line=line) from None
    except OverflowError:
        raise RunError(f"'{op}' of {_show(a)} and {_show(b)} is too large a number", line=line) from None
    except TypeError:
        raise RunError(f"cannot apply '{op}' to {_kind(a)} and {_kind(b)}", line=line) from None
    raise RunError(f"unknown operator '{op}'", line=line)


def _check_sum(a: Any, b: Any) -> None:
    """`+` of texts or lists: the result's size is checked before it is built."""
    if isinstance(a, str) and isinstance(b, str):
        limits.check_chars(len(a) + len(b), "a text")
    elif isinstance(a, list) and isinstance(b, list):
        limits.check_items(len(a) + len(b), "a list")


def _check_product(a: Any, b: Any) -> None:
    """`*` repeats a text or list, or multiplies ints whose size adds up: all checked before allocating."""
    if isinstance(a, (str, list)) and isinstance(b, int) or isinstance(b, (str, list)) and isinstance(a, int):
        seq, n = (a, b) if isinstance(a, (str, list)) else (b, a)
        total = len(seq) * max(int(n), 0)
        if isinstance(seq, str):
            limits.check_chars(total, "a repeated text")
        else:
            limits.check_items(total, "a repeated list")
    elif isinstance(a, int) and isinstance(b, int):
        limits.check_int_product(a, b)


_CMP = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


async def _eval(rt: Runtime, ctx: _Ctx, e: Any, env: dict) -> Any:
    t = type(e)
    if t is I.Const:
        return e.value
    if t is I.Var:
        if e.name not in env:
            raise RunError(f"'{e.name}' is not defined")
        return env[e.name]
    if t is I.GetField:
        obj = await _eval(rt, ctx, e.obj, env)
        if isinstance(obj, dict):
            if e.name in obj:
                return obj[e.name]
            raise RunError(f"no field '{e.name}' (have: {', '.join(sorted(obj)) or 'none'})")
        raise RunError(f"cannot read field '{e.name}' of {_kind(obj)}")
    if t is I.CallModule:
        kwargs = {k: await _eval(rt, ctx, v, env) for k, v in e.kwargs}
        return await call_module(rt, ctx, e.module, kwargs)
    if t is I.FStr:
        out = []
        size = 0
        for part in e.parts:
            if not isinstance(part, str):
                part = prompts.show_value(await _eval(rt, ctx, part, env), multiline_ok=False)
            size += len(part)
            if size > limits.MAX_CHARS:
                raise RunError(f"an f-string of more than {limits.count(limits.MAX_CHARS)} characters exceeds the limit")
            out.append(part)
        return "".join(out)
    if t is I.ListOf:
        return [await _eval(rt, ctx, x, env) for x in e.items]
    if t is I.DictOf:
        return {await _eval(rt, ctx, k, env): await _eval(rt, ctx, v, env) for k, v in e.items}
    if t is I.GetIndex:
        obj = await _eval(rt, ctx, e.obj, env)
        idx = await _eval(rt, ctx, e.index, env)
        try:
            return obj[idx]
        except (IndexError, KeyError):
            raise RunError(f"index {json.dumps(idx)} out of range for {_kind(obj)} of length {len(obj)}" if isinstance(idx, int) else f"no key {json.dumps(idx)}") from None
        except TypeError:
            raise RunError(f"cannot index {_kind(obj)} with {_kind(idx)}") from None
    if t is I.Bin:
        return _binop(e.op, await _eval(rt, ctx, e.left, env), await _eval(rt, ctx, e.right, env))
    if t is I.Unary:
        v = await _eval(rt, ctx, e.operand, env)
        if e.op == "not":
            return not _truthy(v)
        try:
            return -v if e.op == "-" else +v
        except TypeError:
            raise RunError(f"cannot negate {_kind(v)}") from None
    if t is I.Cmp:
        a = await _eval(rt, ctx, e.left, env)
        b = await _eval(rt, ctx, e.right, env)
        try:
            if e.op == "in":
                return a in b
            if e.op == "not in":
                return a not in b
            return _CMP[e.op](a, b)
        except TypeError:
            raise RunError(f"cannot compare {_kind(a)} and {_kind(b)} with '{e.op}'") from None
    if t is I.Logic:
        a = await _eval(rt, ctx, e.left, env)
        if e.op == "and":
            return await _eval(rt, ctx, e.right, env) if _truthy(a) else a
        return a if _truthy(a) else await _eval(rt, ctx, e.right, env)
    if t is I.CallBuiltin:
        from .builtins import BUILTINS

        args = [await _eval(rt, ctx, a, env) for a in e.args]
        kwargs = {k: await _eval(rt, ctx, v, env) for k, v in e.kwargs}
        try:
            value = BUILTINS[e.name].fn(*args, **kwargs)
        except RunError:
            raise
        except SizeLimitError as err:
            raise RunError(str(err), line=e.line) from None
        except (ValueError, TypeError, KeyError, IndexError, OverflowError) as err:
            raise RunError(f"{e.name}(): {err}", line=e.line) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise RunError(f"{e.name}() gives {value!r}, not a finite number", line=e.line)
        return value
    if t is I.CallRetriever:
        q = await _eval(rt, ctx, e.query, env)
        k = await _eval(rt, ctx, e.k, env) if e.k is not None else None
        return await rt.search(e.retriever, q, k)
    if t is I.CallTool:
        args = [await _eval(rt, ctx, a, env) for a in e.args]
        kwargs = {k: await _eval(rt, ctx, v, env) for k, v in e.kwargs}
        return await call_tool(rt, e.tool, args, kwargs, line=e.line)
    if t is I.CallProgram:
        kwargs = {k: await _eval(rt, ctx, v, env) for k, v in e.kwargs}
        if ctx.depth > 20:
            raise RunError("programs call each other too deeply", line=e.line)
        ctx.depth += 1
        try:
            prog = rt.ir.program(e.program)
            value = await _exec_block(rt, ctx, prog.body, _bind_inputs(prog, kwargs))
            return _outputs(prog, value)
        finally:
            ctx.depth -= 1
    raise RunError(f"unknown expression {t.__name__}")  # pragma: no cover


async def call_tool(rt: Runtime, name: str, args: list, kwargs: dict, line: int = 0) -> Any:
    spec = rt.ir.tool(name)
    if spec.kind == "retriever":
        query = args[0] if args else kwargs.get("query", next(iter(kwargs.values()), ""))
        return await rt.search(spec.ref, query, kwargs.get("k"))
    fn = rt.tool_fn(name)
    user_code = spec.kind == "python"
    if user_code:
        # Arguments that do not fit are the caller's mistake (a ReAct agent reads it and tries again);
        # checked against the signature, so a TypeError raised inside the tool is never taken for one.
        try:
            inspect.signature(fn).bind(*args, **kwargs)
        except TypeError as err:
            raise RunError(f"tool '{name}' cannot take these arguments: {err}", "tool_args", line=line) from None
        except ValueError:  # no signature to check against
            pass
    try:
        result = fn(*args, **kwargs)
        if asyncio.iscoroutine(result):
            result = await result
    except Exception as err:  # noqa: BLE001 - a tool raising fails the example, not the run
        # A user's tool that raises fails its example (kind "tool"), also inside ReAct: a bug in
        # user code must surface, not be fed back to the LM as an observation.
        raise RunError(f"tool '{name}' raised {type(err).__name__}: {err}", "tool" if user_code else "runtime",
                       line=line) from None
    bad = find_non_finite(result)
    if bad:
        raise RunError(f"tool '{name}' returned a value that is not a finite number (NaN or infinity)"
                       + (f" at {bad}" if bad != "the value" else ""), line=line)
    return result


# ---------------------------------------------------------------- modules


async def call_module(rt: Runtime, ctx: _Ctx, name: str, kwargs: dict) -> dict:
    m = rt.ir.module(name)
    occurrence = ctx.counts.get(name, 0)
    ctx.counts[name] = occurrence + 1
    feedback = ctx.feedback.get((name, occurrence))
    kind = m.kind
    if kind in ("Predict", "ChainOfThought"):
        out = await predict(rt, ctx, m.predictor_id("main"), kwargs, feedback=feedback)
    elif kind == "MultiChainComparison":
        out = await _multi_chain(rt, ctx, m, kwargs, feedback)
    elif kind == "ReAct":
        out = await _react(rt, ctx, m, kwargs, feedback)
    elif kind == "ProgramOfThought":
        out = await _program_of_thought(rt, ctx, m, kwargs, feedback)
    elif kind == "BestOfN":
        out = await _best_of_n(rt, ctx, m, kwargs, feedback)
    else:  # pragma: no cover
        raise RunError(f"unknown module kind '{kind}'")
    ctx.last_call = (name, occurrence, out)
    return out


async def _multi_chain(rt, ctx, m: I.ModuleIR, kwargs, feedback) -> dict:
    count = int(m.setting("m", 3))
    attempt_id = m.predictor_id("attempt")
    attempts = await asyncio.gather(*[
        predict(rt, ctx, attempt_id, kwargs, sample=i, temperature=SAMPLE_TEMPERATURE, feedback=feedback)
        for i in range(count)])
    p = rt.ir.predictor(attempt_id)
    lines = []
    for a in attempts:
        lines.append(" ".join(f"{f.label}: {prompts.show_value(a.get(f.name), multiline_ok=False)}" for f in p.signature.outputs))
    return await predict(rt, ctx, m.predictor_id("compare"), {**kwargs, "attempts": lines}, feedback=feedback)


async def _react(rt, ctx, m: I.ModuleIR, kwargs, feedback) -> dict:
    max_iters = int(m.setting("max_iters", 5))
    steps: list[str] = []
    step_id = m.predictor_id("step")
    for i in range(max_iters):
        trajectory = "\n".join(steps) if steps else "(nothing yet)"
        step = await predict(rt, ctx, step_id, {**kwargs, "trajectory": trajectory}, feedback=feedback if i == 0 else None)
        tool = step.get("tool")
        args = step.get("tool_args")
        steps.append(f"Thought {i + 1}: {step.get('thought', '')}")
        if tool == "finish":
            steps.append(f"Action {i + 1}: finish")
            break
        steps.append(f"Action {i + 1}: {tool}({json.dumps(args, ensure_ascii=False)})")
        try:
            observation = await _run_tool_step(rt, tool, args)
        except RunError as err:
            if err.kind == "tool":
                raise
            observation = f"error: {err.message}"
        steps.append(f"Observation {i + 1}: {_clip(prompts.show_value(observation))}")
    trajectory = "\n".join(steps)
    out = await predict(rt, ctx, m.predictor_id("extract"), {**kwargs, "trajectory": trajectory})
    return {**out, "trajectory": trajectory}


async def _run_tool_step(rt: Runtime, tool: str, args: Any) -> Any:
    spec = rt.ir.tool(tool)
    if isinstance(args, dict):
        pos, kw = [], dict(args)
        if spec.kind == "retriever":
            return await call_tool(rt, tool, [next(iter(kw.values()), "")] if kw else [""], {})
        if spec.kind == "calculator" and kw:
            return await call_tool(rt, tool, [next(iter(kw.values()))], {})
        return await call_tool(rt, tool, pos, kw)
    if isinstance(args, list):
        return await call_tool(rt, tool, args, {})
    return await call_tool(rt, tool, [args] if args is not None else [], {})


def _clip(text: str, limit: int = 1500) -> str:
    return text if len(text) <= limit else text[:limit] + " ..."


async def _program_of_thought(rt, ctx, m: I.ModuleIR, kwargs, feedback) -> dict:
    from .sandbox import SandboxLimits, arun_code, require_isolation

    require_isolation()  # refuse before spending an LM call where no sandbox can start
    max_iters = int(m.setting("max_iters", 3))
    limits = rt.sandbox_limits or SandboxLimits(timeout_s=float(m.setting("timeout", 5.0)))
    code_id = m.predictor_id("code")
    extra: dict = {}
    code, output, error = "", "", None
    for i in range(max_iters):
        step = await predict(rt, ctx, code_id, {**kwargs, **extra}, feedback=feedback if i == 0 else None)
        code = _strip_code(step.get("code", ""))
        result = await arun_code(code, inputs={k: v for k, v in kwargs.items() if _jsonable(v)}, limits=limits)
        if result.ok:
            output = prompts.show_value(result.value) if result.value is not None else result.stdout.strip()
            error = None
            break
        error = result.error
        extra = {"previous_code": code, "error": error}
    if error is not None:
        raise RunError(f"generated code failed {max_iters} times; last error: {error}", "runtime")
    out = await predict(rt, ctx, m.predictor_id("answer"), {**kwargs, "code": code, "code_output": output})
    return {**out, "code": code}


def _strip_code(text: str) -> str:
    t = text.strip()
    if t.startswith("```"):
        t = t.split("\n", 1)[1] if "\n" in t else ""
        if t.rstrip().endswith("```"):
            t = t.rstrip()[:-3]
    return t.strip()


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


async def _best_of_n(rt, ctx, m: I.ModuleIR, kwargs, feedback) -> dict:
    from .evaluate import score_metric

    n = int(m.setting("n", 3))
    reward = rt.ir.metric(m.setting("reward"))
    threshold = m.setting("threshold")
    pid = m.predictor_id("main")
    best, best_score, last_error = None, -1.0, None
    for i in range(n):
        try:
            out = await predict(rt, ctx, pid, kwargs, sample=i, temperature=SAMPLE_TEMPERATURE if i else None,
                                feedback=feedback)
        except OutputParseError as err:
            last_error = err
            continue
        s = await score_metric(rt, reward, dict(kwargs), out, ctx.trace) if reward else 0.0
        if s > best_score:
            best, best_score = out, s
        if threshold is not None and s >= float(threshold):
            break
    if best is None:
        raise last_error or RunError("no sample produced an answer")
    return best


# ---------------------------------------------------------------- one predictor call


async def predict(rt: Runtime, ctx: _Ctx, pid: str, inputs: dict, *, sample: int = 0,
                  temperature: float | None = None, feedback: dict | None = None) -> dict:
    p = rt.ir.predictor(pid)
    spec = rt.lm_for(p)
    mode = spec.mode
    values = {f.name: inputs[f.name] for f in p.signature.inputs if f.name in inputs}
    for f in p.signature.inputs:
        if f.name not in values and f.type.kind != "optional":
            raise RunError(f"predictor '{pid}' is missing input '{f.name}'")
    demos = _select_demos(rt, ctx, p, values)
    temp = temperature if temperature is not None else p.setting("temperature", spec.setting("temperature", 0.0))
    max_tokens = p.setting("max_tokens") or spec.setting("max_tokens") or default_max_tokens(p, mode)
    prompt, demos, shown = _fit_context(rt, spec, p, values, demos, mode, feedback, int(max_tokens))
    overrides = {"temperature": temp, "max_tokens": max_tokens, "sample": sample}
    outs = p.signature.outputs
    if mode == "completion" and len(outs) == 1 and outs[0].type.kind == "literal":
        overrides["choices"] = tuple(outs[0].type.args)
    last_raw, last_err = "", None
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
        req = make_request(spec, messages=prompt.messages, prompt=prompt.text, stop=stop or None,
                           json_mode=prompt.json_mode, **overrides)
        key = req.cache_key(spec.model)
        if key in ctx.memo:
            result, parsed, err = ctx.memo[key]
        else:
            result = await rt.client.complete(spec, req, tag=pid, meter=ctx.meter)
            parsed, err = None, None
            try:
                parsed = prompts.parse(p, result.text, mode=mode, json_mode=prompt.json_mode)
            except OutputParseError as e:
                err = e
            ctx.memo[key] = (result, parsed, err)
        call = Call(pid, p.module, values, parsed, raw=result.text,
                    prompt=prompt.as_text() if rt.trace_prompts else None,
                    error=str(err) if err else None, prompt_tokens=result.prompt_tokens,
                    completion_tokens=result.completion_tokens, cost=result.cost, cached=result.cached,
                    latency_s=result.latency_s)
        ctx.trace.append(call)
        if err is None:
            return parsed
        last_raw, last_err = result.text, err
    raise OutputParseError(f"predictor '{pid}': {last_err.message} (raw output: {_short(last_raw)})", last_raw)


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


def _select_demos(rt: Runtime, ctx: _Ctx, p: I.Predictor, values: dict) -> tuple[dict, ...]:
    knn = rt.ir.extra("knn")
    if knn and p.id in knn.get("pools", {}):
        from .optimize.knn import choose_demos

        # Leave the example itself out of the pool before choosing, so it still gets k demos.
        return choose_demos(knn, p, values, exclude=ctx.exclude_demos)
    demos = p.demos
    if ctx.exclude_demos:
        demos = tuple(d for d in demos if d.get("_id") not in ctx.exclude_demos)
    return demos


def _fit_context(rt: Runtime, spec: LMSpec, p: I.Predictor, values: dict, demos: tuple[dict, ...], mode: str,
                 feedback, max_tokens: int) -> tuple[prompts.Prompt, tuple[dict, ...], dict]:
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
        raise RunError(f"predictor '{p.id}': input of {used:,} tokens does not fit the {window:,}-token context of "
                       f"{spec.model} ({max_tokens:,} tokens kept for the answer)"
                       + (f"; shorten '{longest}'" if longest else "")
                       + ", or pass --truncate-inputs (module setting truncate_inputs=true) to cut the longest "
                       "input from its middle", "input")
    shown = dict(values)
    for _ in range(64):
        name = _longest_text(shown)
        text = _text_of(shown[name]) if name is not None else ""
        if name is None or len(text) <= 2 * len(CUT_MARK):
            raise RunError(f"predictor '{p.id}': the prompt needs {used:,} tokens and the {window:,}-token context "
                           f"of {spec.model} holds {budget:,} besides the answer, even with every input cut", "input")
        # Characters per token of this prompt, so the cut is about right the first time; rounded up.
        per_token = max(1.0, len(prompt.as_text()) / max(used, 1))
        cut = int((used - budget) * per_token * 1.1) + 16
        shown[name] = _cut(shown[name], max(0, len(text) - cut))
        prompt = prompts.render(p, shown, mode=mode, demos=demos, feedback=feedback)
        used = rt.client.count_tokens(spec, prompt.as_text())
        if used <= budget:
            rt.warnings.add(f"predictor '{p.id}': cut inputs from their middle to fit the {window}-token context "
                            f"of {spec.model} (--truncate-inputs)")
            return prompt, demos, shown
    raise RunError(f"predictor '{p.id}': could not cut the inputs to fit the {window:,}-token context of {spec.model}",
                   "input")  # pragma: no cover - every round removes at least 16 characters


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
        return text[:head] + CUT_MARK + text[len(text) - (room - head):] if room - head else text[:head] + CUT_MARK
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
