"""The `run` command family of the CLI (presentation only)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
