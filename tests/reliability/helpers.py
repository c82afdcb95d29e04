"""Shared pieces of the reliability tests: a deterministic responder, data, fast-retry clients and a CLI launcher."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SENTIMENT = ROOT / "programs" / "sentiment.lmp"
PY = sys.executable
PYCACHE = os.path.join(os.environ.get("TMPDIR", "/tmp"), "lmc-reliability-pycache")

# The CLI offers no knob for the LM client's timeout or retry wait (finding F1 in the report):
# tests shorten them through these environment variables, read by `patch_client_defaults`.
FAST_ENV = {"LMC_TEST_LM_TIMEOUT": "1.0", "LMC_TEST_RETRY_WAIT": "0.01", "LMC_TEST_RETRY_MAX_WAIT": "0.05", "LMC_TEST_MAX_RETRIES": "8"}

_NUMBER = re.compile(r"review number (\d+)")


def sentiment_responder(request: dict) -> str:
    """The answer depends on the input (odd numbers are negative), so a mixed-up result would show."""
    text = json.dumps(request.get("messages") or request.get("prompt"))
    found = _NUMBER.findall(text)
    if not found:
        return "<sentiment>positive</sentiment>"
    n = int(found[-1])
    return f"<sentiment>{'negative' if n % 2 else 'positive'}</sentiment>"


def expected_sentiment(i: int) -> str:
    return "negative" if i % 2 else "positive"


def reviews(n: int, start: int = 0) -> list[dict]:
    return [{"id": f"r{i:05d}", "review": f"review number {i}"} for i in range(start, start + n)]


def labeled_reviews(n: int, start: int = 0) -> list[dict]:
    return [{**r, "sentiment": expected_sentiment(start + k)} for k, r in enumerate(reviews(n, start))]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def patch_client_defaults() -> None:
    """Make every LMClient this process builds use the LMC_TEST_* timeout/retry settings, if set."""
    from lmc import lm

    opts = {}
    for env, key, cast in (
        ("LMC_TEST_LM_TIMEOUT", "timeout", float),
        ("LMC_TEST_RETRY_WAIT", "retry_wait", float),
        ("LMC_TEST_RETRY_MAX_WAIT", "retry_max_wait", float),
        ("LMC_TEST_MAX_RETRIES", "max_retries", int),
    ):
        if os.environ.get(env):
            opts[key] = cast(os.environ[env])
    if not opts or getattr(lm.LMClient.__init__, "_patched", False):
        return
    original = lm.LMClient.__init__

    def init(self, **kw):
        for k, v in opts.items():
            kw.setdefault(k, v)
        original(self, **kw)

    init._patched = True
    lm.LMClient.__init__ = init


def lmc_cmd(*args: str) -> list[str]:
    """argv that runs the real CLI in a fresh interpreter, with the test client defaults applied."""
    return [PY, "-m", "tests.reliability.launch", *map(str, args)]


def run_data_cmd(program, url: str, jobs: int, data: str = "in.jsonl", out: str = "out.jsonl") -> list[str]:
    """argv of `lmc run PROGRAM --data ... --out ...` against the loopback server at `url`, cache in ./cache."""
    return lmc_cmd("run", program, "--lm", "openai/test", "--api-base", url, "--data", data, "--out", out, "--cache-dir", "cache", "-j", str(jobs))


def run_lmc(*args: str, cwd: Path, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    full = subprocess_env(**(env or {}))
    return subprocess.run(lmc_cmd(*args), cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout)


def subprocess_env(**extra: str) -> dict:
    # Bytecode cached outside the checkout: compiling every module from source at each start makes
    # a killed-and-restarted CLI spend most of its life importing.
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": str(ROOT), **FAST_ENV, "PYTHONPYCACHEPREFIX": PYCACHE, **extra}
    env.pop("LMC_LM", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env
