"""What an optimizer pass takes and gives back: `PassInputs` in, a `PassResult` out, and the `Lab` that runs candidates.

A pass never changes anything it is given.  It reads the datasets, the metric and the
candidates of earlier passes from its `PassInputs`, runs and scores programs through
the `Lab` (the compile's one LM client; scores are memoised), and returns its program
with the candidates it tried and its notes.  `Findings` gathers those while the pass
runs; it belongs to that one run of the pass.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Sequence, TypeVar

from .. import ir as I
from ..datasets import Example
from ..errors import BudgetExceeded
from ..runtime import Runtime
from ..scoring import Outcome, evaluate, mean_score

T = TypeVar("T")


@dataclass(frozen=True)
class Candidate:
    """A program a pass tried, with its dev score and what the compile report says about it."""

    name: str
    ir: I.IR
    score: float | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


def best(candidates: Sequence[Candidate]) -> Candidate | None:
    """The highest-scoring candidate; a tie goes to the earliest (simplest), so results are stable."""
    scored = [(c.score, -i, c) for i, c in enumerate(candidates) if c.score is not None]
    return max(scored, key=lambda t: t[:2])[2] if scored else None


class Lab:
    """Runs and scores candidate programs on the compile's runtimes; a score is memoised per (program, examples)."""

    def __init__(
        self,
        make_runtime: Callable[[I.IR], Runtime],
        devset: Sequence[Example],
        metric: I.MetricIR,
        *,
        threshold: float = 1.0,
        threshold_given: bool = True,
        concurrency: int = 8,
        teacher: Callable[[I.IR], Runtime] | None = None,
        proposer: Callable[[I.IR], Runtime] | None = None,
        on_score: Callable[[str, float], None] = lambda label, score: None,
        on_batch: Callable[[int], None] = lambda n: None,
        on_example: Callable[[Outcome], None] = lambda outcome: None,
        calls_left: Callable[[], int | None] = lambda: None,
    ):
        self.make_runtime = make_runtime
        self.calls_left = calls_left  # what --max-calls still allows (None: no cap), for passes that plan their spend
        self.teacher = teacher or make_runtime  # runs the bootstrapping teacher (--teacher-lm)
        self.proposer = proposer or make_runtime  # proposes instructions (--prompt-lm)
        self.devset = list(devset)
        self.metric = metric
        self.threshold = threshold
        self.threshold_given = threshold_given  # False: the default 1.0, which bootstrap relaxes for a graded metric
        self.concurrency = concurrency
        self.on_score = on_score
        self.on_batch = on_batch  # progress: a batch of n examples starts, then each outcome as it finishes
        self.on_example = on_example
        self._scores: dict = {}
        self._outcomes: dict = {}  # (program fingerprint, example id) -> its Outcome, for passes that read them

    async def run_all(self, ir: I.IR, examples: Sequence[Example], *, exclude_self: bool = False, runtime: Runtime | None = None) -> list[Outcome]:
        rt = runtime or self.make_runtime(ir)
        self.on_batch(len(examples))
        return await evaluate(
            rt, examples, self.metric, threshold=self.threshold, concurrency=self.concurrency, exclude_self=exclude_self, on_result=self.on_example
        )

    async def score(self, ir: I.IR, examples: Sequence[Example] | None = None, label: str = "") -> float:
        """Mean metric of `ir` on `examples` (default: the dev set)."""
        examples = self.devset if examples is None else examples
        fp = I.fingerprint(ir)
        key = (fp, tuple(e.id for e in examples))
        if key not in self._scores:
            outcomes = await self.run_all(ir, examples)
            self._outcomes.update({(fp, o.example.id): o for o in outcomes})
            self._scores[key] = mean_score(outcomes)
            if label:
                self.on_score(label, self._scores[key])
        return self._scores[key]

    async def outcomes(self, ir: I.IR, examples: Sequence[Example], label: str = "") -> list[Outcome]:
        """Each example's run, score and feedback, memoised per example: only the ones never run are run."""
        fp = I.fingerprint(ir)
        todo = [e for e in examples if (fp, e.id) not in self._outcomes]
        if todo:
            self._outcomes.update({(fp, o.example.id): o for o in await self.run_all(ir, todo)})
        got = [self._outcomes[(fp, e.id)] for e in examples]
        key = (fp, tuple(e.id for e in examples))
        if key not in self._scores:
            self._scores[key] = mean_score(got)
            if label:
                self.on_score(label, self._scores[key])
        return got


@dataclass(frozen=True)
class PassInputs:
    """Everything a pass may read besides the program it improves."""

    trainset: tuple[Example, ...]
    metric: I.MetricIR
    lab: Lab
    seed: int = 0
    source: str = ""  # the program's text (mipro grounds its instruction proposals in it)
    candidates: tuple[Candidate, ...] = ()  # every candidate recorded before this pass, the program as written first
    log: Callable[[str], None] = lambda msg: None
    on_record: Callable[[Candidate], None] = lambda cand: None  # the wall-clock timeline of the stats sidecar
    on_progress: Callable[[dict], None] = lambda info: None  # a search's state for the live panel (evolve's front)

    @property
    def devset(self) -> list[Example]:
        return self.lab.devset

    @property
    def concurrency(self) -> int:
        return self.lab.concurrency

    def rng(self, salt: str = "") -> random.Random:
        return random.Random(f"{self.seed}:{salt}")


@dataclass(frozen=True)
class PassResult:
    """What a pass gives back; the compile driver adds its candidates, notes and train scores to the report."""

    ir: I.IR
    candidates: tuple[Candidate, ...] = ()
    notes: tuple[str, ...] = ()
    train_scores: Mapping[str, float] = field(default_factory=dict)  # e.g. the teacher's pass rate on train
    exhausted: bool = False  # the budget ran out during the pass: the driver stops the chain


@dataclass
class Findings:
    """What one run of a pass has found so far (candidates, notes, train scores, whether the budget ran out)."""

    inputs: PassInputs
    candidates: list[Candidate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    train_scores: dict[str, float] = field(default_factory=dict)
    exhausted: bool = False

    def record(self, name: str, ir: I.IR, score: float | None, **detail: Any) -> Candidate:
        cand = Candidate(name, ir, score, detail)
        self.candidates.append(cand)
        self.inputs.on_record(cand)
        return cand

    def everything(self) -> list[Candidate]:
        """The candidates of earlier passes and of this one, in the order they were recorded."""
        return list(self.inputs.candidates) + self.candidates

    def best(self) -> Candidate | None:
        return best(self.everything())

    async def guard(self, work: Awaitable[T], what: str) -> T | None:
        """One step of a search; a spent budget ends the search gracefully (None), keeping what was found."""
        try:
            return await work
        except BudgetExceeded as e:
            self.exhausted = True
            self.notes.append(f"budget exhausted during {what}: {e}")
            self.inputs.log(f"budget exhausted during {what}; keeping the best program so far")
            return None

    def result(self, ir: I.IR) -> PassResult:
        return PassResult(ir, tuple(self.candidates), tuple(self.notes), dict(self.train_scores), self.exhausted)
