"""Python a program reaches (`tool`/`metric` = python("pkg.mod:fn")): listing it, the allow rules, importing it.

A `python(...)` reference is the only way an lmc program runs Python of its own.
Loading a program or an artifact never imports anything; running one imports a
reference only when the user allowed it:

- a `.lmp` source may import modules that live in its own directory (the user's
  project, next to the program); they are imported from exactly that file, under a
  private package name, so neither `sys.path` nor a same-named installed module is
  involved;
- an artifact may come from someone else (a pull request), and so may the directory
  it sits in: it imports nothing unless the user lists the module with
  `--allow-python MODULE` (repeatable; `pkg` also allows `pkg.sub`, `pkg.mod:fn` only
  that function) or `allow_python: [...]` in lmc.yaml.  An allowed module is looked
  up in the directory of the source program the artifact was compiled from, then
  among the installed packages;
- anything else, the standard library included (`os:system`), needs the same
  explicit listing.  The working directory is never put on `sys.path`.

Every refusal happens before the first LM call (`check`), names the reference and
says how to allow it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from . import ir as I
from .errors import ConfigError, LmcError


class PythonNotAllowed(LmcError):
    """A python(...) reference the user did not allow; raised before anything is imported or any LM call."""


@dataclass(frozen=True)
class PyRef:
    """One python(...) reference of a program: what uses it, and what it names."""

    kind: str  # tool | metric
    name: str
    ref: str

    @property
    def module(self) -> str:
        return self.ref.partition(":")[0]

    @property
    def attr(self) -> str:
        return self.ref.partition(":")[2]


def python_refs(ir: I.IR) -> list[PyRef]:
    """Every Python reference the IR can import at run time, in declaration order (tools, then metrics)."""
    out = [PyRef("tool", t.name, t.ref or "") for t in ir.tools if t.kind == "python"]
    out += [PyRef("metric", m.name, m.ref or "") for m in ir.metrics if m.kind == "python"]
    return out


def well_formed(ref: str) -> bool:
    """`pkg.mod:fn`: dotted identifiers, a colon, one identifier (what the checker accepts from source)."""
    module, colon, attr = ref.partition(":")
    return bool(colon) and attr.isidentifier() and all(part.isidentifier() for part in module.split("."))


def parse_allow(entries: Iterable[Any], where: str) -> tuple[str, ...]:
    """Validate --allow-python / allow_python entries: `pkg`, `pkg.mod` or `pkg.mod:fn`."""
    out = []
    for entry in entries:
        text = entry.strip() if isinstance(entry, str) else entry
        module, colon, attr = text.partition(":") if isinstance(text, str) else ("", "", "")
        if not isinstance(text, str) or not all(p.isidentifier() for p in module.split(".")) or (colon and not attr.isidentifier()):
            raise ConfigError(f"{where}: {entry!r} is not a module name; expected e.g. mytools, pkg.mod or pkg.mod:function")
        out.append(text)
    return tuple(dict.fromkeys(out))


# ---------------------------------------------------------------- the policy


@dataclass(frozen=True)
class PythonPolicy:
    """What a run may import: its program directory (a .lmp's own), and the modules the user listed."""

    path: str = "<program>"  # the target, for messages
    kind: str = "program"  # program | artifact
    base_dir: str | None = None  # where the program's own modules live (searched first)
    base_allowed: bool = False  # modules found in base_dir are allowed without listing (a .lmp's directory)
    allowed: tuple[str, ...] = ()

    def listed(self, ref: PyRef) -> str | None:
        """The --allow-python entry that allows `ref`, if any."""
        for entry in self.allowed:
            if ":" in entry:
                if entry == ref.ref:
                    return entry
            elif ref.module == entry or ref.module.startswith(entry + "."):
                return entry
        return None

    def locate(self, module: str) -> tuple[str, str | None]:
        """Where `module` would be imported from, found without running any of it.

        ('program', file) in the program's directory, ('stdlib', file or None) for the standard
        library, ('installed', file) for other packages, or ('missing', None).
        """
        top = module.split(".")[0]
        if self.base_dir:
            spec = importlib.machinery.PathFinder.find_spec(top, [self.base_dir])
            if spec is not None:
                origin = spec.origin if spec.has_location else next(iter(spec.submodule_search_locations or []), None)
                return "program", origin
        stdlib = top in sys.stdlib_module_names
        if top in sys.builtin_module_names or importlib.machinery.FrozenImporter.find_spec(top) is not None:
            return "stdlib", None
        # The same search `import` makes (sys.path as the process has it; lmc adds nothing to it).
        spec = importlib.machinery.PathFinder.find_spec(top, sys.path)
        if spec is not None:
            return "stdlib" if stdlib else "installed", spec.origin if spec.has_location else None
        return "missing", None

    def decide(self, ref: PyRef) -> tuple[bool, str]:
        """(allowed, why) for one reference."""
        if not well_formed(ref.ref):
            return False, "not a reference of the form 'package.module:function'"
        entry = self.listed(ref)
        if entry is not None:
            return True, f"allowed by --allow-python {entry}"
        where, _ = self.locate(ref.module)
        if where == "program" and self.base_allowed:
            return True, "in the program's directory"
        if self.kind == "artifact":
            return False, "an artifact imports only modules you allow"
        return False, "not in the program's directory"

    def refusal(self, ref: PyRef, why: str) -> PythonNotAllowed:
        what = f"{ref.kind} '{ref.name}'"
        if not well_formed(ref.ref):
            return PythonNotAllowed(f"{self.path}: {what} names {ref.ref[:80]!r}, {why}")
        top = ref.module.split(".")[0]
        how = f"pass --allow-python {top} (or list it under allow_python in lmc.yaml)"
        if self.kind == "artifact":
            return PythonNotAllowed(
                f"{self.path}: the artifact's {what} would import '{ref.ref}' and {why}", hint=f"review it with `lmc inspect {self.path}`, then {how}"
            )
        return PythonNotAllowed(f"{self.path}: {what} imports '{ref.ref}', which is {why}", hint=f"if you trust it, {how}")


def policy_for(target: Any, allowed: Iterable[str] = ()) -> PythonPolicy:
    """The policy of a loaded Target: a .lmp allows its directory; an artifact only what is listed."""
    allowed = tuple(allowed)
    if target.kind == "program":
        base = str(Path(target.path).resolve().parent)
        return PythonPolicy(str(target.path), "program", base, True, allowed)
    return PythonPolicy(str(target.path), "artifact", _recorded_dir(target), False, allowed)


def _recorded_dir(target: Any) -> str | None:
    """The directory of the source program an artifact names, if it is a relative path inside the working directory."""
    art = getattr(target, "artifact", None)
    recorded = art.program.get("path") if art is not None and isinstance(art.program, dict) else None
    if not isinstance(recorded, str) or not recorded or recorded.startswith(("/", "\\", "~")) or ":" in recorded:
        return None
    parts = Path(recorded).parts
    if ".." in parts:
        return None
    cwd = Path.cwd().resolve()
    base = (cwd / recorded).parent.resolve()
    if base != cwd and cwd not in base.parents:  # a symlink out of the project
        return None
    return str(base) if base.is_dir() else None


def check(ir: I.IR, policy: PythonPolicy | None) -> None:
    """Refuse (PythonNotAllowed) the first reference `policy` does not allow; nothing is imported."""
    policy = policy or PythonPolicy()
    refused = []
    for ref in python_refs(ir):
        ok, why = policy.decide(ref)
        if not ok:
            refused.append((ref, why))
    if refused:
        err = policy.refusal(*refused[0])
        if len(refused) > 1:
            more = ", ".join(f"'{r.ref}'" for r, _ in refused[1:4]) + (" ..." if len(refused) > 4 else "")
            err.hint = (err.hint + "; " if err.hint else "") + f"also refused: {more}"
        raise err
    for ref in python_refs(ir):
        where, _ = policy.locate(ref.module)
        if where == "missing":
            place = f"in {_show_dir(policy.base_dir)} or " if policy.base_dir else ""
            raise ConfigError(f"{policy.path}: {ref.kind} '{ref.name}': cannot find module '{ref.module}' ({place}among the installed packages)")


def describe(ir: I.IR, policy: PythonPolicy) -> list[dict]:
    """For `lmc inspect`/`diff`: each reference with where it would be imported from and whether it may be."""
    out = []
    for ref in python_refs(ir):
        ok, why = policy.decide(ref)
        where, origin = policy.locate(ref.module) if well_formed(ref.ref) else ("missing", None)
        out.append(
            {
                "kind": ref.kind,
                "name": ref.name,
                "ref": ref.ref,
                "module": ref.module,
                "function": ref.attr,
                "found": where,
                "file": _show_file(origin),
                "allowed": ok,
                "why": why,
            }
        )
    return out


def _show_dir(d: str | None) -> str:
    return _show_file(d) or "?"


def _show_file(path: str | None) -> str | None:
    if not path:
        return None
    try:
        rel = os.path.relpath(path)
        return rel if not rel.startswith("..") else path
    except ValueError:
        return path


# ---------------------------------------------------------------- importing


def import_ref(item: PyRef, policy: PythonPolicy | None) -> Callable:
    """The function `item` names, imported as `policy` allows (raises PythonNotAllowed or ConfigError)."""
    policy = policy or PythonPolicy()
    what = f"{item.kind} '{item.name}'"
    if not well_formed(item.ref or ""):
        raise ConfigError(f"{what}: bad reference '{item.ref}'; expected 'package.module:function'")
    ok, why = policy.decide(item)
    if not ok:
        raise policy.refusal(item, why)
    module, attr = item.module, item.attr
    try:
        where, _ = policy.locate(module)
        if where == "program":
            mod = _import_from_dir(module, policy.base_dir or ".")
        else:
            mod = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - any import failure of user code is a config error
        raise ConfigError(f"{what}: cannot import '{module}': {type(e).__name__}: {e}") from None
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise ConfigError(f"{what}: '{module}' has no function '{attr}'")
    return fn


def _import_from_dir(module: str, base_dir: str) -> types.ModuleType:
    """Import `module` from files under `base_dir` only, as a submodule of a private package for that directory.

    The private package's __path__ is exactly [base_dir]: `tools` is `<dir>/tools.py` (or the
    package `<dir>/tools/`), a relative import inside it stays in that directory, and no entry
    is added to sys.path, so the rest of the process imports as before.
    """
    root = "_lmc_program_" + hashlib.sha256(base_dir.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    if root not in sys.modules:
        pkg = types.ModuleType(root, f"the Python modules of the lmc program directory {base_dir}")
        spec = importlib.machinery.ModuleSpec(root, None, is_package=True)
        spec.submodule_search_locations = [base_dir]
        pkg.__spec__ = spec
        pkg.__path__ = [base_dir]
        pkg.__package__ = root
        sys.modules[root] = pkg
    return importlib.import_module(f"{root}.{module}")
