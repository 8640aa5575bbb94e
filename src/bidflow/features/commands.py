"""``bidflow features ...``: build aggregated features and drive the Feast feature store."""

from __future__ import annotations

import typer

features_cli = typer.Typer(help="Build features and manage the Feast feature store.", no_args_is_help=True)
