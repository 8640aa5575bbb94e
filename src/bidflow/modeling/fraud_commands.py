"""``bidflow fraud ...``: train the fraud model against its baselines, and write the velocity feature tables.

pandas, xgboost and sklearn are imported inside the commands, so ``bidflow --help`` does not pay for them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from bidflow.kinds.fraud import NAME

if TYPE_CHECKING:
    from bidflow.config import Config

fraud_cli = typer.Typer(help="The fraud (invalid click) kind on TalkingData clicks.", no_args_is_help=True)
out = Console()
SourceArgument = Annotated[Path | None, typer.Argument(help="TalkingData clicks (default: fraud.source).")]


def register_fraud_commands(cli: typer.Typer) -> None:
    """Add the kind's command group to the top-level ``bidflow`` app (once, however often called)."""
    if not any(group.typer_instance is fraud_cli for group in cli.registered_groups):
        cli.add_typer(fraud_cli, name=NAME)


def _config(ctx: typer.Context) -> Config:
    config: Config = ctx.obj
    return config


@fraud_cli.command()
def train(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the model (model/) and report.json.")],
    source: SourceArgument = None,
) -> None:
    """Fit the fraud model and its two baselines on a time split; score them on the hold-out day."""
    from bidflow.features.talkingdata import read_clicks
    from bidflow.modeling.fraud import compare

    config = _config(ctx)
    from bidflow.modeling.train import save_model

    report, model = compare(read_clicks(source or config.fraud.source), config.fraud)
    save_model(model, out_dir / "model")
    (out_dir / "report.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
    for name, found in report.models.items():
        out.print(f"{name:18} AUC {found.auc:.4f} [{found.auc_low:.4f}, {found.auc_high:.4f}]  "
                  f"PR-AUC {found.pr_auc:.4f}  log loss {found.log_loss:.5f}")  # fmt: skip
    money = report.economics
    out.print(f"threshold keeping {money.keep:.0%} of validation conversions: {money.flagged_share:.1%} of hold-out "
              f"clicks invalid, {money.conversions_lost:.1%} of its conversions lost")  # fmt: skip
    out.print(f"[green]wrote[/] the model to {out_dir / 'model'} (`python -m bidflow.serving` serves it) and "
              f"{out_dir / 'report.json'}")  # fmt: skip


@fraud_cli.command("validate")
def validate(
    ctx: typer.Context,
    source: SourceArgument = None,
    report_dir: Annotated[Path, typer.Option("--report", help="Folder for validation.{md,html,json}.")] = Path(
        "reports/validation-fraud"
    ),
) -> None:
    """The fraud kind's data gate: values, converting share and duplicates; exit 1 with the report if it fails."""
    from bidflow.data.validate import enforce, write_report
    from bidflow.data.validate_clicks import validate_clicks

    config = _config(ctx)
    result = validate_clicks(source or config.fraud.source, config.fraud, config.validate_)
    html = write_report(result, report_dir)
    out.print(f"{len(result.checks)} checks over {result.rows:,} clicks ({result.window}): "
              f"{len(result.failures)} failed; report {html}")  # fmt: skip
    enforce(result, html)


@fraud_cli.command("replay")
def replay(
    ctx: typer.Context,
    source: SourceArgument = None,
    day: Annotated[str | None, typer.Option(help="Only this UTC day (YYYY-MM-DD; default: every click).")] = None,
    speedup: Annotated[
        float, typer.Option(min=0.001, help="Event time per wall-clock second (60: a day in 24 min).")
    ] = 60.0,
    delay_ms: Annotated[
        float, typer.Option(min=0, help="Score each click this long after it goes onto the stream (processor lag).")
    ] = 1_000.0,
    url: Annotated[
        str | None, typer.Option(help="Endpoint (default: the local router, canary.host:canary.router_port).")
    ] = None,
    per_request: Annotated[int, typer.Option(min=1, max=256, help="Clicks per scoring request.")] = 1,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Scoring requests in flight.")] = 8,
    limit: Annotated[int | None, typer.Option(min=1, help="Send at most this many scoring requests.")] = None,
    only: Annotated[
        list[str] | None, typer.Option(help="Only clicks with COLUMN=VALUE (repeat for several; a drift drill).")
    ] = None,
) -> None:
    """Replay clicks through the click stream and the served fraud model at SPEEDUP x real time, live."""
    import asyncio

    from bidflow.deploy.click_replay import replay_clicks
    from bidflow.deploy.replay import select_rows
    from bidflow.errors import ConfigError, InputError
    from bidflow.features.stream_source import open_publisher
    from bidflow.kinds import kind, registered_name

    config = _config(ctx)
    if url is None and config.canary.kind != NAME:
        raise ConfigError("the local deployment serves another kind", where="canary.kind", expected=NAME,
                          got=config.canary.kind, hint="set canary.kind: fraud, or pass --url")  # fmt: skip
    fraud = kind(config, NAME)
    rows = fraud.load_rows(config, source or config.fraud.source, None, None)
    if day is not None:
        rows = rows[rows["day"] == day]
        if rows.empty:
            raise InputError("no clicks on that day", got=day, hint="the sample's days: 2017-11-06 .. 2017-11-08")
    rows = select_rows(rows, only or [])
    endpoint = (url or f"http://{config.canary.host}:{config.canary.router_port}").rstrip("/")
    target = f"{endpoint}/v1/models/{registered_name(config, NAME)}:predict"
    out.print(f"replaying {len(rows):,} clicks at {speedup:g}x onto {config.stream.source} stream and to {target}")
    report, published = asyncio.run(
        replay_clicks(rows, fraud.fields, open_publisher(config.stream), target, out, speedup=speedup,
                      delay_s=delay_ms / 1000, per_request=per_request, concurrency=concurrency, limit=limit)
    )  # fmt: skip
    summary = report.summary()
    out.print(f"{published:,} clicks published; {summary['sent']:,} scoring requests in {summary['seconds']} s, "
              f"failed {summary['failed']}, p50 {summary['p50_ms']:.2f} ms, p99 {summary['p99_ms']:.2f} ms, "
              f"answered by {summary['roles']}", highlight=False)  # fmt: skip
    if report.failed:
        out.print("first failures: " + " | ".join(report.failures[:3]), highlight=False)
        raise typer.Exit(1)


@fraud_cli.command("features")
def features(ctx: typer.Context, source: SourceArgument = None) -> None:
    """Write the velocity views' offline tables (their push sources' batch sources) under features.offline."""
    from bidflow.features.build import write_tables
    from bidflow.features.talkingdata import read_clicks
    from bidflow.features.velocity import offline_tables

    config = _config(ctx)
    summary = write_tables(offline_tables(read_clicks(source or config.fraud.source)), config.features.offline)
    tables = ", ".join(f"{name} {rows:,}" for name, rows in summary.rows.items())
    out.print(f"[green]wrote[/] {tables} under [bold]{summary.out}[/] ({summary.first} .. {summary.last})")
