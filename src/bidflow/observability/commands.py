"""``bidflow ops render``: write the Prometheus rules and Grafana dashboards the chart ships."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

out = Console()

ops_cli = typer.Typer(
    help="Operations: Prometheus rules and Grafana dashboards over bidflow's metrics.", no_args_is_help=True
)


def register_ops_commands(cli: typer.Typer) -> None:
    """Add the ``ops`` command group to the top-level ``bidflow`` app (once, however often called)."""
    if not any(group.typer_instance is ops_cli for group in cli.registered_groups):
        cli.add_typer(ops_cli, name="ops")


@ops_cli.command("render")
def render_command(
    ctx: typer.Context,
    root: Annotated[
        Path, typer.Option("--out", help="Repository root to write under (ops/prometheus/, helm/bidflow/files/).")
    ] = Path(),
) -> None:
    """Generate the rules file, the chart's rules and its dashboards (one economics dashboard per kind)."""
    from bidflow.observability.render import generated_files, write

    for path in write(root, generated_files(ctx.obj)):
        out.print(f"[green]wrote[/] {path}")
