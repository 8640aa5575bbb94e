"""``bidflow explain FILE``: why the model server scored logged requests as it did (``bidflow.serving.explain_file``).

Thin: parse, load the configuration, call the core, write the output. The output (a table, an
HTML page or JSON) goes to ``--out`` or stdout; the summary and the progress bar go to stderr, so
that stdout can be piped.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from bidflow.kinds import DEFAULT_KIND

if TYPE_CHECKING:
    from bidflow.config import Config

err = Console(stderr=True)


class OutputFormat(StrEnum):
    """What ``bidflow explain`` writes."""

    table = "table"
    html = "html"
    json = "json"


def register_explain_command(cli: typer.Typer) -> None:
    """Add ``explain`` to the top-level ``bidflow`` app."""
    cli.command("explain")(explain)


def explain(
    ctx: typer.Context,
    requests: Annotated[
        Path,
        typer.Argument(
            help="JSON lines (plain or gzip), one logged request a line: a v1 predict body, one bare instance, "
            "or (kinds replayed from auction logs, e.g. bid_filter) a `bidflow simulate` record.",
            metavar="FILE",
            show_default=False,
        ),
    ],
    kind: Annotated[str, typer.Option("--kind", help="The model kind (`bidflow kinds` lists them).")] = DEFAULT_KIND,
    model: Annotated[
        str,
        typer.Option(help="Alias or version in the registry, an MLflow URI (models:/...) or a model folder."),
    ] = "champion",
    top: Annotated[
        int | None, typer.Option(min=0, help="Contributions shown per row (0: all; default explain.top).")
    ] = None,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="table, html or json.")] = OutputFormat.table,
    out_path: Annotated[Path | None, typer.Option("--out", help="File to write (default: stdout).")] = None,
    config_path: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML configuration (default: the global --config).")
    ] = None,
    auction_entry: Annotated[
        bool,
        typer.Option(
            "--auction-entry",
            help="Check requests by Prebid's auction-endpoint rules (as `bidflow serve --auction-entry`).",
        ),
    ] = False,
    feature_timeout_ms: Annotated[
        float | None,
        typer.Option(min=1, help="Online-store wait before a row fails open (default 1000; the server's is 20)."),
    ] = None,
) -> None:
    """Explain logged requests as the kind's model server does: score, decision and top feature contributions.

    Lines the server refuses (its 400s) are reported with their field; exits 1 only if no line could be explained.
    """
    from bidflow.config import load_config
    from bidflow.kinds import kind as kind_of
    from bidflow.serving.explain_file import DEFAULT_FEATURE_TIMEOUT_MS, explain_requests
    from bidflow.serving.explain_render import render, summary

    config: Config = load_config(config_path) if config_path is not None else ctx.obj
    kind_of(config, kind).require_tabular("explain")  # TreeSHAP contributions need the tabular model
    size = requests.stat().st_size if requests.is_file() else 0
    with _Progress(size) as advance:
        result = explain_requests(
            config,
            requests,
            kind_name=kind,
            model_ref=model,
            top=top,
            auction_entry=auction_entry,
            feature_timeout_ms=feature_timeout_ms or DEFAULT_FEATURE_TIMEOUT_MS,
            on_progress=advance,
        )
    text = render(result, output_format.value)
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(text, encoding="utf-8")
    else:
        typer.echo(text, nl=False)
    err.print(summary(result), highlight=False, markup=False, soft_wrap=True)
    if out_path is not None:
        err.print(f"wrote {output_format.value} to {out_path}", highlight=False, markup=False, soft_wrap=True)
    if not result.explained_rows:
        err.print("no line could be explained", style="bold red", highlight=False)
        raise typer.Exit(1)


class _Progress:
    """A progress bar over the file's bytes on stderr, gone when done and off when stderr is not a terminal."""

    def __init__(self, total: int) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("[bold]explaining[/]"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
        self.progress = Progress(*columns, console=err, transient=True, disable=not err.is_terminal)
        self.total = total

    def __enter__(self) -> Callable[[int], None]:
        self.progress.start()
        task = self.progress.add_task("", total=self.total)
        return lambda n: self.progress.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()
