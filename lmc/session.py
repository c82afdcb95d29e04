"""One way to assemble a run: settings resolved, the LM chosen, one LM client, vetted runtimes.

`lmc run`, `lmc eval`, `lmc compile` and the Python API all open what they run here:

    session = open_runtime(target, RunOptions(lm=..., max_calls=...))
    result = await run_example(session.runtime, inputs)

`prepare(options)` resolves the settings alone (commands that check their outputs
before loading anything call it first); `Setup.open(target)` then picks the LM,
builds the client and the target's runtime, and refuses (before any LM call) an
import the run may not make, an artifact's LM alias re-routing the key, an LM the
chosen --transport cannot serve, or a --max-cost over an LM with no known price.  Further runtimes share the session's
client, and so its cache, budget and accounting: `runtime_for` (the candidate
programs of a compile, a teacher LM) and `open` (an eval's baseline).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field, fields
from typing import Any, Iterable
from urllib.parse import urlparse

from . import ir as I
from .budget import parse_error_limit, settings_price
from .config import Config, Settings, choose_lm, load_config, resolve
from .errors import ConfigError, LMUnreachableError, Warnings
from .lm import LMClient, LMSpec
from .pyrefs import PythonPolicy, parse_allow, policy_for
from .runtime import Runtime
from .targets import Target
from .telemetry import open_telemetry


@dataclass(frozen=True)
class RunOptions:
    """What a command (or an API call) asks for; None leaves a setting to the environment, lmc.yaml or its default."""

    lm: str | None = None
    api_base: str | None = None
    cache_dir: str | os.PathLike | None = None
    use_cache: bool = True
    concurrency: int | None = None
    rpm: float | None = None
    max_steps: int | None = None
    example_timeout: float | None = None
    max_calls: int | None = None
    max_cost: float | None = None
    price_per_mtok_in: float | None = None
    price_per_mtok_out: float | None = None
    max_lm_errors: str | None = None
    truncate_inputs: bool | None = None
    transport: str | None = None  # direct or litellm; None: each LM by its protocol (lmc/lm/spec.py)
    max_backtracks: int | None = None
    trace_prompts: bool = False
    allow_python: tuple[str, ...] = ()
    # OpenTelemetry (lmc/telemetry.py): None exports spans when OTEL_EXPORTER_OTLP_ENDPOINT is set,
    # True always (OTLP/HTTP), False never; a SpanExporter object receives them instead.
    otel: Any = None
    otel_content: bool = False  # prompts and completions on the LM spans (they may hold personal data)
    # Failed LM calls tolerated when neither flag, environment nor lmc.yaml says: a batch run
    # fails each example (None), compile and eval stop at a share (budget.DEFAULT_LM_ERRORS).
    default_max_lm_errors: str | None = None
    backend: Any = None  # an LM backend object instead of HTTP (tests)

    @classmethod
    def from_flags(
        cls,
        *,
        jobs: int | None = None,
        concurrency: int | None = None,
        no_cache: bool = False,
        allow_python: Iterable[str] | str | None = (),
        **settings: Any,
    ) -> "RunOptions":
        """The options as the commands' flags (and the API's keywords, named after them) give them: `jobs` is the
        concurrency (`concurrency`, its old spelling, still works), `no_cache` turns the cache off, `allow_python`
        is one module or several; every other setting by its own name."""
        allow = (allow_python,) if isinstance(allow_python, str) else tuple(allow_python or ())
        return cls(concurrency=jobs or concurrency, use_cache=not no_cache, allow_python=allow, **settings)

    def flags(self) -> dict:
        """The settings as `config.resolve` takes them from the command line."""
        return {
            "lm": self.lm,
            "api_base": self.api_base,
            "cache_dir": os.fspath(self.cache_dir) if self.cache_dir else None,
            "concurrency": self.concurrency,
            "rpm": self.rpm,
            "max_steps": self.max_steps,
            "example_timeout": self.example_timeout,
            "max_calls": self.max_calls,
            "max_cost": self.max_cost,
            "price_per_mtok_in": self.price_per_mtok_in,
            "price_per_mtok_out": self.price_per_mtok_out,
            "max_lm_errors": self.max_lm_errors,
            "truncate_inputs": self.truncate_inputs,
            "transport": self.transport,
        }


# The keywords `RunOptions.from_flags` takes: what a command picks out of its parameters (cli_common.run_options).
RUN_FLAGS = frozenset({f.name for f in fields(RunOptions)} - {"use_cache"} | {"jobs", "no_cache"})


@dataclass(frozen=True)
class Setup:
    """The options with every setting resolved (`settings.cache_dir`, `settings.concurrency`, ...)."""

    options: RunOptions
    config: Config
    settings: Settings
    allowed: tuple[str, ...]  # python modules the run may import (lmc.yaml's list, then --allow-python)

    @property
    def cache_dir(self) -> str | None:
        return self.settings.cache_dir if self.options.use_cache else None

    def client(self) -> LMClient:
        st = self.settings
        limit = st.max_lm_errors or self.options.default_max_lm_errors
        client = LMClient(
            cache_dir=self.cache_dir,
            use_cache=self.options.use_cache,
            concurrency=st.concurrency,
            rpm=st.rpm,
            backend=self.options.backend,
            max_calls=st.max_calls,
            max_cost=st.max_cost,
            price=settings_price(st),
            max_lm_errors=parse_error_limit(limit) if limit is not None else None,
            transport=st.transport,
            constraints=st.constraints,
        )
        client.telemetry = open_telemetry(self.options.otel, content=self.options.otel_content)
        return client

    def open(self, target: Target) -> "Session":
        """Choose the LM, build the client and the target's runtime, vetted; nothing is sent yet."""
        return Session(self, target, self.client(), choose_lm(self.options.lm, self.settings.api_base, self.config, target))


def prepare(options: RunOptions = RunOptions(), config: Config | None = None) -> Setup:
    """Resolve every setting (flag > environment > lmc.yaml > default); a bad value names its source."""
    config = config if config is not None else load_config()
    if options.max_backtracks is not None and options.max_backtracks < 0:
        raise ConfigError(f"--max-backtracks must be 0 or more, got {options.max_backtracks}")
    allow = [options.allow_python] if isinstance(options.allow_python, str) else options.allow_python
    allowed = tuple(config.allow_python) + parse_allow(allow or (), "--allow-python")
    return Setup(options, config, resolve(options.flags(), config), allowed)


def open_runtime(target: Target, options: RunOptions = RunOptions(), *, config: Config | None = None) -> "Session":
    """Everything a run of `target` needs, assembled and vetted (see the module docstring)."""
    return prepare(options, config).open(target)


@dataclass
class Session:
    """One command's runs: its setup, its one LM client, and the runtime of its target."""

    setup: Setup
    target: Target
    client: LMClient
    lm: LMSpec  # the LM of predictors that name none
    warnings: Warnings = field(default_factory=Warnings)  # shared by every runtime of the session
    runtime: Runtime = field(init=False)

    def __post_init__(self) -> None:
        rt = self._runtime(self.target, self.target.ir, self.lm, self.setup.options.trace_prompts)
        self.client.check_transports(rt.lms())  # an LM the chosen --transport cannot serve is refused now
        self.client.check_prices(rt.lms())  # a --max-cost over an LM of unknown price is refused now
        self.runtime = rt.vet()

    @property
    def config(self) -> Config:
        return self.setup.config

    @property
    def settings(self) -> Settings:
        return self.setup.settings

    @property
    def python(self) -> PythonPolicy:
        return self.runtime.python

    def runtime_for(self, ir: I.IR, lm: LMSpec | None = None) -> Runtime:
        """A runtime for another IR of the same target (a candidate program, a proposer), on the same client."""
        return self._runtime(self.target, ir, lm or self.lm)

    def open(self, target: Target) -> Runtime:
        """The vetted runtime of another target (an eval's baseline), with its own LM, on the same client."""
        rt = self._runtime(target, target.ir, choose_lm(self.setup.options.lm, self.settings.api_base, self.config, target))
        self.client.check_transports(rt.lms())
        self.client.check_prices(rt.lms())
        return rt.vet()

    def _runtime(self, target: Target, ir: I.IR, lm: LMSpec, trace_prompts: bool = False) -> Runtime:
        st, options = self.settings, self.setup.options
        rt = Runtime(
            ir,
            self.client,
            lm=lm,
            api_base=st.api_base,
            trace_prompts=trace_prompts,
            extra_lms=self.config.alias_specs(),
            from_artifact=target.kind == "artifact",
            max_steps=st.max_steps,
            example_timeout=st.example_timeout,
            python=policy_for(target, self.setup.allowed),
            truncate_inputs=st.truncate_inputs,
            warnings=self.warnings,
        )
        if options.max_backtracks is not None:
            rt.max_backtracks = options.max_backtracks
        return rt

    def input_files(self, label: str = "program") -> list[tuple[str, str]]:
        """The files the session's run reads: the target, its corpora, lmc.yaml."""
        return self.target.input_files(label, self.config.path)

    def preflight(self, extra: Iterable[LMSpec] = (), runtimes: Iterable[Runtime] = ()) -> None:
        """Fail fast (LMUnreachableError) when a configured api_base refuses connections.

        Retries with backoff are right for a flaky server but make a mistyped URL cost half
        a minute; one TCP connect answers that in milliseconds and sends no request.
        """
        seen = set()
        specs: list[LMSpec] = []
        for rt in [self.runtime, *runtimes]:
            specs += [rt.default_lm()] + rt.lms()
        for spec in specs + list(extra):
            if not spec.api_base or spec.api_base in seen or spec.is_local:
                continue
            seen.add(spec.api_base)
            url = urlparse(spec.api_base)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ConfigError(f"bad --api-base '{spec.api_base}'; expected a URL such as http://localhost:8000/v1")
            port = url.port or (443 if url.scheme == "https" else 80)
            try:
                with socket.create_connection((url.hostname, port), timeout=5):
                    pass
            except OSError as e:
                reason = e.strerror or type(e).__name__
                raise LMUnreachableError(f"cannot reach {spec.api_base} for {spec.model}: {reason}", model=spec.model) from None

    async def aclose(self) -> None:
        await self.client.aclose()
