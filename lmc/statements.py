"""The statements and expressions of one example, module calls through their kind, tools and metric scores.

Everything here is mutually recursive (a module's reward metric may run a metric block
that calls modules), so it lives in one module; `interpreter` drives it per example.  Python
metrics, which recurse into nothing, are imported and called by `python_metrics`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from . import ir as I
from . import limits, prompts
from .builtins import BUILTINS
from .errors import LmcError, OutputParseError, RunError
from .files import find_non_finite
from .inputs import InputError, bind_inputs
from .kinds import KINDS
from .limits import SizeLimitError
from .metrics import builtin_metric, explain, split_feedback, to_score
from .operators import COMPARE, binop, kind_of, truthy
from .predict import predict
from .python_metrics import score_python
from .runtime import YIELD_EVERY, Frame, Runtime
from .sandbox import SandboxLimits, arun_code, require_isolation
from .types import coerce


class Backtrack(Exception):
    """A failed assert/suggest asks to rerun the program with feedback for one module call."""

    def __init__(self, key, module: str, occurrence: int, feedback: dict):
        self.key = key
        self.module = module
        self.occurrence = occurrence
        self.feedback = feedback


class _Return(Exception):
    """`return` unwinding to the end of its block."""

    def __init__(self, value):
        self.value = value


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def program_outputs(prog: I.ProgramIR, value: Any) -> dict:
    """What a program returned, as its declared outputs (coerced to their types, finite, within the size limits)."""
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


async def exec_block(rt: Runtime, ctx: Frame, body: tuple, env: dict) -> Any:
    try:
        for stmt in body:
            await _exec(rt, ctx, stmt, env)
    except _Return as r:
        return r.value
    return None


async def _checkpoint(ctx: Frame, line: int) -> None:
    """Every YIELD_EVERY steps: enforce --max-steps, and give the event loop a turn (Ctrl-C, timeouts, other examples)."""
    ctx.next_yield = ctx.steps + YIELD_EVERY
    if ctx.steps > ctx.max_steps:
        raise RunError(
            f"the example ran more than {ctx.max_steps:,} statements and loop iterations, the limit (--max-steps); a loop that never ends?", line=line
        )
    await asyncio.sleep(0)


async def _exec(rt: Runtime, ctx: Frame, s: Any, env: dict) -> None:
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


async def _exec_stmt(rt: Runtime, ctx: Frame, s: Any, env: dict) -> None:
    run = _STATEMENTS.get(type(s))
    if run is None:  # pragma: no cover - the IR is closed
        raise RunError(f"unknown statement {type(s).__name__}")
    await run(rt, ctx, s, env)


async def _assign(rt: Runtime, ctx: Frame, s: I.Assign, env: dict) -> None:
    value = await _eval(rt, ctx, s.value, env)
    if s.op != "=":
        value = binop(s.op[0], env.get(s.target), value, s.line)
    env[s.target] = value


async def _expression(rt: Runtime, ctx: Frame, s: I.Eval, env: dict) -> None:
    await _eval(rt, ctx, s.expr, env)


async def _return(rt: Runtime, ctx: Frame, s: I.Ret, env: dict) -> None:
    value = await _eval(rt, ctx, s.value, env) if s.value is not None else None
    if s.feedback is not None:  # only a metric may (the checker says so): its score and why, as a pair
        text = await _eval(rt, ctx, s.feedback, env)
        raise _Return((value, None if text is None else str(text)))
    raise _Return(value)


async def _for(rt: Runtime, ctx: Frame, s: I.Loop, env: dict) -> None:
    items = await _eval(rt, ctx, s.iter, env)
    if isinstance(items, dict):
        items = list(items)
    if not isinstance(items, (list, str)):
        raise RunError(f"cannot loop over {kind_of(items)}", line=s.line)
    for item in list(items):
        env[s.var] = item
        ctx.steps += 1
        if ctx.steps >= ctx.next_yield:
            await _checkpoint(ctx, s.line)
        if not await _loop_body(rt, ctx, s.body, env):
            break


async def _if(rt: Runtime, ctx: Frame, s: I.Branch, env: dict) -> None:
    for cond, body in s.branches:
        if truthy(await _eval(rt, ctx, cond, env)):
            for stmt in body:
                await _exec(rt, ctx, stmt, env)
            return
    for stmt in s.orelse:
        await _exec(rt, ctx, stmt, env)


async def _while(rt: Runtime, ctx: Frame, s: I.WhileLoop, env: dict) -> None:
    for _ in range(s.bound):
        ctx.steps += 1
        if ctx.steps >= ctx.next_yield:
            await _checkpoint(ctx, s.line)
        if not truthy(await _eval(rt, ctx, s.cond, env)) or not await _loop_body(rt, ctx, s.body, env):
            break


async def _break(rt: Runtime, ctx: Frame, s: I.BreakLoop, env: dict) -> None:
    raise _Break()


async def _continue(rt: Runtime, ctx: Frame, s: I.ContinueLoop, env: dict) -> None:
    raise _Continue()


async def _loop_body(rt: Runtime, ctx: Frame, body: tuple, env: dict) -> bool:
    """Run one iteration; False when the loop must stop (`break`)."""
    try:
        for stmt in body:
            await _exec(rt, ctx, stmt, env)
    except _Break:
        return False
    except _Continue:
        pass
    return True


async def _check(rt: Runtime, ctx: Frame, s: I.Check, env: dict) -> None:
    if truthy(await _eval(rt, ctx, s.cond, env)):
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
        raise Backtrack(key, target[0], target[1], {"previous_answer": previous, "feedback": message})
    if s.kind == "assert":
        raise RunError(f"assertion failed: {message}", "assert", s.line)
    ctx.given_up.add(key)
    ctx.failed_checks.append(f"line {s.line}: {message}")


# ---------------------------------------------------------------- expressions


# ---------------------------------------------------------------- expressions


async def _eval(rt: Runtime, ctx: Frame, e: Any, env: dict) -> Any:
    t = type(e)
    if t is I.Const:  # the commonest case, without a lookup
        return e.value
    evaluate = _EXPRESSIONS.get(t)
    if evaluate is None:  # pragma: no cover - the IR is closed
        raise RunError(f"unknown expression {t.__name__}")
    return await evaluate(rt, ctx, e, env)


async def _kwargs(rt: Runtime, ctx: Frame, pairs: tuple, env: dict) -> dict:
    return {k: await _eval(rt, ctx, v, env) for k, v in pairs}


async def _var(rt: Runtime, ctx: Frame, e: I.Var, env: dict) -> Any:
    if e.name not in env:
        raise RunError(f"'{e.name}' is not defined")
    return env[e.name]


async def _field(rt: Runtime, ctx: Frame, e: I.GetField, env: dict) -> Any:
    obj = await _eval(rt, ctx, e.obj, env)
    if isinstance(obj, dict):
        if e.name in obj:
            return obj[e.name]
        raise RunError(f"no field '{e.name}' (have: {', '.join(sorted(obj)) or 'none'})")
    raise RunError(f"cannot read field '{e.name}' of {kind_of(obj)}")


async def _fstring(rt: Runtime, ctx: Frame, e: I.FStr, env: dict) -> str:
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


async def _list(rt: Runtime, ctx: Frame, e: I.ListOf, env: dict) -> list:
    return [await _eval(rt, ctx, x, env) for x in e.items]


async def _dict(rt: Runtime, ctx: Frame, e: I.DictOf, env: dict) -> dict:
    return {await _eval(rt, ctx, k, env): await _eval(rt, ctx, v, env) for k, v in e.items}


async def _index(rt: Runtime, ctx: Frame, e: I.GetIndex, env: dict) -> Any:
    obj = await _eval(rt, ctx, e.obj, env)
    idx = await _eval(rt, ctx, e.index, env)
    try:
        return obj[idx]
    except (IndexError, KeyError):
        if isinstance(idx, int):
            raise RunError(f"index {json.dumps(idx)} out of range for {kind_of(obj)} of length {len(obj)}") from None
        raise RunError(f"no key {json.dumps(idx)}") from None
    except TypeError:
        raise RunError(f"cannot index {kind_of(obj)} with {kind_of(idx)}") from None


async def _binary(rt: Runtime, ctx: Frame, e: I.Bin, env: dict) -> Any:
    return binop(e.op, await _eval(rt, ctx, e.left, env), await _eval(rt, ctx, e.right, env))


async def _unary(rt: Runtime, ctx: Frame, e: I.Unary, env: dict) -> Any:
    v = await _eval(rt, ctx, e.operand, env)
    if e.op == "not":
        return not truthy(v)
    try:
        return -v if e.op == "-" else +v
    except TypeError:
        raise RunError(f"cannot negate {kind_of(v)}") from None


async def _compare(rt: Runtime, ctx: Frame, e: I.Cmp, env: dict) -> bool:
    a = await _eval(rt, ctx, e.left, env)
    b = await _eval(rt, ctx, e.right, env)
    try:
        if e.op == "in":
            return a in b
        if e.op == "not in":
            return a not in b
        return COMPARE[e.op](a, b)
    except TypeError:
        raise RunError(f"cannot compare {kind_of(a)} and {kind_of(b)} with '{e.op}'") from None


async def _logic(rt: Runtime, ctx: Frame, e: I.Logic, env: dict) -> Any:
    a = await _eval(rt, ctx, e.left, env)
    if e.op == "and":
        return await _eval(rt, ctx, e.right, env) if truthy(a) else a
    return a if truthy(a) else await _eval(rt, ctx, e.right, env)


async def _builtin(rt: Runtime, ctx: Frame, e: I.CallBuiltin, env: dict) -> Any:
    args = [await _eval(rt, ctx, a, env) for a in e.args]
    kwargs = await _kwargs(rt, ctx, e.kwargs, env)
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


async def _module_call(rt: Runtime, ctx: Frame, e: I.CallModule, env: dict) -> dict:
    return await call_module(rt, ctx, e.module, await _kwargs(rt, ctx, e.kwargs, env))


async def _retriever_call(rt: Runtime, ctx: Frame, e: I.CallRetriever, env: dict) -> list[str]:
    q = await _eval(rt, ctx, e.query, env)
    k = await _eval(rt, ctx, e.k, env) if e.k is not None else None
    return await rt.search(e.retriever, q, k)


async def _tool_call(rt: Runtime, ctx: Frame, e: I.CallTool, env: dict) -> Any:
    args = [await _eval(rt, ctx, a, env) for a in e.args]
    return await call_tool(rt, e.tool, args, await _kwargs(rt, ctx, e.kwargs, env), line=e.line)


async def _program_call(rt: Runtime, ctx: Frame, e: I.CallProgram, env: dict) -> dict:
    return await call_program(rt, ctx, e.program, await _kwargs(rt, ctx, e.kwargs, env), e.line)


async def call_tool(rt: Runtime, name: str, args: list, kwargs: dict, line: int = 0) -> Any:
    spec = rt.ir.tool(name)
    if spec.kind == "retriever":
        query = args[0] if args else kwargs.get("query", next(iter(kwargs.values()), ""))
        return await rt.search(str(spec.ref), query, kwargs.get("k"))
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
        raise RunError(f"tool '{name}' raised {type(err).__name__}: {err}", "tool" if user_code else "runtime", line=line) from None
    bad = find_non_finite(result)
    if bad:
        raise RunError(
            f"tool '{name}' returned a value that is not a finite number (NaN or infinity)" + (f" at {bad}" if bad != "the value" else ""), line=line
        )
    return result


# ---------------------------------------------------------------- modules and metrics


async def call_module(rt: Runtime, ctx: Frame, name: str, kwargs: dict) -> dict:
    """One call of module `name`: its kind's run-time behaviour, with the feedback of a failed check if any."""
    m = rt.ir.module(name)
    occurrence = ctx.counts.get(name, 0)
    ctx.counts[name] = occurrence + 1
    kind = KINDS.get(m.kind)
    if kind is None:  # pragma: no cover - artifacts are verified, the checker refuses unknown kinds
        raise RunError(f"unknown module kind '{m.kind}'")
    with rt.client.telemetry.module(name, m.kind):
        out = await kind.run(_ModuleStep(rt, ctx, m), kwargs, ctx.feedback.get((name, occurrence)))
    ctx.last_call = (name, occurrence, out)
    return out


@dataclass
class _ModuleStep:
    """The interpreter's services for one module call (`kinds.Step`)."""

    rt: Runtime
    ctx: Frame
    module: I.ModuleIR

    async def predict(self, role: str, inputs: dict, *, sample: int = 0, temperature: float | None = None, feedback: dict | None = None) -> dict:
        return await predict(self.rt, self.ctx, self.module.predictor_id(role), inputs, sample=sample, temperature=temperature, feedback=feedback)

    def outputs(self, role: str) -> tuple[I.FieldSpec, ...]:
        return self.rt.ir.predictor(self.module.predictor_id(role)).signature.outputs

    async def call_tool(self, name: str, args: Any) -> Any:
        """A tool called with the JSON arguments an LM chose: an object by name, a list in order, else one value."""
        spec = self.rt.ir.tool(name)
        if isinstance(args, dict):
            if spec.kind in ("retriever", "calculator") and args:
                return await call_tool(self.rt, name, [next(iter(args.values()))], {})
            if spec.kind == "retriever":
                return await call_tool(self.rt, name, [""], {})
            return await call_tool(self.rt, name, [], dict(args))
        if isinstance(args, list):
            return await call_tool(self.rt, name, args, {})
        return await call_tool(self.rt, name, [args] if args is not None else [], {})

    def require_sandbox(self) -> None:
        require_isolation()

    async def run_code(self, code: str, inputs: dict, timeout_s: float) -> Any:
        return await arun_code(code, inputs=inputs, limits=self.rt.sandbox_limits or SandboxLimits(timeout_s=timeout_s))

    async def score(self, metric: str, inputs: dict, outputs: dict) -> float:
        found = self.rt.ir.metric(metric)
        return await score_metric(self.rt, found, inputs, outputs, self.ctx.trace) if found else 0.0


def bind_program_inputs(prog: I.ProgramIR, values: dict) -> dict:
    """A program's environment from `values`; inputs that do not fit fail the example (not the run)."""
    try:
        return bind_inputs(prog.inputs, values, coerce_values=True, ignore_unknown=True)
    except InputError as e:
        raise RunError(str(e)) from None


async def call_program(rt: Runtime, ctx: Frame, name: str, kwargs: dict, line: int = 0) -> dict:
    """Another program of the file, called from this one: its inputs bound, its outputs checked."""
    if ctx.depth > 20:
        raise RunError("programs call each other too deeply", line=line)
    prog = rt.ir.program(name)
    env = bind_program_inputs(prog, kwargs)
    ctx.depth += 1
    try:
        return program_outputs(prog, await exec_block(rt, ctx, prog.body, env))
    finally:
        ctx.depth -= 1


async def score_metric(rt: Runtime, metric: I.MetricIR, example: dict, pred: dict, trace: list | None = None) -> float:
    """A metric's score in [0, 1] for one prediction; raises LmcError when the metric itself fails."""
    return (await score_and_explain(rt, metric, example, pred, trace))[0]


async def score_and_explain(rt: Runtime, metric: I.MetricIR, example: dict, pred: dict, trace: list | None = None) -> tuple[float, str | None]:
    """A metric's score in [0, 1] and its feedback (why, in words; None when it says nothing).

    Built-ins explain themselves; a python metric may return `(score, "text")` and a block metric
    `return score, "text"`; a block metric that says nothing but asked a judge module is explained by
    what its judge answered."""
    if metric.kind == "builtin":
        name = str(metric.builtin)
        fn = builtin_metric(name)
        gold = example.get(metric.gold)
        predicted = pred.get(metric.field)
        if gold is None and name != "passage_match":
            raise LmcError(f"metric '{metric.name}' needs the gold field '{metric.gold}' in every example")
        score = to_score(fn(gold, predicted))
        return score, explain(name, gold, predicted, score)
    if metric.kind == "python":
        return await score_python(metric, rt.python, example, pred, trace)
    program = metric.program  # a block metric: a small program over (example, pred) that may call modules
    if program is None:  # pragma: no cover - lowering gives every block metric its program
        raise LmcError(f"metric '{metric.name}' has no body")
    ctx = Frame(None, trace if trace is not None else [], {})
    before = len(ctx.trace)
    names = [f.name for f in program.inputs]
    value, feedback = split_feedback(await exec_block(rt, ctx, program.body, dict(zip(names, (example, pred)))))
    if feedback is None:
        feedback = judges_said(ctx.trace[before:])
    return to_score(value), feedback


def judges_said(calls: list) -> str | None:
    """What the modules a metric called (its judges) answered, as one line each: the reason behind its score."""
    lines = []
    for c in calls:
        if c.outputs:
            said = "; ".join(f"{k}: {v}" for k, v in c.outputs.items())
            lines.append(f"{c.module} said {said}" if len(said) <= 600 else f"{c.module} said {said[:599]}…")
    return "\n".join(lines) or None


# Each IR node type and the function that runs it (defined above, looked up per node).
_Run = Callable[[Runtime, Frame, Any, dict], Awaitable[Any]]
_STATEMENTS: dict[type, _Run] = {
    I.Assign: _assign,
    I.Eval: _expression,
    I.Ret: _return,
    I.Loop: _for,
    I.Branch: _if,
    I.WhileLoop: _while,
    I.Check: _check,
    I.BreakLoop: _break,
    I.ContinueLoop: _continue,
}
_EXPRESSIONS: dict[type, _Run] = {
    I.Var: _var,
    I.GetField: _field,
    I.CallModule: _module_call,
    I.FStr: _fstring,
    I.ListOf: _list,
    I.DictOf: _dict,
    I.GetIndex: _index,
    I.Bin: _binary,
    I.Unary: _unary,
    I.Cmp: _compare,
    I.Logic: _logic,
    I.CallBuiltin: _builtin,
    I.CallRetriever: _retriever_call,
    I.CallTool: _tool_call,
    I.CallProgram: _program_call,
}
