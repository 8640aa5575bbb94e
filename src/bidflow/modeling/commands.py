"""``bidflow train | evaluate | fairness``: thin commands over the modeling core."""

from __future__ import annotations

import typer


def register_modeling_commands(cli: typer.Typer) -> None:
    """Add the modeling commands to the top-level ``bidflow`` app."""
