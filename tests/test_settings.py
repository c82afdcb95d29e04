"""One configuration: every command resolves each setting as flag > environment > lmc.yaml > default.

Each case runs the real command in-process against the loopback server and records
what the LM client and the runtimes were built with, so "compile ignores lmc.yaml's
cache_dir" (the bug this guards) cannot come back for any command or key.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.lmserver import LoopbackServer
from tests.test_programs_run import typed_responder

ROOT = Path(__file__).resolve().parent.parent
SENTIMENT = ROOT / "programs" / "sentiment.lmp"

# key -> two (value as a flag, the environment or lmc.yaml give it, what the command must end up with)
VALUES = {
    "cache_dir": (("c1", "c1"), ("c2", "c2")),
    "concurrency": (("3", 3), ("5", 5)),
    "rpm": (("6000", 6000.0), ("7000", 7000.0)),
    "max_steps": (("4321", 4321), ("9876", 9876)),
    "example_timeout": (("30", 30.0), ("40", 40.0)),
    "lm": (("openai/from-a", "openai/from-a"), ("openai/from-b", "openai/from-b")),
}
FLAGS = {
    "cache_dir": "--cache-dir",
    "concurrency": "-j",
    "rpm": "--rpm",
    "max_steps": "--max-steps",
    "example_timeout": "--example-timeout",
    "lm": "--lm",
}
ENV = {
    "cache_dir": "LMC_CACHE_DIR",
    "concurrency": "LMC_CONCURRENCY",
    "rpm": "LMC_RPM",
    "max_steps": "LMC_MAX_STEPS",
    "example_timeout": "LMC_EXAMPLE_TIMEOUT",
    "lm": "LMC_LM",
    "api_base": "LMC_API_BASE",
}
DEFAULTS = {"cache_dir": ".lmc/cache", "concurrency": 8, "rpm": None, "max_steps": 10_000_000, "example_timeout": None, "lm": "openai/test"}
COMMANDS = ("run", "compile", "eval")


@pytest.fixture(scope="module")
def server():
    seen = []

    def responder(request):
        seen.append(request.get("model"))
        return typed_responder(request)

    with LoopbackServer(responder) as srv:
        srv.models = seen
        yield srv


@pytest.fixture
def ws(tmp_path, monkeypatch, server):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    for name in ENV.values():
        monkeypatch.delenv(name, raising=False)
    shutil.copy(SENTIMENT, tmp_path / "s.lmp")
    rows = [{"id": f"r{i}", "review": f"review {i}", "sentiment": "positive"} for i in range(4)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    server.models.clear()
    return tmp_path


@pytest.fixture
def recorded(monkeypatch):
    """What every LMClient and Runtime of the command was built with."""
    from lmc import lm, runtime as rt_module

    got = {"clients": [], "runtimes": []}
    init_client = lm.LMClient.__init__
    init_rt = rt_module.Runtime.__init__

    def client(self, *a, **kw):
        got["clients"].append(kw)
        init_client(self, *a, **kw)

    def runtime(self, *a, **kw):
        init_rt(self, *a, **kw)
        got["runtimes"].append(self)

    monkeypatch.setattr(lm.LMClient, "__init__", client)
    monkeypatch.setattr(rt_module.Runtime, "__init__", runtime)
    return got


def command(name: str, server, *extra: str) -> list[str]:
    base = {
        "run": ["run", "s.lmp", "--data", "d.jsonl", "--out", "o.jsonl"],
        "compile": ["compile", "s.lmp", "--train", "d.jsonl", "--dev", "d.jsonl", "-o", "a.lmc.json", "--optimizer", "labeled"],
        "eval": ["eval", "s.lmp", "--data", "d.jsonl"],
    }[name]
    return base + ["--api-base", server.url, *extra]


def run_cli(args, capsys) -> str:
    from lmc.cli import main

    code = main(args)
    err = capsys.readouterr().err
    assert code == 0, err
    return err


def effective(key: str, got: dict, server, ws: Path):
    client = got["clients"][-1]
    rts = got["runtimes"]
    assert rts, "no runtime was built"
    if key == "cache_dir":
        assert (ws / client["cache_dir"]).is_dir() and any((ws / client["cache_dir"]).glob("*/*.json"))
        return client["cache_dir"]
    if key == "concurrency":
        return client["concurrency"]
    if key == "rpm":
        return client["rpm"]
    if key == "lm":
        assert set(server.models) == {rts[-1].default_lm().model.split("/", 1)[1]}
        return rts[-1].default_lm().model
    values = {getattr(rt, key) for rt in rts}
    assert len(values) == 1, values
    return values.pop()


@pytest.mark.parametrize("key", list(VALUES))
@pytest.mark.parametrize("cmd", COMMANDS)
@pytest.mark.parametrize("source", ["flag", "env", "yaml", "default"])
def test_each_command_resolves_each_setting_from_each_source(ws, server, recorded, capsys, monkeypatch, cmd, key, source):
    (raw, expected), _ = VALUES[key]
    extra = [] if key == "lm" else ["--lm", "openai/test"]
    if source == "flag":
        extra += [FLAGS[key], raw]
    elif source == "env":
        monkeypatch.setenv(ENV[key], raw)
    elif source == "yaml":
        (ws / "lmc.yaml").write_text(f"{key}: {raw}\n")
    else:
        expected = DEFAULTS[key]
        if key == "lm":
            extra += ["--lm", "openai/test"]
    run_cli(command(cmd, server, *extra), capsys)
    assert effective(key, recorded, server, ws) == expected


@pytest.mark.parametrize("key", list(VALUES))
@pytest.mark.parametrize("cmd", COMMANDS)
def test_the_flag_beats_the_environment_which_beats_lmc_yaml(ws, server, recorded, capsys, monkeypatch, cmd, key):
    (flag, from_flag), (env, from_env) = VALUES[key]
    (ws / "lmc.yaml").write_text(f"{key}: {flag}\n")  # the lowest of the three
    monkeypatch.setenv(ENV[key], env)
    extra = [] if key == "lm" else ["--lm", "openai/test"]
    run_cli(command(cmd, server, *extra), capsys)
    assert effective(key, recorded, server, ws) == from_env
    for leftover in ("o.jsonl", "c1", "c2"):  # a rerun must do the work again, not resume
        shutil.rmtree(ws / leftover, ignore_errors=True) if (ws / leftover).is_dir() else (ws / leftover).unlink(True)
    server.models.clear()
    recorded["clients"].clear()
    recorded["runtimes"].clear()
    run_cli(command(cmd, server, *extra, FLAGS[key], flag), capsys)
    assert effective(key, recorded, server, ws) == from_flag


@pytest.mark.parametrize("cmd", COMMANDS)
@pytest.mark.parametrize("source", ["env", "yaml"])
def test_api_base_from_the_environment_or_lmc_yaml(ws, server, recorded, capsys, monkeypatch, cmd, source):
    if source == "env":
        monkeypatch.setenv("LMC_API_BASE", server.url)
    else:
        (ws / "lmc.yaml").write_text(f"api_base: {server.url}\n")
    args = [a for a in command(cmd, server, "--lm", "openai/test") if a not in ("--api-base", server.url)]
    server.reset_counters()
    run_cli(args, capsys)
    assert server.requests > 0
    assert {rt.api_base for rt in recorded["runtimes"]} == {server.url}


@pytest.mark.parametrize(
    "content, env, fragment",
    [
        ("concurrency: 0\n", {}, "lmc.yaml: 'concurrency' must be a positive integer"),
        ("max_steps: lots\n", {}, "lmc.yaml: 'max_steps': 'lots' is not a valid max steps; expected a whole number"),
        ("example_timeout: -1\n", {}, "'example_timeout': -1 is not a valid example timeout; expected a number above 0"),
        ("cache-dir: x\n", {}, "lmc.yaml: unknown setting 'cache-dir'; did you mean 'cache_dir'?"),
        ("", {"LMC_CONCURRENCY": "many"}, "$LMC_CONCURRENCY: 'many' is not a valid concurrency"),
        ("", {"LMC_RPM": "0"}, "$LMC_RPM: 0 is not a valid rpm; expected a number above 0"),
    ],
)
@pytest.mark.parametrize("cmd", COMMANDS)
def test_bad_settings_name_their_source_before_any_lm_call(ws, server, capsys, monkeypatch, cmd, content, env, fragment):
    from lmc.cli import main

    (ws / "lmc.yaml").write_text(content)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    server.reset_counters()
    code = main(command(cmd, server, "--lm", "openai/test"))
    err = capsys.readouterr().err
    assert code == 2, err
    assert fragment in err and len(err.strip().splitlines()) == 1, err
    assert server.requests == 0
