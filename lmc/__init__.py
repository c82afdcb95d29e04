"""lmc: a compiler for language-model programs.

The Python API (`lmc.check`, `lmc.compile`, `lmc.evaluate`, `lmc.load`, ...) lives in lmc/api.py and is
imported on first use, so `import lmc` (and the CLI's start-up) never pays for the runtime's imports.
"""

import sys
import types

__version__ = "0.1.0"

API = ("load", "check", "compile", "acompile", "evaluate", "aevaluate", "Program", "ProgramError", "CheckResult", "Compiled", "Evaluation")
__all__ = ["__version__", *API]


def __getattr__(name: str):
    if name in API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'lmc' has no attribute {name!r}")


class _Package(types.ModuleType):
    """The API's names stay the API's: the checker is the submodule lmc/check.py, and importing a submodule
    sets it as an attribute of its package, which would make `lmc.check` that module rather than the
    function.  The submodule stays importable with `from lmc.check import ...` (through sys.modules)."""

    def __setattr__(self, name: str, value) -> None:
        if name in API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
