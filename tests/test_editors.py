"""The editor support under editors/: the VS Code extension's manifest points at files that exist and agree with each other."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VSCODE = ROOT / "editors" / "vscode"


def test_the_extension_manifest_is_complete_and_consistent():
    pkg = json.loads((VSCODE / "package.json").read_text())
    assert (VSCODE / pkg["main"]).is_file()
    (lang,) = pkg["contributes"]["languages"]
    (grammar,) = pkg["contributes"]["grammars"]
    assert lang["id"] == grammar["language"] == "lmp" and lang["extensions"] == [".lmp"]
    config = json.loads((VSCODE / lang["configuration"]).read_text())
    assert config["comments"]["lineComment"] == "#"
    assert ["{", "}"] in config["brackets"] and ["(", ")"] in config["brackets"]
    tm = json.loads((VSCODE / grammar["path"]).read_text())
    assert tm["scopeName"] == grammar["scopeName"] == "source.lmp"
    assert pkg["contributes"]["configuration"]["properties"]["lmc.command"]["default"] == ["lmc", "lsp"]
    assert "vscode-languageclient" in pkg["dependencies"]
    for f in ("README.md", "LICENSE", "package-lock.json"):
        assert (VSCODE / f).is_file(), f


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed; the extension's script is not syntax-checked")
def test_the_extension_script_parses():
    subprocess.run(["node", "--check", str(VSCODE / "extension.js")], check=True)


def test_the_readme_says_how_to_set_up_each_editor():
    readme = (ROOT / "README.md").read_text()
    for needle in ("code --install-extension", "lmc lsp", "vim.lsp", "languages.toml", "docs/language.md"):
        assert needle in readme, needle
