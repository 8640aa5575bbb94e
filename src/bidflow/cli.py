"""The ``bidflow`` command line: parse, load the configuration once, call the core, report.

A ``BidflowError`` (a user mistake or bad data) is printed as a short message with what,
where, expected/got and what to do, and exits non-zero without a traceback.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from bidflow.bidding.commands import register_bidder_commands
from bidflow.config import Config, load_config, override
from bidflow.deploy.commands import register_canary_commands
from bidflow.errors import BidflowError
from bidflow.features.commands import features_cli
from bidflow.features.stream_commands import stream_cli
from bidflow.modeling.commands import register_modeling_commands
from bidflow.modeling.fraud_commands import register_fraud_commands
from bidflow.observability.commands import register_ops_commands
from bidflow.pipelines.commands import register_pipeline_commands
from bidflow.serving.commands import register_serving_commands
from bidflow.serving.explain_commands import register_explain_command

cli = typer.Typer(
    name="bidflow",
    help="MLOps for ad-tech: OpenRTB auction logs to bid-filter and CTR models, and a budget-aware bidder.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
openrtb_cli = typer.Typer(help="Work with OpenRTB 2.5/2.6 bid requests.", no_args_is_help=True)
cli.add_typer(openrtb_cli, name="openrtb")
cli.add_typer(features_cli, name="features")
cli.add_typer(stream_cli, name="stream")
register_modeling_commands(cli)
register_serving_commands(cli)
register_explain_command(cli)
register_pipeline_commands(cli)
register_canary_commands(cli)
register_bidder_commands(cli)
register_fraud_commands(cli)
register_ops_commands(cli)

out = Console()
err = Console(stderr=True)


def _config(ctx: typer.Context) -> Config:
    config: Config = ctx.obj
    return config


@cli.callback()
def _main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML configuration file (default: ./bidflow.yaml if present)."),
    ] = None,
) -> None:
    """Settings come from the YAML file, then BIDFLOW__SECTION__KEY environment variables."""
    ctx.obj = load_config(config)


@cli.command()
def simulate(
    ctx: typer.Context,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Output folder (default: paths.raw).")] = None,
    hours: Annotated[int | None, typer.Option(help="Hours of traffic to generate.")] = None,
    start: Annotated[datetime | None, typer.Option(help="First hour, UTC (e.g. 2026-11-02T00:00:00).")] = None,
    auctions_per_hour: Annotated[int | None, typer.Option(help="Mean auctions per hour.")] = None,
    scenario: Annotated[
        str | None,
        typer.Option(help="Drift scenario: none, partner_retarget, device_shift, publisher_flood, floor_hike."),
    ] = None,
    scenario_start_hour: Annotated[
        int | None, typer.Option(help="Hours after --start at which the scenario switches on.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed; the same seed gives the same bytes.")] = None,
) -> None:
    """Generate OpenRTB auction logs: gzip JSON lines, one file per hour."""
    from bidflow.data.simulate import DIURNAL
    from bidflow.data.simulate import simulate as run_simulation

    config = _config(ctx)
    overrides: dict[str, Any] = {
        "hours": hours,
        "start": start,
        "auctions_per_hour": auctions_per_hour,
        "scenario": scenario,
        "scenario_start_hour": scenario_start_hour,
        "seed": seed,
    }
    cfg = override(config, "simulate", overrides).simulate
    target = out_dir or config.paths.raw
    expected = int(sum(cfg.auctions_per_hour * DIURNAL[(cfg.start.hour + i) % 24] for i in range(cfg.hours)))
    with _progress("simulating", expected, unit="auctions") as (progress, task):
        summary = run_simulation(cfg, target, lambda n: progress.advance(task, n))
    out.print(
        f"[green]wrote[/] {summary.auctions:,} auctions ({summary.calls:,} partner calls, "
        f"bid rate {summary.bid_rate:.1%}) in {len(summary.files)} hourly files under [bold]{target}[/] "
        f"({summary.bytes_written / 1e6:.1f} MB, {summary.auctions / summary.seconds:,.0f} auctions/s)"
    )


@cli.command()
def ingest(
    ctx: typer.Context,
    raw: Annotated[Path | None, typer.Argument(help="Log file or folder (default: paths.raw).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Parquet output (default: paths.parquet).")] = None,
    max_bad_share: Annotated[
        float | None, typer.Option(help="Fail if more than this share of lines is malformed.")
    ] = None,
) -> None:
    """Turn auction logs into hourly parquet partitions (one row per auction x partner)."""
    from bidflow.data.ingest import find_log_files
    from bidflow.data.ingest import ingest as run_ingest

    config = _config(ctx)
    cfg = override(config, "ingest", {"max_bad_share": max_bad_share}).ingest
    source = raw or config.paths.raw
    target = out_dir or config.paths.parquet
    total = sum(p.stat().st_size for p in find_log_files(source))
    with _progress("ingesting", total, unit="bytes") as (progress, task):
        summary = run_ingest(source, target, cfg, lambda n: progress.advance(task, n), spark=config.spark)
    out.print(
        f"[green]ingested[/] {summary.auctions:,} auctions -> {summary.rows:,} rows in "
        f"{len(summary.partitions)} partitions under [bold]{target}[/] "
        f"({summary.auctions / max(summary.seconds, 1e-9):,.0f} auctions/s)"
    )
    if summary.bad_lines:
        out.print(
            f"[yellow]quarantined[/] {summary.bad_lines:,} malformed lines ({summary.bad_share:.2%}): "
            + ", ".join(str(p) for p in summary.quarantine)
        )


@cli.command()
def profile(
    ctx: typer.Context,
    batch: Annotated[Path | None, typer.Argument(help="Parquet batch (default: paths.parquet).")] = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="Profile JSON to write.")] = None,
    since: Annotated[datetime | None, typer.Option(help="Only rows at or after this UTC time.")] = None,
    until: Annotated[datetime | None, typer.Option(help="Only rows before this UTC time.")] = None,
) -> None:
    """Summarise a known-good batch into the reference profile later batches are checked against."""
    from bidflow.data.batch import read_frame
    from bidflow.data.profile import build_profile, save_profile

    config = _config(ctx)
    source = batch or config.paths.parquet
    target = out_file or config.paths.reference / "profile.json"
    result = build_profile(read_frame(source, _utc(since), _utc(until)))
    save_profile(result, target)
    out.print(f"[green]profiled[/] {result.rows:,} rows (bid rate {result.bid_rate:.2%}) -> [bold]{target}[/]")


@cli.command()
def validate(
    ctx: typer.Context,
    batch: Annotated[Path | None, typer.Argument(help="Parquet batch (default: paths.parquet).")] = None,
    reference: Annotated[
        Path | None,
        typer.Option(help="Reference profile JSON (default: paths.reference/profile.json if it exists)."),
    ] = None,
    report_dir: Annotated[
        Path | None, typer.Option("--report", help="Report folder (default: paths.reports/validation).")
    ] = None,
    since: Annotated[datetime | None, typer.Option(help="Only rows at or after this UTC time.")] = None,
    until: Annotated[datetime | None, typer.Option(help="Only rows before this UTC time.")] = None,
) -> None:
    """Check a batch's schema and distributions; exit 1 with the report's path if it fails."""
    from bidflow.data.batch import read_frame
    from bidflow.data.profile import load_profile
    from bidflow.data.validate import enforce, validate_batch, write_report

    config = _config(ctx)
    source = batch or config.paths.parquet
    default_reference = config.paths.reference / "profile.json"
    reference_path = reference or (default_reference if default_reference.exists() else None)
    ref = load_profile(reference_path) if reference_path is not None else None
    frame = read_frame(source, _utc(since), _utc(until))
    report = validate_batch(
        frame,
        ref,
        config.validate_,
        batch_name=str(source),
        reference_name=str(reference_path) if reference_path else None,
    )
    path = write_report(report, report_dir or config.paths.reports / "validation")
    enforce(report, path)
    out.print(
        f"[green]validation passed[/]: {len(report.checks)} checks over {report.rows:,} rows; report: [bold]{path}[/]"
    )


@openrtb_cli.command("check")
def openrtb_check(
    path: Annotated[Path, typer.Argument(help="JSON-lines file (plain or gzip) of bid requests or records.")],
    field: Annotated[
        str | None,
        typer.Option(help="Field holding the request in each record (dotted for nesting, e.g. record.request)."),
    ] = None,
    limit: Annotated[int, typer.Option(help="Failures to print (all are counted).")] = 50,
) -> None:
    """Parse every line as an OpenRTB bid request; exit 1 if any line fails."""
    from bidflow.openrtb.check import check_file

    report = check_file(path, field=field)
    for failure in report.failures[:limit]:
        out.print(f"line {failure.line}: [bold]{failure.path}[/]: {failure.message}", highlight=False)
    if len(report.failures) > limit:
        out.print(f"... and {len(report.failures) - limit} more failures")
    colour = "green" if not report.failures else "red"
    out.print(f"[{colour}]{report.parsed:,} of {report.total:,} requests parse[/]")
    if report.failures:
        raise typer.Exit(1)


@cli.command()
def kinds(ctx: typer.Context) -> None:
    """List the registered model kinds: built-in ones and those under `kinds:` in bidflow.yaml."""
    from rich.table import Table

    from bidflow.kinds import kind, kind_names, registered_name

    config = _config(ctx)
    table = Table("kind", "registered model", "feature service", "label", "pipeline", "trained by", "what it predicts")
    for name in kind_names(config):
        found = kind(config, name)
        pipeline = "yes" if found.pipeline else "-"
        service = found.feature_service or "-"
        loop = "train/evaluate/fairness" if found.tabular else f"bidflow {found.commands}"
        table.add_row(name, registered_name(config, name), service, found.label, pipeline, loop, found.summary)
    out.print(table)


@cli.command()
def demo(ctx: typer.Context) -> None:
    """Run the whole loop on generated data (train, gate, deploy, canary, drift, rollback) and write a report."""
    from bidflow.demo import run_demo

    run_demo(_config(ctx), out)


def _utc(value: datetime | None) -> datetime | None:
    from datetime import UTC

    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class _progress:
    """A rich progress bar on stderr that vanishes when it is not a terminal."""

    def __init__(self, label: str, total: int, unit: str) -> None:
        columns = [TextColumn(f"[bold]{label}[/]"), BarColumn()]
        columns += [DownloadColumn() if unit == "bytes" else MofNCompleteColumn(), TimeRemainingColumn()]
        self.progress = Progress(*columns, console=err, transient=True, disable=not err.is_terminal)
        self.total = total

    def __enter__(self) -> tuple[Progress, Any]:
        self.progress.start()
        return self.progress, self.progress.add_task("", total=self.total)

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def app() -> None:
    """Console entry point: run the CLI, printing bidflow errors without a traceback."""
    try:
        cli(standalone_mode=True)
    except BidflowError as exc:
        err.print(f"[bold red]error:[/] {exc.render()}", highlight=False)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    app()
