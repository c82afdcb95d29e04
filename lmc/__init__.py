"""lmc: a compiler for language-model programs."""

import sys
import types

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def __getattr__(name: str):
    # Lazy so `import lmc` (and the CLI's start-up) never pays for the runtime's imports.
    if name == "load":
        from .api import load

        return load
    raise AttributeError(f"module 'lmc' has no attribute {name!r}")


class _Package(types.ModuleType):
    """`lmc.load` is the API function, although a submodule `lmc.load` exists too.

    Importing a submodule sets it as an attribute of its package, so after the first
    `lmc.load(...)` (which imports lmc/load.py) `lmc.load` was that module and the second
    call failed with "'module' object is not callable".  The submodule stays importable
    with `from lmc.load import ...` (through sys.modules); `import lmc.load as m` gives the function.
    """

    def __setattr__(self, name: str, value) -> None:
        if name == "load" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
