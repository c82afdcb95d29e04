"""lmc: a compiler for language-model programs."""

__version__ = "0.1.0"
