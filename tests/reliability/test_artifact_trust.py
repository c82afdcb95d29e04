"""An artifact from elsewhere cannot choose where the user's API key goes, nor which variable is sent as the key."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.lmserver import LoopbackServer
from tests.reliability.helpers import SENTIMENT, sentiment_responder

SECRET = "sk-test-SECRET"


def _artifact(path, lm: dict | None, alias: dict | None = None):
    """A sentiment artifact whose `lm` entry (and optionally an IR LM alias) says what a hostile author wants."""
    from lmc import artifact
    from lmc import ir as I
    from lmc.targets import load_target

    t = load_target(SENTIMENT)
    data = artifact.to_json(artifact.Artifact(ir=t.ir, program=t.program_json(), compile={}, lm=lm))
    if alias is not None:
        data["ir"]["lms"] = [
            {"$node": "LMAlias", "name": "evil", "model": "openai/test", "settings": {"$node": "pairs", "items": [[k, v] for k, v in alias.items()]}}
        ]
        data["ir_sha256"] = hashlib.sha256(I.dumps(data["ir"]).encode("utf-8")).hexdigest()
    path.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    return path


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-SECRET")
    monkeypatch.delenv("LMC_LM", raising=False)


def test_a_remote_api_base_in_an_artifact_needs_the_users_consent(cli, env, tmp_path):
    art = _artifact(
        tmp_path / "a.lmc.json", {"model": "openai/gpt-4o-mini", "api_base": "http://203.0.113.9:8000/v1", "api_key_env": None, "settings": {}}
    )
    code, out, err = cli("run", art, "-i", "review=hello", "--no-cache")
    assert code == 2
    assert "pass --api-base http://203.0.113.9:8000/v1" in err and err.count("\n") == 1
    assert SECRET not in out + err


def test_a_loopback_api_base_in_an_artifact_is_used(cli, env, tmp_path):
    with LoopbackServer(sentiment_responder) as srv:
        art = _artifact(tmp_path / "a.lmc.json", {"model": "openai/test", "api_base": srv.url, "api_key_env": None, "settings": {}})
        code, out, err = cli("run", art, "-i", "review=review number 4", "--no-cache")
        assert code == 0, err
        assert json.loads(out) == {"sentiment": "positive"}
        assert srv.requests == 2  # the endpoint's JSON-schema probe (no cache to remember it), then the call


def test_the_users_api_base_wins_over_the_artifacts(cli, env, tmp_path):
    with LoopbackServer(sentiment_responder) as srv:
        art = _artifact(tmp_path / "a.lmc.json", {"model": "openai/test", "api_base": "http://203.0.113.9/v1", "api_key_env": None, "settings": {}})
        code, out, err = cli("run", art, "--api-base", srv.url, "-i", "review=review number 4", "--no-cache")
        assert code == 0, err
        assert srv.requests == 2  # the probe and the call, both to the user's server


@pytest.mark.parametrize("where", ["lm", "alias"])
def test_an_artifact_cannot_name_a_non_api_key_variable(cli, env, tmp_path, where):
    if where == "lm":
        art = _artifact(
            tmp_path / "a.lmc.json",
            {"model": "openai/test", "api_base": "http://127.0.0.1:9/v1", "api_key_env": "AWS_SECRET_ACCESS_KEY", "settings": {}},
        )
    else:
        art = _artifact(tmp_path / "a.lmc.json", None, alias={"api_key_env": "AWS_SECRET_ACCESS_KEY"})
    code, out, err = cli("inspect", art)
    assert code == 2
    assert "AWS_SECRET_ACCESS_KEY" in err and "*_API_KEY" in err
    assert "aws-SECRET" not in out + err


def test_an_alias_in_an_artifact_cannot_pick_a_remote_server(env, tmp_path):
    from lmc.errors import ConfigError
    from lmc.targets import load_target
    from lmc.session import RunOptions, open_runtime

    art = _artifact(tmp_path / "a.lmc.json", None, alias={"api_base": "http://203.0.113.9/v1"})
    target = load_target(art)
    from dataclasses import replace

    # Point the predictor at the alias, as `module m = Predict(S, lm="evil")` would have.
    p = target.ir.predictors[0]
    ir = (
        target.ir.with_settings(p.id, {"lm": "evil"})
        if hasattr(target.ir, "with_settings")
        else replace(target.ir, predictors=(replace(p, settings=tuple(sorted({**dict(p.settings), "lm": "evil"}.items()))),))
    )
    # Refused when the runtime is made, before any LM call.
    with pytest.raises(ConfigError, match="may not choose a remote server"):
        open_runtime(replace(target, ir=ir), RunOptions(use_cache=False))
