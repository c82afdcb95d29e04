"""lmc: a compiler for language-model programs."""

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def __getattr__(name: str):
    # Lazy so `import lmc` (and the CLI's start-up) never pays for the runtime's imports.
    if name == "load":
        from .api import load

        return load
    raise AttributeError(f"module 'lmc' has no attribute {name!r}")
