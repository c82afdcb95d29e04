"""The lock file pins every package with hashes; no known-compromised release is locked, allowed or installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability import supply_chain as sc

LOCK = sc.ROOT / "requirements.lock"
needs_lock = pytest.mark.skipif(not LOCK.exists(), reason="requirements.lock is not written yet (make lock)")


def test_known_bad_list_holds_the_litellm_attack():
    bad = sc.known_bad()
    assert ("litellm", "1.82.7") in bad and ("litellm", "1.82.8") in bad


@needs_lock
def test_every_lock_entry_is_an_exact_pin_with_hashes():
    pins, problems = sc.read_lock(LOCK)
    assert problems == []
    assert len(pins) >= 20
    assert all(p.hashes >= 1 for p in pins), [p for p in pins if not p.hashes]
    names = {p.name for p in pins}
    for direct in ("lark", "typer", "litellm", "pyyaml", "tenacity"):
        assert direct in names, f"{direct} is a dependency but not locked"


@needs_lock
def test_lock_has_no_known_bad_release_and_agrees_with_pyproject():
    import tomllib

    from packaging.requirements import Requirement

    assert sc.check_lock(LOCK, sc.known_bad()) == []
    pins = {p.name: p.version for p in sc.read_lock(LOCK)[0]}
    deps = tomllib.loads((sc.ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for text in deps:
        req = Requirement(text)
        name = sc.normalise(req.name)
        assert name in pins, f"{name} is in pyproject.toml but not in the lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"lock pins {name}=={pins[name]}, outside '{text}'"


def test_pyproject_excludes_every_known_bad_release():
    assert sc.check_pyproject(sc.ROOT / "pyproject.toml", sc.known_bad()) == []


def test_no_known_bad_release_is_installed():
    assert sc.check_installed(sc.known_bad()) == []


def test_makefile_installs_from_the_lock_with_hashes_required():
    make = (sc.ROOT / "Makefile").read_text()
    assert "--require-hashes -r requirements.lock" in make


# The checker itself must be able to fail.


def test_checker_flags_a_bad_pin_a_missing_hash_and_a_loose_line(tmp_path: Path):
    lock = tmp_path / "requirements.lock"
    lock.write_text(
        "litellm==1.82.8 \\\n    --hash=sha256:" + "a" * 64 + "\npyyaml==6.0.3\nrequests>=2\n--index-url https://example.invalid/simple\n",
        encoding="utf-8",
    )
    problems = sc.check_lock(lock, sc.known_bad())
    text = "\n".join(problems)
    assert "litellm==1.82.8 is known bad" in text
    assert "pyyaml==6.0.3 has no --hash" in text
    assert "not an exact pin: requests>=2" in text
    assert "option line" in text


def test_checker_flags_a_pyproject_that_allows_the_bad_litellm(tmp_path: Path):
    pp = tmp_path / "pyproject.toml"
    pp.write_text('[project]\nname = "x"\nversion = "0"\ndependencies = ["litellm>=1.80,!=1.82.7"]\n')
    problems = sc.check_pyproject(pp, sc.known_bad())
    assert len(problems) == 1 and "litellm==1.82.8" in problems[0]


def test_module_entry_point_passes_on_this_checkout():
    assert sc.main() == 0
