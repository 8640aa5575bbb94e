"""``bidflow train | evaluate | fairness | promote | models``: thin commands over the modeling core.

Heavy libraries (xgboost, mlflow, Feast, matplotlib) are imported inside the commands, so
``bidflow --help`` and the other commands do not pay for them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console

from bidflow.kinds import DEFAULT_KIND

if TYPE_CHECKING:
    from bidflow.config import Config
    from bidflow.modeling.inputs import FeatureSource

out = Console()


class Features(StrEnum):
    """Where the model's columns come from."""

    feast = "feast"
    request = "request"


ModelOption = Annotated[
    str, typer.Option("--model", "-m", "--kind", help="The model kind (`bidflow kinds` lists them).")
]
SourceArgument = Annotated[
    Path | None,
    typer.Argument(help="The kind's data (bid_filter: ingested parquet; ctr: the iPinYou CSV); default: configured."),
]
SinceOption = Annotated[datetime | None, typer.Option(help="Only rows at or after this UTC time.")]
UntilOption = Annotated[datetime | None, typer.Option(help="Only rows before this UTC time.")]


def register_modeling_commands(cli: typer.Typer) -> None:
    """Add the modeling commands to the top-level ``bidflow`` app."""
    cli.command("train")(train)
    cli.command("evaluate")(evaluate)
    cli.command("fairness")(fairness)
    cli.command("promote")(promote)
    cli.command("models")(models)


def train(
    ctx: typer.Context,
    source: SourceArgument = None,
    model: ModelOption = DEFAULT_KIND,
    since: SinceOption = None,
    until: Annotated[
        datetime | None,
        typer.Option(
            help="Train on rows before this UTC time (default: all but the latest evaluate[.<kind>].holdout_hours)."
        ),
    ] = None,
    features: Annotated[
        Features | None,
        typer.Option(help="feast (FeatureService training set) or request (default train.feature_source)."),
    ] = None,
    register: Annotated[
        bool, typer.Option("--register/--no-register", help="Register the model version as 'candidate'.")
    ] = True,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Also save the model bundle to this folder.")] = None,
) -> None:
    """Train XGBoost on a time split, log the run to MLflow and register it as the candidate."""
    from bidflow.modeling.steps import train_step

    config = _config(ctx)
    result = train_step(
        config,
        _kind(config, model, tabular="train"),
        source=source,
        since=_utc(since),
        until=_utc(until),
        feature_source=_features(features),
        register=register,
        out_dir=out_dir,
    )
    m = result.model.metrics
    out.print(
        f"[green]trained[/] {model} on {result.rows:,} rows ({len(result.model.spec.names)} features, "
        f"source {result.model.spec.feature_service or 'request features'}): {result.model.best_iteration} trees, "
        f"validation AUC {m['valid_auc']:.4f}, log loss {m['valid_logloss']:.4f}, ECE {m['valid_ece']:.4f}"
    )
    where = f"version [bold]{result.version.version}[/] ('candidate')" if result.version else "not registered"
    out.print(f"MLflow run {result.run_id}; {where}; data version {result.data_version[:16]}")
    if result.saved_to is not None:
        out.print(f"model bundle saved to [bold]{result.saved_to}[/]")


def evaluate(
    ctx: typer.Context,
    source: SourceArgument = None,
    model: ModelOption = DEFAULT_KIND,
    candidate: Annotated[str, typer.Option(help="Candidate: alias or version number.")] = "candidate",
    champion: Annotated[
        str, typer.Option(help="Champion: alias or version number; 'none' to compare with nothing.")
    ] = "champion",
    since: Annotated[
        datetime | None, typer.Option(help="Window start, UTC (default: the latest evaluate[.<kind>].holdout_hours).")
    ] = None,
    until: UntilOption = None,
    report_dir: Annotated[
        Path | None, typer.Option("--report", help="Report folder (default: paths.reports/evaluation-MODEL).")
    ] = None,
) -> None:
    """Compare the candidate with the champion on the held-out window; exit 1 if the gate fails."""
    from bidflow.modeling.steps import evaluate_step

    outcome, report = evaluate_step(
        _config(ctx),
        _kind(_config(ctx), model, tabular="evaluate"),
        source=source,
        since=_utc(since),
        until=_utc(until),
        candidate=candidate,
        champion=None if champion.lower() == "none" else champion,
        report_dir=report_dir,
    )
    c = report.candidate.metrics
    line = f"AUC {c['auc']:.4f}, log loss {c['logloss']:.4f}, ECE {c['ece']:.4f}"
    if report.candidate.at_target is not None:
        line += (
            f", calls saved {c['calls_saved_share']:.1%} at bid recall {c['bid_recall']:.1%} "
            f"(own thresholds, {report.exploration_share:.0%} exploration)"
        )
    if "oracle_share_at_target" in c and report.candidate.at_target is not None:
        line += (
            f"; at {report.target_recall:.0%} bid recall it saves {report.candidate.at_target.calls_saved_share:.1%}"
            f" of calls, {c['oracle_share_at_target']:.1%} of the oracle's"
        )
    out.print(f"[green]gate passed[/]: {report.candidate.ref} on {report.rows:,} held-out rows: {line}")
    for note in report.gate.notes:
        out.print(f"[yellow]note[/]: {note}")
    out.print(f"report: [bold]{outcome.html_path}[/] and {outcome.json_path.name}")


def fairness(
    ctx: typer.Context,
    source: SourceArgument = None,
    model: ModelOption = DEFAULT_KIND,
    candidate: Annotated[str, typer.Option(help="Model to check: alias or version number.")] = "candidate",
    since: Annotated[
        datetime | None, typer.Option(help="Window start, UTC (default: the latest evaluate[.<kind>].holdout_hours).")
    ] = None,
    until: UntilOption = None,
    slice_by: Annotated[
        list[str] | None, typer.Option("--slice", help="Slice column (repeatable; default fairness.slices).")
    ] = None,
    report_dir: Annotated[
        Path | None, typer.Option("--report", help="Report folder (default: paths.reports/fairness-MODEL).")
    ] = None,
) -> None:
    """Per-slice bid recall and calibration against the overall values; exit 1 naming failing slices."""
    from bidflow.modeling.steps import fairness_step

    outcome, report = fairness_step(
        _config(ctx),
        _kind(_config(ctx), model, tabular="fairness"),
        source=source,
        since=_utc(since),
        until=_utc(until),
        candidate=candidate,
        slices=tuple(slice_by) if slice_by else None,
        report_dir=report_dir,
    )
    gated = sum(1 for s in report.slices if s.gated)
    out.print(
        f"[green]bias gate passed[/]: {len(report.slices)} slices ({gated} gated) of "
        f"{outcome.candidate.name} v{outcome.candidate.version}; report: [bold]{outcome.html_path}[/]"
    )


def promote(
    ctx: typer.Context,
    model: ModelOption = DEFAULT_KIND,
    version: Annotated[str | None, typer.Option(help="Version to promote (default: the 'candidate').")] = None,
    force: Annotated[bool, typer.Option(help="Promote even if its gates have not passed.")] = False,
) -> None:
    """Point the 'champion' alias at the candidate (or a version) once the kind's gates have passed.

    The gates are the kind's own (`gate.evaluation` and `gate.fairness` for the tabular kinds; a kind
    with its own commands names its own, e.g. `gate.replay`).
    """
    from bidflow.errors import GateFailed
    from bidflow.kinds import kind, registered_name
    from bidflow.modeling import registry

    config = _config(ctx)
    found = kind(config, model)
    name = registered_name(config, found.name)
    target = registry.resolve(config.registry, name, version or registry.CANDIDATE)
    missing = [g for g in found.gates if target.tags.get(f"gate.{g}") != "passed"]
    if missing and not force:
        raise GateFailed(
            f"{name} v{target.version} has not passed its gates",
            got=", ".join(f"gate.{g}={target.tags.get(f'gate.{g}', 'not run')}" for g in missing),
        )
    result = registry.promote(config.registry, name, target.version)
    before = f"(was v{result.previous.version})" if result.previous else "(first champion)"
    out.print(f"[green]promoted[/] {name} v{result.champion.version} to 'champion' {before}")


def models(ctx: typer.Context, model: ModelOption = DEFAULT_KIND) -> None:
    """List the registered versions with their aliases and gate verdicts."""
    from bidflow.kinds import registered_name
    from bidflow.modeling import registry

    config = _config(ctx)
    name = registered_name(config, _kind(config, model))
    found = registry.versions(config.registry, name)
    if not found:
        out.print(f"no versions of '{name}' at {config.registry.tracking_uri}")
        return
    for ref in found:
        gates = ", ".join(
            f"{k.removeprefix('gate.')}={v}" for k, v in sorted(ref.tags.items()) if k.startswith("gate.")
        )
        aliases = ", ".join(ref.aliases) or "-"
        out.print(f"{name} v{ref.version}  aliases: {aliases}  gates: {gates or '-'}  run {ref.run_id}")


def _config(ctx: typer.Context) -> Config:
    config: Config = ctx.obj
    return config


def _kind(config: Config, model: str, *, tabular: str | None = None) -> str:
    """The kind's name; with ``tabular`` (the command's name) a kind with its own commands is refused."""
    from bidflow.kinds import kind

    found = kind(config, model)
    if tabular is not None:
        found.require_tabular(tabular)
    return found.name


def _features(features: Features | None) -> FeatureSource | None:
    if features is None:
        return None
    source: Literal["feast", "request"] = "feast" if features is Features.feast else "request"
    return source


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
