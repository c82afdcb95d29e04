"""What a run shares (`Runtime`: the IR, the LM client, LM choice, retrievers, tools) and what one example leaves
(`Result`, a trace of `Call`s); the per-example state (`Frame`) the interpreter threads through a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from . import ir as I
from . import prompts
from .calculator import calculator
from .config import DEFAULT_MAX_STEPS, Config, choose_lm, predictor_lm
from .errors import ErrorKind, Warnings
from .lm import LMClient, LMSpec, Usage
from .pyrefs import PyRef, check, import_ref
from .retrieve import BM25Retriever, EmbeddingsRetriever

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
    scores: dict | None = None  # a scored label choice: each label's score, calibrated as it was compared

    def to_json(self, with_prompt: bool = True) -> dict:
        out = {
            "predictor": self.predictor,
            "module": self.module,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "raw": self.raw,
            "error": self.error,
            "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "cost": self.cost, "cached": self.cached},
            "latency_s": round(self.latency_s, 4),
        }
        if self.scores is not None:
            out["label_scores"] = {k: round(v, 6) for k, v in self.scores.items()}
        if with_prompt and self.prompt is not None:
            out["prompt"] = self.prompt
        return out


@dataclass
class Result:
    outputs: dict | None
    error: str | None = None
    error_kind: ErrorKind | None = None
    trace: list[Call] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    # Every LM call and request this example caused, counted by the client as they happened.  The
    # trace keeps only the final attempt after a backtrack, so it cannot be the source of truth.
    lm_usage: Usage | None = None
    # The messages of suggests that still failed on the final attempt: the outputs stand, but the
    # trace broke a rule of the program, so it never becomes a demo.
    failed_checks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def usage(self) -> dict:
        """calls answered by the LM, cached_calls, tokens and cost, plus requests sent, retries and failed requests."""
        u = self.lm_usage
        if u is None:
            return {
                "calls": sum(1 for c in self.trace if not c.cached),
                "cached_calls": sum(1 for c in self.trace if c.cached),
                "prompt_tokens": sum(c.prompt_tokens for c in self.trace),
                "completion_tokens": sum(c.completion_tokens for c in self.trace),
                "cost": round(sum(c.cost for c in self.trace), 8),
                "requests": sum(1 for c in self.trace if not c.cached),
                "retries": 0,
                "failed_requests": 0,
            }
        return {
            "calls": u.live_calls,
            "cached_calls": u.cached_calls,
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "cost": round(u.cost, 8),
            "requests": u.requests,
            "retries": u.retries,
            "failed_requests": u.failed_requests,
        }


@dataclass
class Frame:
    """The state of one example while it runs (all its attempts after backtracks)."""

    example_id: str | None
    trace: list[Call]
    feedback: dict  # (module, occurrence) -> {"previous_answer", "feedback"}
    counts: dict = field(default_factory=dict)  # module -> calls so far in this attempt
    last_call: tuple | None = None  # (module, occurrence, outputs)
    memo: dict = field(default_factory=dict)  # request key -> parsed outputs, so reruns cost nothing
    attempts: dict = field(default_factory=dict)  # check key -> backtracks used
    given_up: set = field(default_factory=set)
    failed_checks: list = field(default_factory=list)  # suggests that failed (and were given up) in this attempt
    exclude_demos: frozenset = frozenset()  # demo ids that must not be shown (the example itself)
    depth: int = 0
    steps: int = 0  # statements and loop iterations so far (all attempts of this example)
    next_yield: int = YIELD_EVERY
    max_steps: int = DEFAULT_MAX_STEPS
    line: int = 0  # the statement being executed, for errors that stop the example from outside
    meter: Usage = field(default_factory=Usage)  # this example's LM accounting (see Result.lm_usage)


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
    _decoded: dict = field(default_factory=dict)  # id(extra) -> (extra, decoded value): see `decoded`
    warnings: Warnings = field(default_factory=Warnings)

    def vet(self) -> "Runtime":
        """Refuse now, before any LM call, what this run may not do: import an unlisted python(...)
        reference, or let an artifact's LM alias choose where the key goes."""
        check(self.ir, self.python)
        for p in self.ir.predictors:
            self.lm_for(p)
        return self

    # -- LMs -------------------------------------------------------------------
    def default_lm(self) -> LMSpec:
        return self.lm if self.lm is not None else choose_lm(None, self.api_base, Config())

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
        name = p.setting("lm") or ""
        if name not in self._specs:
            self._specs[name] = (
                predictor_lm(name, self.ir, api_base=self.api_base, aliases=self.extra_lms, from_artifact=self.from_artifact)
                if name
                else self.default_lm()
            )
        return self._specs[name]

    def decoded(self, extra: Any, decode: Callable[[Any], Any]) -> Any:
        """`decode(extra)`, once per runtime: run-time extras are stored as IR JSON and decoded on first use."""
        key = id(extra)
        if key not in self._decoded:
            self._decoded[key] = (extra, decode(extra))  # keeps `extra` alive, so its id is not reused
        return self._decoded[key][1]

    # -- retrievers and tools ------------------------------------------------------
    def retriever(self, name: str):
        r = self._retrievers.get(name)
        if r is None:
            spec = self.ir.retriever(name)
            if spec.kind == "bm25":
                r = BM25Retriever(spec.path, text_field=spec.text_field, k=spec.k, base_dir=self.base_dir)
            else:
                r = EmbeddingsRetriever(
                    spec.path,
                    model=spec.model or "",
                    text_field=spec.text_field,
                    k=spec.k,
                    base_dir=self.base_dir,
                    api_base=self.api_base,
                    meter=self.client,
                )
            self._retrievers[name] = r
        return r

    async def search(self, name: str, query: Any, k: Any = None) -> list[str]:
        q = query if isinstance(query, str) else prompts.show_value(query)
        return list(await self.retriever(name).search(q, k))

    def tool_fn(self, name: str) -> Callable[..., Any]:
        """The function of a python or builtin tool (a retriever used as a tool goes through `search`)."""
        fn = self._tools.get(name)
        if fn is None:
            spec = self.ir.tool(name)
            fn = calculator if spec.kind == "calculator" else load_python_ref("tool", name, spec.ref, self.python)
            self._tools[name] = fn
        return fn


def load_python_ref(kind: str, name: str, ref: str | None, policy: Any) -> Callable:
    """Import `pkg.mod:fn` for a tool or metric — only as the run's PythonPolicy allows (lmc/pyrefs.py)."""
    return import_ref(PyRef(kind, name, ref or ""), policy)
