"""``bidflow features ...``: build aggregated features and drive the Feast feature store.

Feast and pandas are imported inside the commands, so ``bidflow --help`` does not pay for them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from bidflow.kinds import DEFAULT_KIND

if TYPE_CHECKING:
    from bidflow.config import Config
    from bidflow.features.build import BuildSummary

features_cli = typer.Typer(help="Build features and manage the Feast feature store.", no_args_is_help=True)
out = Console()


def _config(ctx: typer.Context) -> Config:
    config: Config = ctx.obj
    return config


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _report(summary: BuildSummary) -> None:
    tables = ", ".join(f"{name} {rows:,}" for name, rows in summary.rows.items())
    out.print(
        f"[green]built[/] {sum(summary.rows.values()):,} feature rows ({tables}) under [bold]{summary.out}[/] "
        f"for {summary.first} .. {summary.last} in {summary.seconds:.1f} s"
    )


@features_cli.command()
def build(
    ctx: typer.Context,
    batch: Annotated[Path | None, typer.Argument(help="Ingested parquet (default: paths.parquet).")] = None,
    out_dir: Annotated[
        str | None, typer.Option("--out", help="Offline folder or URI (default: features.offline).")
    ] = None,
    since: Annotated[datetime | None, typer.Option(help="Only traffic at or after this UTC time.")] = None,
    until: Annotated[datetime | None, typer.Option(help="Only traffic before this UTC time (end of the data).")] = None,
) -> None:
    """Trailing 1 h / 24 h partner, slice and publisher statistics as Feast offline sources."""
    import time

    from bidflow.data.batch import read_batch
    from bidflow.features.build import build_bid_features, write_tables

    config = _config(ctx)
    if config.features.engine == "spark":
        from bidflow.engines import spark_jobs

        offline = out_dir or str(config.features.offline)
        _report(spark_jobs.build_features(config, batch, offline, _utc(since), _utc(until)))
        return
    started = time.perf_counter()
    calls = read_batch(batch or config.paths.parquet, _utc(since), _utc(until))
    tables = build_bid_features(calls, _utc(until))
    _report(write_tables(tables, out_dir or config.features.offline, started))


@features_cli.command("build-ctr")
def build_ctr(
    ctx: typer.Context,
    source: Annotated[Path | None, typer.Argument(help="iPinYou CSV (default: features.ctr_source).")] = None,
    out_dir: Annotated[
        str | None, typer.Option("--out", help="Offline folder or URI (default: features.offline).")
    ] = None,
    day: Annotated[
        datetime | None, typer.Option(help="UTC midnight to place the sample on (default: features.ctr_day).")
    ] = None,
) -> None:
    """Historical CTR per domain, slot, region and exchange from the iPinYou campaign-2997 sample."""
    import time

    from bidflow.features.build import build_ctr_features, write_tables
    from bidflow.features.ipinyou import read_ipinyou

    config = _config(ctx)
    started = time.perf_counter()
    impressions = read_ipinyou(source or config.features.ctr_source)
    tables = build_ctr_features(impressions, _utc(day) or config.features.ctr_day)
    _report(write_tables(tables, out_dir or config.features.offline, started))


@features_cli.command()
def apply(ctx: typer.Context) -> None:
    """Register entities, views and services for features.environment and create the online tables."""
    from bidflow.features import store as feature_store

    cfg = _config(ctx).features
    store = feature_store.open_store(cfg)
    summary = feature_store.apply(store, cfg)
    out.print(
        f"[green]applied[/] project [bold]{summary.project}[/] ({cfg.environment}): "
        f"{len(summary.entities)} entities, {len(summary.feature_views)} feature views, "
        f"services {', '.join(summary.feature_services)}; offline sources at {feature_store.offline_base(cfg)}"
    )
    if summary.deleted:
        out.print(f"[yellow]removed[/] {', '.join(summary.deleted)}")


@features_cli.command()
def materialize(
    ctx: typer.Context,
    start: Annotated[
        datetime | None, typer.Option(help="UTC start; without it, incremental from the last materialization.")
    ] = None,
    end: Annotated[datetime | None, typer.Option(help="UTC end, inclusive (default: now).")] = None,
    view: Annotated[list[str] | None, typer.Option(help="Only this feature view (repeatable).")] = None,
) -> None:
    """Load the latest feature rows into the online store (a time range, or incrementally)."""
    from bidflow.features import store as feature_store

    cfg = _config(ctx).features
    store = feature_store.open_store(cfg)
    until = _utc(end) or datetime.now(UTC)
    if start is not None:
        begin = _utc(start)
        assert begin is not None
        feature_store.materialize(store, begin, until, view)
        out.print(f"[green]materialized[/] {begin} .. {until} into the {store.config.online_store.type} store")
    else:
        feature_store.materialize_incremental(store, until, view)
        out.print(f"[green]materialized[/] incrementally up to {until} into the {store.config.online_store.type} store")


@features_cli.command("training-set")
def training_set(
    ctx: typer.Context,
    out_file: Annotated[Path, typer.Option("--out", help="Parquet file to write.")],
    kind_name: Annotated[
        str, typer.Option("--kind", "--service", help="The model kind whose FeatureService to use (`bidflow kinds`).")
    ] = DEFAULT_KIND,
    source: Annotated[
        Path | None,
        typer.Argument(
            help="The kind's data (bid_filter: ingested parquet; ctr: the iPinYou CSV); default: configured."
        ),
    ] = None,
    since: Annotated[datetime | None, typer.Option(help="Only rows at or after this UTC time.")] = None,
    until: Annotated[datetime | None, typer.Option(help="Only rows before this UTC time.")] = None,
) -> None:
    """Point-in-time training rows: the logged examples with the kind's FeatureService features appended."""
    from bidflow.features import store as feature_store
    from bidflow.kinds import kind

    config = _config(ctx)
    chosen = kind(config, kind_name)
    chosen.require_tabular("features training-set")
    if chosen.feature_service is None:
        raise typer.BadParameter(f"model kind '{kind_name}' has no Feast FeatureService", param_hint="--kind")
    if config.features.engine == "spark":
        from bidflow.engines import spark_jobs

        rows = spark_jobs.write_training_set(config, kind_name, out_file, source, _utc(since), _utc(until))
        out.print(f"[green]wrote[/] {rows:,} rows to [bold]{out_file}[/] (a parquet folder, on Spark)")
        return
    store = feature_store.open_store(config.features)
    entities = chosen.entities(config, source or chosen.default_source(config), _utc(since), _utc(until))
    result = feature_store.build_training_set(store, entities, chosen.feature_service)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    result.frame.to_parquet(out_file, index=False)
    out.print(
        f"[green]wrote[/] {len(result.frame):,} rows x {len(result.frame.columns)} columns to [bold]{out_file}[/]; "
        f"{result.rows_with_defaults:,} rows use defaults for some view "
        f"(Feast left out {sum(result.dropped_by_feast.values()):,} lookups, all kept)"
    )
